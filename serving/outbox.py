"""Replies out: the outbox and its SMTP delivery.

A reply to an e-mail is written to ``outbound_mail`` in the reply's own transaction
(``queue_reply``), with its Message-ID fixed there and ``In-Reply-To``/``References``
naming the customer's message, so the customer's mail program threads it. Delivery
(``deliver_due``) happens after the commit, by the service's background worker or
``carelens mail send``:

- a row is taken (``sending``, attempts + 1) in one short transaction, sent, then marked
  ``sent`` in another; a refusal the server calls temporary (4xx), a dropped connection
  or an unreachable server puts it back to ``queued`` with a backoff (30 s, doubling, at
  most an hour); a permanent refusal (5xx) or ``CARELENS_OUTBOX_MAX_ATTEMPTS`` attempts
  make it ``failed`` with the server's answer in ``last_error``;
- a process that stops between the send and the mark leaves the row ``sending``: after
  ``SENDING_LEASE`` it is sent again with the same Message-ID, so the receiving side
  sees one message, not two. An outage of the relay loses nothing.

Without an SMTP relay (``CARELENS_SMTP_HOST``) or a sender address
(``CARELENS_MAIL_FROM``) replies are recorded only, and the API says they were not sent.
"""

from __future__ import annotations

import contextlib
import logging
import smtplib
import ssl
from dataclasses import dataclass
from datetime import datetime, timedelta
from email.message import EmailMessage
from email.utils import format_datetime, make_msgid, parseaddr

from sqlalchemy import or_, select
from sqlalchemy.orm import Session, sessionmaker

from serving.db import transaction
from serving.store import Message, OutboundMail, Ticket

log = logging.getLogger(__name__)

SENDING_LEASE = timedelta(minutes=10)
FIRST_RETRY = timedelta(seconds=30)
LONGEST_RETRY = timedelta(hours=1)
MAX_REFERENCES = 20


@dataclass(frozen=True)
class SmtpConfig:
    host: str
    port: int = 587
    security: str = "starttls"  # starttls | ssl | none
    user: str | None = None
    password: str | None = None
    timeout: float = 30.0

    @classmethod
    def from_settings(cls, settings) -> SmtpConfig | None:
        if not settings.smtp_host:
            return None
        return cls(
            host=settings.smtp_host,
            port=settings.smtp_port,
            security=settings.smtp_security,
            user=settings.smtp_user,
            password=settings.smtp_password.get_secret_value() if settings.smtp_password else None,
            timeout=settings.smtp_timeout,
        )


@dataclass(frozen=True)
class Delivery:
    """What became of a reply: ``queued`` (an outbox row) or ``not_sent`` and why."""

    state: str
    reason: str | None = None
    outbound_id: int | None = None

    def to_dict(self) -> dict:
        return {"state": self.state, "reason": self.reason, "outbound_id": self.outbound_id}


def sending_configured(settings) -> str | None:
    """None when replies can be sent, else why not."""
    if not settings.smtp_host:
        return "no SMTP relay is configured (CARELENS_SMTP_HOST): the reply is recorded only"
    if not settings.mail_from:
        return "no sender address is configured (CARELENS_MAIL_FROM): the reply is recorded only"
    return None


def _latest_customer_message(ticket: Ticket) -> Message:
    answers = [m for m in ticket.answers if m.reply_to]
    return answers[-1] if answers else ticket.message


def queue_reply(
    session: Session, ticket: Ticket, text: str, settings, now: datetime, automatic: bool = False
) -> Delivery:
    """Put the reply to ``ticket`` in the outbox (the caller's transaction), addressed to
    the customer's latest e-mail and threaded to it; or say why it is not sent."""
    why = sending_configured(settings)
    if why:
        return Delivery("not_sent", why)
    msg = _latest_customer_message(ticket)
    to = msg.reply_to
    if not to:
        return Delivery(
            "not_sent",
            "the customer's message has no reply address (only e-mails carry one): "
            "the reply is recorded only",
        )
    subject = (msg.subject or ticket.message.subject or "").strip()
    if not subject.lower().startswith(("re:", "回复:", "回复：")):
        subject = f"Re: {subject}" if subject else "Re: your message"
    own_id = msg.external_id if msg.external_id and msg.external_id.startswith("<") else None
    refs = (msg.references or "").split()
    if own_id and own_id not in refs:
        refs.append(own_id)
    domain = parseaddr(settings.mail_from)[1].rpartition("@")[2] or None
    row = OutboundMail(
        ticket_id=ticket.id,
        message_id=make_msgid(domain=domain),
        from_addr=settings.mail_from,
        to_addr=to,
        subject=subject,
        body=text,
        in_reply_to=own_id,
        references=" ".join(refs[-MAX_REFERENCES:]) or None,
        automatic=automatic,
        state="queued",
        attempts=0,
        next_attempt_at=now,
        created_at=now,
    )
    session.add(row)
    session.flush()
    return Delivery("queued", None, row.id)


def render(row: OutboundMail) -> EmailMessage:
    """The e-mail of an outbox row (its Message-ID is the row's, on every attempt)."""
    mail = EmailMessage()
    mail["From"] = row.from_addr
    mail["To"] = row.to_addr
    mail["Subject"] = row.subject
    mail["Message-ID"] = row.message_id
    mail["Date"] = format_datetime(row.created_at)
    if row.in_reply_to:
        mail["In-Reply-To"] = row.in_reply_to
    if row.references:
        mail["References"] = row.references
    mail["Auto-Submitted"] = "auto-replied" if row.automatic else "no"
    mail.set_content(row.body)
    return mail


