"""Reviews by product: the seller's review management page as an API."""

from __future__ import annotations

from datetime import datetime
from typing import Any

from fastapi import APIRouter, Depends, HTTPException, Query
from pydantic import BaseModel, Field
from sqlalchemy import and_, case, func, or_, select, tuple_
from sqlalchemy.orm import selectinload

from serving import cursors
from serving.auth import Principal
from serving.db import transaction
from serving.deps import Services, agent_role, services
from serving.errors import ApiRoute
from serving.fields import CustomerId, ProductId, RequestBody, RowId, Timestamp, free_text
from serving.store import CLOSED_STATES, Message, Prediction, Ticket, label_has
from serving.tickets import close, event

Note = free_text(max_length=10_000)
router = APIRouter(tags=["reviews"], route_class=ApiRoute)


class ReviewOut(BaseModel):
    id: int = Field(description="The review's message id.")
    product_id: str | None
    customer_id: str | None
    rating: int | None
    subject: str | None
    text: str
    lang: str
    received_at: datetime
    labels: dict[str, list[str]]
    ticket_id: int | None
    ticket_state: str | None
    handled: bool
    handled_at: datetime | None
    handled_by: str | None
    handled_by_key_id: int | None
    handled_note: str | None
    other_messages_of_customer: int = Field(
        description="The buyer's other messages (any channel), linked by customer id."
    )
    cursor: str = Field(description="Pass as `after` for the page that follows this review.")


class HandledIn(RequestBody):
    note: Note | None = None


@router.get("/v1/reviews", response_model=list[ReviewOut])
def list_reviews(
    product_id: ProductId | None = Query(None, description="ASIN or SKU."),
    customer_id: CustomerId | None = Query(None, description="The buyer's reviews only."),
    stars: list[int] | None = Query(None, description="Star ratings to keep (repeatable)."),
    sentiment: str | None = Query(None),
    issue_type: str | None = Query(None),
    handled: bool | None = Query(None),
    since: Timestamp | None = Query(None),
    until: Timestamp | None = Query(None),
    limit: int = Query(50, ge=1, le=500),
    after: str | None = Query(
        None,
        max_length=80,
        description="The `cursor` of the last review of the previous page: the page after it.",
    ),
    svc: Services = Depends(services),
    _: Principal = Depends(agent_role),
) -> list[ReviewOut]:
    """Reviews, unhandled negative ones (sentiment negative, or one or two stars:
    ``Message.needs_attention``) first, then the rest; newest first within. Paged with
    a cursor (each review's ``cursor``, passed as ``after``): every page is a range
    read of an index, however many reviews the store holds."""
    dialect = svc.engine.dialect.name
    has_ticket = Ticket.id.is_not(None)
    sentiment_of = case(
        (has_ticket, Ticket.labels[("sentiment", 0)].as_string()),
        else_=Prediction.labels[("sentiment", 0)].as_string(),
    )
    q = (
        select(Message.id, Message.received_at)
        .outerjoin(Ticket, Ticket.message_id == Message.id)
        .outerjoin(Prediction, Prediction.message_id == Message.id)
        .where(Message.channel == "review")
    )
    if product_id is not None:
        q = q.where(Message.product_id == product_id)
    if customer_id is not None:
        q = q.where(Message.customer_id == customer_id)
    if stars:
        bad = [s for s in stars if not 1 <= s <= 5]
        if bad:
            raise HTTPException(422, detail=f"stars: {bad[0]} is not between 1 and 5")
        q = q.where(Message.rating.in_(stars))
    if handled is not None:
        q = q.where(Message.handled_at.is_not(None) if handled else Message.handled_at.is_(None))
    if since is not None:
        q = q.where(Message.received_at >= since)
    if until is not None:
        q = q.where(Message.received_at < until)
    if sentiment:
        q = q.where(sentiment_of == sentiment)
    if issue_type:
        q = q.where(
            or_(
                and_(has_ticket, label_has(Ticket.labels, "issue_type", issue_type, dialect)),
                and_(
                    ~has_ticket,
                    label_has(Prediction.labels, "issue_type", issue_type, dialect),
                ),
            )
        )
    first_group, key = (0, None) if after is None else cursors.parse(after)
    order = (Message.received_at.desc(), Message.id.desc())

    with svc.sessions() as s:
        page: list[tuple[int, int, datetime]] = []  # (group, id, received_at)
        for g in (0, 1)[first_group:]:
            part = q.where(Message.needs_attention.is_(g == 0))
            if key is not None and g == first_group:
                part = part.where(tuple_(Message.received_at, Message.id) < tuple_(*key))
            for mid, received in s.execute(part.order_by(*order).limit(limit - len(page))):
                page.append((g, mid, received))
            if len(page) >= limit:
                break
        ids = [mid for _, mid, _ in page]
        found = {
            m.id: m
            for m in s.scalars(
                select(Message)
                .where(Message.id.in_(ids))
                .options(selectinload(Message.ticket), selectinload(Message.prediction))
            )
        }
        rows = [found[i] for i in ids]
        cursor_of = {mid: cursors.make(g, received, mid) for g, mid, received in page}
        customers = {m.customer_id for m in rows if m.customer_id}
        counts: dict[str, int] = {}
        if customers:
            counts = dict(
                s.execute(
                    select(Message.customer_id, func.count())
                    .where(Message.customer_id.in_(customers))
                    .group_by(Message.customer_id)
                ).all()
            )
    return [
        ReviewOut(
            id=m.id,
            product_id=m.product_id,
            customer_id=m.customer_id,
            rating=m.rating,
            subject=m.subject,
            text=m.text,
            lang=m.lang,
            received_at=m.received_at,
            labels=_labels_of(m),
            ticket_id=m.ticket.id if m.ticket else None,
            ticket_state=m.ticket.state if m.ticket else None,
            handled=m.handled_at is not None,
            handled_at=m.handled_at,
            handled_by=m.handled_by,
            handled_by_key_id=m.handled_by_key_id,
            handled_note=m.handled_note,
            other_messages_of_customer=counts.get(m.customer_id, 1) - 1 if m.customer_id else 0,
            cursor=cursor_of[m.id],
        )
        for m in rows
    ]


