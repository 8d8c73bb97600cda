"""A message arrives: it is stored with the model's prediction and becomes a routed
ticket, in the caller's transaction (no HTTP here; ``serving.routes.messages`` calls it).

The walk: the predictor's labels (the critical rules applied) -> the routing file's
one decision (``RoutingConfig.decide``: queue, SLA deadline, priority, whether an answer
is needed) -> the message, its prediction, its ticket and the ticket's first events.

Two kinds of later message are recognised here:
- a customer's answer to a ticket still in work joins that ticket (``find_answered``:
  by Message-ID, else the same customer and order within ``thread_days``) and puts it
  back in its queue;
- a follow-up to a resolved ticket gets a ticket of its own, linked to the resolved one
  (``find_reopenable``)."""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from datetime import datetime, timedelta

from sqlalchemy import exists, func, select
from sqlalchemy.orm import Session, selectinload

from model.predictor import Prediction as ModelPrediction
from serving.routing import Decision, RoutingConfig
from serving.store import (
    CLOSED_STATES,
    Attachment,
    Message,
    OutboundMail,
    Prediction,
    Ticket,
    TicketEvent,
    as_utc,
)
from serving.tickets import event


@dataclass
class NewMessage:
    channel: str
    text: str
    subject: str | None = None
    external_id: str | None = None
    customer_id: str | None = None
    customer_name: str | None = None
    order_id: str | None = None
    product_id: str | None = None
    marketplace: str | None = None
    rating: int | None = None
    received_at: datetime | None = None
    lang: str = "und"
    # e-mail: where an answer goes, the Message-IDs this one answers, its files
    reply_to: str | None = None
    references: list[str] = field(default_factory=list)
    attachments: list[tuple[str, str, bytes]] = field(default_factory=list)

    @property
    def model_text(self) -> str:
        """What the model reads: the subject line (when there is one) and the text."""
        return f"{self.subject}\n{self.text}" if self.subject else self.text


def routing_facts(prediction: ModelPrediction, channel: str, rating: int | None) -> dict:
    """What the routing file's conditions read besides the labels: the channel, whether
    the model wants a review (not when a critical rule decided), the rules that fired,
    the stars."""
    hits = [h.rule for h in prediction.rule_hits]
    return {
        "channel": channel,
        "needs_review": prediction.needs_review and not hits,
        "rule": hits,
        "stars": rating,
    }


def find_existing(session: Session, external_ids: list[str]) -> dict[str, Message]:
    if not external_ids:
        return {}
    rows = session.scalars(
        select(Message)
        .where(Message.external_id.in_(external_ids))
        .options(
            selectinload(Message.ticket),
            selectinload(Message.thread_ticket),
            selectinload(Message.prediction),
        )
    )
    return {m.external_id: m for m in rows}


def earlier_contacts(session: Session, customer_id: str | None, before: datetime, days: int) -> int:
    if not customer_id:
        return 0
    return session.scalar(
        select(func.count(Message.id)).where(
            Message.customer_id == customer_id,
            Message.received_at < before,
            Message.received_at >= before - timedelta(days=days),
        )
    )


def find_answered(
    session: Session, item: NewMessage, received: datetime, days: float
) -> Ticket | None:
    """The ticket still in work (not resolved) that ``item`` answers, or None.

    - By Message-ID: ``item`` names in In-Reply-To or References one of our replies or
      a stored message; that message's ticket is answered (a ticket already closed is
      not: ``find_reopenable`` handles follow-ups to resolved tickets).
    - Else, for a message (not a review) with a customer and an order id: the most
      recently active ticket of the same customer and order, active within ``days``
      (0 turns this off)."""
    if item.channel == "review":
        return None
    if item.references:
        ours = session.scalars(
            select(Ticket)
            .join(OutboundMail, OutboundMail.ticket_id == Ticket.id)
            .where(OutboundMail.message_id.in_(item.references))
        ).all()
        theirs = session.scalars(
            select(Message)
            .where(Message.external_id.in_(item.references))
            .options(selectinload(Message.ticket), selectinload(Message.thread_ticket))
        ).all()
        found = [*ours, *(m.own_ticket for m in theirs if m.own_ticket is not None)]
        if found:
            latest = max(found, key=lambda t: (t.updated_at, t.id))
            return None if latest.state in CLOSED_STATES else latest
    if not (item.customer_id and item.order_id and days):
        return None
    return session.scalars(
        select(Ticket)
        .join(Message, Message.id == Ticket.message_id)
        .where(
            Message.customer_id == item.customer_id,
            Message.order_id == item.order_id,
            Message.channel != "review",
            Ticket.state.not_in(CLOSED_STATES),
            Ticket.updated_at >= received - timedelta(days=days),
        )
        .order_by(Ticket.updated_at.desc(), Ticket.id.desc())
        .limit(1)
    ).first()


