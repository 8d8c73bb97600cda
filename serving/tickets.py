"""Messages become tickets; tickets move through queues. Pure store logic (no HTTP):
the routes call these functions inside one transaction each.

States: open -> claimed -> (waiting_on_customer) -> resolved, or no_response_needed
(which stops the SLA clock). A claim is a lease: once ``lease_expires_at`` passes, the
ticket is claimable again (it shows as ``open``).
"""

from __future__ import annotations

import functools
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import Any, NamedTuple

from sqlalchemy import (
    Integer,
    String,
    and_,
    bindparam,
    case,
    func,
    insert,
    literal,
    or_,
    select,
    tuple_,
    union_all,
    update,
)
from sqlalchemy.orm import Session, aliased, contains_eager, selectinload

from serving.autoreply import latest_draft
from serving.routing import RoutingConfig, priority_at
from serving.store import (
    CLOSED_STATES,
    Attachment,
    Message,
    Ticket,
    TicketEvent,
    UTCDateTime,
)

LATE_WINDOWS_DAYS = (7, 30, 90)


class Conflict(Exception):
    """The ticket is not in a state that allows this (HTTP 409)."""


class NotFound(Exception):
    """No such ticket / review (HTTP 404)."""


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


def waiting_since(ticket: Ticket) -> datetime | None:
    """When a ticket waiting on the customer started waiting (its last reply)."""
    if ticket.state != "waiting_on_customer":
        return None
    replies = [e.at for e in ticket.events if e.kind == "replied"]
    return max(replies) if replies else ticket.updated_at


def ticket_view(
    ticket: Ticket, now: datetime, detail: bool = True, survey_url: str | None = None
) -> dict[str, Any]:
    """The ticket's fields as the API shows them (``TicketOut``, whose nested models
    read the message, answers, attachments, outbound mail and survey rows given here,
    inside the session); ``detail`` adds the customer's answers, the attachments, the
    outgoing mail and the satisfaction survey (its link, ``survey_url``, for a ticket
    that can have one; the customer's answer) - one ticket's page, not a list."""
    msg = ticket.message
    state = effective_state(ticket, now)
    held = state == "claimed"
    since = waiting_since(ticket) if state == "waiting_on_customer" else None
    extra: dict[str, Any] = {}
    if detail:
        extra = {
            "answers": list(ticket.answers),
            "attachments": [a for m in (msg, *ticket.answers) if m for a in m.attachments],
            "outbound": list(ticket.outbound),
            "draft": latest_draft(ticket),
            "survey_url": survey_url if msg is not None and msg.channel != "review" else None,
            "survey": ticket.survey,
        }
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
        "reply_due_at": ticket.reply_due_at,
        "waiting_since": since,
        "waiting_hours": round((now - since).total_seconds() / 3600, 2) if since else None,
        "message": msg,
        **extra,
    }


def _claimable(now: datetime):
    return or_(
        Ticket.state == "open",
        and_(Ticket.state == "claimed", Ticket.lease_expires_at <= now),
    )


def queue_tickets(
    session: Session,
    queue: str,
    now: datetime,
    include_claimed: bool = True,
    limit: int = 50,
    state: str | None = None,
    after: tuple[datetime, int] | None = None,
) -> list[Ticket]:
    """A queue's tickets to work (open, and claimed unless ``include_claimed`` is
    false) in claim order; or those of one ``state`` (e.g. waiting_on_customer);
    ``after``: the (rank_at, id) of the last ticket of the previous page."""
    states = [state] if state else ["open", "claimed"] if include_claimed else ["open"]
    q = (
        select(Ticket)
        .where(Ticket.queue == queue, Ticket.state.in_(states))
        .order_by(Ticket.rank_at, Ticket.id)
        .limit(limit)
        .options(selectinload(Ticket.message), selectinload(Ticket.events))
    )
    if after is not None:
        q = q.where(tuple_(Ticket.rank_at, Ticket.id) > tuple_(*after))
    return list(session.scalars(q))


def list_tickets(
    session: Session, state: str | None, queue: str | None, limit: int, after_id: int | None
) -> list[Ticket]:
    """Tickets by state and queue, oldest first, ``limit`` at a time after ``after_id``
    (the last id of the previous page)."""
    q = select(Ticket).order_by(Ticket.id).limit(limit)
    if state is not None:
        q = q.where(Ticket.state == state)
    if queue is not None:
        q = q.where(Ticket.queue == queue)
    if after_id is not None:
        q = q.where(Ticket.id > after_id)
    q = q.options(selectinload(Ticket.message), selectinload(Ticket.events))
    return list(session.scalars(q))


class EventFacts(NamedTuple):
    id: int
    kind: str
    actor: str | None
    actor_key_id: int | None
    at: datetime


@dataclass
class TicketFacts:
    """What the figures read of a ticket, without an ORM object: its columns, its
    message's channel and arrival, its events in order (``ticket_facts``)."""

    id: int
    queue: str
    state: str
    labels: dict[str, Any]
    first_response_at: datetime | None
    resolved_at: datetime | None
    sla_due_at: datetime
    received_at: datetime
    channel: str
    events: list[EventFacts] = field(default_factory=list)


