"""Critical rules: phrases in context that set urgency ``critical`` (safety, legal,
regulator, chargeback, fraud), read from one file (``data/rules.yaml`` by default).

The ``Predictor`` applies them to every prediction, so every door that produces labels
(ingest, ``/v1/classify``, ``carelens predict``, ``carelens evaluate``) gives the same
labels for the same text; each hit is kept with the rule, the phrase and its offsets.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml

from model.taxonomy import Taxonomy

DEFAULT_RULES_PATH = Path(__file__).resolve().parent.parent / "data" / "rules.yaml"
_CJK = re.compile(r"[\u3400-\u9fff\uf900-\ufaff]")


class RulesError(ValueError):
    """The rules file is wrong; the message names the file and the entry."""


@dataclass(frozen=True)
class RuleHit:
    rule: str
    phrase: str
    start: int
    end: int

    def to_dict(self) -> dict[str, Any]:
        return {"rule": self.rule, "phrase": self.phrase, "start": self.start, "end": self.end}


@dataclass(frozen=True)
class Rule:
    name: str
    patterns: tuple[re.Pattern[str], ...]
    set: dict[str, list[str]]
    add: dict[str, list[str]]

    def match(self, text: str) -> re.Match[str] | None:
        """The earliest match of any pattern."""
        best = None
        for pattern in self.patterns:
            m = pattern.search(text)
            if m and (best is None or m.start() < best.start()):
                best = m
        return best


@dataclass(frozen=True)
class RuleSet:
    rules: tuple[Rule, ...]
    source: str = "rules"

    @property
    def names(self) -> list[str]:
        return [r.name for r in self.rules]

    @classmethod
    def load(cls, path: str | Path | None = None) -> RuleSet:
        path = Path(path) if path is not None else DEFAULT_RULES_PATH
        try:
            data = yaml.safe_load(path.read_text(encoding="utf-8")) or {}
        except OSError as exc:
            raise RulesError(f"cannot read rules file {path}: {exc}") from exc
        except yaml.YAMLError as exc:
            raise RulesError(f"{path}: not valid YAML: {exc}") from exc
        if not isinstance(data, dict):
            raise RulesError(f"{path}: expected a mapping with a `rules` list")
        return cls.from_list(data.get("rules") or [], source=str(path))

    @classmethod
    def from_list(cls, items: list[Any], source: str = "rules") -> RuleSet:
        rules = []
        for i, raw in enumerate(items):
            name = raw.get("name") if isinstance(raw, dict) else None
            if not name:
                raise RulesError(f"{source}: rules[{i}]: needs a name")
            pats = raw.get("patterns") or {}
            if not isinstance(pats, dict) or not pats:
                raise RulesError(
                    f"{source}: rules[{i}] ({name}): `patterns` must map languages to lists"
                )
            compiled = []
            for lang, patterns in pats.items():
                for p in patterns or []:
                    try:
                        bounded = p if _CJK.search(p) or lang == "zh" else rf"\b(?:{p})\b"
                        compiled.append(re.compile(bounded, re.IGNORECASE))
                    except re.error as exc:
                        raise RulesError(
                            f"{source}: rules[{i}] ({name}): bad pattern {p!r}: {exc}"
                        ) from exc
            rules.append(
                Rule(
                    name=str(name),
                    patterns=tuple(compiled),
                    set={k: list(v) for k, v in (raw.get("set") or {}).items()},
                    add={k: list(v) for k, v in (raw.get("add") or {}).items()},
                )
            )
        return cls(rules=tuple(rules), source=source)

    def validate(self, taxonomy: Taxonomy) -> None:
        """Every task and label a rule sets exists in the taxonomy; ``add`` is multi-label."""
        for rule in self.rules:
            for task, labels in {**rule.set, **rule.add}.items():
                if task not in taxonomy:
                    raise RulesError(
                        f"{self.source}: rule {rule.name}: unknown task {task!r} "
                        f"(the taxonomy has {', '.join(taxonomy.task_names)})"
                    )
                unknown = [x for x in labels if x not in taxonomy[task].label_names]
                if unknown:
                    raise RulesError(
                        f"{self.source}: rule {rule.name}: unknown {task} label(s) {', '.join(unknown)}"
                    )
            for task in rule.add:
                if not taxonomy[task].is_multilabel:
                    raise RulesError(
                        f"{self.source}: rule {rule.name}: `add` needs a multi-label task, "
                        f"{task} is {taxonomy[task].kind}"
                    )

    def hits(self, text: str) -> list[RuleHit]:
        out = []
        for rule in self.rules:
            m = rule.match(text)
            if m:
                out.append(RuleHit(rule.name, m.group(0), m.start(), m.end()))
        return out

    def apply(
        self, text: str, labels: dict[str, list[str]]
    ) -> tuple[dict[str, list[str]], list[RuleHit]]:
        """``labels`` with every firing rule applied, and the hits."""
        out = {k: list(v) for k, v in labels.items()}
        hits = self.hits(text)
        by_name = {r.name: r for r in self.rules}
        for hit in hits:
            rule = by_name[hit.rule]
            for task, values in rule.set.items():
                out[task] = list(values)
            for task, values in rule.add.items():
                out[task] = out.get(task, []) + [v for v in values if v not in out.get(task, [])]
        return out, hits
