"""Signals beyond single tickets, alerted where the SLA alerts go (the webhook
``CARELENS_SLA_ALERT_WEBHOOK_URL``; by e-mail to the queues' owners when an SMTP relay is
configured), each once:

- ``issue_spike``: an issue type spiking on a product (the test of ``serving.insights``);
- ``sentiment_shift``: in one language, the share of negative messages in the recent
  window against the baseline before it;
- ``urgency_shift``: the same for high or critical urgency;
- ``label_drift``: per task, the model's own labels (its predictions, before the rules
  and the agents' corrections) over the last full week (Monday to Monday, UTC) against
  the label shares of its training rows (``label_distribution`` in the model's
  ``metrics.json``), by the population stability index PSI = sum over labels of
  (a - e) ln(a / e) (shares floored at 0.001; a multi-label row without a label counts
  as ``-``). A week with at least ``CARELENS_DRIFT_MIN_MESSAGES`` predictions and a PSI
  of ``CARELENS_DRIFT_PSI`` (0.25, the usual threshold of a significant shift) or more
  is flagged: the messages now differ from what the model learnt from, so label a
  sample of them (``GET /v1/labeling/next``).

Shifts use the spike test's settings (``CARELENS_SPIKE_*``). Windows end at the start of
the current UTC day, so every scan of a day sees the same ones: recent R = the last
``window_days``, baseline B = the ``baseline_days`` before; x = the language's messages
in R with the label, n = its messages in R; the baseline share is Jeffreys-smoothed,
p0 = (k_B + 0.5) / (n_B + 1); the p-value is the exact one-sided binomial tail
P(X >= x | n, p0); Bonferroni over every test (languages x 2); flagged when
x >= ``min_count``, p_adjusted < ``alpha`` and x / n > p0. Messages are counted with
their effective labels (the ticket's, else the prediction's), as the insights count
them.

A signal still flagged on the next days is not sent again within a window's length
(a week): one alert per kind and subject per week.
"""

from __future__ import annotations

import math
from collections import Counter
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

from scipy.stats import binomtest
from sqlalchemy import select
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Session, sessionmaker

from serving.alerts import send
from serving.db import transaction
from serving.insights import SpikeConfig, detect_spikes, issue_order, spike_items
from serving.store import Message, Prediction, SignalAlert, Ticket

KINDS = ("issue_spike", "sentiment_shift", "urgency_shift", "label_drift")
SHIFTS = {
    "sentiment_shift": ("sentiment", ("negative",)),
    "urgency_shift": ("urgency", ("high", "critical")),
}
NO_LABEL = "-"
FLOOR = 0.001
WEEK = timedelta(days=7)


@dataclass(frozen=True)
class SignalConfig:
    spike: SpikeConfig = SpikeConfig()
    drift_psi: float = 0.25
    drift_min_messages: int = 50

    @classmethod
    def from_settings(cls, settings: Any) -> SignalConfig:
        return cls(
            spike=SpikeConfig.from_settings(settings),
            drift_psi=settings.drift_psi,
            drift_min_messages=settings.drift_min_messages,
        )


def day_start(t: datetime) -> datetime:
    return t.replace(hour=0, minute=0, second=0, microsecond=0)


def week_start(t: datetime) -> datetime:
    """Monday 00:00 UTC of ``t``'s week."""
    day = day_start(t)
    return day - timedelta(days=day.weekday())


def _labelled(session: Session, since: datetime, until: datetime):
    """(language, received at, effective labels) of every message in [since, until)."""
    q = (
        select(Message.lang, Message.received_at, Ticket.labels, Prediction.labels)
        .outerjoin(Ticket, Ticket.message_id == Message.id)
        .outerjoin(Prediction, Prediction.message_id == Message.id)
        .where(Message.received_at >= since, Message.received_at < until)
    )
    return [
        (lang, at, tlabels if tlabels is not None else (plabels or {}))
        for lang, at, tlabels, plabels in session.execute(q)
    ]


def shifts(session: Session, until: datetime, cfg: SpikeConfig) -> list[dict[str, Any]]:
    """Every sentiment and urgency shift test per language (see the module docstring),
    flagged or not."""
    recent_start = until - timedelta(days=cfg.window_days)
    base_start = recent_start - timedelta(days=cfg.baseline_days)
    rows = _labelled(session, base_start, until)
    tested = []
    for kind, (task, wanted) in SHIFTS.items():
        counts: dict[str, list[int]] = {}  # language -> [x, n, k_B, n_B]
        for lang, at, labels in rows:
            hit = int(any(v in wanted for v in labels.get(task) or []))
            c = counts.setdefault(lang, [0, 0, 0, 0])
            i = 0 if at >= recent_start else 2
            c[i] += hit
            c[i + 1] += 1
        for lang, (x, n, kb, nb) in sorted(counts.items()):
            if x < cfg.min_count:
                continue
            p0 = (kb + 0.5) / (nb + 1)
            tested.append(
                {
                    "kind": kind,
                    "subject": lang,
                    "lang": lang,
                    "task": task,
                    "labels": list(wanted),
                    "window_start": recent_start,
                    "window_end": until,
                    "baseline_start": base_start,
                    "count": x,
                    "messages": n,
                    "share": round(x / n, 4),
                    "baseline_count": kb,
                    "baseline_messages": nb,
                    "baseline_share": round(kb / nb, 4) if nb else None,
                    "expected_share": round(p0, 4),
                    "p_value": float(binomtest(x, n, p0, alternative="greater").pvalue),
                }
            )
    for row in tested:
        row["p_adjusted"] = min(1.0, row["p_value"] * len(tested))
        row["flagged"] = row["p_adjusted"] < cfg.alpha and row["share"] > row["expected_share"]
    return tested


