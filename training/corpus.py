"""The labelled corpus in the default taxonomy: its deterministic draw and its splits.

The corpus (``data/labels/corpus.csv``) holds texts read from the public sources in
``$CARELENS_DATA`` and labelled by people for all three tasks (``data/labels/README.md``
says how). This module draws the texts to annotate and fixes each row's split:

- the **draw** (``carelens data draw``): per source a seeded sample
  (``random.Random(DRAW_SEED)``) over the rows in file order, stratified where the
  plan says so (Amazon by star rating, over-sampling one to three stars; Chinese
  online shopping per product category, over-sampling negatives); texts whose
  normalised form repeats are drawn once;
- the **splits**: by the same text hash as every other split (``training.data``):
  ``test`` below ``TEST_FRACTION`` (about 20%, never trained, calibrated or tuned on),
  ``dev`` up to ``TEST_FRACTION + DEV_FRACTION`` (calibration and thresholds), the rest
  ``train``. The public sources drop every corpus row (by id and by normalised text), so
  their labels never compete with the corpus's on the same text and no corpus test text
  reaches training through a source.
"""

from __future__ import annotations

import csv
import random
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from training.data import normalise_for_hash, split_bucket
from training.sources import REPO_DATA_DIR, SourceMapping, _render, available_sources, data_dir

CORPUS_FILE = REPO_DATA_DIR / "labels" / "corpus.csv"
DRAW_SEED = 20261203
TEST_FRACTION = 0.2
DEV_FRACTION = 0.1


@dataclass(frozen=True)
class Stratum:
    """``n`` rows of ``source`` whose CSV ``column`` values are in ``values`` (all if None)."""

    source: str
    n: int
    where: dict[str, tuple[str, ...]] | None = None


def _stratified(source: str, column: str, counts: dict[str, int]) -> list[Stratum]:
    return [Stratum(source, n, {column: (value,)}) for value, n in counts.items()]


_SHOP_CATEGORIES = ("书籍", "平板", "手机", "水果", "洗发水", "热水器", "蒙牛", "衣服", "计算机")
PLAN: tuple[Stratum, ...] = (
    # Amazon reviews: every one-, two- and three-star review (98 + 101 + 355), the rest
    # four and five stars (the file is 89% four or five stars)
    *_stratified("amazon_reviews", "overall", {"1": 98, "2": 101, "3": 355, "4": 600, "5": 846}),
    Stratum("twitter_airline", 800),
    Stratum("xci_complaints", 800),
    Stratum("bitext_customer_support", 600),
    Stratum("banking77", 200),
    # Chinese online shopping: 100 per product category of the file (nine), 65 of them
    # negative, and 100 more negative reviews of any category
    *[
        s
        for cat in _SHOP_CATEGORIES
        for s in (
            Stratum("chinese_online_shopping", 65, {"cat": (cat,), "label": ("0",)}),
            Stratum("chinese_online_shopping", 35, {"cat": (cat,), "label": ("1",)}),
        )
    ],
    Stratum("chinese_online_shopping", 100, {"label": ("0",)}),
    Stratum("chinese_waimai", 180, {"label": ("0",)}),
    Stratum("chinese_waimai", 120, {"label": ("1",)}),
    Stratum("chinese_chnsenticorp_htl", 180, {"label": ("0",)}),
    Stratum("chinese_chnsenticorp_htl", 120, {"label": ("1",)}),
)


@dataclass
class DrawnRow:
    id: str
    source: str
    lang: str
    text: str
    rating: str = ""
    product_id: str = ""
    customer_id: str = ""


def _source_rows(
    name: str, data_root: str | Path | None
) -> Iterator[tuple[dict[str, str], DrawnRow]]:
    mapping = SourceMapping.load(available_sources()[name])
    path = data_dir(data_root) / mapping.path
    with path.open(encoding="utf-8-sig", newline="") as fh:
        reader = csv.DictReader(fh)
        for row in reader:
            text = _render(mapping.text, row).strip().lstrip(". ").strip()
            if not text:
                continue
            rid = _render(mapping.id, row) if mapping.id else f"{mapping.source}-{reader.line_num}"
            meta: dict[str, Any] = {k: row.get(col) or "" for k, col in mapping.meta.items()}
            yield (
                row,
                DrawnRow(
                    id=rid,
                    source=mapping.source,
                    lang=mapping.lang,
                    text=text,
                    rating=meta.get("rating", ""),
                    product_id=meta.get("product_id", ""),
                    customer_id=meta.get("customer_id", ""),
                ),
            )


def draw(data_root: str | Path | None = None, plan: tuple[Stratum, ...] = PLAN) -> list[DrawnRow]:
    """The texts to annotate, the same for the same data and plan on every machine."""
    rng = random.Random(DRAW_SEED)
    cache: dict[str, list[tuple[dict[str, str], DrawnRow]]] = {}
    seen_ids: set[str] = set()
    seen_texts: set[str] = set()
    out: list[DrawnRow] = []
    for stratum in plan:
        if stratum.source not in cache:
            cache[stratum.source] = list(_source_rows(stratum.source, data_root))
        pool = [
            drawn
            for row, drawn in cache[stratum.source]
            if all(row.get(col) in values for col, values in (stratum.where or {}).items())
            and drawn.id not in seen_ids
            and normalise_for_hash(drawn.text) not in seen_texts
        ]
        order = list(range(len(pool)))
        rng.shuffle(order)
        taken = 0
        for i in order:
            if taken == stratum.n:
                break
            drawn = pool[i]
            key = normalise_for_hash(drawn.text)
            if key in seen_texts or not key:
                continue
            seen_ids.add(drawn.id)
            seen_texts.add(key)
            out.append(drawn)
            taken += 1
    return out