def ticket_facts(session: Session, *where, kinds: tuple[str, ...] = ()) -> list[TicketFacts]:
    """The facts of the tickets matching ``where`` (two queries: tickets with their
    message's columns, then their events; ``kinds``: only events of these kinds)."""
    rows = session.execute(
        select(
            Ticket.id,
            Ticket.queue,
            Ticket.state,
            Ticket.labels,
            Ticket.first_response_at,
            Ticket.resolved_at,
            Ticket.sla_due_at,
            Message.received_at,
            Message.channel,
        )
        .join(Message, Message.id == Ticket.message_id)
        .where(*where)
        .order_by(Ticket.id)
    )
    facts = {r[0]: TicketFacts(*r) for r in rows}
    if facts:
        ids = select(Ticket.id).join(Message, Message.id == Ticket.message_id).where(*where)
        for ticket_id, *event in session.execute(
            select(
                TicketEvent.ticket_id,
                TicketEvent.id,
                TicketEvent.kind,
                TicketEvent.actor,
                TicketEvent.actor_key_id,
                TicketEvent.at,
            )
            .where(
                TicketEvent.ticket_id.in_(ids), *([TicketEvent.kind.in_(kinds)] if kinds else [])
            )
            .order_by(TicketEvent.id)
        ):
            facts[ticket_id].events.append(EventFacts(*event))
    return list(facts.values())


def queue_overview(
    session: Session, routing: RoutingConfig, now: datetime, lead: timedelta = timedelta(hours=2)
) -> list[dict[str, Any]]:
    """Per queue: depth, unclaimed, oldest unclaimed, waiting, breached, due within
    ``lead`` (not yet late), late-response rates; counted in the database (one grouped
    query, and one for the rates)."""
    unclaimed = or_(
        Ticket.state == "open", and_(Ticket.state == "claimed", Ticket.lease_expires_at <= now)
    )
    unanswered = Ticket.first_response_at.is_(None)

    def count(condition):
        return func.sum(case((condition, 1), else_=0))

    rows = {
        r.queue: r
        for r in session.execute(
            select(
                Ticket.queue,
                func.count().label("depth"),
                count(unclaimed).label("unclaimed"),
                func.min(case((unclaimed, Ticket.created_at))).label("oldest"),
                count(Ticket.state == "waiting_on_customer").label("waiting"),
                count(and_(unanswered, Ticket.sla_due_at < now)).label("breached"),
                count(
                    and_(unanswered, Ticket.sla_due_at >= now, Ticket.sla_due_at <= now + lead)
                ).label("due_soon"),
            )
            .where(Ticket.state.not_in(CLOSED_STATES))
            .group_by(Ticket.queue)
        )
    }
    late = late_rates_by(session, now, Ticket.queue)
    out = []
    for name, description in routing.queues.items():
        r = rows.get(name)
        out.append(
            {
                "queue": name,
                "description": description,
                "depth": r.depth if r else 0,
                "unclaimed": int(r.unclaimed or 0) if r else 0,
                "oldest_unclaimed_at": r.oldest if r else None,
                "waiting_on_customer": int(r.waiting or 0) if r else 0,
                "breached": int(r.breached or 0) if r else 0,
                "due_soon": int(r.due_soon or 0) if r else 0,
                "late_response_rate": late.get(name, no_rates()),
            }
        )
    return out


def _late(now: datetime):
    """``is_breached`` in SQL: 1 when the first response was late, or is missing past
    the deadline (no-response-needed and resolved stop the clock when they were set)."""
    fr, due, res = Ticket.first_response_at, Ticket.sla_due_at, Ticket.resolved_at
    return case(
        (fr.is_not(None), case((fr > due, 1), else_=0)),
        (
            Ticket.state.in_(("no_response_needed", "resolved")),
            case((or_(and_(res.is_(None), due < now), res > due), 1), else_=0),
        ),
        (due < now, 1),
        else_=0,
    )


def no_rates() -> dict[str, float | None]:
    return {f"{days}d": None for days in LATE_WINDOWS_DAYS}


def late_rates_by(session: Session, now: datetime, key=None, *where) -> dict[Any, dict]:
    """Share of tickets whose first-response deadline fell in the last 7/30/90 days
    that were answered late or not at all, per value of ``key`` (a column or
    expression; None: all of them, as ``"all"``), counted in the database."""
    since = now - timedelta(days=max(LATE_WINDOWS_DAYS))
    late = _late(now)
    cols = []
    for days in LATE_WINDOWS_DAYS:
        inside = Ticket.sla_due_at >= now - timedelta(days=days)
        cols += [func.sum(case((inside, 1), else_=0)), func.sum(case((inside, late), else_=0))]
    q = select(*cols).select_from(Ticket)
    q = q.where(Ticket.sla_due_at >= since, Ticket.sla_due_at <= now, *where)
    if key is not None:
        q = q.add_columns(key).group_by(key)
    out = {}
    for row in session.execute(q):
        rates = {}
        for k, days in enumerate(LATE_WINDOWS_DAYS):
            n, n_late = int(row[2 * k] or 0), int(row[2 * k + 1] or 0)
            rates[f"{days}d"] = round(n_late / n, 4) if n else None
        out[row[-1] if key is not None else "all"] = rates
    return out


