"""Messages become tickets; tickets move through queues. Pure store logic (no HTTP):
the routes call these functions inside one transaction each.

States: open -> claimed -> (waiting_on_customer) -> resolved, or no_response_needed
(which stops the SLA clock). A claim is a lease: once ``lease_expires_at`` passes, the
ticket is claimable again (it shows as ``open``).
"""

from __future__ import annotations

import csv
import functools
import io
import json
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

from sqlalchemy import (
    Integer,
    String,
    and_,
    bindparam,
    exists,
    func,
    insert,
    literal,
    or_,
    select,
    union_all,
    update,
)
from sqlalchemy.orm import Session, aliased, contains_eager, selectinload

from model.predictor import Prediction as ModelPrediction
from model.taxonomy import Taxonomy
from serving.redact import pseudonym, redact
from serving.routing import RoutingConfig, deadline, priority_at, rank_at
from serving.store import (
    CLOSED_STATES,
    LabelCorrection,
    Message,
    Prediction,
    Ticket,
    TicketEvent,
    UTCDateTime,
    as_utc,
)

LATE_WINDOWS_DAYS = (7, 30, 90)


class Conflict(Exception):
    """The ticket is not in a state that allows this (HTTP 409)."""


class NotFound(Exception):
    """No such ticket / review (HTTP 404)."""


@dataclass
class NewMessage:
    channel: str
    text: str
    subject: str | None = None
    external_id: str | None = None
    customer_id: str | None = None
    order_id: str | None = None
    product_id: str | None = None
    marketplace: str | None = None
    rating: int | None = None
    received_at: datetime | None = None
    lang: str = "und"

    @property
    def model_text(self) -> str:
        """What the model reads: the subject line (when there is one) and the text."""
        return f"{self.subject}\n{self.text}" if self.subject else self.text


