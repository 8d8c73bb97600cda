"""A buyer's history through HTTP, in time order."""

from __future__ import annotations

from tests.serving.factories import error_of


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
    assert error_of(desk.agent.customer, "nobody").status_code == 404
