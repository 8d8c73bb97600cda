"""Reviews by product: the seller's review management page as an API."""

from __future__ import annotations

from datetime import datetime

from fastapi import APIRouter, HTTPException, Query
from pydantic import BaseModel, Field

from serving import reviews
from serving.db import transaction
from serving.deps import AgentKey, Svc
from serving.errors import ApiRoute
from serving.fields import CustomerId, ProductId, RequestBody, RowId, Timestamp, free_text

Note = free_text(max_length=10_000)
router = APIRouter(prefix="/v1/reviews", tags=["reviews"], route_class=ApiRoute)


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


class HandledOut(BaseModel):
    id: int = Field(description="The review's message id.")
    handled: bool
    handled_at: datetime | None = Field(description="The first handling.")
    handled_by: str | None
    handled_by_key_id: int | None
    handled_note: str | None
    first: bool = Field(description="False: handled before; this one joined the history.")
    ticket_id: int | None
    ticket_state: str | None


class HandledIn(RequestBody):
    note: Note | None = None


@router.get("", response_model=list[ReviewOut])
def list_reviews(
    *,
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
    svc: Svc,
    _: AgentKey,
) -> list[ReviewOut]:
    """Reviews, unhandled negative ones (sentiment negative, or one or two stars:
    ``Message.needs_attention``) first, then the rest; newest first within. Paged with
    a cursor (each review's ``cursor``, passed as ``after``): every page is a range
    read of an index, however many reviews the store holds."""
    bad = [n for n in stars or [] if not 1 <= n <= 5]
    if bad:
        raise HTTPException(422, detail=f"stars: {bad[0]} is not between 1 and 5")
    with svc.sessions() as s:
        rows = reviews.page(
            s,
            product_id=product_id,
            customer_id=customer_id,
            stars=stars,
            sentiment=sentiment,
            issue_type=issue_type,
            handled=handled,
            since=since,
            until=until,
            limit=limit,
            after=after,
        )
        return [
            ReviewOut(
                id=r.message.id,
                product_id=r.message.product_id,
                customer_id=r.message.customer_id,
                rating=r.message.rating,
                subject=r.message.subject,
                text=r.message.text,
                lang=r.message.lang,
                received_at=r.message.received_at,
                labels=r.labels,
                ticket_id=r.message.ticket.id if r.message.ticket else None,
                ticket_state=r.message.ticket.state if r.message.ticket else None,
                handled=r.message.handled_at is not None,
                handled_at=r.message.handled_at,
                handled_by=r.message.handled_by,
                handled_by_key_id=r.message.handled_by_key_id,
                handled_note=r.message.handled_note,
                other_messages_of_customer=r.other_messages_of_customer,
                cursor=r.cursor,
            )
            for r in rows
        ]


@router.post("/{review_id}/handled")
def mark_handled(
    *,
    review_id: RowId,
    body: HandledIn | None = None,
    svc: Svc,
    who: AgentKey,
) -> HandledOut:
    """Mark a review handled (who, when, note) and resolve its ticket. The first
    handling is kept; a later one adds to the ticket's history (``review_handled``
    events), never overwriting the first handler or note."""
    with transaction(svc.sessions) as s:
        try:
            return reviews.mark_handled(s, review_id, who, svc.clock(), body.note if body else None)
        except reviews.NotAReview as exc:
            raise HTTPException(404, detail=str(exc)) from exc