def late_response_rates(
    session: Session, now: datetime, queue: str | None = None
) -> dict[str, float | None]:
    """Share of tickets whose first-response deadline fell in the last N days that
    were answered late or not at all (no-response-needed in time is not late)."""
    where = [Ticket.queue == queue] if queue is not None else []
    return late_rates_by(session, now, None, *where)["all"]


def buyer_message_late_rates(session: Session, now: datetime) -> dict[str, Any]:
    """The late-response rate as Amazon counts it: buyer messages (e-mail) only, whose
    24-hour deadline fell in the last 7/30/90 days, shop-wide and per marketplace;
    reviews and chats have their own deadlines and are not counted."""
    email = [Ticket.message_id == Message.id, Message.channel == "email"]
    market = func.coalesce(Message.marketplace, "unknown")
    return {
        "shop": late_rates_by(session, now, None, *email)["all"],
        "marketplaces": dict(sorted(late_rates_by(session, now, market, *email).items())),
    }


# -- changing ---------------------------------------------------------------------


def event(
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
    _lease(session, ticket, actor, now, lease_seconds, actor_key_id)
    session.flush()
    return ticket


def _lease(
    session: Session,
    ticket: Ticket,
    actor: str,
    now: datetime,
    lease_seconds: int,
    actor_key_id: int | None,
) -> None:
    """Lease a claimable ticket to ``actor``: a ``lease_expired`` event naming the
    previous holder first when it was claimed, then ``claimed``."""
    if ticket.state == "claimed":  # an expired lease
        event(
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
    event(session, ticket, "claimed", actor, now, actor_key_id=actor_key_id)


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


def claim_ticket(
    session: Session,
    ticket: Ticket,
    actor: str,
    now: datetime,
    lease_seconds: int,
    actor_key_id: int | None = None,
) -> None:
    """Lease one given ticket to ``actor``, as ``claim_next`` would: an open ticket, one
    whose lease ran out (``lease_expired`` event first) or one waiting on the customer;
    the holder's own claim is renewed. A ticket someone else holds, or a closed one, is
    a ``Conflict``."""
    state = effective_state(ticket, now)
    if state in CLOSED_STATES:
        raise Conflict(f"ticket {ticket.id} is already {state}")
    if state == "claimed" and not holds(ticket, actor, actor_key_id):
        raise Conflict(
            f"ticket {ticket.id} is claimed by {_holder(ticket)} until "
            f"{ticket.lease_expires_at.isoformat()}"
        )
    if state == "claimed":  # the holder's own claim: renewed
        ticket.lease_expires_at = now + timedelta(seconds=lease_seconds)
        event(session, ticket, "claimed", actor, now, actor_key_id=actor_key_id)
        return
    _lease(session, ticket, actor, now, lease_seconds, actor_key_id)


def get_ticket(session: Session, ticket_id: int, lock: bool = False) -> Ticket:
    q = select(Ticket).where(Ticket.id == ticket_id).options(selectinload(Ticket.message))
    if lock:
        q = q.with_for_update()
    ticket = session.scalar(q)
    if ticket is None:
        raise NotFound(f"ticket {ticket_id} not found")
    return ticket


def attachment_of(session: Session, ticket: Ticket, attachment_id: int) -> Attachment | None:
    """A file that came with the ticket's first message or one of its answers."""
    message_ids = [ticket.message_id, *(m.id for m in ticket.answers)]
    return session.scalar(
        select(Attachment).where(
            Attachment.id == attachment_id, Attachment.message_id.in_(message_ids)
        )
    )


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
    event(session, ticket, "released", actor, now, actor_key_id=actor_key_id)


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
    ticket.reply_due_at = None  # the customer's latest answer is answered
    if wait_for_customer:
        _unclaim(ticket, "waiting_on_customer")
    else:
        ticket.state, ticket.claimed_by, ticket.claimed_by_key_id = "claimed", actor, actor_key_id
        ticket.lease_expires_at = now + timedelta(seconds=lease_seconds)
    event(session, ticket, "replied", actor, now, note=text, actor_key_id=actor_key_id)


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
    """``resolved`` or ``no_response_needed`` (stops the SLA clock). Resolving a
    review's ticket marks the review handled, when it was not yet."""
    assert state in CLOSED_STATES
    _check_holder(ticket, actor, now, is_admin, actor_key_id)
    _unclaim(ticket, state)
    ticket.resolved_at = now
    event(session, ticket, state, actor, now, note=note, actor_key_id=actor_key_id)
    msg = ticket.message
    review = msg is not None and msg.channel == "review"
    if state == "resolved" and review and msg.handled_at is None:
        msg.handled_at, msg.handled_by, msg.handled_by_key_id = now, actor, actor_key_id
        msg.handled_note = note
        msg.update_attention(ticket.labels)
