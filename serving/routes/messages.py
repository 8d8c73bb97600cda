"""Messages in: JSON (one or a batch), raw e-mail; classification without storing."""

from __future__ import annotations

import asyncio
import logging
from contextlib import contextmanager
from datetime import datetime
from typing import Annotated, Any

from carelens_client.vocabulary import Channel
from fastapi import APIRouter, HTTPException, Query, Request, Response
from fastapi.concurrency import run_in_threadpool
from fastapi.encoders import jsonable_encoder
from fastapi.responses import JSONResponse
from pydantic import BaseModel, Field, PlainValidator
from sqlalchemy.exc import IntegrityError, SQLAlchemyError

from model.predictor import Prediction, clean_text
from serving import autoreply
from serving.batcher import Overloaded, Unavailable
from serving.db import describe, is_transient, transaction
from serving.deps import (
    DisplayLang,
    ServiceKey,
    Services,
    Svc,
)
from serving.errors import ApiRoute
from serving.fields import (
    CustomerId,
    CustomerName,
    ExternalId,
    Marketplace,
    OrderId,
    ProductId,
    RequestBody,
    TextToRead,
    Timestamp,
    column_length,
    identifier_problem,
    received_problem,
)
from serving.inbound import (
    EmailError,
    EmailLimits,
    EmailTooLarge,
    ParsedEmail,
    detect_language,
    parse_email,
)
from serving.ingestion import NewMessage, earlier_contacts, find_existing, store_message
from serving.mailbox import Deferred, Rejected
from serving.routing import priority_at
from serving.store import Message

log = logging.getLogger(__name__)
router = APIRouter(prefix="/v1/messages", tags=["messages"], route_class=ApiRoute)
classify_router = APIRouter(prefix="/v1/classify", tags=["messages"], route_class=ApiRoute)

Stars = Annotated[int, Field(ge=1, le=5)]


class MessageIn(RequestBody):
    channel: Channel = Field(..., description="Where the message came from.")
    text: TextToRead = Field(
        ...,
        description="What the customer wrote: more than whitespace and control characters "
        "(read as spaces).",
    )
    subject: str | None = Field(None, description="E-mail subject or review title.")
    external_id: ExternalId | None = Field(
        None, description="Idempotency key: a retry with it never stores twice."
    )
    customer_id: CustomerId | None = Field(None, description="Marketplace buyer id.")
    customer_name: CustomerName | None = Field(
        None, description="The buyer's name, as they signed: fills {customer_name} in replies."
    )
    order_id: OrderId | None = None
    product_id: ProductId | None = Field(None, description="ASIN or SKU.")
    marketplace: Marketplace | None = Field(None, description="e.g. amazon.com, amazon.de")
    rating: int | None = Field(None, ge=1, le=5, description="Star rating (reviews).")
    received_at: Timestamp | None = Field(
        None,
        description="When it was received (default: now); at most a day after the service's clock.",
    )


class MessageBatch(RequestBody):
    messages: list[MessageIn] = Field(..., min_length=1)


def _one_or_batch(value: Any) -> MessageIn | MessageBatch:
    """A body with ``messages`` is a batch, any other one message: validated as that
    alone, so its errors are its own (a union would also report the other form's)."""
    if isinstance(value, MessageIn | MessageBatch):
        return value
    batch = isinstance(value, dict) and "messages" in value
    return (MessageBatch if batch else MessageIn).model_validate(value)


MessagesIn = Annotated[
    MessageIn | MessageBatch,
    PlainValidator(_one_or_batch, json_schema_input_type=MessageIn | MessageBatch),
]


class RuleHitOut(BaseModel):
    """A critical rule's phrase found in the text."""

    rule: str = Field(description="safety, legal, regulator, chargeback or fraud.")
    phrase: str
    start: int = Field(description="Offset into what the model read (subject line, newline, text).")
    end: int


class EvidenceOut(BaseModel):
    """A span of the text that supports a label."""

    label: str
    start: int
    end: int
    text: str
    score: float


class TaskPredictionOut(BaseModel):
    task: str
    kind: str = Field(description="multiclass, multilabel or ordinal.")
    labels: list[str]
    probabilities: dict[str, float]
    confidence: float
    needs_review: bool
    evidence: list[EvidenceOut] = []
    display: str | None = Field(None, description="/v1/classify: the task's display name.")
    label_display: dict[str, str] | None = Field(
        None, description="/v1/classify: each label's display name."
    )


