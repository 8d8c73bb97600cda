"""Satisfaction surveys (CSAT): the signed link of a resolved ticket, the customer's
answer, and the figures.

The link is ``{CARELENS_PUBLIC_URL}/survey/{ticket_id}.{signature}``: an HMAC of the
ticket id under the service's secret (``serving.links``), so it needs no login and no stored row, cannot be
forged for another ticket, and is single-use because a ticket takes one answer (the
unique ticket id of ``survey_answers``). It expires ``CARELENS_SURVEY_DAYS`` after the
ticket was resolved. Reviews get no survey (a review is its own rating).

CSAT figures (``csat``): surveys sent = resolved tickets with a survey in the period;
response rate = answered / sent; mean stars; share of 4 and 5 stars.
"""

from __future__ import annotations

import hmac
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

from sqlalchemy import select
from sqlalchemy.orm import Session

from serving.links import SIG_CHARS, sign
from serving.store import Message, SurveyAnswer, Ticket


def _sig(secret: bytes, ticket_id: int) -> str:
    return sign(secret, "survey", str(ticket_id))


def token(secret: bytes, ticket_id: int) -> str:
    return f"{ticket_id}.{_sig(secret, ticket_id)}"


def survey_url(public_url: str, secret: bytes, ticket_id: int) -> str:
    return f"{public_url.rstrip('/')}/survey/{token(secret, ticket_id)}"


def ticket_of_token(secret: bytes, value: str) -> int | None:
    """The ticket id a token names, or None when it is not one of ours."""
    tid, _, sig = value.partition(".")
    if not tid.isdigit() or len(tid) > 18 or len(sig) != SIG_CHARS:
        return None
    ticket_id = int(tid)
    return ticket_id if hmac.compare_digest(sig, _sig(secret, ticket_id)) else None


@dataclass(frozen=True)
class SurveyState:
    """What the link leads to: ``form``, ``answered``, ``expired`` or ``invalid``."""

    state: str
    ticket: Ticket | None = None
    lang: str = "en"


def survey_state(
    session: Session, secret: bytes, value: str, now: datetime, days: int
) -> SurveyState:
    ticket_id = ticket_of_token(secret, value)
    ticket = session.get(Ticket, ticket_id) if ticket_id is not None else None
    if ticket is None or ticket.message is None or ticket.message.channel == "review":
        return SurveyState("invalid")
    lang = "zh" if ticket.message.lang == "zh" else "en"
    if session.scalar(select(SurveyAnswer.id).where(SurveyAnswer.ticket_id == ticket.id)):
        return SurveyState("answered", ticket, lang)
    if ticket.state != "resolved" or ticket.resolved_at is None:
        return SurveyState("invalid", ticket, lang)
    if now > ticket.resolved_at + timedelta(days=days):
        return SurveyState("expired", ticket, lang)
    return SurveyState("form", ticket, lang)


def record_answer(
    session: Session, ticket: Ticket, stars: int, comment: str | None, lang: str, now: datetime
) -> None:
    """The answer (the caller's transaction; a second one for the ticket fails on the
    unique ticket id)."""
    session.add(
        SurveyAnswer(ticket_id=ticket.id, stars=stars, comment=comment, lang=lang, answered_at=now)
    )
    session.flush()


def csat(sent: int, stars: list[int]) -> dict[str, Any]:
    """Sent, answered, response rate, mean stars, share of 4-5 stars."""
    return {
        "surveys_sent": sent,
        "answered": len(stars),
        "response_rate": round(len(stars) / sent, 4) if sent else None,
        "mean_stars": round(sum(stars) / len(stars), 3) if stars else None,
        "satisfied_share": round(sum(s >= 4 for s in stars) / len(stars), 4) if stars else None,
    }


def csat_figures(
    session: Session, since: datetime, until: datetime, resolver_of, facts=None
) -> dict[str, Any]:
    """CSAT of the tickets resolved in [since, until] (reviews excluded): overall and
    per agent (keyed by ``resolver_of(ticket)``, e.g. (key id, name)), queue, issue
    type and ISO week of the resolution. ``facts``: ticket facts already read that
    include those tickets (``serving.tickets.ticket_facts``)."""
    from serving.tickets import ticket_facts

    where = (
        Ticket.state == "resolved",
        Ticket.resolved_at >= since,
        Ticket.resolved_at <= until,
        Message.channel != "review",
    )
    if facts is None:
        tickets = ticket_facts(session, *where)
    else:
        tickets = [
            t
            for t in facts
            if t.state == "resolved"
            and t.resolved_at is not None
            and since <= t.resolved_at <= until
            and t.channel != "review"
        ]
    resolved = select(Ticket.id).join(Message, Message.id == Ticket.message_id).where(*where)
    answers = dict(
        session.execute(
            select(SurveyAnswer.ticket_id, SurveyAnswer.stars).where(
                SurveyAnswer.ticket_id.in_(resolved)
            )
        ).all()
    )
    groups: dict[str, dict[str, list]] = {
        "agents": {},
        "queues": {},
        "issue_types": {},
        "weeks": {},
    }
    for t in tickets:
        agent = resolver_of(t)
        if agent is not None:
            groups["agents"].setdefault(agent, []).append(t)
        groups["queues"].setdefault(t.queue, []).append(t)
        for issue in (t.labels or {}).get("issue_type") or ["(none)"]:
            groups["issue_types"].setdefault(issue, []).append(t)
        year, week, _ = t.resolved_at.isocalendar()
        groups["weeks"].setdefault(f"{year}-W{week:02d}", []).append(t)

    def of(ts: list) -> dict[str, Any]:
        return csat(len(ts), [answers[t.id] for t in ts if t.id in answers])

    return {
        "overall": of(tickets),
        **{n: {k: of(v) for k, v in g.items()} for n, g in groups.items()},
    }
