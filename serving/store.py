"""The store: SQLAlchemy 2 models. The schema itself is created by the Alembic
migrations in ``serving/migrations`` (a test checks that they agree).

Times are stored as naive UTC and read back as aware UTC (``UTCDateTime``), so SQLite
and PostgreSQL behave alike.
"""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

from sqlalchemy import (
    JSON,
    Boolean,
    DateTime,
    Float,
    ForeignKey,
    Index,
    Integer,
    LargeBinary,
    String,
    Text,
    TypeDecorator,
    cast,
    exists,
    false,
    func,
    literal,
    select,
    text,
)
from sqlalchemy.orm import DeclarativeBase, Mapped, mapped_column, relationship

TICKET_STATES = ("open", "claimed", "waiting_on_customer", "resolved", "no_response_needed")
CLOSED_STATES = ("resolved", "no_response_needed")

ROLES = ("service", "agent", "admin")


def utcnow() -> datetime:
    return datetime.now(UTC)


def label_has(labels: Any, task: str, label: str, dialect: str) -> Any:
    """SQL: the JSON labels column ``labels`` lists ``label`` under ``task`` (JSONB
    containment on PostgreSQL, ``json_each`` on SQLite)."""
    if dialect == "postgresql":
        from sqlalchemy.dialects.postgresql import JSONB

        return cast(labels, JSONB)[task].contains([label])
    each = func.json_each(labels, f'$."{task}"').table_valued("value")
    return exists(select(literal(1)).select_from(each).where(each.c.value == label))


def as_utc(value: datetime) -> datetime:
    """Aware UTC; a naive time is taken to be UTC already."""
    return value.replace(tzinfo=UTC) if value.tzinfo is None else value.astimezone(UTC)


class UTCDateTime(TypeDecorator):
    impl = DateTime
    cache_ok = True

    def process_bind_param(self, value: datetime | None, dialect) -> datetime | None:
        return None if value is None else as_utc(value).replace(tzinfo=None)

    def process_result_value(self, value: datetime | None, dialect) -> datetime | None:
        return None if value is None else value.replace(tzinfo=UTC)


class Base(DeclarativeBase):
    type_annotation_map = {datetime: UTCDateTime, dict[str, Any]: JSON, list[Any]: JSON}


class ApiKey(Base):
    """An API key. Its id is the caller's identity: every row that records who did
    something keeps the key id next to the name (the name is for display). A name is
    unique among the active keys of a role (migration 0004)."""

    __tablename__ = "api_keys"
    __table_args__ = (
        Index(
            "ux_api_keys_active_name_role",
            "name",
            "role",
            unique=True,
            postgresql_where=text("revoked_at IS NULL"),
            sqlite_where=text("revoked_at IS NULL"),
        ),
    )

    id: Mapped[int] = mapped_column(primary_key=True)
    name: Mapped[str] = mapped_column(String(200))
    role: Mapped[str] = mapped_column(String(20))
    key_hash: Mapped[str] = mapped_column(String(64), unique=True)
    prefix: Mapped[str] = mapped_column(String(12))
    created_at: Mapped[datetime] = mapped_column(default=utcnow)
    revoked_at: Mapped[datetime | None] = mapped_column(default=None)


