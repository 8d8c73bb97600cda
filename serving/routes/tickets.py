"""Queues and tickets for agents: overview, ordered lists, claims with leases, reply,
resolve, no-response-needed, label corrections and their export."""

from __future__ import annotations

from datetime import datetime, timedelta
from typing import Any, Literal

from carelens_client.vocabulary import Channel
from fastapi import APIRouter, HTTPException, Query
from fastapi.responses import Response
from pydantic import AliasChoices, BaseModel, ConfigDict, Field, model_validator

from serving import cursors
from serving.auth import Principal
from serving.autoreply import latest_draft
from serving.corrections import correct_labels, export_labels, validate_labels
from serving.db import transaction
from serving.deps import AgentKey, DisplayLang, Services, Svc
from serving.errors import ApiRoute
from serving.fields import RequestBody, RowId, free_text
from serving.outbox import queue_reply
from serving.routes.messages import RuleHitOut
from serving.store import TICKET_STATES
from serving.tickets import (
    Conflict,
    NotFound,
    attachment_of,
    claim_next,
    claim_ticket,
    close,
    get_ticket,
    list_tickets,
    queue_overview,
    queue_tickets,
    release,
    reply,
    ticket_view,
)

ReplyText = free_text(min_length=1, max_length=100_000)
Note = free_text(max_length=10_000)
router = APIRouter(prefix="/v1/tickets", tags=["queues and tickets"], route_class=ApiRoute)
queue_router = APIRouter(prefix="/v1/queues", tags=["queues and tickets"], route_class=ApiRoute)
labels_router = APIRouter(prefix="/v1/labels", tags=["queues and tickets"], route_class=ApiRoute)
HELD: dict = {409: {"description": "The ticket is closed, or claimed by another key."}}


class QueueInfo(BaseModel):
    queue: str
    description: str
    depth: int = Field(description="Tickets not closed (open, claimed, waiting on customer).")
    unclaimed: int
    oldest_unclaimed_at: datetime | None
    waiting_on_customer: int = Field(description="Tickets answered and waiting on the customer.")
    breached: int = Field(description="Active tickets past their deadline with no response.")
    due_soon: int = Field(
        0,
        description="Active tickets with no response due within CARELENS_SLA_ALERT_LEAD_HOURS.",
    )
    late_response_rate: dict[str, float | None] = Field(
        description="Share of tickets due in the last 7/30/90 days answered late or not at all."
    )


class MessageOut(BaseModel):
    """A customer's message as stored."""

    model_config = ConfigDict(from_attributes=True)

    id: int
    external_id: str | None
    channel: Channel
    subject: str | None
    text: str
    lang: str
    customer_id: str | None
    customer_name: str | None
    order_id: str | None
    product_id: str | None
    marketplace: str | None
    rating: int | None
    received_at: datetime
    reply_to: str | None = Field(description="E-mail: where an answer goes.")
    references: str | None = Field(description="E-mail: the Message-IDs it answers.")


class AttachmentOut(BaseModel):
    """A file that came with a message (GET .../attachments/{id} downloads it)."""

    model_config = ConfigDict(from_attributes=True)

    id: int
    message_id: int
    filename: str
    content_type: str
    size: int = Field(description="Bytes.")


class OutboundOut(BaseModel):
    """A reply sent by e-mail and its delivery."""

    model_config = ConfigDict(from_attributes=True)

    id: int
    message_id: str = Field(description="The reply's Message-ID.")
    to: str = Field(validation_alias=AliasChoices("to_addr", "to"))
    subject: str
    automatic: bool = Field(description="An automatic answer, not an agent's.")
    state: Literal["queued", "sending", "sent", "failed"]
    attempts: int
    next_attempt_at: datetime | None = Field(description="While queued: the next try.")
    last_error: str | None
    created_at: datetime
    sent_at: datetime | None

    @model_validator(mode="after")
    def _next_attempt_while_queued(self) -> OutboundOut:
        if self.state != "queued":
            self.next_attempt_at = None
        return self


