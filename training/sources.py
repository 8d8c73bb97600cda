"""Adapters from the public data sets to the labelled-data format.

Each source is described by a mapping file in ``data/mappings/`` (labels are data,
not code)::

    source: twitter_airline
    path: twitter_airline/tweets_dev.csv     # relative to the data directory
    lang: en
    text: "{text}"                           # a template over the CSV's columns
    id: tweet_id                             # a column or a template (optional)
    meta: {product_id: asin}                 # format column -> CSV column (optional)
    tasks:
      issue_type:                            # rules, first match wins
        - when: {airline_sentiment: positive}
          labels: [praise]
        - column: negativereason
          default: null                      # for values not in the map
          map: {Lost Luggage: shipping_delivery}

In a map a value may be a label, a list of labels, ``-`` or ``[]`` (labelled, no
label) or ``null`` (not labelled). A column value that is neither in the map nor
covered by ``default`` is an error naming the value: nothing is dropped silently.

A task may instead take weak labels from phrase rules over the text (``training/weak.py``,
given the row's own sentiment label): ``issue_type: [{weak: review_issue_types}]``.
``exclude: [labels/review_issue_types.csv]`` (files under ``data/`` with an ``id``
column) drops those rows from the source: hand-labelled texts are never trained on.
"""

from __future__ import annotations

import csv
import os
import string
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

from model.taxonomy import Taxonomy
from training.data import Example, normalise_for_hash
from training.weak import WeakRules

REPO_DATA_DIR = Path(__file__).resolve().parent.parent / "data"
MAPPINGS_DIR = REPO_DATA_DIR / "mappings"
_MISSING = object()


class SourceError(ValueError):
    pass


def data_dir(explicit: str | Path | None = None) -> Path:
    """The public data directory: explicit, else $CARELENS_DATA, else ../shared/data."""
    if explicit is not None:
        path = Path(explicit)
    elif os.environ.get("CARELENS_DATA"):
        path = Path(os.environ["CARELENS_DATA"])
    else:
        # ../shared/data from the repository root, wherever the command runs from
        repo_default = Path(__file__).resolve().parent.parent.parent / "shared" / "data"
        path = Path("../shared/data") if Path("../shared/data").is_dir() else repo_default
    if not path.is_dir():
        raise SourceError(
            f"data directory {path.resolve()} does not exist: set CARELENS_DATA (or --data-dir) to the "
            "folder holding banking77/, twitter_airline/, chinese_reviews/ ..."
        )
    return path.resolve()


@dataclass
class SourceMapping:
    source: str
    path: str
    lang: str
    text: str
    tasks: dict[str, list[dict[str, Any]]]
    id: str | None = None
    meta: dict[str, str] = field(default_factory=dict)
    exclude: list[str] = field(default_factory=list)
    file: Path | None = None

    @classmethod
    def load(cls, path: str | Path) -> SourceMapping:
        path = Path(path)
        raw = yaml.safe_load(path.read_text(encoding="utf-8"))
        missing = [k for k in ("source", "path", "text", "tasks") if k not in (raw or {})]
        if missing:
            raise SourceError(f"{path}: missing keys {missing}")
        return cls(
            source=raw["source"],
            path=raw["path"],
            lang=raw.get("lang", ""),
            text=raw["text"],
            tasks=raw["tasks"],
            id=raw.get("id"),
            meta=raw.get("meta") or {},
            exclude=list(raw.get("exclude") or []),
            file=path,
        )

    def check(self, taxonomy: Taxonomy) -> None:
        """Every label a rule can produce must be in the taxonomy."""
        for task_name, rules in self.tasks.items():
            if task_name not in taxonomy:
                raise SourceError(f"{self.file}: task {task_name!r} is not in the taxonomy")
            task = taxonomy[task_name]
            for rule in rules:
                if "weak" in rule:
                    WeakRules.load(rule["weak"]).check(task)
                    continue
                outputs = (
                    [rule["labels"]] if "labels" in rule else list((rule.get("map") or {}).values())
                )
                if "default" in rule:
                    outputs.append(rule["default"])
                for out in outputs:
                    for label in _as_labels(out) or []:
                        if label not in task.label2id:
                            raise SourceError(
                                f"{self.file}: {task_name} label {label!r} is not in the taxonomy "
                                f"(allowed: {', '.join(task.label_names)})"
                            )

    def label_space(self, task_name: str) -> set[str] | None:
        """The labels of ``task_name`` this source's rules can give (a positive/negative
        source has no neutral), or None where a phrase rule may give any label."""
        space: set[str] = set()
        for rule in self.tasks.get(task_name) or []:
            if "weak" in rule:
                return None
            outputs = (
                [rule["labels"]] if "labels" in rule else list((rule.get("map") or {}).values())
            )
            if "default" in rule:
                outputs.append(rule["default"])
            for out in outputs:
                space.update(_as_labels(out) or [])
        return space or None