class Message(Base):
    __tablename__ = "messages"
    # the reviews list: unhandled negative reviews, then the rest, newest first within,
    # each page a range of this index (migration 0010)
    __table_args__ = (
        Index("ix_messages_attention", "channel", "needs_attention", "received_at", "id"),
        Index(  # the same, one product's
            "ix_messages_product_attention",
            "channel",
            "product_id",
            "needs_attention",
            "received_at",
            "id",
        ),
    )

    id: Mapped[int] = mapped_column(primary_key=True)
    external_id: Mapped[str | None] = mapped_column(String(300), unique=True, default=None)
    channel: Mapped[str] = mapped_column(String(20), index=True)
    subject: Mapped[str | None] = mapped_column(Text, default=None)
    text: Mapped[str] = mapped_column(Text)
    lang: Mapped[str] = mapped_column(String(8))
    customer_id: Mapped[str | None] = mapped_column(String(200), index=True, default=None)
    # the buyer's name as they signed (an e-mail's display name): fills {customer_name}
    customer_name: Mapped[str | None] = mapped_column(String(200), default=None)
    order_id: Mapped[str | None] = mapped_column(String(100), default=None)
    product_id: Mapped[str | None] = mapped_column(String(100), index=True, default=None)
    marketplace: Mapped[str | None] = mapped_column(String(50), default=None)
    rating: Mapped[int | None] = mapped_column(Integer, default=None)
    received_at: Mapped[datetime] = mapped_column(index=True)
    created_at: Mapped[datetime] = mapped_column(default=utcnow)
    # review management (channel == "review")
    handled_at: Mapped[datetime | None] = mapped_column(default=None)
    handled_by: Mapped[str | None] = mapped_column(String(200), default=None)
    handled_by_key_id: Mapped[int | None] = mapped_column(default=None)
    handled_note: Mapped[str | None] = mapped_column(Text, default=None)
    # a review not handled yet and negative (see ``update_attention``)
    needs_attention: Mapped[bool] = mapped_column(Boolean, default=False, server_default=false())
    # e-mail: where an answer goes (Reply-To, else From) and the Message-IDs this one
    # answers (In-Reply-To and References, space-separated): what threads our reply
    reply_to: Mapped[str | None] = mapped_column(String(320), default=None)
    references: Mapped[str | None] = mapped_column(Text, default=None)
    # a customer's answer joins the ticket it answers instead of opening its own
    thread_ticket_id: Mapped[int | None] = mapped_column(
        # use_alter: messages and tickets point at each other
        ForeignKey("tickets.id", use_alter=True, name="fk_messages_thread_ticket_id_tickets"),
        index=True,
        default=None,
    )

    def update_attention(self, labels: dict[str, Any]) -> None:
        """A review asks for attention while it is not handled and is negative: by its
        sentiment label (the ticket's, else the model's), or by one or two stars
        whatever the text reads like. Set whenever one of those changes."""
        self.needs_attention = (
            self.channel == "review"
            and self.handled_at is None
            and ("negative" in (labels or {}).get("sentiment", []) or (self.rating or 9) <= 2)
        )

    prediction: Mapped[Prediction] = relationship(back_populates="message", uselist=False)
    ticket: Mapped[Ticket | None] = relationship(
        back_populates="message", uselist=False, foreign_keys="Ticket.message_id"
    )
    thread_ticket: Mapped[Ticket | None] = relationship(
        back_populates="answers", foreign_keys=[thread_ticket_id]
    )
    attachments: Mapped[list[Attachment]] = relationship(
        back_populates="message", order_by="Attachment.id"
    )

    @property
    def own_ticket(self) -> Ticket:
        """The ticket this message opened, or the one it answered."""
        return self.ticket if self.ticket is not None else self.thread_ticket


class Prediction(Base):
    __tablename__ = "predictions"

    id: Mapped[int] = mapped_column(primary_key=True)
    message_id: Mapped[int] = mapped_column(ForeignKey("messages.id"), unique=True)
    model_version: Mapped[str] = mapped_column(String(100))
    # task -> labels, as predicted (before rules)
    labels: Mapped[dict[str, Any]] = mapped_column()
    # the Predictor's full output (probabilities, confidence, needs_review, evidence)
    output: Mapped[dict[str, Any]] = mapped_column()
    needs_review: Mapped[bool] = mapped_column(Boolean)
    created_at: Mapped[datetime] = mapped_column(default=utcnow)

    message: Mapped[Message] = relationship(back_populates="prediction")


