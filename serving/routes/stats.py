"""Agent statistics and queue KPIs."""

from __future__ import annotations

from datetime import datetime, timedelta

from fastapi import APIRouter, HTTPException, Query
from pydantic import BaseModel, Field

from serving.deps import AgentKey, Services, Svc
from serving.errors import ApiRoute
from serving.fields import Timestamp
from serving.signals import (
    SignalConfig,
    alert_view,
    current,
    recent_alerts,
    training_distribution,
)
from serving.stats import Period, agent_stats, queue_kpis
from serving.store import as_utc
from serving.tickets import buyer_message_late_rates

router = APIRouter(prefix="/v1/stats", tags=["statistics"], route_class=ApiRoute)


LateRates = dict[str, float | None]  # "7d", "30d", "90d" -> share answered late or never


class Csat(BaseModel):
    surveys_sent: int
    answered: int
    response_rate: float | None
    mean_stars: float | None
    satisfied_share: float | None = Field(description="Share of answers with 4 or 5 stars.")


class Figures(BaseModel):
    tickets_handled: int
    first_response_hours_median: float | None
    first_response_hours_p90: float | None
    resolution_hours_median: float | None
    sla_met_pct: float | None
    reopened: int
    csat: Csat


class AgentFigures(Figures):
    agent: str
    key_id: int | None
    labels_corrected: int


class QueueFigures(Figures):
    queue: str
    late_response_rate: LateRates


class BuyerLateRates(BaseModel):
    shop: LateRates
    marketplaces: dict[str, LateRates]


class CsatFigures(BaseModel):
    overall: Csat
    issue_types: dict[str, Csat]
    weeks: dict[str, Csat] = Field(description="Per ISO week of the resolution (2026-W47).")


class AgentStats(BaseModel):
    since: datetime
    until: datetime
    agents: list[AgentFigures]


class Kpis(BaseModel):
    since: datetime
    until: datetime
    queues: list[QueueFigures]
    buyer_messages_late_response: BuyerLateRates = Field(
        description="The late-response rate as Amazon counts it: buyer e-mails only."
    )
    csat: CsatFigures


def _period(svc: Services, since: datetime | None, until: datetime | None):
    now = svc.clock()
    until = as_utc(until) if until else now
    since = as_utc(since) if since else until - timedelta(days=30)
    if since >= until:
        raise HTTPException(422, detail="since: must be before until")
    return since, until, now


@router.get("/agents")
def stats_agents(
    *,
    since: Timestamp | None = Query(None, description="Default: 30 days before `until`."),
    until: Timestamp | None = Query(None, description="Default: now."),
    svc: Svc,
    _: AgentKey,
) -> AgentStats:
    """Per agent over the period: tickets handled, median and p90 first-response hours
    (tickets they answered first), median resolution hours, SLA met %, labels corrected,
    reopened (their resolutions that a customer's follow-up reopened in the period), and
    CSAT of the tickets they resolved."""
    return figures(svc, since, until, agents=True, queues=False)


@router.get("/kpis")
def stats_kpis(
    *,
    since: Timestamp | None = Query(None, description="Default: 30 days before `until`."),
    until: Timestamp | None = Query(None, description="Default: now."),
    svc: Svc,
    _: AgentKey,
) -> Kpis:
    """Per queue over the period: the same figures (reopened: tickets of the queue reopened
    in the period), plus late-response rates 7/30/90 d and CSAT; the late-response rate
    as Amazon counts it (buyer e-mails only, shop-wide and per marketplace); CSAT
    overall, per issue type and per week (surveys sent, answered, response rate, mean
    stars, share of 4-5 stars)."""
    return figures(svc, since, until, agents=False, queues=True)


def figures(
    svc: Services, since: datetime | None, until: datetime | None, agents: bool, queues: bool
) -> dict:
    """The period's agent figures and/or queue KPIs, read from the store once."""
    since, until, now = _period(svc, since, until)
    out: dict = {"since": since, "until": until}
    with svc.sessions() as s:
        period = Period.load(s, since, until)
        if agents:
            out["agents"] = agent_stats(s, since, until, now, period)
        if queues:
            out["queues"] = queue_kpis(s, list(svc.routing.queues), since, until, now, period)
            out["buyer_messages_late_response"] = buyer_message_late_rates(s, now)
            out["csat"] = {k: period.satisfaction[k] for k in ("overall", "issue_types", "weeks")}
    return out


@router.get("/signals")
def stats_signals(
    *,
    alerts: int = Query(50, ge=0, le=500, description="How many recent alerts to list."),
    svc: Svc,
    _: AgentKey,
) -> dict:
    """What asks for attention beyond single tickets, as of now: issue-type spikes per
    product; per language, shifts in the share of negative and of high-or-critical
    messages (recent week against the four before, every test with its figures); per
    task, the drift of the model's labels in the last full week from its training rows
    (population stability index); and the alerts sent for them (``serving.signals``)."""
    with svc.sessions() as s:
        out = current(
            s,
            svc.clock(),
            SignalConfig.from_settings(svc.settings),
            training_distribution(svc.predictor),
        )
        out["alerts"] = [alert_view(a) for a in recent_alerts(s, alerts)]
    return out