def find_existing(session: Session, external_ids: list[str]) -> dict[str, Message]:
    if not external_ids:
        return {}
    rows = session.scalars(
        select(Message)
        .where(Message.external_id.in_(external_ids))
        .options(selectinload(Message.ticket), selectinload(Message.prediction))
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

    A follow-up to a resolved ticket (see ``find_reopenable``) still gets its own ticket
    (its own text, labels, queue and a fresh SLA); the resolved ticket records a
    ``reopened`` event naming it, and the new one a ``follow_up`` event naming the old."""
    received = as_utc(item.received_at) if item.received_at else now
    reopens = find_reopenable(session, item, received, routing.reopen_days)
    message = Message(
        external_id=item.external_id,
        channel=item.channel,
        subject=item.subject,
        text=item.text,
        lang=item.lang,
        customer_id=item.customer_id,
        order_id=item.order_id,
        product_id=item.product_id,
        marketplace=item.marketplace,
        rating=item.rating,
        received_at=received,
        created_at=now,
    )
    session.add(message)
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
    facts = {
        "channel": item.channel,
        "needs_review": prediction.needs_review and not hits,
        "rule": [h["rule"] for h in hits],
        "stars": item.rating,
    }
    queue = routing.route(labels, facts)
    hours = sla_hours or routing.sla_hours(item.channel, item.marketplace)
    due = deadline(received, hours)
    contacts = earlier_contacts(session, item.customer_id, received, routing.repeat_days)
    points = routing.points(labels, contacts)
    ticket = Ticket(
        message=message,
        queue=queue,
        state="open",
        labels=labels,
        rule_hits=hits,
        base_priority=points,
        rank_at=rank_at(due, points),
        sla_hours=hours,
        sla_due_at=due,
        created_at=now,
        updated_at=now,
    )
    session.add(ticket)
    session.add(TicketEvent(ticket=ticket, kind="created", actor=None, at=now, note=queue))
    if reopens is not None:
        session.flush()
        note = {"message_id": message.id, "ticket_id": ticket.id}
        _event(session, reopens, "reopened", None, now, note=json.dumps(note))
        note = json.dumps({"reopened_ticket_id": reopens.id})
        session.add(TicketEvent(ticket=ticket, kind="follow_up", actor=None, at=now, note=note))
    if routing.no_response_needed(labels, facts):
        ticket.state = "no_response_needed"
        ticket.resolved_at = now
        session.add(
            TicketEvent(ticket=ticket, kind="no_response_needed", actor=None, at=now, note="rule")
        )
    session.flush()
    return message


# -- reading ----------------------------------------------------------------------


def effective_state(ticket: Ticket, now: datetime) -> str:
    if ticket.state == "claimed" and ticket.lease_expires_at and ticket.lease_expires_at <= now:
        return "open"
    return ticket.state


def is_breached(ticket: Ticket, now: datetime) -> bool:
    """First response late (or still missing past the deadline); no-response-needed
    stops the clock when it is set."""
    if ticket.first_response_at is not None:
        return ticket.first_response_at > ticket.sla_due_at
    if ticket.state == "no_response_needed":
        return (ticket.resolved_at or now) > ticket.sla_due_at
    if ticket.state == "resolved":
        return (ticket.resolved_at or now) > ticket.sla_due_at
    return now > ticket.sla_due_at


def ticket_view(ticket: Ticket, now: datetime) -> dict[str, Any]:
    msg = ticket.message
    state = effective_state(ticket, now)
    held = state == "claimed"
    return {
        "id": ticket.id,
        "message_id": ticket.message_id,
        "queue": ticket.queue,
        "state": state,
        "priority": priority_at(ticket.rank_at, now),
        "base_priority": ticket.base_priority,
        "labels": ticket.labels,
        "rule_hits": ticket.rule_hits,
        "sla_hours": ticket.sla_hours,
        "sla_due_at": ticket.sla_due_at,
        "sla_breached": is_breached(ticket, now),
        "first_response_at": ticket.first_response_at,
        "resolved_at": ticket.resolved_at,
        "claimed_by": ticket.claimed_by if held else None,
        "claimed_by_key_id": ticket.claimed_by_key_id if held else None,
        "lease_expires_at": ticket.lease_expires_at if held else None,
        "created_at": ticket.created_at,
        "message": message_view(msg) if msg is not None else None,
    }


def message_view(msg: Message) -> dict[str, Any]:
    return {
        "id": msg.id,
        "external_id": msg.external_id,
        "channel": msg.channel,
        "subject": msg.subject,
        "text": msg.text,
        "lang": msg.lang,
        "customer_id": msg.customer_id,
        "order_id": msg.order_id,
        "product_id": msg.product_id,
        "marketplace": msg.marketplace,
        "rating": msg.rating,
        "received_at": msg.received_at,
    }


def _claimable(now: datetime):
    return or_(
        Ticket.state == "open",
        and_(Ticket.state == "claimed", Ticket.lease_expires_at <= now),
    )


def queue_tickets(
    session: Session, queue: str, now: datetime, include_claimed: bool = True, limit: int = 50
) -> list[Ticket]:
    states = ["open", "claimed"] if include_claimed else ["open"]
    q = (
        select(Ticket)
        .where(Ticket.queue == queue, Ticket.state.in_(states))
        .order_by(Ticket.rank_at, Ticket.id)
        .limit(limit)
        .options(selectinload(Ticket.message))
    )
    return list(session.scalars(q))


def queue_overview(session: Session, routing: RoutingConfig, now: datetime) -> list[dict[str, Any]]:
    out = []
    for name, description in routing.queues.items():
        active = list(
            session.scalars(
                select(Ticket).where(Ticket.queue == name, Ticket.state.not_in(CLOSED_STATES))
            )
        )
        unclaimed = [t for t in active if effective_state(t, now) == "open"]
        oldest = min((t.created_at for t in unclaimed), default=None)
        out.append(
            {
                "queue": name,
                "description": description,
                "depth": len(active),
                "unclaimed": len(unclaimed),
                "oldest_unclaimed_at": oldest,
                "breached": sum(
                    1 for t in active if t.first_response_at is None and now > t.sla_due_at
                ),
                "late_response_rate": late_response_rates(session, now, queue=name),
            }
        )
    return out


def late_response_rates(
    session: Session, now: datetime, queue: str | None = None
) -> dict[str, float | None]:
    """Share of tickets whose first-response deadline fell in the last N days that
    were answered late or not at all (no-response-needed in time is not late)."""
    since = now - timedelta(days=max(LATE_WINDOWS_DAYS))
    q = select(Ticket).where(Ticket.sla_due_at >= since, Ticket.sla_due_at <= now)
    if queue is not None:
        q = q.where(Ticket.queue == queue)
    tickets = list(session.scalars(q))
    rates: dict[str, float | None] = {}
    for days in LATE_WINDOWS_DAYS:
        window = [t for t in tickets if t.sla_due_at >= now - timedelta(days=days)]
        rates[f"{days}d"] = (
            round(sum(is_breached(t, now) for t in window) / len(window), 4) if window else None
        )
    return rates


# -- changing ---------------------------------------------------------------------


def _event(
    session: Session,
    ticket: Ticket,
    kind: str,
    actor: str | None,
    now,
    note=None,
    actor_key_id: int | None = None,
) -> None:
    session.add(
        TicketEvent(
            ticket_id=ticket.id,
            kind=kind,
            actor=actor,
            actor_key_id=actor_key_id,
            at=now,
            note=note,
        )
    )
    ticket.updated_at = now


def claim_next(
    session: Session,
    queue: str,
    actor: str,
    now: datetime,
    lease_seconds: int,
    skip_locked: bool,
    actor_key_id: int | None = None,
) -> Ticket | None:
    """The highest-priority claimable ticket of ``queue``, leased to ``actor`` (the key
    ``actor_key_id``: the holder's identity, see ``_check_holder``), with a ``claimed``
    event, preceded by a ``lease_expired`` event naming the previous holder when the
    ticket's lease had run out.

    PostgreSQL (``skip_locked``): one statement (``_claim_statement``) with ``FOR UPDATE
    SKIP LOCKED``, so concurrent claimers pass over each other's rows, that also loads the
    ticket's message; it makes this transaction's commit asynchronous (see below), so the
    caller's transaction should hold the claim and nothing else. SQLite: the transaction
    began with ``BEGIN IMMEDIATE`` (one writer at a time) and the ORM takes the same steps
    one by one.
    """
    if skip_locked:
        # Asynchronous commit for this transaction only: COMMIT returns without waiting
        # for the WAL flush (at most ~3 x wal_writer_delay, 0.6 s by default, behind). A
        # crash of the database server in that window can lose the claim, and only
        # whole: the ticket is back in the state it had (open, or its expired lease) with
        # neither event, i.e. back in the queue; the database stays consistent, and a
        # later synchronous commit (any reply, resolve, ingest) flushes it for good. An
        # agent holding such a lost claim is refused (409) if someone else claimed the
        # ticket meanwhile, as for any claim that is no longer theirs.
        session.connection().exec_driver_sql("SET LOCAL synchronous_commit = off")
        params = {
            "claim_queue": queue,
            "claim_actor": actor,
            "claim_actor_key_id": actor_key_id,
            "claim_now": now,
            "claim_until": now + timedelta(seconds=lease_seconds),
        }
        return session.scalars(
            _claim_statement(), params, execution_options={"populate_existing": True}
        ).one_or_none()
    q = (
        select(Ticket)
        .where(Ticket.queue == queue, _claimable(now))
        .order_by(Ticket.rank_at, Ticket.id)
        .limit(1)
    )
    ticket = session.scalar(q)
    if ticket is None:
        return None
    if ticket.state == "claimed":  # an expired lease
        _event(
            session,
            ticket,
            "lease_expired",
            ticket.claimed_by,
            now,
            actor_key_id=ticket.claimed_by_key_id,
        )
    ticket.state = "claimed"
    ticket.claimed_by, ticket.claimed_by_key_id = actor, actor_key_id
    ticket.lease_expires_at = now + timedelta(seconds=lease_seconds)
    _event(session, ticket, "claimed", actor, now, actor_key_id=actor_key_id)
    session.flush()
    return ticket


@functools.cache
def _claim_statement():
    """PostgreSQL's claim in one round trip, where the ORM path takes four (select,
    update, event insert, then the message); the time went to those round trips and the
    ORM around them, not to the index scan (0.1 ms at 1M open tickets)::

        WITH picked AS (SELECT id, state, claimed_by FROM tickets WHERE <claimable>
                        ORDER BY rank_at, id LIMIT 1 FOR UPDATE SKIP LOCKED),
             events AS (INSERT INTO ticket_events ... SELECT ... FROM picked),
             claimed AS (UPDATE tickets SET state = 'claimed', ... FROM picked
                         WHERE tickets.id = picked.id RETURNING tickets.*)
        SELECT claimed.*, messages.* FROM claimed JOIN messages ON ...

    ``picked`` locks the row once (a CTE with FOR UPDATE is evaluated once) and carries
    its state and holder as they were, so the events are the ORM path's: ``lease_expired``
    (actor: the previous holder) before ``claimed`` (actor: the new holder), both at
    ``now`` without a note. Built once with bound parameters (building it per call cost
    more than running it): claim_queue, claim_actor, claim_actor_key_id, claim_now,
    claim_until."""
    now = bindparam("claim_now", type_=UTCDateTime)
    actor = bindparam("claim_actor", type_=String)
    actor_key_id = bindparam("claim_actor_key_id", type_=Integer)
    picked = (
        select(Ticket.id, Ticket.state, Ticket.claimed_by, Ticket.claimed_by_key_id)
        .where(Ticket.queue == bindparam("claim_queue", type_=String), _claimable(now))
        .order_by(Ticket.rank_at, Ticket.id)
        .limit(1)
        .with_for_update(skip_locked=True)
        .cte("picked")
    )
    rows = union_all(
        select(
            picked.c.id,
            literal("lease_expired"),
            picked.c.claimed_by,
            picked.c.claimed_by_key_id,
            now,
            literal(0),
        ).where(picked.c.state == "claimed"),
        select(picked.c.id, literal("claimed"), actor, actor_key_id, now, literal(1)),
    ).subquery("rows")
    events = (
        insert(TicketEvent)
        .from_select(
            ["ticket_id", "kind", "actor", "actor_key_id", "at"],
            # ids are drawn in this order: lease_expired, then claimed
            select(*(rows.c[i] for i in range(5))).order_by(rows.c[5]),
        )
        .cte("events")
    )
    claimed = (
        update(Ticket)
        .where(Ticket.id == picked.c.id)
        .values(
            state="claimed",
            claimed_by=actor,
            claimed_by_key_id=actor_key_id,
            lease_expires_at=bindparam("claim_until", type_=UTCDateTime),
            updated_at=now,
        )
        .returning(*Ticket.__table__.c)
        .cte("claimed")
    )
    claimed_ticket = aliased(Ticket, claimed)
    return (
        select(claimed_ticket)
        .join(claimed_ticket.message)
        .options(contains_eager(claimed_ticket.message))
        .add_cte(events)
    )


def get_ticket(session: Session, ticket_id: int, lock: bool = False) -> Ticket:
    q = select(Ticket).where(Ticket.id == ticket_id).options(selectinload(Ticket.message))
    if lock:
        q = q.with_for_update()
    ticket = session.scalar(q)
    if ticket is None:
        raise NotFound(f"ticket {ticket_id} not found")
    return ticket


def holds(ticket: Ticket, actor: str, actor_key_id: int | None) -> bool:
    """Whether the caller holds the ticket's claim. The key id decides: a caller with
    a key (every API caller) holds only claims made with that same key, whatever the
    names; a claim recorded without a key id (before key ids were kept, when the name
    was ambiguous) is no API caller's. Calls without a key id (direct use of these
    functions) match by name."""
    if actor_key_id is not None or ticket.claimed_by_key_id is not None:
        return ticket.claimed_by_key_id == actor_key_id
    return ticket.claimed_by == actor


def _holder(ticket: Ticket) -> str:
    key = f" (key {ticket.claimed_by_key_id})" if ticket.claimed_by_key_id is not None else ""
    return f"{ticket.claimed_by}{key}"


def _check_holder(
    ticket: Ticket, actor: str, now: datetime, is_admin: bool, actor_key_id: int | None = None
) -> None:
    state = effective_state(ticket, now)
    if state in CLOSED_STATES:
        raise Conflict(f"ticket {ticket.id} is already {state}")
    if state == "claimed" and not holds(ticket, actor, actor_key_id) and not is_admin:
        raise Conflict(
            f"ticket {ticket.id} is claimed by {_holder(ticket)} until "
            f"{ticket.lease_expires_at.isoformat()}"
        )


def _unclaim(ticket: Ticket, state: str) -> None:
    ticket.state, ticket.lease_expires_at = state, None
    ticket.claimed_by, ticket.claimed_by_key_id = None, None


def release(
    session: Session,
    ticket: Ticket,
    actor: str,
    now: datetime,
    is_admin: bool,
    actor_key_id: int | None = None,
) -> None:
    if effective_state(ticket, now) != "claimed":
        raise Conflict(f"ticket {ticket.id} is not claimed")
    _check_holder(ticket, actor, now, is_admin, actor_key_id)
    _unclaim(ticket, "open")
    _event(session, ticket, "released", actor, now, actor_key_id=actor_key_id)


def reply(
    session: Session,
    ticket: Ticket,
    actor: str,
    now: datetime,
    text: str,
    wait_for_customer: bool,
    is_admin: bool,
    lease_seconds: int,
    actor_key_id: int | None = None,
) -> None:
    _check_holder(ticket, actor, now, is_admin, actor_key_id)
    if ticket.first_response_at is None:
        ticket.first_response_at = now
    if wait_for_customer:
        _unclaim(ticket, "waiting_on_customer")
    else:
        ticket.state, ticket.claimed_by, ticket.claimed_by_key_id = "claimed", actor, actor_key_id
        ticket.lease_expires_at = now + timedelta(seconds=lease_seconds)
    _event(session, ticket, "replied", actor, now, note=text, actor_key_id=actor_key_id)


def close(
    session: Session,
    ticket: Ticket,
    actor: str,
    now: datetime,
    state: str,
    note: str | None,
    is_admin: bool,
    actor_key_id: int | None = None,
) -> None:
    """``resolved`` or ``no_response_needed`` (stops the SLA clock)."""
    assert state in CLOSED_STATES
    _check_holder(ticket, actor, now, is_admin, actor_key_id)
    _unclaim(ticket, state)
    ticket.resolved_at = now
    _event(session, ticket, state, actor, now, note=note, actor_key_id=actor_key_id)


def validate_labels(taxonomy: Taxonomy, labels: dict[str, Any]) -> dict[str, list[str]]:
    """Agent labels: task -> label or list of labels. Multi-label tasks take any subset
    (an empty list means "no issue"); the others exactly one label."""
    if not labels:
        raise ValueError("labels: give at least one task")
    out = {}
    for task_name, value in labels.items():
        if task_name not in taxonomy:
            raise ValueError(
                f"labels.{task_name}: unknown task (tasks: {', '.join(taxonomy.task_names)})"
            )
        task = taxonomy[task_name]
        values = [value] if isinstance(value, str) else value
        if not isinstance(values, list) or not all(isinstance(v, str) for v in values):
            raise ValueError(f"labels.{task_name}: expected a label or a list of labels")
        unknown = [v for v in values if v not in task.label_names]
        if unknown:
            raise ValueError(
                f"labels.{task_name}: unknown label {unknown[0]!r} "
                f"(labels: {', '.join(task.label_names)})"
            )
        if not task.is_multilabel and len(values) != 1:
            raise ValueError(f"labels.{task_name}: a {task.kind} task takes exactly one label")
        out[task_name] = list(dict.fromkeys(values))
    return out


def correct_labels(
    session: Session,
    ticket: Ticket,
    labels: dict[str, list[str]],
    actor: str,
    now: datetime,
    actor_key_id: int | None = None,
) -> LabelCorrection:
    row = LabelCorrection(
        ticket_id=ticket.id, labels=labels, actor=actor, actor_key_id=actor_key_id, created_at=now
    )
    session.add(row)
    ticket.labels = {**ticket.labels, **labels}
    _event(
        session,
        ticket,
        "labels_corrected",
        actor,
        now,
        note=json.dumps(labels),
        actor_key_id=actor_key_id,
    )
    session.flush()
    return row


def export_labels(
    session: Session, taxonomy: Taxonomy, fmt: str = "jsonl", redacted: bool = False
) -> str:
    """Agents' labels in the labelled-data format (one row per ticket; later
    corrections of a task win). Tasks nobody labelled stay empty (= not labelled).
    ``redacted``: personal data in the text masked (``serving.redact``) and the
    customer id replaced by a stable pseudonym (rows of one customer stay together)."""
    rows = session.execute(
        select(LabelCorrection, Message)
        .join(Ticket, Ticket.id == LabelCorrection.ticket_id)
        .join(Message, Message.id == Ticket.message_id)
        .order_by(LabelCorrection.id)
    ).all()
    merged: dict[int, dict[str, Any]] = {}
    for corr, msg in rows:
        rec = merged.setdefault(
            msg.id,
            {
                "id": f"msg-{msg.id}",
                "text": f"{msg.subject}\n{msg.text}" if msg.subject else msg.text,
                "lang": msg.lang,
                "source": f"tickets:{msg.channel}",
                "rating": msg.rating,
                "product_id": msg.product_id,
                "customer_id": msg.customer_id,
                "labelled_at": corr.created_at.isoformat(),
                "labelled_by": corr.actor,
            },
        )
        rec.update(corr.labels)
        rec["labelled_at"], rec["labelled_by"] = corr.created_at.isoformat(), corr.actor
    records = list(merged.values())
    if redacted:
        for r in records:
            r["text"] = redact(r["text"])
            r["customer_id"] = pseudonym(r["customer_id"], "customer")
    if fmt == "jsonl":
        return "".join(json.dumps(r, ensure_ascii=False) + "\n" for r in records)
    buf = io.StringIO()
    fields = ["id", "text", "lang", "source", "rating", "product_id", "customer_id"]
    fields += taxonomy.task_names + ["labelled_at", "labelled_by"]
    writer = csv.DictWriter(buf, fieldnames=fields, extrasaction="ignore")
    writer.writeheader()
    for r in records:
        row = dict(r)
        for task in taxonomy.task_names:
            if task in r:
                row[task] = "|".join(r[task]) if r[task] else "-"
        writer.writerow(row)
    return buf.getvalue()