class Ticket(Base):
    __tablename__ = "tickets"
    __table_args__ = (
        Index("ix_tickets_queue_state_rank", "queue", "state", "rank_at"),
        # claim_next: the claimable tickets of a queue in claim order (migration 0003)
        Index(
            "ix_tickets_claimable",
            "queue",
            "rank_at",
            "id",
            postgresql_where=text("state IN ('open', 'claimed')"),
            sqlite_where=text("state IN ('open', 'claimed')"),
        ),
    )

    id: Mapped[int] = mapped_column(primary_key=True)
    message_id: Mapped[int] = mapped_column(ForeignKey("messages.id"), unique=True)
    queue: Mapped[str] = mapped_column(String(50))
    state: Mapped[str] = mapped_column(String(30), default="open")
    # labels in force: the model's, overridden by rules, then by an agent's correction
    labels: Mapped[dict[str, Any]] = mapped_column()
    rule_hits: Mapped[list[Any]] = mapped_column(default=list)
    base_priority: Mapped[float] = mapped_column(Float)
    # priority(t) = hours(t - rank_at): the SLA deadline moved earlier by base_priority hours
    rank_at: Mapped[datetime] = mapped_column()
    sla_hours: Mapped[float] = mapped_column(Float)
    sla_due_at: Mapped[datetime] = mapped_column()
    first_response_at: Mapped[datetime | None] = mapped_column(default=None)
    resolved_at: Mapped[datetime | None] = mapped_column(default=None)
    # the customer answered after our last reply: answer them by then (null otherwise)
    reply_due_at: Mapped[datetime | None] = mapped_column(default=None)
    claimed_by: Mapped[str | None] = mapped_column(String(200), default=None)
    # who holds the claim: the key id decides, the name is for display
    claimed_by_key_id: Mapped[int | None] = mapped_column(default=None)
    lease_expires_at: Mapped[datetime | None] = mapped_column(default=None)
    created_at: Mapped[datetime] = mapped_column(default=utcnow)
    updated_at: Mapped[datetime] = mapped_column(default=utcnow)

    message: Mapped[Message] = relationship(back_populates="ticket", foreign_keys=[message_id])
    events: Mapped[list[TicketEvent]] = relationship(
        back_populates="ticket", order_by="TicketEvent.id"
    )
    answers: Mapped[list[Message]] = relationship(
        back_populates="thread_ticket",
        foreign_keys="Message.thread_ticket_id",
        order_by="Message.id",
    )
    outbound: Mapped[list[OutboundMail]] = relationship(
        back_populates="ticket", order_by="OutboundMail.id"
    )
    survey: Mapped[SurveyAnswer | None] = relationship(uselist=False, viewonly=True)


class TicketEvent(Base):
    """What happened to a ticket, by whom and when (claims, replies, resolutions...)."""

    __tablename__ = "ticket_events"

    id: Mapped[int] = mapped_column(primary_key=True)
    ticket_id: Mapped[int] = mapped_column(ForeignKey("tickets.id"), index=True)
    kind: Mapped[str] = mapped_column(String(40))
    actor: Mapped[str | None] = mapped_column(String(200), default=None)
    actor_key_id: Mapped[int | None] = mapped_column(default=None)
    at: Mapped[datetime] = mapped_column(default=utcnow)
    note: Mapped[str | None] = mapped_column(Text, default=None)

    ticket: Mapped[Ticket] = relationship(back_populates="events")


class Attachment(Base):
    """A file that came with an e-mail (name, type, size and content, within
    ``CARELENS_ATTACHMENT_MAX_BYTES``)."""

    __tablename__ = "attachments"

    id: Mapped[int] = mapped_column(primary_key=True)
    message_id: Mapped[int] = mapped_column(ForeignKey("messages.id"), index=True)
    filename: Mapped[str] = mapped_column(String(300))
    content_type: Mapped[str] = mapped_column(String(200))
    size: Mapped[int] = mapped_column(Integer)
    content: Mapped[bytes] = mapped_column(LargeBinary)

    message: Mapped[Message] = relationship(back_populates="attachments")


OUTBOUND_STATES = ("queued", "sending", "sent", "failed")