def psi(actual: dict[str, float], expected: dict[str, float]) -> float:
    """Population stability index of two label distributions (shares floored)."""
    total = 0.0
    for label in set(actual) | set(expected):
        a = max(actual.get(label, 0.0), FLOOR)
        e = max(expected.get(label, 0.0), FLOOR)
        total += (a - e) * math.log(a / e)
    return total


def label_drift(
    session: Session,
    now: datetime,
    training: dict[str, dict[str, float]] | None,
    min_messages: int,
    threshold: float,
) -> dict[str, Any]:
    """The last full week's label distribution of the model's own predictions per task
    against its training rows' (``training``; None: the model records none)."""
    end = week_start(now)
    start = end - WEEK
    out: dict[str, Any] = {"window_start": start, "window_end": end, "tasks": []}
    if not training:
        out["available"] = False
        out["reason"] = (
            "the served model records no label distribution of its training rows "
            "(label_distribution in metrics.json): train or retrain it to measure drift"
        )
        return out
    out["available"] = True
    rows = [
        labels
        for (labels,) in session.execute(
            select(Prediction.labels)
            .join(Message, Message.id == Prediction.message_id)
            .where(Message.received_at >= start, Message.received_at < end)
        )
    ]
    for task, expected in training.items():
        counts: Counter[str] = Counter()
        n = 0
        for labels in rows:
            values = labels.get(task)
            if values is None:
                continue
            n += 1
            for v in values or [NO_LABEL]:
                counts[v] += 1
        total = sum(counts.values())
        actual = {k: v / total for k, v in counts.items()} if total else {}
        value = psi(actual, expected) if total else None
        moved = sorted(
            set(actual) | set(expected),
            key=lambda k: -abs(actual.get(k, 0.0) - expected.get(k, 0.0)),
        )[:3]
        out["tasks"].append(
            {
                "kind": "label_drift",
                "subject": task,
                "task": task,
                "window_start": start,
                "window_end": end,
                "predictions": n,
                "psi": round(value, 4) if value is not None else None,
                "threshold": threshold,
                "most_changed": [
                    {
                        "label": k,
                        "week_share": round(actual.get(k, 0.0), 4),
                        "training_share": round(expected.get(k, 0.0), 4),
                    }
                    for k in moved
                ],
                "flagged": value is not None and n >= min_messages and value >= threshold,
            }
        )
    return out


def issue_spikes(session: Session, until: datetime, cfg: SpikeConfig) -> list[dict[str, Any]]:
    """The flagged issue-type spikes of every product, windows ending at ``until``."""
    items = spike_items(session, until, cfg)
    found = detect_spikes(items, until, cfg, issue_order(items, None))
    return [
        {**spike, "kind": "issue_spike", "subject": f"{pid}:{spike['issue_type']}"}
        for pid, result in found.items()
        for spike in result["spikes"]
    ]


def current(
    session: Session, now: datetime, cfg: SignalConfig, training: dict | None
) -> dict[str, Any]:
    """Every signal as of ``now``: spikes and shifts (windows ending at the start of the
    day), label drift of the last full week."""
    until = day_start(now)
    return {
        "until": until,
        "issue_spikes": issue_spikes(session, until, cfg.spike),
        "shifts": shifts(session, until, cfg.spike),
        "label_drift": label_drift(session, now, training, cfg.drift_min_messages, cfg.drift_psi),
    }


def _plain(value: Any) -> Any:
    """JSON-ready: datetimes as ISO text."""
    if isinstance(value, datetime):
        return value.isoformat()
    if isinstance(value, dict):
        return {k: _plain(v) for k, v in value.items()}
    if isinstance(value, list):
        return [_plain(v) for v in value]
    return value


