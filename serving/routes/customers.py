"""Customer history: everything one buyer wrote and what became of it."""

from __future__ import annotations

from datetime import datetime
from typing import Any

from fastapi import APIRouter, Depends, HTTPException
from pydantic import BaseModel, Field
from sqlalchemy import select
from sqlalchemy.orm import selectinload

from serving.auth import Principal
from serving.campaigns import consent_states
from serving.deps import Services, agent_role, services
from serving.errors import ApiRoute
from serving.fields import CustomerId
from serving.store import (
    CLOSED_STATES,
    Campaign,
    CampaignContact,
    ConsentEvent,
    LabelCorrection,
    Message,
    Ticket,
)
from serving.tickets import effective_state

router = APIRouter(tags=["customers"], route_class=ApiRoute)

SENTIMENT_SCORE = {"negative": -1.0, "neutral": 0.0, "positive": 1.0}


class CustomerEvent(BaseModel):
    at: datetime
    kind: str = Field(
        description="message, review, ticket_* event, label_correction, consent, opt_out "
        "or campaign_contact"
    )
    message_id: int | None = None
    ticket_id: int | None = None
    detail: dict[str, Any]


class CustomerHistory(BaseModel):
    customer_id: str
    messages: int
    first_contact_at: datetime | None
    last_contact_at: datetime | None
    open_tickets: list[int]
    sentiment_trend: list[dict[str, Any]] = Field(
        description="Per message in time order: sentiment and its score (-1, 0, 1)."
    )
    sentiment_mean_last_5: float | None
    sentiment_mean_before: float | None
    consent: dict[str, Any] | None = Field(
        None,
        description="Marketing consent in force (consented, opted_out, since), if recorded.",
    )
    timeline: list[CustomerEvent]


@router.get("/v1/customers/{customer_id}", response_model=CustomerHistory)
def customer_history(
    customer_id: CustomerId, svc: Services = Depends(services), _: Principal = Depends(agent_role)
) -> CustomerHistory:
    """Every message, review, ticket event and label of one buyer in time order, with
    the sentiment trend and the open tickets."""
    now = svc.clock()
    with svc.sessions() as s:
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
        consents = list(
            s.scalars(
                select(ConsentEvent)
                .where(ConsentEvent.customer_id == customer_id)
                .order_by(ConsentEvent.at, ConsentEvent.id)
            )
        )
        consent = consent_states(s, [customer_id]).get(customer_id)
        if not msgs and not contacts and not consents:
            raise HTTPException(404, detail=f"no messages from customer {customer_id!r}")
        ticket_ids = [m.ticket.id for m in msgs if m.ticket]
        corrections = list(
            s.scalars(select(LabelCorrection).where(LabelCorrection.ticket_id.in_(ticket_ids)))
        )
    timeline: list[CustomerEvent] = []
    trend = []
    for m in msgs:
        t = m.ticket
        labels = t.labels if t else (m.prediction.labels if m.prediction else {})
        timeline.append(
            CustomerEvent(
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
                CustomerEvent(
                    at=e.at,
                    kind=f"ticket_{e.kind}",
                    message_id=m.id,
                    ticket_id=t.id,
                    detail={"actor": e.actor, "actor_key_id": e.actor_key_id, "note": e.note},
                )
            )
    for c in corrections:
        timeline.append(
            CustomerEvent(
                at=c.created_at,
                kind="label_correction",
                ticket_id=c.ticket_id,
                detail={"actor": c.actor, "actor_key_id": c.actor_key_id, "labels": c.labels},
            )
        )
    for e in consents:
        timeline.append(
            CustomerEvent(
                at=e.at,
                kind=e.kind,
                detail={"source": e.source, "actor": e.actor, "actor_key_id": e.actor_key_id},
            )
        )
    for contact, campaign in contacts:
        timeline.append(
            CustomerEvent(
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
    timeline.sort(key=lambda e: e.at)
    scores = [p["score"] for p in trend if p["score"] is not None]

    def mean(xs: list[float]) -> float | None:
        return round(sum(xs) / len(xs), 3) if xs else None

    return CustomerHistory(
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
