"""Returns and refunds as a flow: opened from the customer's ticket, moved through
requested -> approved -> label_sent -> received -> refunded (or rejected; an approved
return may be refunded without the item coming back), every move kept with who and
when. Pure store logic; the routes call it in one transaction each.

Figures: returns per product and reason (the ticket's issue types), and for the
returns closed in a period the median hours from request to refund and the share
rejected.
"""

from __future__ import annotations

from datetime import datetime
from typing import Any

import numpy as np
from sqlalchemy import select
from sqlalchemy.orm import Session, selectinload

from serving.store import RETURN_MOVES, RETURN_STATES, ReturnEvent, ReturnRequest, Ticket
from serving.tickets import Conflict, NotFound, event

OPEN_STATES = tuple(s for s in RETURN_STATES if RETURN_MOVES[s])
REASON_TASK = "issue_type"


def open_return(
    session: Session,
    ticket: Ticket,
    actor: str,
    now: datetime,
    note: str | None,
    actor_key_id: int | None = None,
) -> ReturnRequest:
    """A return for the ticket's order (``requested``). One open return per ticket."""
    held = session.scalar(
        select(ReturnRequest).where(
            ReturnRequest.ticket_id == ticket.id, ReturnRequest.state.in_(OPEN_STATES)
        )
    )
    if held is not None:
        raise Conflict(f"ticket {ticket.id} already has return {held.id} ({held.state})")
    msg = ticket.message
    reasons = [r for r in (ticket.labels or {}).get(REASON_TASK, []) if r != "refund_return"]
    row = ReturnRequest(
        ticket_id=ticket.id,
        order_id=msg.order_id if msg else None,
        product_id=msg.product_id if msg else None,
        customer_id=msg.customer_id if msg else None,
        reasons=reasons,
        note=note,
        state="requested",
        created_by=actor,
        created_by_key_id=actor_key_id,
        created_at=now,
        updated_at=now,
    )
    session.add(row)
    session.flush()
    session.add(
        ReturnEvent(
            return_id=row.id,
            state="requested",
            actor=actor,
            actor_key_id=actor_key_id,
            at=now,
            note=note,
        )
    )
    event(
        session, ticket, "return_requested", actor, now, note=str(row.id), actor_key_id=actor_key_id
    )
    session.flush()
    return row


def get_return(session: Session, return_id: int, lock: bool = False) -> ReturnRequest:
    q = (
        select(ReturnRequest)
        .where(ReturnRequest.id == return_id)
        .options(selectinload(ReturnRequest.events))
    )
    if lock:
        q = q.with_for_update()
    row = session.scalar(q)
    if row is None:
        raise NotFound(f"return {return_id} not found")
    return row


def move(
    session: Session,
    row: ReturnRequest,
    state: str,
    actor: str,
    now: datetime,
    note: str | None,
    actor_key_id: int | None = None,
) -> None:
    """Move a return to ``state`` (``Conflict`` when that is not a next state)."""
    allowed = RETURN_MOVES[row.state]
    if state not in allowed:
        nexts = ", ".join(allowed) or "none: it is closed"
        raise Conflict(f"return {row.id} is {row.state}: it can move to {nexts}, not {state}")
    row.state, row.updated_at = state, now
    if not RETURN_MOVES[state]:
        row.closed_at = now
    session.add(
        ReturnEvent(
            return_id=row.id, state=state, actor=actor, actor_key_id=actor_key_id, at=now, note=note
        )
    )
    session.flush()


def return_view(row: ReturnRequest, now: datetime, history: bool = True) -> dict[str, Any]:
    age_from = row.created_at
    view = {
        "id": row.id,
        "ticket_id": row.ticket_id,
        "order_id": row.order_id,
        "product_id": row.product_id,
        "customer_id": row.customer_id,
        "reasons": list(row.reasons or []),
        "note": row.note,
        "state": row.state,
        "open": row.state in OPEN_STATES,
        "age_hours": round((now - age_from).total_seconds() / 3600, 2)
        if row.state in OPEN_STATES
        else None,
        "created_by": row.created_by,
        "created_at": row.created_at,
        "updated_at": row.updated_at,
        "closed_at": row.closed_at,
        "next_states": list(RETURN_MOVES[row.state]),
    }
    if history:
        view["history"] = [
            {
                "state": e.state,
                "actor": e.actor,
                "actor_key_id": e.actor_key_id,
                "at": e.at,
                "note": e.note,
            }
            for e in row.events
        ]
    return view


def list_returns(
    session: Session,
    state: str | None,
    open_only: bool | None,
    product_id: str | None,
    customer_id: str | None,
    limit: int,
    after_id: int | None,
) -> list[ReturnRequest]:
    q = select(ReturnRequest).order_by(ReturnRequest.id).limit(limit)
    if state is not None:
        q = q.where(ReturnRequest.state == state)
    if open_only is not None:
        states = OPEN_STATES if open_only else tuple(set(RETURN_STATES) - set(OPEN_STATES))
        q = q.where(ReturnRequest.state.in_(states))
    if product_id is not None:
        q = q.where(ReturnRequest.product_id == product_id)
    if customer_id is not None:
        q = q.where(ReturnRequest.customer_id == customer_id)
    if after_id is not None:
        q = q.where(ReturnRequest.id > after_id)
    return list(session.scalars(q))


def returns_of_ticket(session: Session, ticket_id: int) -> list[ReturnRequest]:
    return list(
        session.scalars(
            select(ReturnRequest)
            .where(ReturnRequest.ticket_id == ticket_id)
            .order_by(ReturnRequest.id)
        )
    )


def return_kpis(session: Session, since: datetime, until: datetime) -> dict[str, Any]:
    """Returns closed in [since, until]: how many, median and p90 hours from request to
    refund, share rejected; and the returns requested in the period per product and
    reason."""
    closed = list(
        session.scalars(
            select(ReturnRequest).where(
                ReturnRequest.closed_at >= since, ReturnRequest.closed_at <= until
            )
        )
    )
    refunded = [r for r in closed if r.state == "refunded"]
    hours = [(r.closed_at - r.created_at).total_seconds() / 3600 for r in refunded]
    opened = list(
        session.scalars(
            select(ReturnRequest).where(
                ReturnRequest.created_at >= since, ReturnRequest.created_at <= until
            )
        )
    )
    per_product: dict[str, dict[str, int]] = {}
    for r in opened:
        reasons = per_product.setdefault(r.product_id or "(none)", {})
        for reason in r.reasons or ["(none)"]:
            reasons[reason] = reasons.get(reason, 0) + 1
    return {
        "requested": len(opened),
        "closed": len(closed),
        "refunded": len(refunded),
        "rejected_share": round(sum(r.state == "rejected" for r in closed) / len(closed), 4)
        if closed
        else None,
        "hours_to_refund_median": round(float(np.percentile(hours, 50)), 2) if hours else None,
        "hours_to_refund_p90": round(float(np.percentile(hours, 90)), 2) if hours else None,
        "reasons_per_product": dict(sorted(per_product.items())),
    }