class OutboundMail(Base):
    """A reply to send by SMTP (the outbox): written in the reply's transaction,
    delivered by ``serving.outbox`` with retries. ``message_id`` is fixed when the row
    is written, so a delivery repeated after a crash carries the same Message-ID."""

    __tablename__ = "outbound_mail"
    __table_args__ = (Index("ix_outbound_mail_state_next", "state", "next_attempt_at"),)

    id: Mapped[int] = mapped_column(primary_key=True)
    ticket_id: Mapped[int] = mapped_column(ForeignKey("tickets.id"), index=True)
    message_id: Mapped[str] = mapped_column(String(300), unique=True)
    from_addr: Mapped[str] = mapped_column(String(320))
    to_addr: Mapped[str] = mapped_column(String(320))
    subject: Mapped[str] = mapped_column(Text)
    body: Mapped[str] = mapped_column(Text)
    in_reply_to: Mapped[str | None] = mapped_column(String(300), default=None)
    references: Mapped[str | None] = mapped_column(Text, default=None)
    automatic: Mapped[bool] = mapped_column(Boolean, default=False)
    state: Mapped[str] = mapped_column(String(20), default="queued")
    attempts: Mapped[int] = mapped_column(Integer, default=0)
    next_attempt_at: Mapped[datetime] = mapped_column(default=utcnow)
    last_error: Mapped[str | None] = mapped_column(Text, default=None)
    created_at: Mapped[datetime] = mapped_column(default=utcnow)
    sent_at: Mapped[datetime | None] = mapped_column(default=None)

    ticket: Mapped[Ticket] = relationship(back_populates="outbound")


class SlaAlert(Base):
    """A warning that a ticket's answer is about to be late (``due_soon``) or is late
    (``breached``): one per ticket, kind and deadline (the unique index makes it once,
    whichever process sees it first), with what its delivery got."""

    __tablename__ = "sla_alerts"
    __table_args__ = (
        Index("ux_sla_alerts_ticket_kind_due", "ticket_id", "kind", "due_at", unique=True),
    )

    id: Mapped[int] = mapped_column(primary_key=True)
    ticket_id: Mapped[int] = mapped_column(ForeignKey("tickets.id"))
    kind: Mapped[str] = mapped_column(String(20))  # due_soon | breached
    due_at: Mapped[datetime] = mapped_column()
    created_at: Mapped[datetime] = mapped_column(default=utcnow)
    webhook_status: Mapped[str | None] = mapped_column(Text, default=None)
    email_status: Mapped[str | None] = mapped_column(Text, default=None)


class SignalAlert(Base):
    """A shop-wide signal that asks for attention (an issue-type spike on a product, a
    sentiment or urgency shift in a language, label drift of a task): one per kind,
    subject and window (the unique index makes it once, whichever process sees it
    first), with its figures and what its delivery got (migration 0009)."""

    __tablename__ = "signal_alerts"
    __table_args__ = (
        Index("ux_signal_alerts_kind_subject_window", "kind", "subject", "window_end", unique=True),
    )

    id: Mapped[int] = mapped_column(primary_key=True)
    kind: Mapped[str] = mapped_column(String(30))
    subject: Mapped[str] = mapped_column(String(300))
    window_start: Mapped[datetime] = mapped_column()
    window_end: Mapped[datetime] = mapped_column()
    details: Mapped[dict[str, Any]] = mapped_column()
    created_at: Mapped[datetime] = mapped_column(default=utcnow)
    webhook_status: Mapped[str | None] = mapped_column(Text, default=None)
    email_status: Mapped[str | None] = mapped_column(Text, default=None)


class SurveyAnswer(Base):
    """A customer's answer to the satisfaction survey of a resolved ticket: one per
    ticket (the unique ticket id makes the link single-use)."""

    __tablename__ = "survey_answers"

    id: Mapped[int] = mapped_column(primary_key=True)
    ticket_id: Mapped[int] = mapped_column(ForeignKey("tickets.id"), unique=True)
    stars: Mapped[int] = mapped_column(Integer)
    comment: Mapped[str | None] = mapped_column(Text, default=None)
    lang: Mapped[str] = mapped_column(String(8))
    answered_at: Mapped[datetime] = mapped_column(default=utcnow)


RETURN_STATES = ("requested", "approved", "label_sent", "received", "refunded", "rejected")
# state -> the states it may move to
RETURN_MOVES = {
    "requested": ("approved", "rejected"),
    "approved": ("label_sent", "refunded", "rejected"),
    "label_sent": ("received",),
    "received": ("refunded", "rejected"),
    "refunded": (),
    "rejected": (),
}