def _labels_of(m: Message) -> dict[str, list[str]]:
    return m.ticket.labels if m.ticket else (m.prediction.labels if m.prediction else {})


@router.post("/v1/reviews/{review_id}/handled")
def mark_handled(
    review_id: RowId,
    body: HandledIn | None = None,
    svc: Services = Depends(services),
    who: Principal = Depends(agent_role),
) -> dict[str, Any]:
    """Mark a review handled (who, when, note) and resolve its ticket. The first
    handling is kept; a later one adds to the ticket's history (``review_handled``
    events), never overwriting the first handler or note."""
    now = svc.clock()
    note = body.note if body else None
    with transaction(svc.sessions) as s:
        msg = s.get(Message, review_id)
        if msg is None or msg.channel != "review":
            raise HTTPException(404, detail=f"review {review_id} not found")
        ticket = s.scalar(select(Ticket).where(Ticket.message_id == msg.id))
        first = msg.handled_at is None
        if first:
            msg.handled_at, msg.handled_by, msg.handled_by_key_id = now, who.actor, who.key_id
            msg.handled_note = note
            msg.update_attention({})
        if ticket is not None:
            event(s, ticket, "review_handled", who.actor, now, note=note, actor_key_id=who.key_id)
            if ticket.state not in CLOSED_STATES:  # whoever holds the claim
                close(s, ticket, who.actor, now, "resolved", note, True, who.key_id)
        return {
            "id": msg.id,
            "handled": True,
            "handled_at": msg.handled_at,
            "handled_by": msg.handled_by,
            "handled_by_key_id": msg.handled_by_key_id,
            "handled_note": msg.handled_note,
            "first": first,
            "ticket_id": ticket.id if ticket else None,
            "ticket_state": ticket.state if ticket else None,
        }
