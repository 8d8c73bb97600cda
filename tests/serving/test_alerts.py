"""SLA alerts: before and when a ticket's answer is late, once each, to a webhook and
by e-mail to the queue's owners (a real HTTP server and a real SMTP server)."""

from __future__ import annotations

import json
import threading
from datetime import timedelta
from http.server import BaseHTTPRequestHandler, HTTPServer

import pytest
from fastapi.testclient import TestClient

from serving import alerts
from serving.outbox import SmtpConfig
from serving.routing import RoutingConfig, RoutingError
from serving.store import SlaAlert
from tests.serving.factories import Desk
from tests.serving.mail_servers import start_smtp


@pytest.fixture
def webhook():
    got: list[dict] = []

    class Handler(BaseHTTPRequestHandler):
        def do_POST(self):
            got.append(json.loads(self.rfile.read(int(self.headers["Content-Length"]))))
            self.send_response(204)
            self.end_headers()

        def log_message(self, *args):
            pass

    server = HTTPServer(("127.0.0.1", 0), Handler)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    yield f"http://127.0.0.1:{server.server_port}/alerts", got
    server.shutdown()


@pytest.fixture
def smtp():
    server, controller = start_smtp()
    yield server
    controller.stop()


def _round(desk, url, smtp, owners):
    svc = desk.app.state.services
    new = alerts.scan(svc.sessions, svc.clock(), timedelta(hours=2))
    cfg = SmtpConfig(host="127.0.0.1", port=smtp.port, security="none")
    alerts.deliver(svc.sessions, new, url, owners, cfg, "desk@shop.example")
    return [a.kind for a in new]


def test_alerts_warn_before_and_at_the_deadline_once_each(desk, clock, webhook, smtp):
    url, got = webhook
    owners = {"general": ["lead@shop.example"], "triage": ["lead@shop.example"],
              "shipping": ["lead@shop.example"], "returns": ["lead@shop.example"],
              "billing": ["lead@shop.example"], "escalations": ["lead@shop.example"]}  # fmt: skip
    ticket = desk.service.post_message(channel="chat", text="Where is my parcel?", customer_id="c1")
    due = ticket["sla_due_at"]
    assert _round(desk, url, smtp, owners) == []  # 4 hours left (chat), lead 2
    clock.advance(hours=2, minutes=30)
    assert _round(desk, url, smtp, owners) == ["due_soon"]
    assert _round(desk, url, smtp, owners) == []  # once
    clock.advance(hours=2)
    assert _round(desk, url, smtp, owners) == ["breached"]
    assert _round(desk, url, smtp, owners) == []
    assert [g["alert"] for g in got] == ["due_soon", "breached"]
    assert got[0]["ticket_id"] == ticket["ticket_id"] and got[0]["due_at"].startswith(due[:16])
    assert "text" not in got[0] and "customer_id" not in got[0]
    assert [r.rcpt_tos for r in smtp.received] == [["lead@shop.example"]] * 2
    assert "is late" in smtp.received[1].message["Subject"]
    with desk.sessions() as s:
        rows = s.query(SlaAlert).order_by(SlaAlert.id).all()
        assert [(r.webhook_status, r.email_status) for r in rows] == [
            ("HTTP 204", "sent to 1"),
            ("HTTP 204", "sent to 1"),
        ]


def test_an_answered_ticket_raises_no_alert(desk, clock, webhook, smtp):
    url, got = webhook
    ticket = desk.service.post_message(channel="chat", text="Where is my parcel?", customer_id="c1")
    desk.agent.reply(ticket["ticket_id"], "On its way.", wait_for_customer=True)
    clock.advance(hours=10)
    assert _round(desk, url, smtp, {}) == [] and got == []


def test_the_service_sends_alerts_itself(make_app, db_url, clock, webhook):
    url, got = webhook
    app = make_app(db_url, sla_alert_webhook_url=url, sla_alert_poll_seconds=0.2)
    with TestClient(app) as tc:
        desk = Desk(tc)
        desk.service.post_message(channel="chat", text="Where is my parcel?", customer_id="c1")
        clock.advance(hours=5)
        import time

        deadline = time.monotonic() + 20
        while not got and time.monotonic() < deadline:
            time.sleep(0.1)
        assert [g["alert"] for g in got] == ["breached"]
        assert tc.get("/readyz").json()["sla_alerts"]["error"] is None


def test_owners_name_queues_that_exist():
    base = {"queues": {"g": ""}, "default_queue": "g"}
    assert RoutingConfig.from_dict({**base, "owners": {"g": "a@b.c"}}).owners == {"g": ["a@b.c"]}
    with pytest.raises(RoutingError, match="owners: unknown queue 'x'"):
        RoutingConfig.from_dict({**base, "owners": {"x": ["a@b.c"]}})
    with pytest.raises(RoutingError, match="expected a list of e-mail addresses"):
        RoutingConfig.from_dict({**base, "owners": {"g": ["nobody"]}})
