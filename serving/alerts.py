"""SLA alerts: a warning before a ticket's answer is late and one when it is, each
sent once.

A ticket needs an answer while it is open or claimed and either has had no first
response (its deadline: ``sla_due_at``) or the customer answered after our last reply
(``reply_due_at``). ``scan`` finds those within ``lead`` of their deadline
(``due_soon``) or past it (``breached``) and writes one ``sla_alerts`` row per ticket,
kind and deadline: the unique index makes it once, whichever process sees it first.
Each new alert is then posted to the webhook (``CARELENS_SLA_ALERT_WEBHOOK_URL``) and,
when an SMTP relay is configured, e-mailed to the queue's owners (``owners`` in the
routing file); what each delivery got is kept on the row. An alert carries the ticket's
id, queue, labels and deadline, never the customer's words or identity.
"""

from __future__ import annotations

import json
import logging
import smtplib
from dataclasses import dataclass
from datetime import datetime, timedelta
from email.message import EmailMessage
from email.utils import parseaddr

import httpx
from sqlalchemy import and_, or_, select
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Session, sessionmaker

from serving.db import transaction
from serving.store import SlaAlert, Ticket

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class Alert:
    id: int
    kind: str  # due_soon | breached
    ticket_id: int
    queue: str
    due_at: datetime
    labels: dict

    def payload(self) -> dict:
        return {
            "alert": self.kind,
            "alert_id": self.id,
            "ticket_id": self.ticket_id,
            "queue": self.queue,
            "due_at": self.due_at.isoformat(),
            "labels": self.labels,
        }


def _needs_answer():
    return and_(
        Ticket.state.in_(("open", "claimed")),
        or_(Ticket.first_response_at.is_(None), Ticket.reply_due_at.is_not(None)),
    )


def due_of(ticket: Ticket) -> datetime:
    return ticket.reply_due_at if ticket.reply_due_at is not None else ticket.sla_due_at


def scan(sessions: sessionmaker[Session], now: datetime, lead: timedelta) -> list[Alert]:
    """Write the alerts that are due and not yet written; return the new ones."""
    with sessions() as s:
        tickets = list(
            s.scalars(
                select(Ticket).where(
                    _needs_answer(),
                    or_(
                        and_(Ticket.reply_due_at.is_(None), Ticket.sla_due_at <= now + lead),
                        Ticket.reply_due_at <= now + lead,
                    ),
                )
            )
        )
        wanted = []
        for t in tickets:
            due = due_of(t)
            wanted.append((t, "breached" if due <= now else "due_soon", due))
        if not wanted:
            return []
        sent = {
            (a.ticket_id, a.kind, a.due_at)
            for a in s.scalars(
                select(SlaAlert).where(SlaAlert.ticket_id.in_([t.id for t, _, _ in wanted]))
            )
        }
    new: list[Alert] = []
    for t, kind, due in wanted:
        if (t.id, kind, due) in sent:
            continue
        try:
            with transaction(sessions) as s:
                row = SlaAlert(ticket_id=t.id, kind=kind, due_at=due, created_at=now)
                s.add(row)
                s.flush()
                new.append(Alert(row.id, kind, t.id, t.queue, due, dict(t.labels or {})))
        except IntegrityError:
            continue  # another process wrote it first: it sends it
    return new


def deliver(
    sessions: sessionmaker[Session],
    alerts: list[Alert],
    webhook_url: str | None,
    owners: dict[str, list[str]],
    smtp=None,
    mail_from: str | None = None,
) -> None:
    """Post each alert to the webhook and mail it to its queue's owners (one attempt
    each: an alert is sent once); record what each got."""
    for alert in alerts:
        what = f"SLA alert {alert.id}"
        words = {"due_soon": "is due soon", "breached": "is late"}[alert.kind]
        subject = f"[carelens] ticket {alert.ticket_id} in {alert.queue} {words}"
        text = (
            f"Ticket {alert.ticket_id} ({alert.queue}) {words}: its answer is due at "
            f"{alert.due_at.isoformat()}.\n\n{json.dumps(alert.labels, ensure_ascii=False)}\n"
        )
        webhook, email = send(
            alert.payload(), subject, text, webhook_url, owners.get(alert.queue) or [], smtp,
            mail_from, what,
        )  # fmt: skip
        with transaction(sessions) as s:
            row = s.get(SlaAlert, alert.id)
            row.webhook_status, row.email_status = webhook, email


def send(
    payload: dict,
    subject: str,
    text: str,
    webhook_url: str | None,
    to: list[str],
    smtp,
    mail_from: str | None,
    what: str,
) -> tuple[str | None, str | None]:
    """One attempt each: POST ``payload`` to the webhook, mail ``subject``/``text`` to
    ``to``; what each got (None: not configured)."""
    webhook = _post(webhook_url, payload, what) if webhook_url else None
    email = (
        _mail(smtp, mail_from, to, subject, text, what)
        if smtp is not None and to and mail_from
        else None
    )
    return webhook, email


def _post(url: str, payload: dict, what: str) -> str:
    try:
        r = httpx.post(url, json=payload, timeout=10.0)
    except httpx.HTTPError as exc:
        log.warning("%s: webhook failed: %s", what, exc)
        return f"failed: {type(exc).__name__}: {exc}"
    return f"HTTP {r.status_code}"


def _mail(smtp, mail_from: str, to: list[str], subject: str, text: str, what: str) -> str:
    from serving.outbox import _connect

    msg = EmailMessage()
    msg["From"] = mail_from
    msg["To"] = ", ".join(to)
    msg["Subject"] = subject
    msg["Auto-Submitted"] = "auto-generated"
    msg.set_content(text)
    try:
        with _connect(smtp) as conn:
            conn.send_message(msg, from_addr=parseaddr(mail_from)[1], to_addrs=to)
    except (smtplib.SMTPException, OSError) as exc:
        log.warning("%s: e-mail failed: %s", what, exc)
        return f"failed: {type(exc).__name__}: {exc}"
    return f"sent to {len(to)}"


def run_once(svc) -> int:
    """One round for the service's worker: scan, then deliver; the number sent."""
    from serving.outbox import SmtpConfig

    settings = svc.settings
    alerts = scan(svc.sessions, svc.clock(), timedelta(hours=settings.sla_alert_lead_hours))
    if alerts:
        deliver(
            svc.sessions,
            alerts,
            settings.sla_alert_webhook_url,
            svc.routing.owners,
            SmtpConfig.from_settings(settings),
            settings.mail_from,
        )
    return len(alerts)
