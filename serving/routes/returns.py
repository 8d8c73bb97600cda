"""Returns and refunds: opened from a ticket in one call, moved state by state, listed
with the age of each open one (``serving.returns``)."""

from __future__ import annotations

from datetime import datetime, timedelta
from typing import Any, Literal

from fastapi import APIRouter, HTTPException, Query
from pydantic import BaseModel, Field

from serving.db import transaction
from serving.deps import AgentKey, Services, Svc
from serving.errors import ApiRoute
from serving.fields import CustomerId, ProductId, RequestBody, RowId, Timestamp, free_text
from serving.returns import get_return, list_returns, move, open_return, return_kpis, return_view
from serving.store import RETURN_STATES, as_utc
from serving.tickets import Conflict, NotFound, get_ticket

Note = free_text(max_length=10_000)
router = APIRouter(prefix="/v1/returns", tags=["returns"], route_class=ApiRoute)
ticket_router = APIRouter(prefix="/v1/tickets", tags=["returns"], route_class=ApiRoute)
stats_router = APIRouter(prefix="/v1/stats", tags=["returns"], route_class=ApiRoute)
HELD: dict = {409: {"description": "Not a next state, or the ticket has an open return."}}
ReturnState = Literal[RETURN_STATES]  # type: ignore[valid-type]


class ReturnIn(RequestBody):
    note: Note | None = Field(None, description="What was agreed, e.g. the condition.")


class MoveIn(RequestBody):
    state: ReturnState = Field(..., description="The next state (see next_states).")
    note: Note | None = None


class ReturnOut(BaseModel):
    id: int
    ticket_id: int
    order_id: str | None
    product_id: str | None
    customer_id: str | None
    reasons: list[str] = Field(description="The ticket's issue types (why it comes back).")
    note: str | None
    state: str
    open: bool
    age_hours: float | None = Field(description="Hours since the request, while open.")
    created_by: str
    created_at: datetime
    updated_at: datetime
    closed_at: datetime | None
    next_states: list[str]
    history: list[dict[str, Any]] = []


def _act(svc: Services, fn) -> ReturnOut:
    now = svc.clock()
    try:
        with transaction(svc.sessions) as s:
            row = fn(s, now)
            s.expire(row, ["events"])
            return ReturnOut(**return_view(row, now))
    except NotFound as exc:
        raise HTTPException(404, detail=str(exc)) from exc
    except Conflict as exc:
        raise HTTPException(409, detail=str(exc)) from exc


@ticket_router.post(
    "/{ticket_id}/return", response_model=ReturnOut, status_code=201, responses=HELD
)
def create_return(
    *,
    ticket_id: RowId,
    body: ReturnIn | None = None,
    svc: Svc,
    who: AgentKey,
) -> ReturnOut:
    """Open a return for the ticket's order (product, customer and reasons from the
    ticket), state ``requested``."""
    note = body.note if body else None

    def fn(s, now):
        ticket = get_ticket(s, ticket_id, lock=svc.skip_locked)
        return open_return(s, ticket, who.actor, now, note, who.key_id)

    return _act(svc, fn)


@router.post("/{return_id}/state", response_model=ReturnOut, responses=HELD)
def move_return(
    return_id: RowId,
    body: MoveIn,
    svc: Svc,
    who: AgentKey,
) -> ReturnOut:
    """Move a return to its next state: requested -> approved -> label_sent -> received
    -> refunded, or rejected (approved may go straight to refunded)."""

    def fn(s, now):
        row = get_return(s, return_id, lock=svc.skip_locked)
        move(s, row, body.state, who.actor, now, body.note, who.key_id)
        return row

    return _act(svc, fn)


@router.get("/{return_id}", response_model=ReturnOut)
def show_return(return_id: RowId, svc: Svc, _: AgentKey) -> ReturnOut:
    with svc.sessions() as s:
        try:
            return ReturnOut(**return_view(get_return(s, return_id), svc.clock()))
        except NotFound as exc:
            raise HTTPException(404, detail=str(exc)) from exc


@router.get("", response_model=list[ReturnOut])
def returns_list(
    *,
    state: ReturnState | None = Query(None),
    open: bool | None = Query(None, description="Only open (true) or closed (false) returns."),
    product_id: ProductId | None = Query(None),
    customer_id: CustomerId | None = Query(None),
    limit: int = Query(50, ge=1, le=500),
    after_id: int | None = Query(None, ge=0, description="The last id of the previous page."),
    svc: Svc,
    _: AgentKey,
) -> list[ReturnOut]:
    """Returns in id order, a page at a time, with the age of each open one."""
    now = svc.clock()
    with svc.sessions() as s:
        rows = list_returns(s, state, open, product_id, customer_id, limit, after_id)
        return [ReturnOut(**return_view(r, now, history=False)) for r in rows]


@stats_router.get("/returns")
def returns_stats(
    *,
    since: Timestamp | None = Query(None, description="Default: 30 days before `until`."),
    until: Timestamp | None = Query(None, description="Default: now."),
    svc: Svc,
    _: AgentKey,
) -> dict[str, Any]:
    """Returns over the period: requested, closed, refunded, the share rejected, hours
    from request to refund (median, p90), and the reasons per product."""
    now = svc.clock()
    until = as_utc(until) if until else now
    since = as_utc(since) if since else until - timedelta(days=30)
    if since >= until:
        raise HTTPException(422, detail="since: must be before until")
    with svc.sessions() as s:
        return {"since": since, "until": until, **return_kpis(s, since, until)}
