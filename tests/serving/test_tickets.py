"""Tickets through HTTP, on SQLite and PostgreSQL: claims and leases, the SLA clock,
no-response-needed, concurrent claims."""

from __future__ import annotations

import threading
from datetime import UTC, datetime
from pathlib import Path

import pytest

from tests.serving.factories import error_of


def test_claims_leases_and_expiry(desk, clock):
    ids = {
        desk.service.post_message(channel="chat", text=f"fire number {i}")["ticket_id"]
        for i in range(2)
    }
    t1 = desk.agent.claim("escalations")
    t2 = desk.agent2.claim("escalations")
    assert {t1["id"], t2["id"]} == ids and t1["claimed_by"] == "alice"
    assert desk.agent2.claim("escalations") is None
    err = error_of(desk.agent2.resolve, t1["id"])
    assert err.status_code == 409 and "claimed by alice" in err.detail
    clock.advance(seconds=desk.app.state.settings.lease_seconds + 1)
    assert desk.agent.ticket(t1["id"])["state"] == "open"  # lease expired: back in the queue
    again = desk.agent2.claim("escalations")
    assert again["id"] in ids and again["claimed_by"] == "bob"
    other = (ids - {again["id"]}).pop()
    assert desk.agent.claim("escalations")["id"] == other
    assert desk.agent2.claim("escalations") is None
    # bob releases; alice picks it up; a resolved ticket cannot be resolved again
    desk.agent2.release(again["id"])
    assert desk.agent.claim("escalations")["id"] == again["id"]
    done = desk.agent.resolve(again["id"], note="sent a replacement")
    assert done["state"] == "resolved" and done["resolved_at"]
    assert error_of(desk.agent.resolve, again["id"]).status_code == 409
    assert error_of(desk.agent.ticket, 9999).status_code == 404
    assert error_of(desk.agent.claim, "nope").status_code == 404


def test_sla_clock_runs_across_the_weekend(desk, clock):
    # the channel's hours alone: no shorter deadline for urgent tickets
    desk.app.state.services.routing.sla_urgency_hours = {}
    # received Friday 18:00; 24 calendar hours -> due Saturday 18:00 (weekends count)
    t = desk.service.post_message(channel="email", text="fire in the box")
    assert datetime.fromisoformat(t["sla_due_at"]) == datetime(2026, 11, 21, 18, 0, tzinfo=UTC)
    clock.advance(hours=23)  # Saturday 17:00
    q = next(q for q in desk.agent.queues() if q["queue"] == "escalations")
    assert q["breached"] == 0 and q["depth"] == 1 and q["unclaimed"] == 1
    clock.advance(hours=2)  # Saturday 19:00
    q = next(q for q in desk.agent.queues() if q["queue"] == "escalations")
    assert q["breached"] == 1
    desk.agent.claim("escalations")
    clock.advance(hours=1)
    replied = desk.agent.reply(
        t["ticket_id"], "Sorry! Please stop using it.", wait_for_customer=True
    )
    assert replied["state"] == "waiting_on_customer" and replied["sla_breached"] is True
    assert replied["first_response_at"].startswith("2026-11-21T20:00")
    clock.advance(days=1)
    q = next(q for q in desk.agent.queues() if q["queue"] == "escalations")
    assert q["late_response_rate"] == {"7d": 1.0, "30d": 1.0, "90d": 1.0}
    # a ticket answered in time is not late
    u = desk.service.post_message(channel="email", text="smoke from the plug")
    desk.agent.claim("escalations")
    clock.advance(hours=3)
    on_time = desk.agent.reply(u["ticket_id"], "Calling you now.")
    assert on_time["sla_breached"] is False and on_time["state"] == "claimed"
    clock.advance(days=2)
    q = next(q for q in desk.agent.queues() if q["queue"] == "escalations")
    assert q["late_response_rate"]["7d"] == 0.5


def test_no_response_needed_stops_the_clock(desk, clock):
    t = desk.service.post_message(channel="chat", text="fire alarm works great, thanks")
    closed = desk.agent.no_response_needed(t["ticket_id"], note="just thanks")
    assert closed["state"] == "no_response_needed"
    clock.advance(days=3)
    assert desk.agent.ticket(t["ticket_id"])["sla_breached"] is False
    q = next(q for q in desk.agent.queues() if q["queue"] == "escalations")
    assert q["breached"] == 0 and q["late_response_rate"]["7d"] == 0.0 and q["depth"] == 0
    assert error_of(desk.agent.reply, t["ticket_id"], "hi").status_code == 409


def test_no_response_needed_by_star_rating(make_app, db_url, tmp_path):
    """The message's rating is the `stars` fact of the routing file's conditions."""
    import yaml
    from fastapi.testclient import TestClient

    from serving.routing import DEFAULT_ROUTING_PATH
    from tests.serving.factories import Desk

    routing = yaml.safe_load(Path(DEFAULT_ROUTING_PATH).read_text(encoding="utf-8"))
    routing["no_response_needed"] = [{"when": {"channel": ["review"], "stars": [4, 5]}}]
    path = tmp_path / "routing.yaml"
    path.write_text(yaml.safe_dump(routing), encoding="utf-8")
    with TestClient(make_app(db_url, routing_file=path)) as tc:
        desk = Desk(tc)
        states = {
            stars: desk.agent.ticket(
                desk.service.post_message(channel="review", text="fine", rating=stars)["ticket_id"]
            )["state"]
            for stars in (5, 2, None)
        }
    assert states == {5: "no_response_needed", 2: "open", None: "open"}


@pytest.mark.slow
def test_concurrent_claims_never_hand_out_a_ticket_twice(desk):
    n = 24
    desk.service.post_messages([{"channel": "chat", "text": f"smoke {i}"} for i in range(n)])
    agents = [
        desk.admin.with_key(desk.admin.create_key(f"agent{i}", "agent")["key"]) for i in range(6)
    ]
    got: list[int] = []
    lock = threading.Lock()
    errors: list[Exception] = []

    def work(client):
        try:
            while (t := client.claim("escalations")) is not None:
                with lock:
                    got.append(t["id"])
        except Exception as exc:  # surfaced below
            errors.append(exc)

    threads = [threading.Thread(target=work, args=(a,)) for a in agents]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert not errors
    assert len(got) == n and len(set(got)) == n