class SurveyOut(BaseModel):
    """The customer's answer to the satisfaction survey."""

    model_config = ConfigDict(from_attributes=True)

    stars: int = Field(ge=1, le=5)
    comment: str | None
    lang: str
    answered_at: datetime


class TicketOut(BaseModel):
    id: int
    message_id: int
    queue: str
    state: str
    priority: float
    base_priority: float
    labels: dict[str, list[str]]
    label_display: dict[str, dict[str, str]] = Field(
        {},
        description="Each task's labels with their display names, in English or Chinese "
        "(lang, else Accept-Language).",
    )
    rule_hits: list[RuleHitOut]
    sla_hours: float
    sla_due_at: datetime
    sla_breached: bool
    first_response_at: datetime | None
    resolved_at: datetime | None
    claimed_by: str | None = Field(description="The name of the key holding the claim.")
    claimed_by_key_id: int | None = Field(
        description="The id of the key holding the claim: only that key (or an admin) may "
        "reply, release or close the ticket while the lease runs."
    )
    lease_expires_at: datetime | None
    created_at: datetime
    reply_due_at: datetime | None = Field(
        None, description="The customer answered after our last reply: answer them by then."
    )
    waiting_since: datetime | None = Field(
        None, description="Waiting on the customer since (the last reply)."
    )
    waiting_hours: float | None = None
    cursor: str | None = Field(
        None, description="In a queue's list: pass as `after` for the page after this ticket."
    )
    message: MessageOut | None
    answers: list[MessageOut] = Field(
        [], description="The customer's later messages that joined this ticket, oldest first."
    )
    attachments: list[AttachmentOut] = Field(
        [], description="Files that came with the messages (GET .../attachments/{id})."
    )
    outbound: list[OutboundOut] = Field(
        [], description="Replies sent by e-mail and their delivery (queued, sent, failed)."
    )
    survey_url: str | None = Field(
        None,
        description="The satisfaction survey link to give the customer (put {survey_link} "
        "in a reply template); it opens once the ticket is resolved. Not for reviews.",
    )
    survey: SurveyOut | None = None
    draft: dict[str, Any] | None = Field(
        None,
        description="An automatic answer waiting for an agent (template, text, missing "
        "fields): POST .../draft/send sends it.",
    )


class Delivery(BaseModel):
    state: Literal["queued", "not_sent"] = Field(
        description="queued: in the outbox, sent by SMTP with retries (see outbound); "
        "not_sent: recorded only, and why."
    )
    reason: str | None = None
    outbound_id: int | None = None


class ReplyOut(TicketOut):
    delivery: Delivery


class ClaimOut(BaseModel):
    ticket: TicketOut | None = Field(description="None when the queue has nothing to claim.")


class ReplyIn(RequestBody):
    text: ReplyText = Field(..., description="The reply sent.")
    wait_for_customer: bool = Field(
        False, description="Set the ticket to waiting_on_customer (and release the claim)."
    )


class CloseIn(RequestBody):
    note: Note | None = None


class LabelsIn(RequestBody):
    labels: dict[str, str | list[str]] = Field(
        ...,
        description='Task -> label(s), e.g. {"issue_type": ["refund_return"], "urgency": "high"}',
        json_schema_extra={"minProperties": 1},  # refused with the reason by validate_labels
    )


def _queue(svc: Services, queue: str) -> None:
    if queue not in svc.routing.queues:
        raise HTTPException(
            404, detail=f"unknown queue {queue!r} (queues: {', '.join(svc.routing.queues)})"
        )


def _view(svc: Services, ticket, now, lang: str, detail: bool = True) -> TicketOut:
    """The ticket as the API shows it, its labels' display names in ``lang``."""
    view = ticket_view(
        ticket, now, detail=detail, survey_url=svc.survey_url(ticket.id) if detail else None
    )
    return TicketOut(**view, label_display=svc.taxonomy.display_labels(view["labels"], lang))