class ReturnRequest(Base):
    """A return (and its refund) of an order, opened from the customer's ticket; every
    change of state is a ``ReturnEvent`` with who and when."""

    __tablename__ = "returns"

    id: Mapped[int] = mapped_column(primary_key=True)
    ticket_id: Mapped[int] = mapped_column(ForeignKey("tickets.id"), index=True)
    order_id: Mapped[str | None] = mapped_column(String(100), default=None)
    product_id: Mapped[str | None] = mapped_column(String(100), index=True, default=None)
    customer_id: Mapped[str | None] = mapped_column(String(200), index=True, default=None)
    # why: the ticket's issue types (damaged_defective, size_fit, ...) and a note
    reasons: Mapped[list[Any]] = mapped_column(default=list)
    note: Mapped[str | None] = mapped_column(Text, default=None)
    state: Mapped[str] = mapped_column(String(20), index=True)
    created_by: Mapped[str] = mapped_column(String(200))
    created_by_key_id: Mapped[int | None] = mapped_column(default=None)
    created_at: Mapped[datetime] = mapped_column(default=utcnow)
    updated_at: Mapped[datetime] = mapped_column(default=utcnow)
    closed_at: Mapped[datetime | None] = mapped_column(default=None)

    events: Mapped[list[ReturnEvent]] = relationship(order_by="ReturnEvent.id")


class ReturnEvent(Base):
    __tablename__ = "return_events"

    id: Mapped[int] = mapped_column(primary_key=True)
    return_id: Mapped[int] = mapped_column(ForeignKey("returns.id"), index=True)
    state: Mapped[str] = mapped_column(String(20))
    actor: Mapped[str] = mapped_column(String(200))
    actor_key_id: Mapped[int | None] = mapped_column(default=None)
    at: Mapped[datetime] = mapped_column(default=utcnow)
    note: Mapped[str | None] = mapped_column(Text, default=None)


class LabelCorrection(Base):
    """An agent's labels for a ticket's message (training data for the learning loop)."""

    __tablename__ = "label_corrections"

    id: Mapped[int] = mapped_column(primary_key=True)
    ticket_id: Mapped[int] = mapped_column(ForeignKey("tickets.id"), index=True)
    labels: Mapped[dict[str, Any]] = mapped_column()
    actor: Mapped[str] = mapped_column(String(200))
    actor_key_id: Mapped[int | None] = mapped_column(default=None)
    created_at: Mapped[datetime] = mapped_column(default=utcnow)


# -- reply templates and campaigns -------------------------------------------------------


class ReplyTemplate(Base):
    """An admin's reply template. It overrides the file default of the same name;
    ``deleted`` hides that default (a tombstone)."""

    __tablename__ = "reply_templates"

    id: Mapped[int] = mapped_column(primary_key=True)
    name: Mapped[str] = mapped_column(String(100), unique=True)
    issue_type: Mapped[str | None] = mapped_column(String(100), default=None)
    lang: Mapped[str | None] = mapped_column(String(8), default=None)
    title: Mapped[str | None] = mapped_column(String(200), default=None)
    body: Mapped[str | None] = mapped_column(Text, default=None)
    fallbacks: Mapped[dict[str, Any]] = mapped_column(default=dict)
    deleted: Mapped[bool] = mapped_column(Boolean, default=False)
    updated_by: Mapped[str] = mapped_column(String(200))
    updated_by_key_id: Mapped[int | None] = mapped_column(default=None)
    created_at: Mapped[datetime] = mapped_column(default=utcnow)
    updated_at: Mapped[datetime] = mapped_column(default=utcnow)


class ConsentEvent(Base):
    """A buyer's marketing consent or opt-out for the seller's own e-mail list; the
    latest event per customer is in force."""

    __tablename__ = "consent_events"

    id: Mapped[int] = mapped_column(primary_key=True)
    customer_id: Mapped[str] = mapped_column(String(200), index=True)
    kind: Mapped[str] = mapped_column(String(20))  # consent | opt_out
    email: Mapped[str | None] = mapped_column(String(320), default=None)
    source: Mapped[str | None] = mapped_column(String(200), default=None)
    actor: Mapped[str] = mapped_column(String(200))
    actor_key_id: Mapped[int | None] = mapped_column(default=None)
    at: Mapped[datetime] = mapped_column(default=utcnow)