def find_reopenable(
    session: Session, item: NewMessage, received: datetime, days: int
) -> Ticket | None:
    """The resolved ticket that a follow-up ``item`` reopens, or None.

    A follow-up is a message (not a review) from the same customer, received after the
    earlier ticket (not a review either) was resolved, and either
    - about the same order: both carry the same order id (any time later), or
    - one of the two has no order id and it arrives within ``days`` of the resolution.
    Two different order ids never match. A ticket is reopened at most once (the work goes
    on in the follow-up's ticket); the most recently resolved match wins."""
    if not item.customer_id or item.channel == "review":
        return None
    already = exists().where(TicketEvent.ticket_id == Ticket.id, TicketEvent.kind == "reopened")
    rows = session.execute(
        select(Ticket, Message.order_id)
        .join(Message, Message.id == Ticket.message_id)
        .where(
            Message.customer_id == item.customer_id,
            Message.channel != "review",
            Ticket.state == "resolved",
            Ticket.resolved_at <= received,
            ~already,
        )
        .order_by(Ticket.resolved_at.desc(), Ticket.id.desc())
    ).all()
    for ticket, order_id in rows:
        if item.order_id and order_id:
            if item.order_id == order_id:
                return ticket
        elif days and ticket.resolved_at >= received - timedelta(days=days):
            return ticket
    return None


def store_message(
    session: Session,
    item: NewMessage,
    prediction: ModelPrediction,
    routing: RoutingConfig,
    model_version: str,
    now: datetime,
    sla_hours: float | None = None,
) -> Message:
    """Insert the message, the model's prediction and its routed ticket (no commit).

    A customer's answer to a ticket in work (see ``find_answered``) joins that ticket
    instead (``answer_ticket``). A follow-up to a resolved ticket (see
    ``find_reopenable``) still gets its own ticket (its own text, labels, queue and a
    fresh SLA); the resolved ticket records a ``reopened`` event naming it, and the new
    one a ``follow_up`` event naming the old."""
    received = as_utc(item.received_at) if item.received_at else now
    answered = find_answered(session, item, received, routing.thread_days)
    reopens = None if answered else find_reopenable(session, item, received, routing.reopen_days)
    message = Message(
        external_id=item.external_id,
        channel=item.channel,
        subject=item.subject,
        text=item.text,
        lang=item.lang,
        customer_id=item.customer_id,
        customer_name=item.customer_name,
        order_id=item.order_id,
        product_id=item.product_id,
        marketplace=item.marketplace,
        rating=item.rating,
        received_at=received,
        created_at=now,
        reply_to=item.reply_to,
        references=" ".join(item.references) or None,
        thread_ticket=answered,
    )
    session.add(message)
    for filename, content_type, content in item.attachments:
        session.add(
            Attachment(
                message=message,
                filename=filename,
                content_type=content_type,
                size=len(content),
                content=content,
            )
        )
    model_labels = prediction.model_labels or prediction.labels
    session.add(
        Prediction(
            message=message,
            model_version=model_version,
            labels=model_labels,
            output=prediction.to_dict(),
            needs_review=prediction.needs_review,
            created_at=now,
        )
    )
    labels = prediction.labels  # the critical rules applied (model.rules)
    hits = [h.to_dict() for h in prediction.rule_hits]
    facts = routing_facts(prediction, item.channel, item.rating)
    contacts = earlier_contacts(session, item.customer_id, received, routing.repeat_days)
    decision = routing.decide(labels, facts, received, item.marketplace, contacts, sla_hours)
    if answered is not None:
        message.update_attention(model_labels)
        session.flush()
        answer_ticket(session, answered, message, decision, hits, now)
        session.flush()
        return message
    ticket = Ticket(
        message=message,
        queue=decision.queue,
        state="open",
        labels=labels,
        rule_hits=hits,
        base_priority=decision.points,
        rank_at=decision.rank_at,
        sla_hours=decision.sla_hours,
        sla_due_at=decision.sla_due_at,
        created_at=now,
        updated_at=now,
    )
    session.add(ticket)
    message.update_attention(labels)
    session.add(TicketEvent(ticket=ticket, kind="created", actor=None, at=now, note=decision.queue))
    if reopens is not None:
        session.flush()
        note = {"message_id": message.id, "ticket_id": ticket.id}
        event(session, reopens, "reopened", None, now, note=json.dumps(note))
        note = json.dumps({"reopened_ticket_id": reopens.id})
        session.add(TicketEvent(ticket=ticket, kind="follow_up", actor=None, at=now, note=note))
    if decision.no_response_needed:
        ticket.state = "no_response_needed"
        ticket.resolved_at = now
        session.add(
            TicketEvent(ticket=ticket, kind="no_response_needed", actor=None, at=now, note="rule")
        )
    session.flush()
    return message


def answer_ticket(
    session: Session,
    ticket: Ticket,
    message: Message,
    decision: Decision,
    hits: list[dict],
    now: datetime,
) -> None:
    """The customer answered ``ticket`` with ``message``: a ticket waiting on the
    customer is open again, and the answer is due by its own deadline
    (``reply_due_at``). The ticket's place in its queue is the earlier of its own and
    the answer's (a ticket that was waiting takes the answer's); a critical rule the
    answer fires moves the ticket to the rule's queue. The ticket's first-response
    figures stay as they were."""
    was = ticket.state
    if was == "waiting_on_customer":
        ticket.state = "open"
        ticket.rank_at, ticket.base_priority = decision.rank_at, decision.points
    else:
        ticket.rank_at = min(ticket.rank_at, decision.rank_at)
        ticket.base_priority = max(ticket.base_priority, decision.points)
    if ticket.reply_due_at is None or decision.sla_due_at < ticket.reply_due_at:
        ticket.reply_due_at = decision.sla_due_at
    if hits:
        ticket.rule_hits = [*ticket.rule_hits, *hits]
        ticket.queue = decision.queue
    note = {"message_id": message.id, "state_was": was}
    event(session, ticket, "customer_replied", None, now, note=json.dumps(note))
