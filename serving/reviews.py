"""Reviews by product: the page of reviews an agent works through (unhandled negative
ones first, newest first within, paged with a cursor over an index) and marking a
review handled."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from typing import Any

from sqlalchemy import and_, case, func, or_, select, tuple_
from sqlalchemy.orm import Session, selectinload

from serving import cursors
from serving.auth import Principal
from serving.store import CLOSED_STATES, Message, Prediction, Ticket, label_has
from serving.tickets import close, event


class NotAReview(LookupError):
    """No review with that id."""


@dataclass
class ReviewRow:
    message: Message
    cursor: str  # pass as ``after`` for the page after this review
    other_messages_of_customer: int

    @property
    def labels(self) -> dict[str, list[str]]:
        """The agent's labels where there is a ticket, else the model's."""
        m = self.message
        return m.ticket.labels if m.ticket else (m.prediction.labels if m.prediction else {})


def page(
    s: Session,
    *,
    product_id: str | None = None,
    customer_id: str | None = None,
    stars: list[int] | None = None,
    sentiment: str | None = None,
    issue_type: str | None = None,
    handled: bool | None = None,
    since: datetime | None = None,
    until: datetime | None = None,
    limit: int = 50,
    after: str | None = None,
) -> list[ReviewRow]:
    """One page of reviews: ``Message.needs_attention`` ones first, then the rest, newest
    first within; ``after`` is the cursor of the previous page's last review
    (``cursors.parse`` answers 422 when it is not one)."""
    dialect = s.get_bind().dialect.name
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

    picked: list[tuple[int, int, datetime]] = []  # (group, id, received_at)
    for g in (0, 1)[first_group:]:
        part = q.where(Message.needs_attention.is_(g == 0))
        if key is not None and g == first_group:
            part = part.where(tuple_(Message.received_at, Message.id) < tuple_(*key))
        for mid, received in s.execute(part.order_by(*order).limit(limit - len(picked))):
            picked.append((g, mid, received))
        if len(picked) >= limit:
            break
    ids = [mid for _, mid, _ in picked]
    found = {
        m.id: m
        for m in s.scalars(
            select(Message)
            .where(Message.id.in_(ids))
            .options(selectinload(Message.ticket), selectinload(Message.prediction))
        )
    }
    rows = [found[i] for i in ids]
    cursor_of = {mid: cursors.make(g, received, mid) for g, mid, received in picked}
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
        ReviewRow(
            m,
            cursor_of[m.id],
            counts.get(m.customer_id, 1) - 1 if m.customer_id else 0,
        )
        for m in rows
    ]


def mark_handled(
    s: Session, review_id: int, who: Principal, now: datetime, note: str | None
) -> dict[str, Any]:
    """Mark a review handled (who, when, note) and resolve its ticket; the first handling
    is kept, a later one adds a ``review_handled`` event to the ticket's history."""
    msg = s.get(Message, review_id)
    if msg is None or msg.channel != "review":
        raise NotAReview(f"review {review_id} not found")
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
