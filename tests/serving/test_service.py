"""The triage service through HTTP (TestClient + the typed client), on SQLite and on
PostgreSQL: ingestion, idempotency, rules, queues, claims, leases, SLA, labels,
reviews, roles, limits, metrics."""

from __future__ import annotations

import json
import threading
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest

from serving.client import CarelensError
from serving.store import LabelCorrection, Message, Prediction, Ticket


def _err(fn, *args, **kwargs) -> CarelensError:
    with pytest.raises(CarelensError) as info:
        fn(*args, **kwargs)
    return info.value


# -- roles ---------------------------------------------------------------------------

ROUTE_ROLES = {
    "/v1/messages": "service",
    "/v1/messages/email": "service",
    "/v1/classify": "service",
    "/v1/queues": "agent",
    "/v1/queues/{queue}/tickets": "agent",
    "/v1/queues/{queue}/claim": "agent",
    "/v1/tickets": "agent",
    "/v1/tickets/{ticket_id}": "agent",
    "/v1/tickets/{ticket_id}/claim": "agent",
    "/v1/tickets/{ticket_id}/draft/send": "agent",
    "/v1/tickets/{ticket_id}/return": "agent",
    "/v1/returns": "agent",
    "/v1/returns/{return_id}": "agent",
    "/v1/returns/{return_id}/state": "agent",
    "/v1/stats/returns": "agent",
    "/v1/tickets/{ticket_id}/attachments/{attachment_id}": "agent",
    "/v1/tickets/{ticket_id}/release": "agent",
    "/v1/tickets/{ticket_id}/reply": "agent",
    "/v1/tickets/{ticket_id}/resolve": "agent",
    "/v1/tickets/{ticket_id}/no-response-needed": "agent",
    "/v1/tickets/{ticket_id}/labels": "agent",
    "/v1/labels/export": "agent",
    "/v1/reviews": "agent",
    "/v1/reviews/{review_id}/handled": "agent",
    "/v1/customers/{customer_id}": "agent",
    "/v1/stats/agents": "agent",
    "/v1/stats/kpis": "agent",
    "/v1/stats/signals": "agent",
    "/v1/products/insights": "agent",
    "/v1/products/{product_id}/insights": "agent",
    "/v1/keys": "admin",
    "/v1/keys/{key_id}": "admin",
    "/v1/config": "admin",
    "/v1/models": "admin",
    "/v1/models/{version}": "admin",
    "/v1/models/{version}/promote": "admin",
    "/v1/models/rollback": "admin",
    "/v1/models/retrain": "admin",
    "/v1/models/jobs": "admin",
    "/v1/models/jobs/{job_id}": "admin",
    "/v1/labeling/next": "agent",
    "/v1/templates": "admin",
    "/v1/templates/{template_name}": "admin",
    "/v1/tickets/{ticket_id}/suggested-replies": "agent",
    "/v1/orders": "service",
    "/v1/customers/{customer_id}/consent": "service",
    "/v1/customers/{customer_id}/opt-out": "agent",
    "/v1/campaigns": "admin",
    "/v1/campaigns/{campaign_id}": "admin",
    "/v1/campaigns/{campaign_id}/runs": "admin",
    "/v1/campaigns/{campaign_id}/runs/{run_id}": "admin",
    "/v1/campaigns/{campaign_id}/runs/{run_id}/export": "admin",
}


def test_every_route_checks_its_role(desk):
    keys = {"service": desk.service.api_key, "agent": desk.agent.api_key}
    paths = {p: ops for p, ops in desk.app.openapi()["paths"].items() if p.startswith("/v1/")}
    assert set(paths) == set(ROUTE_ROLES), "declare the role of every new route"
    for route_path, ops in paths.items():
        path = route_path.format(
            queue="general",
            ticket_id=1,
            attachment_id=1,
            return_id=1,
            review_id=1,
            key_id=1,
            customer_id="c",
            product_id="p",
            template_name="t",
            campaign_id=1,
            run_id=1,
            version="v0001",
            job_id="j",
        )
        for method in (m.upper() for m in ops):
            r = desk.http.request(method, path)
            assert r.status_code == 401, (method, path, r.status_code)
            r = desk.http.request(method, path, headers={"X-API-Key": "clk_wrong"})
            assert r.status_code == 401, (method, path)
            for role, key in keys.items():
                if role == ROUTE_ROLES[route_path]:
                    continue
                r = desk.http.request(method, path, headers={"Authorization": f"Bearer {key}"})
                assert r.status_code == 403, (method, path, role, r.status_code)
                assert "needs a key with role" in r.json()["detail"]


