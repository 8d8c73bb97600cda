"""Returns and refunds as a flow: opened from a ticket, moved state by state with who
and when, listed with their age, and the figures."""

from __future__ import annotations

import pytest
from carelens_client import CarelensError


def _ticket(desk, customer="c1", product="B0KETTLE", order="111-1"):
    return desk.service.post_message(
        channel="email",
        text="The kettle leaks, I want to return it",
        customer_id=customer,
        product_id=product,
        order_id=order,
    )["ticket_id"]


def _err(fn, *a, **kw) -> CarelensError:
    with pytest.raises(CarelensError) as err:
        fn(*a, **kw)
    return err.value


def test_a_return_from_request_to_refund(desk, clock):
    ticket_id = _ticket(desk)
    r = desk.agent.open_return(ticket_id, note="unused, in its box")
    assert (r["state"], r["order_id"], r["product_id"], r["customer_id"]) == (
        "requested",
        "111-1",
        "B0KETTLE",
        "c1",
    )
    assert r["next_states"] == ["approved", "rejected"] and r["open"] and r["age_hours"] == 0
    assert _err(desk.agent.open_return, ticket_id).status_code == 409  # one open return
    clock.advance(hours=5)
    for state in ("approved", "label_sent", "received"):
        r = desk.agent.move_return(r["id"], state)
    assert r["age_hours"] == 5.0
    err = _err(desk.agent.move_return, r["id"], "approved")
    assert err.status_code == 409 and "can move to refunded, rejected" in err.detail
    clock.advance(hours=19)
    r = desk.agent2.move_return(r["id"], "refunded", note="refunded in full")
    assert not r["open"] and r["age_hours"] is None and r["next_states"] == []
    assert [(h["state"], h["actor"]) for h in r["history"]] == [
        ("requested", "alice"),
        ("approved", "alice"),
        ("label_sent", "alice"),
        ("received", "alice"),
        ("refunded", "bob"),
    ]
    stats = desk.agent.return_stats()
    assert stats["refunded"] == 1 and stats["hours_to_refund_median"] == 24.0
    assert stats["rejected_share"] == 0.0
    assert list(stats["reasons_per_product"]) == ["B0KETTLE"]
    assert desk.agent.open_return(ticket_id)["state"] == "requested"  # the first is closed
    returns = desk.agent.product_insights("B0KETTLE")["returns"]
    assert (returns["requested"], returns["open"], returns["refunded"]) == (2, 1, 1)


def test_returns_listed_by_state_product_and_buyer(desk):
    a = desk.agent.open_return(_ticket(desk, "c1", "B0KETTLE", "o-1"))
    b = desk.agent.open_return(_ticket(desk, "c2", "B0TOASTER", "o-2"))
    desk.agent.move_return(b["id"], "rejected", note="used")
    assert [r["id"] for r in desk.agent.returns(open=True)] == [a["id"]]
    assert [r["id"] for r in desk.agent.returns(state="rejected")] == [b["id"]]
    assert [r["id"] for r in desk.agent.returns(product_id="B0KETTLE")] == [a["id"]]
    assert [r["id"] for r in desk.agent.returns(customer_id="c2")] == [b["id"]]
    assert desk.agent.returns(after_id=b["id"]) == []
    assert desk.agent.return_stats()["rejected_share"] == 1.0
    assert _err(desk.agent.move_return, 999, "approved").status_code == 404
    assert _err(desk.agent.open_return, 999).status_code == 404
    assert _err(desk.agent.move_return, a["id"], "sideways").status_code == 422