def _ticket_action(svc: Services, ticket_id: int, fn, lang: str) -> TicketOut:
    now = svc.clock()
    try:
        with transaction(svc.sessions) as s:
            ticket = get_ticket(s, ticket_id, lock=svc.skip_locked)
            fn(s, ticket, now)
            s.flush()
            s.expire(ticket, ["events", "outbound"])  # the view reads what fn added
            return _view(svc, ticket, now, lang)
    except NotFound as exc:
        raise HTTPException(404, detail=str(exc)) from exc
    except Conflict as exc:
        raise HTTPException(409, detail=str(exc)) from exc


@queue_router.get("", response_model=list[QueueInfo])
def list_queues(svc: Svc, _: AgentKey) -> list[QueueInfo]:
    """Every queue: depth, unclaimed, oldest unclaimed, breached, due soon, late-response
    rates."""
    with svc.sessions() as s:
        lead = timedelta(hours=svc.settings.sla_alert_lead_hours)
        return [QueueInfo(**q) for q in queue_overview(s, svc.routing, svc.clock(), lead)]


@queue_router.get("/{queue}/tickets", response_model=list[TicketOut])
def list_queue_tickets(
    *,
    queue: str,
    include_claimed: bool = Query(True),
    state: Literal["open", "claimed", "waiting_on_customer"] | None = Query(
        None, description="Only this state (e.g. waiting_on_customer, with how long each waits)."
    ),
    limit: int = Query(50, ge=1, le=500),
    after: str | None = Query(
        None,
        max_length=80,
        description="The `cursor` of the last ticket of the previous page: the page after it.",
    ),
    lang: DisplayLang,
    svc: Svc,
    _: AgentKey,
) -> list[TicketOut]:
    """Open (and claimed) tickets of a queue, highest priority first, ties by age; or
    the tickets of one state. Paged with a cursor: each ticket's ``cursor``, passed as
    ``after``, gives the page after it (a range read of the queue's index)."""
    _queue(svc, queue)
    now = svc.clock()
    key = cursors.parse(after, groups=1)[1] if after is not None else None
    with svc.sessions() as s:
        rows = queue_tickets(
            s, queue, now, include_claimed=include_claimed, limit=limit, state=state, after=key
        )
        return [
            _view(svc, t, now, lang, detail=False).model_copy(
                update={"cursor": cursors.make(0, t.rank_at, t.id)}
            )
            for t in rows
        ]


TicketState = Literal[TICKET_STATES]  # type: ignore[valid-type]


@router.get("", response_model=list[TicketOut])
def tickets_list(
    *,
    state: TicketState | None = Query(None, description="e.g. waiting_on_customer"),
    queue: str | None = Query(None),
    limit: int = Query(50, ge=1, le=500),
    after_id: int | None = Query(
        None, ge=0, description="The last id of the previous page (pages in id order)."
    ),
    lang: DisplayLang,
    svc: Svc,
    _: AgentKey,
) -> list[TicketOut]:
    """Tickets by state and queue, in id order, a page at a time."""
    if queue is not None and queue not in svc.routing.queues:
        raise HTTPException(
            422, detail=f"queue: unknown queue {queue!r} (queues: {', '.join(svc.routing.queues)})"
        )
    now = svc.clock()
    with svc.sessions() as s:
        rows = list_tickets(s, state, queue, limit, after_id)
        return [_view(svc, t, now, lang, detail=False) for t in rows]


@queue_router.post("/{queue}/claim", response_model=ClaimOut)
def claim(
    queue: str,
    lang: DisplayLang,
    svc: Svc,
    who: AgentKey,
) -> ClaimOut:
    """Lease the highest-priority unclaimed ticket (or one whose lease expired) to the
    caller for ``CARELENS_LEASE_SECONDS``. Two agents never get the same ticket."""
    _queue(svc, queue)
    now = svc.clock()
    with transaction(svc.sessions) as s:
        ticket = claim_next(
            s,
            queue,
            who.actor,
            now,
            svc.settings.lease_seconds,
            skip_locked=svc.skip_locked,
            actor_key_id=who.key_id,
        )
        if ticket is None:
            return ClaimOut(ticket=None)
        return ClaimOut(ticket=_view(svc, ticket, now, lang))