def test_keys_are_hashed_shown_once_revocable_and_never_logged(desk, caplog):
    from serving.store import ApiKey

    caplog.set_level("DEBUG")
    created = desk.admin.create_key("carol", "agent")
    key = created["key"]
    carol = desk.admin.with_key(key)
    assert carol.queues()
    with desk.sessions() as s:
        stored = [row.key_hash for row in s.query(ApiKey)]
    assert key not in stored and all(len(h) == 64 for h in stored)
    assert all("key" not in k for k in desk.admin.list_keys())
    desk.admin.revoke_key(created["id"])
    assert _err(carol.queues).status_code == 401
    assert key not in caplog.text


# -- messages in ---------------------------------------------------------------------


def test_post_message_stores_everything_in_one_go(desk):
    out = desk.service.post_message(
        channel="email",
        text="Where is my order? It is two weeks late.",
        subject="Late order",
        customer_id="A1BUYER",
        order_id="111-2223334-5556667",
        product_id="B00TEST",
        marketplace="amazon.com",
    )
    assert out["created"] is True and out["lang"] == "en"
    assert out["model_version"] and set(out["prediction"]["tasks"]) == {
        "issue_type",
        "sentiment",
        "urgency",
    }
    assert out["queue"] in desk.admin.config()["queues"]
    # 24 hours, or less for critical urgency (sla.urgency_hours of the routing file)
    hours = 4 if "critical" in out["labels"]["urgency"] else 24
    due = datetime(2026, 11, 20, 18, 0, tzinfo=UTC) + timedelta(hours=hours)
    assert datetime.fromisoformat(out["sla_due_at"]) == due
    ticket = desk.agent.ticket(out["ticket_id"])
    assert ticket["message"]["order_id"] == "111-2223334-5556667"
    assert ticket["state"] == "open" and ticket["labels"] == out["labels"]
    assert desk.count(Message) == desk.count(Prediction) == desk.count(Ticket) == 1
    zh = desk.service.post_message(channel="chat", text="快递太慢了，我要退款")
    assert zh["lang"] == "zh"


def test_retried_post_never_creates_a_second_message(desk):
    body = {"channel": "chat", "text": "Refund please", "external_id": "chat-42"}
    r1 = desk.http.post("/v1/messages", json=body, headers={"X-API-Key": desk.service.api_key})
    r2 = desk.http.post("/v1/messages", json=body, headers={"X-API-Key": desk.service.api_key})
    assert (r1.status_code, r2.status_code) == (201, 200)
    m1, m2 = r1.json()["messages"][0], r2.json()["messages"][0]
    assert m1["message_id"] == m2["message_id"] and m2["created"] is False
    batch = desk.service.post_messages([body, {"channel": "chat", "text": "new one"}])
    assert [m["created"] for m in batch] == [False, True]
    assert desk.count(Message) == 2 and desk.count(Ticket) == 2