@dataclass
class DeliveryReport:
    sent: int = 0
    retrying: int = 0
    failed: int = 0
    error: str | None = None  # the last delivery error of the round

    def to_dict(self) -> dict:
        return {
            "sent": self.sent,
            "retrying": self.retrying,
            "failed": self.failed,
            "error": self.error,
        }


def _connect(cfg: SmtpConfig) -> smtplib.SMTP:
    if cfg.security == "ssl":
        smtp = smtplib.SMTP_SSL(
            cfg.host, cfg.port, timeout=cfg.timeout, context=ssl.create_default_context()
        )
    else:
        smtp = smtplib.SMTP(cfg.host, cfg.port, timeout=cfg.timeout)
        if cfg.security == "starttls":
            smtp.starttls(context=ssl.create_default_context())
    if cfg.user:
        smtp.login(cfg.user, cfg.password or "")
    return smtp


def _permanent(exc: BaseException) -> bool:
    """A refusal the server says will not change (5xx)."""
    if isinstance(exc, smtplib.SMTPRecipientsRefused):
        return all(code >= 500 for code, _ in exc.recipients.values())
    code = getattr(exc, "smtp_code", None)
    return isinstance(code, int) and code >= 500


def _describe(exc: BaseException) -> str:
    if isinstance(exc, smtplib.SMTPRecipientsRefused):
        return "; ".join(
            f"{code} {msg.decode(errors='replace') if isinstance(msg, bytes) else msg}"
            for code, msg in exc.recipients.values()
        )
    if isinstance(exc, smtplib.SMTPResponseException):
        err = exc.smtp_error
        return f"{exc.smtp_code} {err.decode(errors='replace') if isinstance(err, bytes) else err}"
    return f"{type(exc).__name__}: {exc}"


def backoff(attempts: int) -> timedelta:
    return min(FIRST_RETRY * 2 ** max(attempts - 1, 0), LONGEST_RETRY)


def take_due(
    sessions: sessionmaker[Session], now: datetime, limit: int, skip_locked: bool
) -> list[int]:
    """Mark up to ``limit`` due rows ``sending`` (queued and due, or ``sending`` past
    their lease: a delivery that never got its mark) and return their ids."""
    with transaction(sessions) as s:
        q = (
            select(OutboundMail)
            .where(
                or_(OutboundMail.state == "queued", OutboundMail.state == "sending"),
                OutboundMail.next_attempt_at <= now,
            )
            .order_by(OutboundMail.next_attempt_at, OutboundMail.id)
            .limit(limit)
        )
        if skip_locked:
            q = q.with_for_update(skip_locked=True)
        rows = list(s.scalars(q))
        for row in rows:
            row.state = "sending"
            row.attempts += 1
            row.next_attempt_at = now + SENDING_LEASE
        return [r.id for r in rows]


def deliver_due(
    sessions: sessionmaker[Session],
    cfg: SmtpConfig,
    clock,
    max_attempts: int = 8,
    limit: int = 50,
    skip_locked: bool = False,
) -> DeliveryReport:
    """Send what is due in the outbox over one SMTP connection (see the module's
    docstring for the states)."""
    report = DeliveryReport()
    ids = take_due(sessions, clock(), limit, skip_locked)
    if not ids:
        return report
    smtp: smtplib.SMTP | None = None
    try:
        for row_id in ids:
            with sessions() as s:
                row = s.get(OutboundMail, row_id)
                mail, to, sender = render(row), row.to_addr, row.from_addr
            error: BaseException | None = None
            try:
                if smtp is None:
                    smtp = _connect(cfg)
                smtp.send_message(mail, from_addr=parseaddr(sender)[1], to_addrs=[to])
            except (smtplib.SMTPException, OSError) as exc:
                error = exc
                if not isinstance(exc, smtplib.SMTPRecipientsRefused | smtplib.SMTPSenderRefused):
                    smtp = None  # the connection is gone or unusable: a new one next time
            _mark(sessions, row_id, clock(), error, max_attempts, report)
    finally:
        if smtp is not None:
            with contextlib.suppress(smtplib.SMTPException, OSError):
                smtp.quit()
    return report


def _mark(
    sessions, row_id: int, now: datetime, error, max_attempts: int, report: DeliveryReport
) -> None:
    with transaction(sessions) as s:
        row = s.get(OutboundMail, row_id)
        if error is None:
            row.state, row.sent_at, row.last_error = "sent", now, None
            ticket = row.ticket
            if row.automatic and ticket.first_response_at is None:
                ticket.first_response_at = now  # an automatic answer counts once sent
            report.sent += 1
            log.info("reply %s of ticket %s sent", row.id, row.ticket_id)
            return
        row.last_error = _describe(error)[:2000]
        if _permanent(error) or row.attempts >= max_attempts:
            row.state = "failed"
            report.failed += 1
            if row.automatic and row.ticket.state == "waiting_on_customer":
                # the customer never got it: back to the agents
                from serving.tickets import event

                row.ticket.state = "open"
                event(s, row.ticket, "auto_reply_failed", None, now, note=row.last_error)
            log.error(
                "reply %s of ticket %s failed after %s attempt(s): %s",
                row.id,
                row.ticket_id,
                row.attempts,
                row.last_error,
            )
        else:
            row.state = "queued"
            row.next_attempt_at = now + backoff(row.attempts)
            report.retrying += 1
            report.error = row.last_error
            log.warning(
                "reply %s of ticket %s not sent (attempt %s), retrying at %s: %s",
                row.id,
                row.ticket_id,
                row.attempts,
                row.next_attempt_at.isoformat(),
                row.last_error,
            )