@router.get("/{ticket_id}", response_model=TicketOut)
def show_ticket(
    ticket_id: RowId,
    lang: DisplayLang,
    svc: Svc,
    _: AgentKey,
) -> TicketOut:
    with svc.sessions() as s:
        try:
            ticket = get_ticket(s, ticket_id)
            return _view(svc, ticket, svc.clock(), lang)
        except NotFound as exc:
            raise HTTPException(404, detail=str(exc)) from exc


@router.post("/{ticket_id}/claim", response_model=TicketOut, responses=HELD)
def claim_one(
    ticket_id: RowId,
    lang: DisplayLang,
    svc: Svc,
    who: AgentKey,
) -> TicketOut:
    """Lease this ticket to the caller (open, waiting on the customer, or its lease ran
    out; the caller's own claim is renewed), with claim-next's lease. A ticket another
    key holds, or a closed one, is a 409."""
    lease = svc.settings.lease_seconds
    return _ticket_action(
        svc,
        ticket_id,
        lambda s, t, now: claim_ticket(s, t, who.actor, now, lease, who.key_id),
        lang,
    )


@router.get(
    "/{ticket_id}/attachments/{attachment_id}",
    response_class=Response,
    responses={200: {"content": {"application/octet-stream": {"schema": {"type": "string"}}}}},
)
def download_attachment(
    ticket_id: RowId,
    attachment_id: RowId,
    svc: Svc,
    _: AgentKey,
) -> Response:
    """A file that came with the ticket's messages, as it came (served as a download,
    never rendered inline)."""
    with svc.sessions() as s:
        try:
            ticket = get_ticket(s, ticket_id)
        except NotFound as exc:
            raise HTTPException(404, detail=str(exc)) from exc
        att = attachment_of(s, ticket, attachment_id)
        if att is None:
            raise HTTPException(404, detail=f"ticket {ticket_id} has no attachment {attachment_id}")
        name = att.filename.replace('"', "_")
        return Response(
            att.content,
            media_type="application/octet-stream",
            headers={
                "Content-Disposition": f"attachment; filename*=UTF-8''{_quote(name)}",
                "X-Content-Type-Options": "nosniff",
                "X-Original-Content-Type": att.content_type,
            },
        )


def _quote(name: str) -> str:
    from urllib.parse import quote

    return quote(name, safe="")


@router.post("/{ticket_id}/release", response_model=TicketOut, responses=HELD)
def release_ticket(
    ticket_id: RowId,
    lang: DisplayLang,
    svc: Svc,
    who: AgentKey,
) -> TicketOut:
    """Give a claimed ticket back to its queue."""
    return _ticket_action(
        svc,
        ticket_id,
        lambda s, t, now: release(s, t, who.actor, now, who.role == "admin", who.key_id),
        lang,
    )


@router.post("/{ticket_id}/reply", response_model=ReplyOut, responses=HELD)
def reply_ticket(
    ticket_id: RowId,
    body: ReplyIn,
    lang: DisplayLang,
    svc: Svc,
    who: AgentKey,
) -> ReplyOut:
    """Record a reply (the first one stops the first-response clock) and, for an e-mail
    with an SMTP relay configured, put it in the outbox in the same transaction: it is
    sent threaded to the customer's latest message, with retries (``delivery`` and
    ``outbound`` say how far). Without a relay the reply is recorded only, and
    ``delivery`` says so."""
    return _reply(svc, ticket_id, who, lambda t: body.text, body.wait_for_customer, lang)


def _reply(
    svc: Services, ticket_id: int, who: Principal, text_of, wait: bool, lang: str
) -> ReplyOut:
    """A reply (its text from the locked ticket: ``text_of(ticket)``), recorded and put
    in the outbox in one transaction."""
    delivery = {}

    def act(s, t, now):
        text = text_of(t)
        reply(
            s,
            t,
            who.actor,
            now,
            text,
            wait,
            who.role == "admin",
            svc.settings.lease_seconds,
            who.key_id,
        )
        delivery.update(queue_reply(s, t, text, svc.settings, now).to_dict())

    out = _ticket_action(svc, ticket_id, act, lang)
    return ReplyOut(**out.model_dump(), delivery=Delivery(**delivery))