def test_bad_input_is_refused_and_nothing_is_stored_half(make_app, tmp_path):
    from fastapi.testclient import TestClient

    from tests.serving.conftest import ADMIN_KEY

    app = make_app(f"sqlite:///{tmp_path / 'db.sqlite'}", max_batch=3, max_text_chars=100)
    with TestClient(app) as tc:
        h = {"X-API-Key": ADMIN_KEY}
        ok = {"channel": "chat", "text": "fine"}
        cases = [
            (
                {"messages": [ok, {"channel": "chat", "text": "   "}]},
                422,
                "messages[1].text is empty",
            ),
            ({"messages": [ok] * 4}, 413, "messages: 4 items, the limit is 3"),
            ({"messages": [ok, {"channel": "chat", "text": "x" * 101}]}, 413, "messages[1]: 101"),
            ({"channel": "fax", "text": "hello"}, 422, "channel"),
            ({"channel": "review", "text": "ok", "rating": 9}, 422, "rating"),
            (
                {"messages": [{**ok, "external_id": "a"}, {**ok, "external_id": "a"}]},
                422,
                "messages[1].external_id repeats messages[0]",
            ),
        ]
        for body, status, needle in cases:
            r = tc.post("/v1/messages", json=body, headers=h)
            assert r.status_code == status, (body, r.text)
            assert needle in json.dumps(r.json()), (needle, r.text)
        r = tc.post(
            "/v1/messages",
            content=b"x" * (app.state.settings.max_body_bytes + 1),
            headers={**h, "Content-Type": "application/json"},
        )
        assert r.status_code == 413 and "limit is" in r.json()["detail"]
        with app.state.services.sessions() as s:
            assert s.query(Message).count() == 0 and s.query(Ticket).count() == 0


RAW_EMAIL = """\
From: Jane Buyer <abc123xyz@marketplace.amazon.com>
To: seller@example.com
Subject: Order 112-1234567-7654321: wrong colour sent
Date: Fri, 20 Nov 2026 09:30:00 +0000
Message-ID: <m-1@marketplace.amazon.com>
MIME-Version: 1.0
Content-Type: multipart/alternative; boundary="XX"

--XX
Content-Type: text/html; charset=utf-8

<html><head><style>p {color: red}</style></head><body>
<p>Hello,</p><p>I ordered the <b>blue</b> case but got a pink one. Please send the right one.</p>
<div>-- <br>Jane</div>
<blockquote>On Thu, you wrote: thanks for your order</blockquote>
</body></html>
--XX--
"""

PLAIN_EMAIL = """\
From: buyer@example.com
Subject: Question
Message-ID: <m-2@example.com>
Content-Type: text/plain; charset=utf-8

Does it fit the 2024 model? My order number: 403-9876543-1234567
Thanks

On Mon, 16 Nov 2026 at 10:00, Seller <seller@example.com> wrote:
> We shipped your order.
> Thank you
--
Sent from my iPhone
"""


def test_email_parsed_cleaned_and_idempotent(desk):
    out = desk.service.post_email(RAW_EMAIL.encode(), product_id="B0CASE")
    t = desk.agent.ticket(out["ticket_id"])["message"]
    assert t["order_id"] == "112-1234567-7654321"
    assert t["subject"] == "Order 112-1234567-7654321: wrong colour sent"
    assert "blue case but got a pink one" in t["text"]
    assert "color: red" not in t["text"] and "thanks for your order" not in t["text"]
    assert t["customer_id"] == "abc123xyz@marketplace.amazon.com"
    assert t["received_at"].startswith("2026-11-20T09:30:00")
    again = desk.service.post_email(RAW_EMAIL.encode())
    assert again["message_id"] == out["message_id"] and again["created"] is False
    plain = desk.agent.ticket(desk.service.post_email(PLAIN_EMAIL.encode())["ticket_id"])
    assert (
        plain["message"]["text"]
        == "Does it fit the 2024 model? My order number: 403-9876543-1234567\nThanks"
    )
    assert plain["message"]["order_id"] == "403-9876543-1234567"
    for bad, needle in [
        (b"", "empty"),
        (b"just some words without headers", "not an RFC 822"),
    ]:
        err = _err(desk.service.post_email, bad)
        assert err.status_code == 422 and needle in err.detail, (bad, err.detail)
    assert desk.count(Message) == 2


# -- rules, routing, priority ----------------------------------------------------------


