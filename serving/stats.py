"""Agent statistics and KPIs from the ticket history (events carry who and when).

First-response time = first reply - message received; resolution time = resolved -
received (resolved tickets only); SLA met = first reply (or no-response-needed) by the
deadline. Percentiles: numpy's linear interpolation.

Reopened = ``reopened`` events in the period (a follow-up from the customer reopened a
resolved ticket, see ``serving.tickets.find_reopenable``), counted for the agent whose
``resolved`` event came last before the reopen and for the ticket's queue.

CSAT (``serving.surveys``): per agent for the tickets they resolved, per queue, issue
type and week, over the tickets resolved in the period (reviews excluded).

An agent is a key (its id, shown with its name): two keys that carry the same name
are two agents. Rows recorded without a key id count under the name alone."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from typing import Any

import numpy as np
from sqlalchemy import and_, or_, select
from sqlalchemy.orm import Session, selectinload

from serving.store import LabelCorrection, Ticket, TicketEvent
from serving.surveys import csat, csat_figures
from serving.tickets import TicketFacts, is_breached, late_rates_by, no_rates, ticket_facts

ACTIONS = ("replied", "resolved", "no_response_needed")

Agent = tuple[int | None, str]  # (key id, name)


def _agent(key_id: int | None, name: str | None) -> Agent | None:
    return None if name is None else (key_id, name)


def _order(agent: Agent) -> tuple[str, int]:
    return agent[1], -1 if agent[0] is None else agent[0]


def _hours(values: list[float], q: float) -> float | None:
    return round(float(np.percentile(values, q)), 3) if values else None


def _summary(tickets: list[TicketFacts], now: datetime) -> dict[str, Any]:
    frt = [
        (t.first_response_at - t.received_at).total_seconds() / 3600
        for t in tickets
        if t.first_response_at is not None
    ]
    res = [
        (t.resolved_at - t.received_at).total_seconds() / 3600
        for t in tickets
        if t.state == "resolved" and t.resolved_at is not None
    ]
    due = [t for t in tickets if t.first_response_at is not None or now > t.sla_due_at]
    return {
        "tickets_handled": len(tickets),
        "first_response_hours_median": _hours(frt, 50),
        "first_response_hours_p90": _hours(frt, 90),
        "resolution_hours_median": _hours(res, 50),
        "sla_met_pct": round(100 * sum(not is_breached(t, now) for t in due) / len(due), 1)
        if due
        else None,
    }


def _acted_in(since: datetime, until: datetime):
    """The ids of tickets with an agent action in [since, until]. Tickets the routing
    rules closed on arrival (no_response_needed with no actor, e.g. positive reviews)
    are no one's work."""
    return select(TicketEvent.ticket_id).where(
        TicketEvent.kind.in_(ACTIONS),
        TicketEvent.actor.is_not(None),
        TicketEvent.at >= since,
        TicketEvent.at <= until,
    )


def reopens(session: Session, since: datetime, until: datetime) -> list[tuple[Agent | None, str]]:
    """(resolving agent, queue) of every reopen in [since, until]."""
    rows = session.scalars(
        select(Ticket)
        .where(
            Ticket.id.in_(
                select(TicketEvent.ticket_id).where(
                    TicketEvent.kind == "reopened",
                    TicketEvent.at >= since,
                    TicketEvent.at <= until,
                )
            )
        )
        .options(selectinload(Ticket.events))
    )
    out = []
    for t in rows:
        for e in t.events:
            if e.kind == "reopened" and since <= e.at <= until:
                resolver = None
                for r in t.events:
                    if r.kind == "resolved" and r.id < e.id:
                        resolver = _agent(r.actor_key_id, r.actor)
                out.append((resolver, t.queue))
    return out