class PredictionOut(BaseModel):
    """The model's labels for one text, with the critical rules applied."""

    model_version: str | None
    truncated: bool = Field(description="The text was longer than the model reads.")
    needs_review: bool
    tasks: dict[str, TaskPredictionOut]
    rule_hits: list[RuleHitOut]


class StoredMessage(BaseModel):
    message_id: int
    ticket_id: int
    answered: bool = Field(
        False,
        description="True when the message is a customer's answer that joined the ticket "
        "it answers (ticket_id) instead of opening one.",
    )
    created: bool = Field(description="False when the external_id was already stored.")
    lang: str
    queue: str
    state: str
    labels: dict[str, list[str]]
    rule_hits: list[RuleHitOut]
    priority: float
    sla_due_at: datetime
    model_version: str
    prediction: PredictionOut


class StoredMessages(BaseModel):
    messages: list[StoredMessage]


class ClassifyRequest(RequestBody):
    texts: list[TextToRead] = Field(
        ...,
        min_length=1,
        description="Texts to classify (not stored); control characters are read as spaces "
        "and lone surrogates as U+FFFD, and a text must hold more than that and whitespace.",
    )
    ratings: list[Stars | None] | None = Field(
        None,
        description="Optional star rating (1-5, or null) per text, in the same order: "
        "a review's rating is read with its text.",
    )
    evidence: bool | None = Field(
        None, description="Attach supporting spans (default: the service setting)."
    )


class ClassifyResponse(BaseModel):
    model_version: str | None
    predictions: list[PredictionOut]


def check_limits(svc: Services, texts: list[str], field: str) -> None:
    limit = svc.settings.max_batch
    if len(texts) > limit:
        raise HTTPException(413, detail=f"{field}: {len(texts)} items, the limit is {limit}")
    for i, text in enumerate(texts):
        if len(text) > svc.settings.max_text_chars:
            raise HTTPException(
                413,
                detail=f"{field}[{i}]: {len(text)} characters, "
                f"the limit is {svc.settings.max_text_chars}",
            )


@contextmanager
def _batcher_errors():
    try:
        yield
    except Overloaded as exc:
        raise HTTPException(
            503, detail=str(exc), headers={"Retry-After": str(exc.retry_after)}
        ) from exc
    except Unavailable as exc:
        raise HTTPException(503, detail=f"model not available: {exc}") from exc


def predict_texts(
    svc: Services,
    texts: list[str],
    evidence: bool | None = None,
    ratings: list[int | None] | None = None,
) -> list[Prediction]:
    """Predictions through the micro-batcher (blocking: call from the thread pool).
    A full queue is a 503 with Retry-After."""
    if svc.batcher is None:  # an app run without its lifespan
        return svc.require_predictor().predict(texts, evidence=evidence, ratings=ratings)
    with _batcher_errors():
        return svc.batcher.predict(texts, evidence, ratings)


def _view(message, created: bool, now: datetime) -> StoredMessage:
    t, p = message.own_ticket, message.prediction
    return StoredMessage(
        message_id=message.id,
        ticket_id=t.id,
        answered=message.thread_ticket_id is not None,
        created=created,
        lang=message.lang,
        queue=t.queue,
        state=t.state,
        labels=t.labels,
        rule_hits=t.rule_hits,
        priority=priority_at(t.rank_at, now),
        sla_due_at=t.sla_due_at,
        model_version=p.model_version,
        prediction=p.output,
    )