class DraftIn(RequestBody):
    wait_for_customer: bool = Field(
        True, description="Set the ticket to waiting_on_customer (and release the claim)."
    )


@router.post("/{ticket_id}/draft/send", response_model=ReplyOut, responses=HELD)
def send_draft(
    *,
    ticket_id: RowId,
    body: DraftIn | None = None,
    lang: DisplayLang,
    svc: Svc,
    who: AgentKey,
) -> ReplyOut:
    """Send the ticket's automatic draft as the caller's reply (one click). 409 when
    there is no draft, or it lacks a field: fill it in and send it as a reply."""

    def draft_text(t) -> str:
        draft = latest_draft(t)
        if draft is None:
            raise Conflict(f"ticket {t.id} has no draft waiting")
        if draft.get("missing"):
            raise Conflict(
                f"the draft of ticket {t.id} lacks {', '.join(draft['missing'])}: fill "
                "them in and send it with POST /v1/tickets/{id}/reply"
            )
        return draft["text"]

    return _reply(svc, ticket_id, who, draft_text, body.wait_for_customer if body else True, lang)


def _close(
    svc: Services, ticket_id: int, body: CloseIn | None, who: Principal, state: str, lang: str
):
    note = body.note if body else None
    is_admin = who.role == "admin"
    return _ticket_action(
        svc,
        ticket_id,
        lambda s, t, now: close(s, t, who.actor, now, state, note, is_admin, who.key_id),
        lang,
    )


@router.post("/{ticket_id}/resolve", response_model=TicketOut, responses=HELD)
def resolve_ticket(
    *,
    ticket_id: RowId,
    body: CloseIn | None = None,
    lang: DisplayLang,
    svc: Svc,
    who: AgentKey,
) -> TicketOut:
    """Close a ticket as resolved (records the resolution time)."""
    return _close(svc, ticket_id, body, who, "resolved", lang)


@router.post("/{ticket_id}/no-response-needed", response_model=TicketOut, responses=HELD)
def no_response_needed(
    *,
    ticket_id: RowId,
    body: CloseIn | None = None,
    lang: DisplayLang,
    svc: Svc,
    who: AgentKey,
) -> TicketOut:
    """Close without a reply; stops the SLA clock."""
    return _close(svc, ticket_id, body, who, "no_response_needed", lang)


@router.post("/{ticket_id}/labels", response_model=TicketOut, responses=HELD)
def post_labels(
    ticket_id: RowId,
    body: LabelsIn,
    lang: DisplayLang,
    svc: Svc,
    who: AgentKey,
) -> TicketOut:
    """An agent's corrected labels (validated against the served model's taxonomy),
    kept with who and when; they become training data (``GET /v1/labels/export``)."""
    taxonomy = svc.require_predictor().taxonomy
    try:
        labels = validate_labels(taxonomy, dict(body.labels))
    except ValueError as exc:
        raise HTTPException(422, detail=str(exc)) from exc
    return _ticket_action(
        svc,
        ticket_id,
        lambda s, t, now: correct_labels(s, t, labels, who.actor, now, who.key_id),
        lang,
    )


@labels_router.get(
    "/export",
    response_class=Response,
    responses={
        200: {
            "description": "One JSON object a line (jsonl) or CSV with a header row.",
            "content": {
                "application/x-ndjson": {"schema": {"type": "string"}},
                "text/csv": {"schema": {"type": "string"}},
            },
        }
    },
)
def labels_export(
    *,
    format: Literal["jsonl", "csv"] = Query("jsonl"),
    redact: bool = Query(
        False,
        description="Mask personal data in the texts (e-mail addresses, phone numbers, "
        "order ids, street addresses) and replace customer ids by pseudonyms.",
    ),
    svc: Svc,
    _: AgentKey,
) -> Response:
    """Agents' labels in the labelled-data format that ``carelens train`` reads."""
    taxonomy = svc.require_predictor().taxonomy
    with svc.sessions() as s:
        body = export_labels(s, taxonomy, format, redacted=redact)
    media = "application/x-ndjson" if format == "jsonl" else "text/csv"
    return Response(body, media_type=f"{media}; charset=utf-8")