@pytest.mark.parametrize(
    "text,rule,phrase",
    [
        ("My charger caught fire last night!", "safety", "caught fire"),
        ("这个充电器起火了，太危险", "safety", "起火"),
        ("I will contact my lawyer about this", "legal", "my lawyer"),
        ("我要去12315投诉你们", "regulator", "12315"),
        ("I'll file a chargeback with my card", "chargeback", "chargeback"),
    ],
)
def test_critical_rules_override_the_model(desk, text, rule, phrase):
    out = desk.service.post_message(channel="email", text=text)
    assert out["queue"] == "escalations"
    assert out["labels"]["urgency"] == ["critical"]
    hits = {h["rule"]: h for h in out["rule_hits"]}
    assert hits[rule]["phrase"].lower() == phrase.lower()
    if rule == "safety":
        assert "safety_hazard" in out["labels"]["issue_type"]
    # the model's own prediction is kept as it was
    assert out["prediction"]["tasks"]["urgency"]["labels"] is not None


def test_queue_is_ordered_by_the_documented_priority(desk, clock):
    a = desk.service.post_message(channel="email", text="The cable smoked", customer_id="C1")
    clock.advance(hours=5)
    b = desk.service.post_message(channel="email", text="Fire! The lamp burned", customer_id="C2")
    c = desk.service.post_message(channel="email", text="It burned my hand", customer_id="C1")
    clock.advance(hours=1)
    tickets = desk.agent.queue_tickets("escalations")
    assert [t["id"] for t in tickets] == sorted(
        [t["id"] for t in tickets],
        key=lambda i: -next(x["priority"] for x in tickets if x["id"] == i),
    )
    by_id = {t["id"]: t for t in tickets}
    for t in tickets:  # priority = points - hours left to the deadline
        due = datetime.fromisoformat(t["sla_due_at"])
        hours_left = (due - clock.now).total_seconds() / 3600
        assert t["priority"] == pytest.approx(t["base_priority"] - hours_left, abs=0.01)
    # c is C1's second contact: 6 more points than b (same age, same rules)
    pa, pb, pc = (by_id[x["ticket_id"]] for x in (a, b, c))
    assert pc["base_priority"] - pb["base_priority"] == pytest.approx(6 + _neg(pc) - _neg(pb))
    # a waited 5 hours longer than b: 5 more points, same rules
    assert pa["priority"] - pb["priority"] == pytest.approx(5 + _neg(pa) - _neg(pb), abs=0.02)
    top = desk.agent.claim("escalations")
    assert top["id"] == tickets[0]["id"]


def _neg(t) -> float:
    return 6.0 if "negative" in t["labels"]["sentiment"] else 0.0


# -- claims, leases, states -------------------------------------------------------------


def test_claims_leases_and_expiry(desk, clock):
    ids = {
        desk.service.post_message(channel="chat", text=f"fire number {i}")["ticket_id"]
        for i in range(2)
    }
    t1 = desk.agent.claim("escalations")
    t2 = desk.agent2.claim("escalations")
    assert {t1["id"], t2["id"]} == ids and t1["claimed_by"] == "alice"
    assert desk.agent2.claim("escalations") is None
    err = _err(desk.agent2.resolve, t1["id"])
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
    assert _err(desk.agent.resolve, again["id"]).status_code == 409
    assert _err(desk.agent.ticket, 9999).status_code == 404
    assert _err(desk.agent.claim, "nope").status_code == 404


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
    assert _err(desk.agent.reply, t["ticket_id"], "hi").status_code == 409


def test_no_response_needed_by_star_rating(make_app, db_url, tmp_path):
    """The message's rating is the `stars` fact of the routing file's conditions."""
    import yaml
    from fastapi.testclient import TestClient

    from serving.routing import DEFAULT_ROUTING_PATH
    from tests.serving.conftest import Desk

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


# -- labels ------------------------------------------------------------------------------


