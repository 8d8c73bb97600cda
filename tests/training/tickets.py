"""Synthetic labelled tickets with a learnable pattern, in the export format of
``GET /v1/labels/export`` (for retraining tests on the tiny model)."""

from __future__ import annotations

import json
import random
from datetime import UTC, datetime, timedelta
from pathlib import Path

KINDS = [
    ("i want a refund for my order please", ["refund_return"], "negative", "medium"),
    ("the box arrived broken and the item is broken", ["damaged_defective"], "negative", "high"),
    ("great product i love it thanks", ["praise"], "positive", "low"),
    ("the package never arrived delivery is late", ["shipping_delivery"], "negative", "medium"),
    ("fire and smoke it can burn you", ["safety_hazard"], "negative", "critical"),
]
FILLER = "the a it is was this my very but and so".split()


def ticket_texts(n: int, seed: int = 0) -> list[tuple[str, list[str], str, str]]:
    rng = random.Random(seed)
    out = []
    for i in range(n):
        text, issue, sentiment, urgency = KINDS[i % len(KINDS)]
        words = text.split()
        words.insert(rng.randrange(len(words) + 1), rng.choice(FILLER))
        words.append(rng.choice(FILLER))
        out.append((" ".join(words) + f" {i}", issue, sentiment, urgency))
    return out


def write_tickets(path: Path, n: int, seed: int = 0, flip: int = 0) -> Path:
    """``n`` labelled tickets, labelled one minute apart; the first ``flip`` have a
    wrong sentiment (to be caught by the audit)."""
    start = datetime(2026, 11, 1, tzinfo=UTC)
    with path.open("w", encoding="utf-8") as fh:
        for i, (text, issue, sentiment, urgency) in enumerate(ticket_texts(n, seed)):
            if i < flip:
                sentiment = "positive" if sentiment == "negative" else "negative"
            rec = {
                "id": f"msg-{i}",
                "text": text,
                "lang": "en",
                "source": "tickets:email",
                "issue_type": issue,
                "sentiment": sentiment,
                "urgency": urgency,
                "labelled_at": (start + timedelta(minutes=i)).isoformat(),
                "labelled_by": "alice",
            }
            fh.write(json.dumps(rec) + "\n")
    return path