class Order(Base):
    """An order and its delivery date (what review requests are built from)."""

    __tablename__ = "orders"

    id: Mapped[int] = mapped_column(primary_key=True)
    order_id: Mapped[str] = mapped_column(String(100), unique=True)
    customer_id: Mapped[str] = mapped_column(String(200), index=True)
    product_id: Mapped[str | None] = mapped_column(String(100), default=None)
    marketplace: Mapped[str | None] = mapped_column(String(50), default=None)
    delivered_at: Mapped[datetime | None] = mapped_column(index=True, default=None)
    # fill a campaign's {customer_name} and {product} (migration 0008)
    customer_name: Mapped[str | None] = mapped_column(String(200), default=None)
    product_name: Mapped[str | None] = mapped_column(String(300), default=None)
    created_at: Mapped[datetime] = mapped_column(default=utcnow)
    updated_at: Mapped[datetime] = mapped_column(default=utcnow)


class Campaign(Base):
    __tablename__ = "campaigns"

    id: Mapped[int] = mapped_column(primary_key=True)
    name: Mapped[str] = mapped_column(String(200))
    kind: Mapped[str] = mapped_column(String(20))  # marketing | review_request
    channel: Mapped[str] = mapped_column(String(30))  # marketplace_messaging | own_email
    audience: Mapped[dict[str, Any]] = mapped_column()
    subject: Mapped[str | None] = mapped_column(String(300), default=None)
    body: Mapped[str] = mapped_column(Text)
    # placeholder -> the text it takes when a customer has no value (migration 0008)
    fallbacks: Mapped[dict[str, Any] | None] = mapped_column(default=None)
    created_by: Mapped[str] = mapped_column(String(200))
    created_by_key_id: Mapped[int | None] = mapped_column(default=None)
    created_at: Mapped[datetime] = mapped_column(default=utcnow)


class CampaignRun(Base):
    __tablename__ = "campaign_runs"

    id: Mapped[int] = mapped_column(primary_key=True)
    campaign_id: Mapped[int] = mapped_column(ForeignKey("campaigns.id"), index=True)
    actor: Mapped[str] = mapped_column(String(200))
    actor_key_id: Mapped[int | None] = mapped_column(default=None)
    at: Mapped[datetime] = mapped_column(default=utcnow)
    considered: Mapped[int] = mapped_column(Integer, default=0)
    included: Mapped[int] = mapped_column(Integer, default=0)
    webhook_status: Mapped[str | None] = mapped_column(Text, default=None)


class CampaignContact(Base):
    """The audit row of one customer (or order) considered by a run: included or
    excluded, why, and the rendered message when included."""

    __tablename__ = "campaign_contacts"

    id: Mapped[int] = mapped_column(primary_key=True)
    run_id: Mapped[int] = mapped_column(ForeignKey("campaign_runs.id"), index=True)
    campaign_id: Mapped[int] = mapped_column(ForeignKey("campaigns.id"))
    kind: Mapped[str] = mapped_column(String(20))
    customer_id: Mapped[str] = mapped_column(String(200), index=True)
    order_id: Mapped[str | None] = mapped_column(String(100), default=None)
    included: Mapped[bool] = mapped_column(Boolean)
    reason: Mapped[str] = mapped_column(String(40))
    detail: Mapped[str] = mapped_column(Text)
    message: Mapped[dict[str, Any] | None] = mapped_column(JSON, default=None)
    at: Mapped[datetime] = mapped_column(default=utcnow)


class ReviewRequest(Base):
    """One review request per order, ever (the unique order id enforces it)."""

    __tablename__ = "review_requests"

    id: Mapped[int] = mapped_column(primary_key=True)
    order_id: Mapped[str] = mapped_column(String(100), unique=True)
    run_id: Mapped[int] = mapped_column(ForeignKey("campaign_runs.id"))
    customer_id: Mapped[str] = mapped_column(String(200))
    at: Mapped[datetime] = mapped_column(default=utcnow)