def test_agent_labels_are_validated_kept_and_exported(desk, tmp_path):
    from model.taxonomy import Taxonomy
    from training.data import read_labelled

    t = desk.service.post_message(channel="email", text="I want my money back", rating=None)
    err = _err(desk.agent.set_labels, t["ticket_id"], {"issue_type": ["teleport"]})
    assert err.status_code == 422 and "unknown label 'teleport'" in err.detail
    err = _err(desk.agent.set_labels, t["ticket_id"], {"mood": "sad"})
    assert err.status_code == 422 and "unknown task" in err.detail
    err = _err(desk.agent.set_labels, t["ticket_id"], {"sentiment": ["negative", "neutral"]})
    assert err.status_code == 422 and "exactly one" in err.detail
    assert desk.count(LabelCorrection) == 0
    fixed = desk.agent.set_labels(
        t["ticket_id"], {"issue_type": ["refund_return"], "sentiment": "negative"}
    )
    assert fixed["labels"]["issue_type"] == ["refund_return"]
    desk.agent2.set_labels(t["ticket_id"], {"urgency": "medium"})
    u = desk.service.post_message(channel="chat", text="all good now")
    desk.agent.set_labels(u["ticket_id"], {"issue_type": [], "sentiment": "positive"})
    path = tmp_path / "labels.jsonl"
    path.write_text(desk.agent.export_labels(), encoding="utf-8")
    rows = {r.text: r for r in read_labelled(path, Taxonomy.default())}
    money = rows["I want my money back"]
    assert money.labels == {
        "issue_type": ["refund_return"],
        "sentiment": ["negative"],
        "urgency": ["medium"],
    }
    assert rows["all good now"].labels["issue_type"] == []
    assert "urgency" not in rows["all good now"].labels  # nobody labelled it: not labelled
    csv_path = tmp_path / "labels.csv"
    csv_path.write_text(desk.agent.export_labels("csv"), encoding="utf-8")
    csv_rows = {r.text: r for r in read_labelled(csv_path, Taxonomy.default())}
    assert csv_rows["I want my money back"].labels == money.labels
    assert csv_rows["all good now"].labels["issue_type"] == []  # "-": labelled, no issue
    assert csv_rows["all good now"].labels["urgency"] is None  # empty: not labelled


# -- reviews -----------------------------------------------------------------------------


def test_reviews_unhandled_negatives_first_and_handled(desk, clock):
    made = []
    for i, (stars, sentiment) in enumerate(
        [(5, "positive"), (1, "negative"), (2, "negative"), (4, "neutral"), (2, "positive")]
    ):
        out = desk.service.post_message(
            channel="review",
            text=f"review number {i}",
            rating=stars,
            product_id="B0REV" if i < 3 else "B0OTHER",
            customer_id=f"R{i}",
        )
        desk.agent.set_labels(out["ticket_id"], {"sentiment": sentiment})
        made.append(out["message_id"])
        clock.advance(minutes=10)
    desk.service.post_message(channel="chat", text="about my review", customer_id="R1")
    reviews = desk.agent.reviews()
    # negatives first, newest first: two stars count as negative whatever the label says
    assert [r["id"] for r in reviews[:3]] == [made[4], made[2], made[1]]
    desk.agent.mark_review_handled(made[4])
    reviews = desk.agent.reviews()
    assert [r["id"] for r in reviews[:2]] == [made[2], made[1]]
    assert reviews[0]["ticket_id"] and not reviews[0]["handled"]
    assert next(r for r in reviews if r["id"] == made[1])["other_messages_of_customer"] == 1
    desk.agent.mark_review_handled(made[2], note="replied publicly")
    reviews = desk.agent.reviews()
    assert reviews[0]["id"] == made[1]
    handled = next(r for r in reviews if r["id"] == made[2])
    assert handled["handled"] and handled["handled_by"] == "alice"
    assert handled["handled_note"] == "replied publicly"
    assert {r["id"] for r in desk.agent.reviews(product_id="B0REV")} == set(made[:3])
    assert [r["id"] for r in desk.agent.reviews(stars=[1, 2], handled=False)] == [made[1]]
    assert [r["id"] for r in desk.agent.reviews(sentiment="neutral")] == [made[3]]
    assert [r["id"] for r in desk.agent.reviews(sentiment="positive")] == [made[4], made[0]]
    assert _err(desk.agent.mark_review_handled, 999).status_code == 404


# -- customers ---------------------------------------------------------------------------