def corpus_split(text: str) -> str:
    """``train``, ``dev`` or ``test`` for a corpus text (fixed by the text's hash)."""
    b = split_bucket(text)
    if b < TEST_FRACTION:
        return "test"
    if b < TEST_FRACTION + DEV_FRACTION:
        return "dev"
    return "train"


# -- annotation: batches out, passes in ------------------------------------------------

TASKS = ("issue_type", "sentiment", "urgency")
# annotation batches: sources read together (one domain per batch) and how many batches
BATCH_GROUPS: tuple[tuple[tuple[str, ...], int], ...] = (
    (("amazon_reviews",), 6),
    (("twitter_airline",), 2),
    (("xci_complaints",), 2),
    (("bitext_customer_support", "banking77"), 2),
    (("chinese_online_shopping", "chinese_waimai", "chinese_chnsenticorp_htl"), 4),
)


def write_batches(rows: list[DrawnRow], out_dir: str | Path) -> dict[str, str]:
    """``batchNN.jsonl`` files for annotators (short id, text, stars; nothing else: no
    source, no source label) and the key from short ids to row ids (returned, and
    written as ``key.json``)."""
    import json

    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    rng = random.Random(7)
    key: dict[str, str] = {}
    b = 0
    for sources, n_batches in BATCH_GROUPS:
        sel = [r for r in rows if r.source in sources]
        rng.shuffle(sel)
        for k in range(n_batches):
            b += 1
            with (out_dir / f"batch{b:02d}.jsonl").open("w", encoding="utf-8") as fh:
                for i, r in enumerate(sel[k::n_batches], 1):
                    sid = f"{b:02d}-{i:03d}"
                    key[sid] = r.id
                    rec: dict[str, Any] = {"id": sid, "text": r.text}
                    if r.rating:
                        rec["stars"] = int(float(r.rating))
                    fh.write(json.dumps(rec, ensure_ascii=False) + "\n")
    (out_dir / "key.json").write_text(json.dumps(key, ensure_ascii=False), encoding="utf-8")
    return key


Labels = dict[str, Any]  # issue_type: tuple of labels (sorted); sentiment, urgency: str


def read_pass(path: str | Path, taxonomy) -> dict[str, Labels]:
    """An annotator's file: ``id<TAB>issue_types<TAB>sentiment<TAB>urgency`` per line
    (``-`` for no issue type, ``|`` between several). Refuses unknown labels and
    repeated ids, naming the line."""
    out: dict[str, Labels] = {}
    path = Path(path)
    for lineno, line in enumerate(path.read_text(encoding="utf-8").splitlines(), 1):
        if not line.strip():
            continue
        parts = [p.strip() for p in line.split("\t")]
        if len(parts) != 4:
            raise ValueError(f"{path}:{lineno}: expected 4 tab-separated fields, got {len(parts)}")
        sid, issues, sentiment, urgency = parts
        if sid in out:
            raise ValueError(f"{path}:{lineno}: id {sid} appears twice")
        labels = {
            "issue_type": tuple(sorted(x for x in issues.split("|") if x and x != "-")),
            "sentiment": sentiment,
            "urgency": urgency,
        }
        for task in TASKS:
            values = labels[task] if task == "issue_type" else (labels[task],)
            bad = [v for v in values if v not in taxonomy[task].label2id]
            if bad:
                raise ValueError(f"{path}:{lineno}: {task} label {bad[0]!r} is not in the taxonomy")
        out[sid] = labels
    return out


def disputed(a: Labels, b: Labels) -> list[str]:
    """The tasks two passes label differently."""
    return [t for t in TASKS if a[t] != b[t]]


def jaccard(a: tuple[str, ...], b: tuple[str, ...]) -> float:
    if not a and not b:
        return 1.0
    return len(set(a) & set(b)) / len(set(a) | set(b))


def agreement(pairs: list[tuple[Labels, Labels]], taxonomy) -> dict[str, Any]:
    """Inter-annotator agreement of two passes over the same rows: Cohen's kappa for
    sentiment, linearly weighted kappa for urgency (ordered), mean Jaccard of the
    issue-type sets, and the share of rows with the same labels."""
    from sklearn.metrics import cohen_kappa_score

    out: dict[str, Any] = {"rows": len(pairs)}
    if not pairs:
        return out
    for task, weights in (("sentiment", None), ("urgency", "linear")):
        order = taxonomy[task].label_names
        ya = [order.index(a[task]) for a, _ in pairs]
        yb = [order.index(b[task]) for _, b in pairs]
        same = sum(x == y for x, y in zip(ya, yb, strict=True)) / len(pairs)
        if len(set(ya) | set(yb)) < 2:
            kappa = 1.0
        else:
            kappa = float(
                cohen_kappa_score(ya, yb, weights=weights, labels=list(range(len(order))))
            )
        out[task] = {"kappa": round(kappa, 3), "agreement": round(same, 3)}
    out["issue_type"] = {
        "mean_jaccard": round(
            sum(jaccard(a["issue_type"], b["issue_type"]) for a, b in pairs) / len(pairs), 3
        ),
        "agreement": round(
            sum(a["issue_type"] == b["issue_type"] for a, b in pairs) / len(pairs), 3
        ),
    }
    return out
