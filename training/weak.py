"""Weak labels from phrase rules, for tasks no public source labels (issue types of reviews).

A rule file (``data/weak/*.yaml``) lists, per label, English regular expressions
(case-insensitive, whole words: a word boundary at both ends) and Chinese substrings, optionally
restricted to some sentiments, plus fallbacks per sentiment when nothing matches.
Source mappings use it as ``issue_type: [{weak: review_issue_types}]``.
``score_rules`` compares the rules with hand labels (``carelens data weak-check``).
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

from model.taxonomy import Task

WEAK_DIR = Path(__file__).resolve().parent.parent / "data" / "weak"


class WeakRuleError(ValueError):
    pass


@dataclass
class LabelRule:
    label: str
    en: re.Pattern[str] | None
    zh: list[str]
    sentiments: set[str] | None

    def matches(self, text: str, lang: str, sentiment: str | None) -> bool:
        if self.sentiments is not None and sentiment not in self.sentiments:
            return False
        if lang == "zh":
            return any(s in text for s in self.zh)
        return bool(self.en and self.en.search(text))


@dataclass
class WeakRules:
    name: str
    rules: list[LabelRule]
    fallback: dict[str, list[str]] = field(default_factory=dict)

    @classmethod
    def load(cls, name_or_path: str | Path) -> WeakRules:
        path = Path(name_or_path)
        if not path.suffix:
            path = WEAK_DIR / f"{name_or_path}.yaml"
        if not path.is_file():
            known = ", ".join(p.stem for p in sorted(WEAK_DIR.glob("*.yaml")))
            raise WeakRuleError(f"weak rule file {path} does not exist (known: {known})")
        raw = yaml.safe_load(path.read_text(encoding="utf-8")) or {}
        rules = []
        for label, spec in (raw.get("labels") or {}).items():
            en = spec.get("en") or []
            try:
                pattern = (
                    re.compile(r"\b(?:" + "|".join(f"(?:{p})" for p in en) + r")\b", re.IGNORECASE)
                    if en
                    else None
                )
            except re.error as exc:
                raise WeakRuleError(f"{path}: label {label!r}: bad pattern: {exc}") from exc
            sentiments = spec.get("sentiment")
            rules.append(
                LabelRule(
                    label=label,
                    en=pattern,
                    zh=[str(s) for s in spec.get("zh") or []],
                    sentiments=set(sentiments) if sentiments else None,
                )
            )
        return cls(name=path.stem, rules=rules, fallback=raw.get("fallback") or {})

    def check(self, task: Task) -> None:
        labels = [r.label for r in self.rules] + [
            lab for labs in self.fallback.values() for lab in labs
        ]
        for label in labels:
            if label not in task.label2id:
                raise WeakRuleError(
                    f"weak rules {self.name!r}: {task.name} label {label!r} is not in the taxonomy"
                )

    def labels(self, text: str, lang: str, sentiment: str | None) -> list[str] | None:
        """The labels the rules give ``text``; None (not labelled) when nothing matches
        and no fallback applies. Praise never goes with a negative review."""
        out = [r.label for r in self.rules if r.matches(text, lang, sentiment)]
        if sentiment == "negative":
            out = [lab for lab in out if lab != "praise"]
        if not out:
            fb = self.fallback.get(sentiment or "")
            return list(fb) if fb else None
        return out


def score_rules(
    rules: WeakRules, rows: list[tuple[str, str, str | None, list[str]]], label_names: list[str]
) -> dict[str, Any]:
    """Precision/recall/F1 per label of the rules against hand labels.

    ``rows``: (text, lang, sentiment, hand labels). Rows the rules leave unlabelled
    count as predicting nothing (and are counted as ``unlabelled``)."""
    from sklearn.metrics import f1_score, precision_recall_fscore_support
    from sklearn.preprocessing import MultiLabelBinarizer

    mlb = MultiLabelBinarizer(classes=label_names)
    gold, pred, unlabelled = [], [], 0
    for text, lang, sentiment, hand in rows:
        got = rules.labels(text, lang, sentiment)
        if got is None:
            unlabelled += 1
            got = []
        gold.append(hand)
        pred.append(got)
    y, p = mlb.fit_transform(gold), mlb.transform(pred)
    prec, rec, f1, support = precision_recall_fscore_support(y, p, zero_division=0)
    return {
        "rows": len(rows),
        "unlabelled": unlabelled,
        "micro_f1": float(f1_score(y, p, average="micro", zero_division=0)),
        "exact_match": float((y == p).all(axis=1).mean()) if len(rows) else 0.0,
        "per_label": {
            name: {
                "precision": float(prec[i]),
                "recall": float(rec[i]),
                "f1": float(f1[i]),
                "support": int(support[i]),
                "predicted": int(p[:, i].sum()),
            }
            for i, name in enumerate(label_names)
        },
    }