def test_customer_history_in_time_order(desk, clock):
    first = desk.service.post_message(channel="email", text="where is my parcel", customer_id="B1")
    clock.advance(days=2)
    review = desk.service.post_message(
        channel="review", text="never buying again", rating=1, customer_id="B1", product_id="P1"
    )
    desk.service.post_message(channel="chat", text="someone else", customer_id="B2")
    desk.agent.set_labels(first["ticket_id"], {"sentiment": "neutral"})
    desk.agent.set_labels(review["ticket_id"], {"sentiment": "negative"})
    clock.advance(hours=1)
    desk.agent.no_response_needed(first["ticket_id"])
    h = desk.agent.customer("B1")
    assert h["messages"] == 2 and h["open_tickets"] == [review["ticket_id"]]
    assert [p["sentiment"] for p in h["sentiment_trend"]] == ["neutral", "negative"]
    assert h["sentiment_mean_last_5"] == -0.5
    kinds = [e["kind"] for e in h["timeline"]]
    assert kinds == [
        "message",
        "review",
        "label_correction",
        "label_correction",
        "ticket_no_response_needed",
    ]
    times = [e["at"] for e in h["timeline"]]
    assert times == sorted(times)
    assert all(e["detail"].get("text") != "someone else" for e in h["timeline"])
    assert _err(desk.agent.customer, "nobody").status_code == 404


# -- statistics ------------------------------------------------------------------------


def test_agent_statistics_and_kpis(desk, clock):
    made = [desk.service.post_message(channel="chat", text=f"smoke {i}") for i in range(3)]
    # chat SLA is 4 h: alice answers #0 after 1 h and #1 after 3 h, bob answers #2 after 6 h
    clock.advance(hours=1)
    t0 = desk.agent.claim("escalations")
    desk.agent.reply(t0["id"], "on it", wait_for_customer=True)
    clock.advance(hours=2)
    t1 = desk.agent.claim("escalations")
    desk.agent.reply(t1["id"], "on it")
    desk.agent.resolve(t1["id"])
    clock.advance(hours=3)
    t2 = desk.agent2.claim("escalations")
    desk.agent2.reply(t2["id"], "sorry for the wait")
    desk.agent2.set_labels(t2["id"], {"urgency": "high"})
    assert {t0["id"], t1["id"], t2["id"]} == {m["ticket_id"] for m in made}
    rows = {r["agent"]: r for r in desk.agent.agent_stats()["agents"]}
    alice, bob = rows["alice"], rows["bob"]
    assert alice["tickets_handled"] == 2 and bob["tickets_handled"] == 1
    assert alice["first_response_hours_median"] == pytest.approx(2.0)
    assert alice["first_response_hours_p90"] == pytest.approx(2.8)
    assert alice["resolution_hours_median"] == pytest.approx(3.0)
    assert alice["sla_met_pct"] == 100.0 and bob["sla_met_pct"] == 0.0
    assert bob["labels_corrected"] == 1 and alice["labels_corrected"] == 0
    kpi = next(q for q in desk.agent.kpis()["queues"] if q["queue"] == "escalations")
    assert kpi["tickets_handled"] == 3 and kpi["sla_met_pct"] == pytest.approx(66.7)
    empty = desk.agent.agent_stats(
        since=clock.now - timedelta(days=90), until=clock.now - timedelta(days=60)
    )
    assert empty["agents"] == []
    assert _err(desk.agent.kpis, since=clock.now, until=clock.now).status_code == 422


# -- ops ---------------------------------------------------------------------------------


def test_metrics_in_prometheus_format(desk, clock):
    desk.service.post_message(channel="chat", text="smoke everywhere")
    clock.advance(hours=30)
    text = desk.http.get("/metrics").text
    assert 'carelens_request_seconds_count{method="POST",route="/v1/messages",status="201"}' in text
    assert "carelens_predictions_total{" in text
    assert 'carelens_queue_depth{queue="escalations",state="open"} 1.0' in text
    assert 'carelens_sla_breached_tickets{queue="escalations"} 1.0' in text
    assert "carelens_model_info{version=" in text