def available_sources() -> dict[str, Path]:
    return {p.stem: p for p in sorted(MAPPINGS_DIR.glob("*.yaml"))}


def _as_labels(value: Any) -> list[str] | None:
    if value is None:
        return None
    if value == "-" or value == []:
        return []
    if isinstance(value, list):
        return [str(v) for v in value]
    return [str(value)]


def _render(template: str, row: dict[str, str]) -> str:
    if "{" not in template:
        return row.get(template, "") or ""
    fields = {name for _, name, _, _ in string.Formatter().parse(template) if name}
    return template.format(**{f: (row.get(f) or "").strip() for f in fields})


def _apply(rules: list[dict[str, Any]], row: dict[str, str], where: str) -> list[str] | None:
    for rule in rules:
        cond = rule.get("when") or {}
        if any(
            (row.get(col) or "")
            not in ([str(v) for v in val] if isinstance(val, list) else [str(val)])
            for col, val in cond.items()
        ):
            continue
        if "labels" in rule:
            return _as_labels(rule["labels"])
        col = rule["column"]
        value = (row.get(col) or "").strip()
        mapping = {str(k): v for k, v in (rule.get("map") or {}).items()}
        if value in mapping:
            return _as_labels(mapping[value])
        default = rule.get("default", _MISSING)
        if default is _MISSING:
            raise SourceError(f"{where}: value {value!r} of column {col!r} is not in the mapping")
        return _as_labels(default)
    return None


def source_rows(
    mapping: SourceMapping, path: Path
) -> Iterator[tuple[int, dict[str, str], str, str]]:
    """(line number, CSV row, text, id) of every row of a source file with a text."""
    with path.open(encoding="utf-8-sig", newline="") as fh:
        reader = csv.DictReader(fh)
        for row in reader:
            # an empty leading field of the template (e.g. no summary) leaves ". " behind
            text = _render(mapping.text, row).strip().lstrip(". ").strip()
            if not text:
                continue
            rid = _render(mapping.id, row) if mapping.id else f"{mapping.source}-{reader.line_num}"
            yield reader.line_num, row, text, rid


def _excluded(mapping: SourceMapping) -> tuple[set[str], set[str]]:
    """Ids and normalised texts of the rows of the ``exclude`` files: dropped from the
    source (a text repeated under another id is dropped too)."""
    ids: set[str] = set()
    texts: set[str] = set()
    for rel in mapping.exclude:
        path = REPO_DATA_DIR / rel
        if not path.is_file():
            raise SourceError(f"{mapping.file}: exclude file {path} is missing")
        with path.open(encoding="utf-8-sig", newline="") as fh:
            for row in csv.DictReader(fh):
                if row.get("id"):
                    ids.add(row["id"])
                if row.get("text"):
                    texts.add(normalise_for_hash(row["text"]))
    return ids, texts


def load_source(
    name: str,
    taxonomy: Taxonomy,
    data_root: str | Path | None = None,
    mapping_file: str | Path | None = None,
) -> list[Example]:
    """Examples of one public source mapped onto ``taxonomy``."""
    sources = available_sources()
    if mapping_file is None and name not in sources:
        raise SourceError(f"unknown source {name!r}; known: {', '.join(sources)}")
    mapping = SourceMapping.load(mapping_file or sources[name])
    mapping.check(taxonomy)
    path = data_dir(data_root) / mapping.path
    if not path.is_file():
        raise SourceError(f"{mapping.file}: data file {path} is missing")
    excluded, excluded_texts = _excluded(mapping)
    weak = {
        task: WeakRules.load(rules[0]["weak"])
        for task, rules in mapping.tasks.items()
        if rules and "weak" in rules[0]
    }
    examples = []
    rows = list(source_rows(mapping, path))
    # an excluded row's text is excluded under any other id of the source too
    excluded_texts |= {normalise_for_hash(t) for _, _, t, rid in rows if rid in excluded}
    for line_num, row, text, rid in rows:
        where = f"{path}:{line_num} ({mapping.file.name})"
        meta: dict[str, Any] = {"source": mapping.source, "lang": mapping.lang, "id": rid}
        if rid in excluded or normalise_for_hash(text) in excluded_texts:
            continue
        labels = {
            task: _apply(rules, row, where)
            for task, rules in mapping.tasks.items()
            if task not in weak
        }
        sentiment = (labels.get("sentiment") or [None])[0]
        for task, rules in weak.items():
            labels[task] = rules.labels(text, mapping.lang, sentiment)
        for key, col in mapping.meta.items():
            if row.get(col):
                meta[key] = row[col]
        examples.append(Example(text=text, labels=labels, meta=meta))
    return examples