def ingest(svc: Services, items: list[NewMessage], field: str) -> tuple[list[StoredMessage], bool]:
    """Classify and store ``items`` in one transaction; returns the stored views and
    whether anything new was created. Items whose external_id is already stored come
    back as they are (idempotent retry).

    A transient database fault is retried once, in a fresh transaction, when that
    cannot store anything twice: the fault came before the commit (so everything was
    rolled back), or every item has an external id (a commit that did go through is
    then found again). Otherwise it reaches the client as a 503 to retry."""
    ids = [it.external_id for it in items if it.external_id]
    seen: dict[str, int] = {}
    for i, it in enumerate(items):
        if it.external_id in seen:
            raise HTTPException(
                422, detail=f"{field}[{i}].external_id repeats {field}[{seen[it.external_id]}]"
            )
        if it.external_id:
            seen[it.external_id] = i
    predictor = svc.require_predictor()
    all_keyed = all(it.external_id for it in items)
    for attempt in range(2):
        committing = False
        try:
            now = svc.clock()
            with svc.sessions() as s:
                existing = find_existing(s, ids)
            new = [it for it in items if it.external_id not in existing]
            preds = (
                predict_texts(svc, [it.model_text for it in new], ratings=[it.rating for it in new])
                if new
                else []
            )
            with transaction(svc.sessions) as s:
                existing = find_existing(s, ids)  # again, inside the transaction
                stored, by_item = {}, {}
                for it, pred in zip(new, preds, strict=True):
                    if it.external_id in existing:
                        continue
                    version = pred.model_version or predictor.model_version or "unknown"
                    message = store_message(s, it, pred, svc.routing, version, now)
                    if svc.autoreply is not None and message.ticket is not None:
                        answer_new_ticket(svc, s, message, pred, now)
                    by_item[id(it)] = message
                for it in items:
                    if id(it) in by_item:
                        stored[id(it)] = _view(by_item[id(it)], True, now)
                    else:
                        stored[id(it)] = _view(existing[it.external_id], False, now)
                s.flush()
                committing = True  # all that is left is the COMMIT (at the block's end)
            svc.metrics.count_predictions(preds)
            views = [stored[id(it)] for it in items]
            return views, any(v.created for v in views)
        except IntegrityError:
            # a concurrent request stored the same external_id first: read it back
            if attempt:
                raise
        except SQLAlchemyError as exc:
            if attempt or not is_transient(exc) or (committing and not all_keyed):
                raise
            log.warning("database fault while storing %s, retrying once: %s", field, describe(exc))
    raise AssertionError("unreachable")


def answer_new_ticket(svc: Services, s, message, pred: Prediction, now: datetime) -> None:
    """The automatic-answer policy for a ticket just opened (``serving.autoreply``)."""
    ticket = message.ticket
    if ticket.state != "open":
        return
    contacts = earlier_contacts(
        s, message.customer_id, message.received_at, svc.routing.repeat_days
    )
    autoreply.apply(s, ticket, pred, svc.autoreply, svc.settings, contacts, now)


def to_new(m: MessageIn, i: int, field: str, now: datetime) -> NewMessage:
    text = clean_text(m.text)
    if not text.strip():
        raise HTTPException(422, detail=f"{field}[{i}].text is empty")
    if m.received_at is not None and (problem := received_problem(m.received_at, now)):
        raise HTTPException(422, detail=f"{field}[{i}].received_at {problem}")
    return NewMessage(
        channel=m.channel,
        text=text,
        subject=clean_text(m.subject).strip() or None if m.subject else None,
        external_id=m.external_id,
        customer_id=m.customer_id,
        customer_name=m.customer_name.strip() or None if m.customer_name else None,
        order_id=m.order_id,
        product_id=m.product_id,
        marketplace=m.marketplace,
        rating=m.rating,
        received_at=m.received_at,
        lang=detect_language(f"{m.subject or ''} {text}"),
    )


@router.post(
    "",
    response_model=StoredMessages,
    status_code=201,
    responses={
        200: {"model": StoredMessages, "description": "Every message was already stored (a retry)."}
    },
)
def post_messages(
    body: MessagesIn,
    response: Response,
    svc: Svc,
    _: ServiceKey,
) -> StoredMessages:
    """Store one message or a batch (``{"messages": [...]}``): detect the language,
    classify, apply the critical rules, route to a queue with an SLA deadline and a
    priority. Everything is committed in one transaction before the response."""
    batch = body.messages if isinstance(body, MessageBatch) else [body]
    field = "messages" if isinstance(body, MessageBatch) else "message"
    check_limits(svc, [m.text for m in batch], field if isinstance(body, MessageBatch) else "text")
    now = svc.clock()
    items = [to_new(m, i, field, now) for i, m in enumerate(batch)]
    views, created = ingest(svc, items, field)
    if not created:
        response.status_code = 200
    return StoredMessages(messages=views)


