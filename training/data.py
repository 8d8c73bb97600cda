"""The one labelled-data format, its reader and deterministic splits.

CSV or JSONL with a ``text`` column; optional ``id``, ``lang``, ``source``,
``rating``, ``product_id``, ``customer_id``; one column per task of the taxonomy.
Multi-label values are joined by ``|``; an empty cell means "not labelled for this
task", while ``-`` (or an empty list in JSONL) means "labelled, no label".
A label that is not in the taxonomy is refused with its line number and value.
"""

from __future__ import annotations

import csv
import hashlib
import json
import random
import re
import unicodedata
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch

from model.classifier import IGNORE_INDEX
from model.predictor import rated_text
from model.taxonomy import Taxonomy

META_COLUMNS = ("id", "lang", "source", "rating", "product_id", "customer_id")
NO_LABEL = "-"


class DataError(ValueError):
    """Bad labelled data; the message names the file, line and value."""


@dataclass
class Example:
    text: str
    labels: dict[str, list[str] | None] = field(default_factory=dict)  # None = not labelled
    meta: dict[str, Any] = field(default_factory=dict)

    @property
    def source(self) -> str:
        return str(self.meta.get("source") or "unknown")


def _parse_cell(value: Any, task_kind: str) -> list[str] | None:
    if value is None:
        return None
    if isinstance(value, list):
        return [str(v) for v in value]
    value = str(value).strip()
    if value == "":
        return None
    if value == NO_LABEL:
        return []
    return (
        [v.strip() for v in value.split("|") if v.strip()] if task_kind == "multilabel" else [value]
    )


def _rows(path: Path):
    if path.suffix == ".jsonl":
        with path.open("rb") as fh:
            for lineno, raw in enumerate(fh, start=1):
                if not raw.strip():
                    continue
                try:
                    obj = json.loads(raw.decode("utf-8"))
                except UnicodeDecodeError as exc:
                    raise DataError(f"{path}:{lineno}: invalid UTF-8") from exc
                except json.JSONDecodeError as exc:
                    raise DataError(f"{path}:{lineno}: not valid JSON: {exc.msg}") from exc
                if not isinstance(obj, dict):
                    raise DataError(f"{path}:{lineno}: expected a JSON object")
                yield lineno, obj
    elif path.suffix == ".csv":
        try:
            with path.open(encoding="utf-8-sig", newline="") as fh:
                reader = csv.DictReader(fh)
                for row in reader:
                    yield reader.line_num, row
        except UnicodeDecodeError as exc:
            raise DataError(f"{path}: invalid UTF-8 ({exc.reason} at byte {exc.start})") from exc
    else:
        raise DataError(f"{path}: unsupported file type {path.suffix!r} (use .csv or .jsonl)")


def read_labelled(path: str | Path, taxonomy: Taxonomy, source: str | None = None) -> list[Example]:
    """Read a labelled file; refuse unknown labels with the line number and value."""
    path = Path(path)
    if not path.is_file():
        raise DataError(f"labelled data file not found: {path}")
    examples = []
    for lineno, row in _rows(path):
        text = row.get("text")
        if not isinstance(text, str) or not text.strip():
            raise DataError(f"{path}:{lineno}: 'text' is missing or empty")
        labels: dict[str, list[str] | None] = {}
        for task in taxonomy:
            if task.name not in row:
                continue
            values = _parse_cell(row[task.name], task.kind)
            if values is not None:
                allowed = task.label2id
                for v in values:
                    if v not in allowed:
                        raise DataError(
                            f"{path}:{lineno}: {task.name} value {v!r} is not in the taxonomy "
                            f"(allowed: {', '.join(task.label_names)})"
                        )
                if task.kind != "multilabel" and len(values) != 1:
                    raise DataError(
                        f"{path}:{lineno}: {task.name} needs exactly one label, got {values}"
                    )
            labels[task.name] = values
        meta = {k: row[k] for k in META_COLUMNS if row.get(k) not in (None, "")}
        if source and "source" not in meta:
            meta["source"] = source
        examples.append(Example(text=text, labels=labels, meta=meta))
    return examples


def write_jsonl(examples: list[Example], path: str | Path, taxonomy: Taxonomy) -> None:
    """Write examples in the labelled-data format (JSONL), as ``read_labelled`` reads it."""
    with Path(path).open("w", encoding="utf-8") as fh:
        for ex in examples:
            record = {"text": ex.text, **ex.meta}
            for task, labels in ex.labels.items():
                if labels is not None:
                    record[task] = labels if taxonomy[task].kind == "multilabel" else labels[0]
            fh.write(json.dumps(record, ensure_ascii=False) + "\n")