def scan(
    sessions: sessionmaker[Session], now: datetime, cfg: SignalConfig, training: dict | None
) -> list[int]:
    """Write an alert for every flagged signal not alerted within the last week; the
    ids of the new ones."""
    with sessions() as s:
        found = current(s, now, cfg, training)
        flagged = [
            *found["issue_spikes"],
            *(r for r in found["shifts"] if r["flagged"]),
            *(r for r in found["label_drift"]["tasks"] if r["flagged"]),
        ]
        if not flagged:
            return []
        since = min(r["window_end"] for r in flagged) - WEEK
        sent = [
            (a.kind, a.subject, a.window_end)
            for a in s.scalars(select(SignalAlert).where(SignalAlert.window_end > since))
        ]

    def already(r: dict[str, Any]) -> bool:
        return any(
            (kind, subject) == (r["kind"], r["subject"]) and end > r["window_end"] - WEEK
            for kind, subject, end in sent
        )

    new = []
    for r in flagged:
        if already(r):
            continue
        details = {k: v for k, v in _plain(r).items() if k not in ("kind", "subject", "examples")}
        try:
            with transaction(sessions) as s:
                row = SignalAlert(
                    kind=r["kind"],
                    subject=r["subject"][:300],
                    window_start=r["window_start"],
                    window_end=r["window_end"],
                    details=details,
                    created_at=now,
                )
                s.add(row)
                s.flush()
                new.append(row.id)
        except IntegrityError:
            continue  # another process wrote it first: it sends it
    return new


def describe(alert: SignalAlert) -> tuple[str, str]:
    """The e-mail subject and text of an alert (figures only, never a customer's words)."""
    d = alert.details
    days = f"{d['window_start'][:10]} to {d['window_end'][:10]}"
    if alert.kind == "issue_spike":
        subject = f"{d['product_id']}: {d['issue_type']} is spiking"
        text = (
            f"Product {d['product_id']}: {d['issue_type']} in {d['count']} of its "
            f"{d['messages']} messages ({days}), expected {d['expected_share']:.1%} "
            f"(p={d['p_value']:.2g}). See GET /v1/products/{d['product_id']}/insights."
        )
    elif alert.kind == "label_drift":
        moved = ", ".join(
            f"{m['label']} {m['week_share']:.1%} (training {m['training_share']:.1%})"
            for m in d["most_changed"]
        )
        subject = f"the model's {d['task']} labels drifted"
        text = (
            f"{d['task']}: the model's labels of {d['predictions']} messages ({days}) "
            f"differ from its training rows, PSI {d['psi']:.2f} (alert at "
            f"{d['threshold']}). Most changed: {moved}. Label a sample of these "
            "messages (GET /v1/labeling/next) so that the next retraining learns them."
        )
    else:
        what = "negative" if alert.kind == "sentiment_shift" else "high or critical urgency"
        subject = f"more {what} messages in {d['lang']}"
        text = (
            f"Messages in {d['lang']}: {d['count']} of {d['messages']} {what} ({days}), "
            f"against {d['expected_share']:.1%} before (p={d['p_value']:.2g})."
        )
    return f"[carelens] {subject}", text + "\n"


def deliver(
    sessions: sessionmaker[Session],
    ids: list[int],
    webhook_url: str | None,
    to: list[str],
    smtp=None,
    mail_from: str | None = None,
) -> None:
    """Send each new alert once (webhook, e-mail to ``to``); record what each got."""
    for alert_id in ids:
        with sessions() as s:
            alert = s.get(SignalAlert, alert_id)
            payload = {
                "alert": alert.kind,
                "alert_id": alert.id,
                "subject": alert.subject,
                **alert.details,
            }
            subject, text = describe(alert)
        webhook, email = send(
            payload, subject, text, webhook_url, to, smtp, mail_from, f"signal alert {alert_id}"
        )
        with transaction(sessions) as s:
            row = s.get(SignalAlert, alert_id)
            row.webhook_status, row.email_status = webhook, email


def recent_alerts(session: Session, n: int) -> list[SignalAlert]:
    """The ``n`` newest alerts, newest first."""
    return list(session.scalars(select(SignalAlert).order_by(SignalAlert.id.desc()).limit(n)))


def alert_view(a: SignalAlert) -> dict[str, Any]:
    return {
        "id": a.id,
        "kind": a.kind,
        "subject": a.subject,
        "window_start": a.window_start,
        "window_end": a.window_end,
        "details": a.details,
        "created_at": a.created_at,
        "webhook_status": a.webhook_status,
        "email_status": a.email_status,
    }


def training_distribution(predictor) -> dict | None:
    """The served model's training label shares, when it records them."""
    model = getattr(predictor, "model", None)
    metrics = getattr(model, "metrics", None) or {}
    return metrics.get("label_distribution") or None


def run_once(svc) -> int:
    """One round for the service's worker: scan, then deliver; the number sent."""
    from serving.outbox import SmtpConfig

    settings = svc.settings
    ids = scan(
        svc.sessions,
        svc.clock(),
        SignalConfig.from_settings(settings),
        training_distribution(svc.predictor),
    )
    if ids:
        owners = sorted({a for people in svc.routing.owners.values() for a in people})
        deliver(
            svc.sessions,
            ids,
            settings.sla_alert_webhook_url,
            owners,
            SmtpConfig.from_settings(settings),
            settings.mail_from,
        )
    return len(ids)