def email_item(
    parsed: ParsedEmail,
    channel: str,
    customer_id: str | None,
    product_id: str | None,
    marketplace: str | None,
    now: datetime,
) -> NewMessage:
    """The message of a parsed e-mail. The subject is free text (cleaned like the body);
    Message-ID (the idempotency key) and the sender's address (the customer id unless
    one is given) are identifiers, refused (422) when the store cannot keep them as
    they are. A Date header outside the times the service handles (a sender's broken
    clock) is ignored: the message counts as received now."""
    sender = None if customer_id else parsed.sender
    for header, value, column in (
        ("Message-ID", parsed.message_id, Message.external_id),
        ("From", sender, Message.customer_id),
    ):
        if value is not None and (problem := identifier_problem(value, column_length(column))):
            hint = " (or pass customer_id)" if header == "From" else ""
            raise HTTPException(422, detail=f"email: the {header} header {problem}{hint}")
    received = parsed.received_at
    if received is not None and received_problem(received, now):
        received = None
    subject = clean_text(parsed.subject).strip() or None if parsed.subject else None
    text = clean_text(parsed.text)
    order_id = parsed.order_id if parsed.order_id and len(parsed.order_id) <= 100 else None
    # an address the store cannot keep is no address to answer: the reply is not sent
    reply_to = parsed.reply_to
    if reply_to and identifier_problem(reply_to, column_length(Message.reply_to)):
        reply_to = None
    return NewMessage(
        channel=channel,
        text=text,
        subject=subject,
        external_id=parsed.message_id,
        customer_id=customer_id or sender,
        customer_name=parsed.sender_name,
        order_id=order_id,
        product_id=product_id or parsed.product_id,
        marketplace=marketplace,
        received_at=received,
        lang=detect_language(f"{subject or ''} {text}"),
        reply_to=reply_to,
        references=[r for r in parsed.references if len(r) <= 300][-20:],
        attachments=[(a.filename, a.content_type[:200], a.content) for a in parsed.attachments],
    )


_EMAIL_LIMIT_SETTINGS = {
    "max_parts": "CARELENS_EMAIL_MAX_PARTS",
    "max_depth": "CARELENS_EMAIL_MAX_DEPTH",
    "max_decoded_bytes": "CARELENS_EMAIL_MAX_DECODED_BYTES",
}


def _email_message(
    svc: Services,
    raw: bytes,
    channel: str,
    customer_id: str | None,
    product_id: str | None,
    marketplace: str | None,
) -> NewMessage:
    """Parse a raw e-mail within the limits of the settings (413 past one, 422 for an
    e-mail that cannot be used) into the message to store. Blocking: thread pool."""
    settings = svc.settings
    limits = EmailLimits(
        max_parts=settings.email_max_parts,
        max_depth=settings.email_max_depth,
        max_decoded_bytes=settings.email_max_decoded_bytes or settings.max_body_bytes,
    )
    try:
        parsed = parse_email(raw, limits)
    except EmailTooLarge as exc:
        raise HTTPException(
            413, detail=f"email: {exc} ({_EMAIL_LIMIT_SETTINGS[exc.limit]})"
        ) from exc
    except EmailError as exc:
        raise HTTPException(422, detail=f"email: {exc}") from exc
    check_limits(svc, [parsed.text], "email.text")
    return email_item(parsed, channel, customer_id, product_id, marketplace, svc.clock())


@router.post(
    "/email",
    response_model=StoredMessages,
    status_code=201,
    responses={200: {"model": StoredMessages, "description": "Already stored (a retry)."}},
    openapi_extra={
        "requestBody": {
            "required": True,
            "content": {"message/rfc822": {"schema": {"type": "string", "format": "binary"}}},
            "description": "One raw RFC 822 e-mail (as forwarded from buyer-seller messaging).",
        }
    },
)
async def post_email(
    *,
    request: Request,
    response: Response,
    channel: Channel = Query("email"),
    customer_id: CustomerId | None = Query(None, description="Default: the sender's address."),
    product_id: ProductId | None = Query(None),
    marketplace: Marketplace | None = Query(None),
    svc: Svc,
    _: ServiceKey,
) -> StoredMessages:
    """Parse a raw e-mail (plain or HTML body; quoted replies and signature dropped;
    order id found in subject or body; Message-ID is the idempotency key) and store it
    like ``POST /v1/messages``."""
    raw = await request.body()
    # parsing is CPU work (bounded by the e-mail limits): never on the event loop
    views, created = await run_in_threadpool(
        store_email, svc, raw, channel, customer_id, product_id, marketplace
    )
    if not created:
        response.status_code = 200
    return StoredMessages(messages=views)


