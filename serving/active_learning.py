"""Active learning: which unlabelled messages an agent should label next.

Each unlabelled message is scored from its stored prediction (``Prediction.output``):

- uncertainty: per task, how far the confidence is from certain, scaled to [0, 1]
  (a k-class task's confidence is at least 1/k; a multi-label decision's at least 0.5),
  averaged over the tasks;
- disagreement: the heads contradicting each other or the evidence around them:
  a praise label with a negative sentiment, a sentiment against the star rating, a
  critical rule that fired while the urgency head said low or medium. Each is
  scored by the probability mass on the contradiction; the largest counts.

Score = uncertainty + disagreement. Diversity: candidates are grouped by (language,
product or channel); the picks go round the groups, best group first, so one noisy
product or one language cannot fill the list.
"""

from __future__ import annotations

from collections import defaultdict
from typing import Any

from sqlalchemy import select
from sqlalchemy.orm import Session

from serving.store import LabelCorrection, Message, Prediction, Ticket

POOL = 5000  # newest unlabelled messages considered


def _p(tasks: dict[str, Any], task: str, label: str) -> float:
    return float(((tasks.get(task) or {}).get("probabilities") or {}).get(label, 0.0))


def uncertainty(tasks: dict[str, Any]) -> float:
    values = []
    for t in tasks.values():
        conf = float(t.get("confidence", 1.0))
        k = len(t.get("probabilities") or {}) or 2
        floor = 0.5 if t.get("kind") == "multilabel" else 1.0 / k
        values.append(min(1.0, max(0.0, (1.0 - conf) / (1.0 - floor))))
    return sum(values) / len(values) if values else 0.0


def disagreement(
    tasks: dict[str, Any], rating: int | None, rule_hits: list[Any], labels: dict[str, Any]
) -> tuple[float, list[str]]:
    found: list[tuple[float, str]] = []
    neg, pos = _p(tasks, "sentiment", "negative"), _p(tasks, "sentiment", "positive")
    praise = _p(tasks, "issue_type", "praise")
    if "sentiment" in tasks and "issue_type" in tasks:
        found.append((2 * min(praise, neg), "praise with negative sentiment"))
    if rating is not None and "sentiment" in tasks:
        if rating <= 2:
            found.append((pos, f"{rating}-star rating, positive sentiment"))
        elif rating >= 4:
            found.append((neg, f"{rating}-star rating, negative sentiment"))
    if rule_hits and "urgency" in tasks:
        probs = tasks["urgency"].get("probabilities") or {}
        low = sum(v for k, v in probs.items() if k in ("low", "medium"))
        found.append((low, "a critical rule fired, the model said low/medium urgency"))
    found = [(min(1.0, s), why) for s, why in found if s >= 0.2]
    if not found:
        return 0.0, []
    best = max(s for s, _ in found)
    return best, [why for s, why in sorted(found, reverse=True)]


def next_to_label(session: Session, n: int, pool: int = POOL) -> list[dict[str, Any]]:
    labelled = select(LabelCorrection.ticket_id)
    rows = session.execute(
        select(Message, Prediction, Ticket)
        .join(Prediction, Prediction.message_id == Message.id)
        .join(Ticket, Ticket.message_id == Message.id)
        .where(Ticket.id.not_in(labelled))
        .order_by(Message.received_at.desc(), Message.id.desc())
        .limit(pool)
    ).all()
    scored = []
    for msg, pred, ticket in rows:
        tasks = (pred.output or {}).get("tasks") or {}
        u = uncertainty(tasks)
        d, reasons = disagreement(tasks, msg.rating, ticket.rule_hits or [], ticket.labels)
        if u >= 0.5:
            reasons = [f"low confidence ({u:.2f})", *reasons]
        scored.append(
            {
                "message_id": msg.id,
                "ticket_id": ticket.id,
                "score": round(u + d, 4),
                "uncertainty": round(u, 4),
                "disagreement": round(d, 4),
                "reasons": reasons,
                "lang": msg.lang,
                "channel": msg.channel,
                "product_id": msg.product_id,
                "rating": msg.rating,
                "subject": msg.subject,
                "text": msg.text,
                "predicted": pred.labels,
                "confidence": {k: t.get("confidence") for k, t in tasks.items()},
                "model_version": pred.model_version,
                "received_at": msg.received_at,
            }
        )
    return diverse(scored, n)


def diverse(scored: list[dict[str, Any]], n: int) -> list[dict[str, Any]]:
    """Round-robin over (language, product or channel) groups, best first in each."""
    groups: dict[tuple[str, str], list[dict[str, Any]]] = defaultdict(list)
    for item in sorted(scored, key=lambda x: (-x["score"], -x["message_id"])):
        groups[(item["lang"], item["product_id"] or f"channel:{item['channel']}")].append(item)
    queues = sorted(groups.values(), key=lambda g: -g[0]["score"])
    out: list[dict[str, Any]] = []
    depth = 0
    while len(out) < n and any(depth < len(g) for g in queues):
        round_items = [g[depth] for g in queues if depth < len(g)]
        # within a round, alternate languages: best of each language first
        by_lang: dict[str, list[dict[str, Any]]] = defaultdict(list)
        for item in round_items:
            by_lang[item["lang"]].append(item)
        langs = sorted(by_lang.values(), key=lambda g: -g[0]["score"])
        i = 0
        while len(out) < n and any(i < len(g) for g in langs):
            out += [g[i] for g in langs if i < len(g)][: n - len(out)]
            i += 1
        depth += 1
    return out
