"""Agent statistics and queue KPIs through HTTP."""

from __future__ import annotations

from datetime import timedelta

import pytest

from tests.serving.factories import error_of


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
    assert error_of(desk.agent.kpis, since=clock.now, until=clock.now).status_code == 422
