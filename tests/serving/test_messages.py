"""Messages in through HTTP, on SQLite and PostgreSQL: stored in one go, idempotent,
bad input refused with nothing half-stored, e-mails parsed."""

from __future__ import annotations

import json
from datetime import UTC, datetime, timedelta

from serving.store import Message, Prediction, Ticket
from tests.serving.factories import error_of


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


def test_the_client_sends_every_field_of_a_message_and_of_a_classify_request(desk):
    """The client's request fields are the API's (carelens_client.types.MessageIn)."""
    at = datetime(2026, 11, 2, 9, 30, tzinfo=UTC)
    stored = desk.service.post_message(
        channel="email", text="Where is my parcel?", customer_id="c9", customer_name="Ann",
        order_id="111-2", marketplace="amazon.de", received_at=at,
    )  # fmt: skip
    message = desk.agent.ticket(stored["ticket_id"])["message"]
    assert message["customer_name"] == "Ann" and message["marketplace"] == "amazon.de"
    assert datetime.fromisoformat(message["received_at"]).replace(tzinfo=UTC) == at
    out = desk.service.classify(["Broke after a day", "Broke after a day"], ratings=[1, None])
    assert len(out["predictions"]) == 2
    assert error_of(desk.service.classify, ["x"], ratings=[9]).status_code == 422


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

    from tests.serving.factories import ADMIN_KEY

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
        err = error_of(desk.service.post_email, bad)
        assert err.status_code == 422 and needle in err.detail, (bad, err.detail)
    assert desk.count(Message) == 2
