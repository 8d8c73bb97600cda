"""A buyer's history: every message, review, ticket event, label correction, consent
change and campaign contact of one customer id, in time order, with the sentiment
trend and the open tickets."""

from __future__ import annotations

from datetime import datetime
from typing import Any

from sqlalchemy import select
from sqlalchemy.orm import Session, selectinload

from serving.campaigns import consent_events, consent_states
from serving.store import (
    CLOSED_STATES,
    Campaign,
    CampaignContact,
    LabelCorrection,
    Message,
    Ticket,
)
from serving.tickets import effective_state

SENTIMENT_SCORE = {"negative": -1.0, "neutral": 0.0, "positive": 1.0}


def history(s: Session, customer_id: str, now: datetime) -> dict[str, Any] | None:
    """The fields of ``GET /v1/customers/{id}``; None when nothing is known of the id."""
    msgs = list(
        s.scalars(
            select(Message)
            .where(Message.customer_id == customer_id)
            .order_by(Message.received_at, Message.id)
            .options(
                selectinload(Message.ticket).selectinload(Ticket.events),
                selectinload(Message.prediction),
            )
        )
    )
    contacts = list(
        s.execute(
            select(CampaignContact, Campaign)
            .join(Campaign, Campaign.id == CampaignContact.campaign_id)
            .where(
                CampaignContact.customer_id == customer_id,
                CampaignContact.included.is_(True),
            )
            .order_by(CampaignContact.id)
        )
    )
    consents = consent_events(s, customer_id)
    consent = consent_states(s, [customer_id]).get(customer_id)
    if not msgs and not contacts and not consents:
        return None
    ticket_ids = [m.ticket.id for m in msgs if m.ticket]
    corrections = list(
        s.scalars(select(LabelCorrection).where(LabelCorrection.ticket_id.in_(ticket_ids)))
    )
    timeline: list[dict[str, Any]] = []
    trend = []
    for m in msgs:
        t = m.ticket
        labels = t.labels if t else (m.prediction.labels if m.prediction else {})
        timeline.append(
            dict(
                at=m.received_at,
                kind="review" if m.channel == "review" else "message",
                message_id=m.id,
                ticket_id=t.id if t else None,
                detail={
                    "channel": m.channel,
                    "subject": m.subject,
                    "text": m.text,
                    "rating": m.rating,
                    "product_id": m.product_id,
                    "order_id": m.order_id,
                    "labels": labels,
                    "queue": t.queue if t else None,
                    "state": effective_state(t, now) if t else None,
                    "handled": m.handled_at is not None if m.channel == "review" else None,
                },
            )
        )
        sentiment = (labels.get("sentiment") or [None])[0]
        trend.append(
            {
                "at": m.received_at,
                "message_id": m.id,
                "sentiment": sentiment,
                "score": SENTIMENT_SCORE.get(sentiment),
            }
        )
        for e in t.events if t else []:
            if e.kind in ("created", "labels_corrected"):  # corrections are listed below
                continue
            timeline.append(
                dict(
                    at=e.at,
                    kind=f"ticket_{e.kind}",
                    message_id=m.id,
                    ticket_id=t.id,
                    detail={"actor": e.actor, "actor_key_id": e.actor_key_id, "note": e.note},
                )
            )
    for c in corrections:
        timeline.append(
            dict(
                at=c.created_at,
                kind="label_correction",
                ticket_id=c.ticket_id,
                detail={"actor": c.actor, "actor_key_id": c.actor_key_id, "labels": c.labels},
            )
        )
    for e in consents:
        timeline.append(
            dict(
                at=e.at,
                kind=e.kind,
                detail={"source": e.source, "actor": e.actor, "actor_key_id": e.actor_key_id},
            )
        )
    for contact, campaign in contacts:
        timeline.append(
            dict(
                at=contact.at,
                kind="campaign_contact",
                detail={
                    "campaign_id": campaign.id,
                    "campaign": campaign.name,
                    "campaign_kind": campaign.kind,
                    "channel": campaign.channel,
                    "run_id": contact.run_id,
                    "order_id": contact.order_id,
                },
            )
        )
    timeline.sort(key=lambda e: e["at"])
    scores = [p["score"] for p in trend if p["score"] is not None]

    def mean(xs: list[float]) -> float | None:
        return round(sum(xs) / len(xs), 3) if xs else None

    return dict(
        customer_id=customer_id,
        messages=len(msgs),
        first_contact_at=msgs[0].received_at if msgs else None,
        last_contact_at=msgs[-1].received_at if msgs else None,
        open_tickets=[
            m.ticket.id for m in msgs if m.ticket and m.ticket.state not in CLOSED_STATES
        ],
        sentiment_trend=trend,
        sentiment_mean_last_5=mean(scores[-5:]),
        sentiment_mean_before=mean(scores[:-5]),
        consent=(
            {"consented": consent.consented, "opted_out": consent.opted_out, "since": consent.since}
            if consent
            else None
        ),
        timeline=timeline,
    )
