"""Agents' labels: checked against the taxonomy, stored as corrections of a ticket's
labels (the ticket's labels change, the model's prediction is kept), and exported in
the labelled-data format the retraining reads."""

from __future__ import annotations

import csv
import io
import json
from datetime import datetime
from pathlib import Path
from typing import Any

from sqlalchemy import select
from sqlalchemy.orm import Session

from model.taxonomy import Taxonomy
from serving.redact import pseudonym, redact
from serving.store import LabelCorrection, Message, Ticket
from serving.tickets import event


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
    if ticket.message is not None:
        ticket.message.update_attention(ticket.labels)
    event(
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


def export_labels_file(database_url: str | None, taxonomy_file: Path, out: Path) -> int:
    """Write the store's labelled tickets (``GET /v1/labels/export``'s JSONL) to
    ``out``; returns the number of tickets."""
    from model.taxonomy import Taxonomy
    from serving import db
    from serving.settings import Settings

    url = database_url or Settings().database_url
    engine = db.make_engine(url)
    try:
        with db.session_factory(engine)() as s:
            body = export_labels(s, Taxonomy.load(taxonomy_file), "jsonl")
    finally:
        engine.dispose()
    out.write_text(body, encoding="utf-8")
    return body.count("\n")
