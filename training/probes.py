"""The behaviour suite: short hand-written messages with the labels any sane triage
must give (``data/probes/probes.jsonl``), scored per capability.

Each line: ``{"capability", "text", "rating" (or null), "expect": {...}}`` where
``expect`` may hold ``issue_type`` (labels that must be predicted), ``not_issue_type``
(labels that must not), ``sentiment`` (exact), ``urgency`` (exact) or
``urgency_min``/``urgency_max`` (bounds on the ordered levels). Predictions are the
Predictor's, critical rules included, as every door gives them.
"""

from __future__ import annotations

import json
from collections import defaultdict
from pathlib import Path
from typing import Any

from model.predictor import Predictor

PROBES_FILE = Path(__file__).resolve().parent.parent / "data" / "probes" / "probes.jsonl"
EXPECT_KEYS = {"issue_type", "not_issue_type", "sentiment", "urgency", "urgency_min", "urgency_max"}


def load_probes(path: str | Path = PROBES_FILE) -> list[dict[str, Any]]:
    probes = []
    path = Path(path)
    for lineno, line in enumerate(path.read_text(encoding="utf-8").splitlines(), 1):
        if not line.strip():
            continue
        try:
            p = json.loads(line)
        except json.JSONDecodeError as exc:
            raise ValueError(f"{path}:{lineno}: not valid JSON: {exc.msg}") from exc
        if not isinstance(p.get("text"), str) or not isinstance(p.get("expect"), dict):
            raise ValueError(f"{path}:{lineno}: needs 'text' and an 'expect' object")
        unknown = set(p["expect"]) - EXPECT_KEYS
        if unknown:
            raise ValueError(f"{path}:{lineno}: unknown expect keys {sorted(unknown)}")
        p["line"] = lineno
        probes.append(p)
    return probes


def failures(expect: dict[str, Any], labels: dict[str, list[str]], levels: list[str]) -> list[str]:
    """What a prediction's labels break of ``expect`` (empty: the probe passes)."""
    out = []
    issues = set(labels.get("issue_type", []))
    for label in expect.get("issue_type", []):
        if label not in issues:
            out.append(f"missing issue_type {label}")
    for label in expect.get("not_issue_type", []):
        if label in issues:
            out.append(f"unwanted issue_type {label}")
    sentiment = (labels.get("sentiment") or [None])[0]
    if "sentiment" in expect and sentiment != expect["sentiment"]:
        out.append(f"sentiment {sentiment} (want {expect['sentiment']})")
    urgency = (labels.get("urgency") or [None])[0]
    rank = levels.index(urgency) if urgency in levels else -1
    if "urgency" in expect and urgency != expect["urgency"]:
        out.append(f"urgency {urgency} (want {expect['urgency']})")
    if "urgency_min" in expect and rank < levels.index(expect["urgency_min"]):
        out.append(f"urgency {urgency} (want at least {expect['urgency_min']})")
    if "urgency_max" in expect and rank > levels.index(expect["urgency_max"]):
        out.append(f"urgency {urgency} (want at most {expect['urgency_max']})")
    return out


def run_probes(predictor: Predictor, probes: list[dict[str, Any]]) -> dict[str, Any]:
    """Pass rate overall and per capability, and every failure with what it broke."""
    preds = predictor.predict(
        [p["text"] for p in probes], evidence=False, ratings=[p.get("rating") for p in probes]
    )
    levels = predictor.taxonomy["urgency"].label_names
    per: dict[str, list[int]] = defaultdict(lambda: [0, 0])
    failed = []
    for p, pred in zip(probes, preds, strict=True):
        broken = failures(p["expect"], pred.labels, levels)
        cap = p.get("capability", "other")
        per[cap][0] += not broken
        per[cap][1] += 1
        if broken:
            failed.append(
                {
                    "line": p["line"],
                    "capability": cap,
                    "text": p["text"],
                    "rating": p.get("rating"),
                    "broken": broken,
                    "labels": pred.labels,
                }
            )
    passed = sum(v[0] for v in per.values())
    return {
        "probes": len(probes),
        "passed": passed,
        "pass_rate": round(passed / len(probes), 3) if probes else None,
        "per_capability": {
            c: {"passed": v[0], "probes": v[1], "pass_rate": round(v[0] / v[1], 3)}
            for c, v in sorted(per.items())
        },
        "failures": failed,
    }