def store_email(
    svc: Services,
    raw: bytes,
    channel: str = "email",
    customer_id: str | None = None,
    product_id: str | None = None,
    marketplace: str | None = None,
) -> tuple[list[StoredMessage], bool]:
    """One raw e-mail through the whole walk: parse, classify, store (blocking: call
    from the thread pool). The route and the mailbox poller both come here; errors are
    HTTPExceptions (413 over a limit, 422 unusable, 503 try later)."""
    if len(raw) > svc.settings.max_body_bytes:
        raise HTTPException(413, detail=f"body: the limit is {svc.settings.max_body_bytes} bytes")
    item = _email_message(svc, raw, channel, customer_id, product_id, marketplace)
    return ingest(svc, [item], "email")


def mailbox_handler(svc: Services):
    """What the in-service mailbox poller does with each raw message: ``store_email``;
    a message it refuses (4xx) is ``Rejected``, anything else that stops it (no model
    yet, the database down) ``Deferred`` to the next poll."""

    def handle(raw: bytes) -> bool:
        try:
            return store_email(svc, raw)[1]
        except HTTPException as exc:
            detail = exc.detail if isinstance(exc.detail, str) else str(exc.detail)
            if 400 <= exc.status_code < 500:
                raise Rejected(detail) from exc
            raise Deferred(detail) from exc
        except SQLAlchemyError as exc:
            raise Deferred(f"database: {describe(exc)}") from exc

    return handle


@classify_router.post("", response_model=ClassifyResponse, tags=["classify"])
async def classify(
    body: ClassifyRequest,
    lang: DisplayLang,
    svc: Svc,
    _: ServiceKey,
) -> JSONResponse:
    """Classify texts without storing them. Each task of each prediction carries its
    display name and its labels' display names (``display``, ``label_display``) in
    English or Chinese."""
    pred = svc.require_predictor()
    check_limits(svc, body.texts, "texts")
    if body.ratings is not None and len(body.ratings) != len(body.texts):
        raise HTTPException(
            422,
            detail=f"ratings has {len(body.ratings)} items for {len(body.texts)} texts: "
            "give one per text (null for none), or leave ratings out",
        )
    try:
        if svc.batcher is None:
            results = await run_in_threadpool(pred.predict, body.texts, body.evidence, body.ratings)
        else:
            with _batcher_errors():
                future = svc.batcher.submit(body.texts, body.evidence, body.ratings)
                results = await asyncio.wrap_future(future)
    except ValueError as exc:
        raise HTTPException(422, detail=str(exc)) from exc
    # the answer takes about a millisecond a text to build and encode (evidence):
    # CPU work for the thread pool, not the event loop
    return await run_in_threadpool(
        _classify_answer, svc, results, pred.model_version, pred.taxonomy, lang
    )


def localised(prediction: dict[str, Any], taxonomy, lang: str) -> dict[str, Any]:
    """A prediction's dict with each task's display name and its labels' display names
    in ``lang``."""
    for name, task in prediction.get("tasks", {}).items():
        if name in taxonomy:
            t = taxonomy[name]
            names = t.label_display(lang)
            task["display"] = t.display_name(lang)
            task["label_display"] = {label: names.get(label, label) for label in task["labels"]}
    return prediction


def _classify_answer(
    svc: Services, results: list[Prediction], model_version: str | None, taxonomy, lang: str
) -> JSONResponse:
    svc.metrics.count_predictions(results)
    version = results[0].model_version if results else model_version
    answer = ClassifyResponse(
        model_version=version,
        predictions=[localised(r.to_dict(), taxonomy, lang) for r in results],
    )
    return JSONResponse(jsonable_encoder(answer))