@dataclass
class Period:
    """What the figures of [since, until] read, loaded once: the tickets with an agent
    action, the reopens and the CSAT figures."""

    since: datetime
    until: datetime
    tickets: list[TicketFacts]
    reopens: list[tuple[Agent | None, str]]
    satisfaction: dict[str, Any]

    @classmethod
    def load(cls, session: Session, since: datetime, until: datetime) -> Period:
        """One read of the tickets with an agent action in the period or resolved in it
        (the CSAT figures' tickets)."""
        resolved = and_(
            Ticket.state == "resolved", Ticket.resolved_at >= since, Ticket.resolved_at <= until
        )
        facts = ticket_facts(
            session, or_(Ticket.id.in_(_acted_in(since, until)), resolved), kinds=ACTIONS
        )
        worked = [
            t
            for t in facts
            if any(
                e.kind in ACTIONS and e.actor is not None and since <= e.at <= until
                for e in t.events
            )
        ]
        return cls(
            since,
            until,
            worked,
            reopens(session, since, until),
            csat_figures(session, since, until, resolver, facts),
        )


def agent_stats(
    session: Session, since: datetime, until: datetime, now: datetime, period: Period | None = None
) -> list[dict]:
    """Per agent: tickets handled, first response, resolution, SLA met, labels corrected,
    reopened, CSAT (``period``: already loaded figures of [since, until])."""
    period = period or Period.load(session, since, until)
    tickets = period.tickets
    by_agent: dict[Agent, list[TicketFacts]] = {}
    first_by: dict[int, Agent | None] = {}
    for t in tickets:
        actors = {
            _agent(e.actor_key_id, e.actor)
            for e in t.events
            if e.kind in ACTIONS and since <= e.at <= until
        }
        for actor in actors - {None}:
            by_agent.setdefault(actor, []).append(t)
        first = next((e for e in t.events if e.kind == "replied"), None)
        first_by[t.id] = _agent(first.actor_key_id, first.actor) if first else None
    corrections: dict[Agent, int] = {}
    for key_id, name in session.execute(
        select(LabelCorrection.actor_key_id, LabelCorrection.actor).where(
            LabelCorrection.created_at >= since, LabelCorrection.created_at <= until
        )
    ):
        corrections[(key_id, name)] = corrections.get((key_id, name), 0) + 1
    reopened: dict[Agent, int] = {}
    for agent, _queue in period.reopens:
        if agent is not None:
            reopened[agent] = reopened.get(agent, 0) + 1
    satisfaction = period.satisfaction["agents"]
    out = []
    agents = set(by_agent) | set(corrections) | set(reopened) | set(satisfaction)
    for agent in sorted(agents, key=_order):
        mine = by_agent.get(agent, [])
        # response times count for the agent who sent the first reply
        answered = [t for t in mine if first_by.get(t.id) == agent or t.first_response_at is None]
        row = {"agent": agent[1], "key_id": agent[0], **_summary(answered, now)}
        row["tickets_handled"] = len(mine)
        row["labels_corrected"] = corrections.get(agent, 0)
        row["reopened"] = reopened.get(agent, 0)
        row["csat"] = satisfaction.get(agent) or csat(0, [])
        out.append(row)
    return out


def resolver(ticket: Ticket | TicketFacts) -> Agent | None:
    """Who resolved the ticket last (the agent its satisfaction survey counts for)."""
    last = None
    for e in ticket.events:
        if e.kind == "resolved":
            last = _agent(e.actor_key_id, e.actor)
    return last


def queue_kpis(
    session: Session,
    queues: list[str],
    since: datetime,
    until: datetime,
    now: datetime,
    period: Period | None = None,
) -> list[dict]:
    """Per queue: the same figures, late-response rates and CSAT."""
    period = period or Period.load(session, since, until)
    tickets = period.tickets
    reopened: dict[str, int] = {}
    for _agent, queue in period.reopens:
        reopened[queue] = reopened.get(queue, 0) + 1
    satisfaction = period.satisfaction["queues"]
    out = []
    late = late_rates_by(session, now, Ticket.queue)
    for q in queues:
        mine = [t for t in tickets if t.queue == q]
        out.append(
            {
                "queue": q,
                **_summary(mine, now),
                "reopened": reopened.get(q, 0),
                "late_response_rate": late.get(q, no_rates()),
                "csat": satisfaction.get(q) or csat(0, []),
            }
        )
    return out