def example_rating(ex: Example) -> int | None:
    """The row's star rating (1-5), or None when it has none."""
    try:
        r = int(float(ex.meta.get("rating")))
    except (TypeError, ValueError):
        return None
    return r if 1 <= r <= 5 else None


def with_ratings(
    examples: list[Example], hide_fraction: float = 0.0, rng: random.Random | None = None
) -> list[Example]:
    """Copies whose text is what the model reads: a rated row's star rating as its
    lead-in (``model.predictor.rated_text``), hidden on about ``hide_fraction`` of the
    rated rows so the model also learns to read reviews that come without one."""
    rng = rng or random.Random(0)
    out = []
    for ex in examples:
        r = example_rating(ex)
        if r is None or (hide_fraction and rng.random() < hide_fraction):
            out.append(ex)
        else:
            out.append(Example(rated_text(ex.text, r), ex.labels, {**ex.meta, "rated": True}))
    return out


def normalise_for_hash(text: str) -> str:
    text = unicodedata.normalize("NFKC", text).lower()
    return re.sub(r"\W+", " ", text).strip()


def split_bucket(text: str) -> float:
    """A number in [0, 1) fixed by the normalised text: duplicates share it."""
    digest = hashlib.sha1(normalise_for_hash(text).encode("utf-8")).digest()
    return int.from_bytes(digest[:8], "big") / 2**64


def hash_split(
    examples: list[Example], val_fraction: float = 0.1
) -> tuple[list[Example], list[Example]]:
    """Deterministic train/validation split by a hash of the normalised text."""
    train, val = [], []
    for ex in examples:
        (val if split_bucket(ex.text) < val_fraction else train).append(ex)
    return train, val


def three_way_split(
    examples: list[Example], val_fraction: float = 0.1, dev_fraction: float = 0.5
) -> tuple[list[Example], list[Example], list[Example]]:
    """(train, dev, test) by the same text hash as ``hash_split``: the training rows are
    the same; of the held-out rows, the lowest ``dev_fraction`` of the hash range are
    dev rows (a model calibrates, sets thresholds and picks its epoch on them) and the
    rest test rows, which only ever score it."""
    train, dev, test = [], [], []
    for ex in examples:
        b = split_bucket(ex.text)
        if b >= val_fraction:
            train.append(ex)
        else:
            (dev if b < val_fraction * dev_fraction else test).append(ex)
    return train, dev, test


def label_counts(examples: list[Example], taxonomy: Taxonomy) -> dict[str, dict[str, int]]:
    """Per task, how many rows carry each label (``-``: a multi-label row with none),
    most common first; rows without the task's label are not counted."""
    out: dict[str, dict[str, int]] = {}
    for task in taxonomy:
        c: Counter[str] = Counter()
        for ex in examples:
            values = ex.labels.get(task.name)
            if values is None:
                continue
            for v in values or [NO_LABEL]:
                c[v] += 1
        if c:
            out[task.name] = dict(c.most_common())
    return out


def label_shares(examples: list[Example], taxonomy: Taxonomy) -> dict[str, dict[str, float]]:
    """``label_counts`` as shares of each task's labels (a model records those of its
    training rows: what its label drift is measured against)."""
    out = {}
    for task, counts in label_counts(list({id(e): e for e in examples}.values()), taxonomy).items():
        total = sum(counts.values())
        out[task] = {label: round(n / total, 5) for label, n in counts.items()}
    return out


def targets(examples: list[Example], taxonomy: Taxonomy) -> dict[str, torch.Tensor]:
    """Loss targets per task, with missing labels masked (see model.classifier)."""
    out: dict[str, torch.Tensor] = {}
    for task in taxonomy:
        if task.kind == "multilabel":
            t = torch.full((len(examples), task.num_labels), -1.0)
            for i, ex in enumerate(examples):
                values = ex.labels.get(task.name)
                if values is not None:
                    t[i] = 0.0
                    for v in values:
                        t[i, task.label2id[v]] = 1.0
        else:
            t = torch.full((len(examples),), IGNORE_INDEX, dtype=torch.long)
            for i, ex in enumerate(examples):
                values = ex.labels.get(task.name)
                if values:
                    t[i] = task.label2id[values[0]]
        out[task.name] = t
    return out
