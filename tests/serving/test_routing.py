"""Critical rules and the routing file through HTTP: rules override the model; queues
in the documented priority order."""

from __future__ import annotations

from datetime import datetime

import pytest


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
