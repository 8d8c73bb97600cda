"""How precise the critical rules are: every hit over the public data, a seeded sample
per rule for people to judge, precision from their judgements, and recall on the
labelled corpus's critical items."""

from __future__ import annotations

import json
import random
from collections import Counter
from pathlib import Path
from typing import Any

from model.rules import RuleSet
from training.corpus import _source_rows
from training.data import Example
from training.sources import available_sources


def scan(rules: RuleSet, data_root: str | Path | None = None) -> list[dict[str, Any]]:
    """Every rule hit in every public source's texts (one per rule and text)."""
    out = []
    for name in available_sources():
        for _, row in _source_rows(name, data_root):
            for hit in rules.hits(row.text):
                out.append({**hit.to_dict(), "source": name, "id": row.id, "text": row.text})
    return out


def sample(hits: list[dict[str, Any]], per_rule: int, seed: int = 0) -> list[dict[str, Any]]:
    """Up to ``per_rule`` hits of each rule, drawn with ``random.Random(seed)``."""
    rng = random.Random(seed)
    out = []
    for rule in sorted({h["rule"] for h in hits}):
        mine = [h for h in hits if h["rule"] == rule]
        out += rng.sample(mine, min(per_rule, len(mine)))
    return out


def precision(judged: list[dict[str, Any]]) -> dict[str, dict[str, Any]]:
    """Per rule: judged hits, how many were right (``correct``: true), precision."""
    n, ok = Counter(), Counter()
    for h in judged:
        n[h["rule"]] += 1
        ok[h["rule"]] += bool(h["correct"])
    return {
        r: {"judged": n[r], "correct": ok[r], "precision": round(ok[r] / n[r], 3)}
        for r in sorted(n)
    }


def judged_precision(
    path: str | Path, rules: RuleSet, data_root: str | Path | None = None
) -> dict[str, dict[str, Any]]:
    """``precision`` over the judged hits (``{rule, source, id, correct}`` per line) that
    ``rules`` still make on the text of that id; counts the ones they no longer make."""
    judged = [
        json.loads(line)
        for line in Path(path).read_text(encoding="utf-8").splitlines()
        if line.strip()
    ]
    texts: dict[tuple[str, str], str] = {}
    for source in sorted({j["source"] for j in judged}):
        texts.update({(source, d.id): d.text for _, d in _source_rows(source, data_root)})
    kept, gone = [], Counter()
    for j in judged:
        if not isinstance(j.get("correct"), bool):
            raise ValueError(f"{path}: every line needs 'correct': true or false ({j})")
        text = texts.get((j["source"], j["id"]))
        if text is None:
            raise ValueError(f"{path}: no text for {j['source']} {j['id']} in the public data")
        if any(h.rule == j["rule"] for h in rules.hits(text)):
            kept.append(j)
        else:
            gone[j["rule"]] += 1
    out = precision(kept)
    for rule in out:
        out[rule]["no_longer_hit"] = gone[rule]
    return out


def recall(rules: RuleSet, rows: list[Example]) -> dict[str, dict[str, Any]]:
    """On labelled rows: of the critical rows with safety_hazard, how many the safety rule
    catches; of all critical rows, how many any rule catches."""
    safety = [
        e
        for e in rows
        if (e.labels.get("urgency") or [None])[0] == "critical"
        and "safety_hazard" in (e.labels.get("issue_type") or [])
    ]
    critical = [e for e in rows if (e.labels.get("urgency") or [None])[0] == "critical"]

    def caught(items, only=None):
        return sum(any(only is None or h.rule == only for h in rules.hits(e.text)) for e in items)

    out = {}
    for name, items, only in (("safety", safety, "safety"), ("any_critical", critical, None)):
        c = caught(items, only)
        out[name] = {
            "rows": len(items),
            "caught": c,
            "recall": round(c / len(items), 3) if items else None,
        }
    return out


def recall_by_split(rules: RuleSet, rows: list[Example]) -> dict[str, dict[str, dict[str, Any]]]:
    """``recall`` on the corpus's training, dev and test rows apart (``corpus_split``):
    phrases written from training and dev rows the rules missed show on the test rows
    whether they carry over to new messages."""
    from training.corpus import corpus_split

    split = [corpus_split(e.text) for e in rows]
    return {
        name: recall(rules, [e for e, s in zip(rows, split, strict=True) if s == name])
        for name in ("train", "dev", "test")
    }


def write_jsonl(items: list[dict[str, Any]], path: str | Path) -> None:
    with Path(path).open("w", encoding="utf-8") as fh:
        for it in items:
            fh.write(json.dumps(it, ensure_ascii=False) + "\n")
