"""Backlog scoring: classify a CSV, JSONL or Parquet file, or a folder of them, into
Parquet parts that keep every input column.

The input is read ``part_rows`` rows at a time (``model.inputs.read_parts``), so
memory holds one part whatever the file's size. Each part is written as ``part-{file:04d}-{part:06d}.parquet`` in the output
folder under a temporary name and renamed when complete: a rerun skips the parts that
exist, so an interrupted run resumes where it stopped. A part's rows are the input's
columns (``id`` first when there is one), then per task ``<task>`` (a list of labels
for a multi-label task, the label otherwise) and ``<task>_confidence``, then
``needs_review`` and ``model_version``. A rating column (1 to 5 stars) is read with the
text, as every prediction reads it; other values count as no rating. ``_summary.json``
records the run: rows, parts written and skipped, texts per second, peak memory.
"""

from __future__ import annotations

import json
import os
import resource
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from model.inputs import InputError, input_files, read_parts


def _rating(value: Any) -> int | None:
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        return None
    return int(value) if value == int(value) and 1 <= value <= 5 else None


def label_columns(predictor, table, text_column: str, rating_column: str | None):
    """``table`` with the predictions' columns appended (``id`` moved first)."""
    import pyarrow as pa

    if text_column not in table.column_names:
        raise InputError(
            f"no column {text_column!r} (columns: {', '.join(table.column_names)}); "
            "pass --text-column"
        )
    texts = ["" if t is None else str(t) for t in table.column(text_column).to_pylist()]
    ratings = None
    if rating_column and rating_column in table.column_names:
        ratings = [_rating(v) for v in table.column(rating_column).to_pylist()]
    preds = predictor.predict(texts, evidence=False, ratings=ratings)
    out = table
    for task in predictor.taxonomy:
        labels = [p[task.name].labels for p in preds]
        values = labels if task.is_multilabel else [ls[0] if ls else None for ls in labels]
        kind = pa.list_(pa.string()) if task.is_multilabel else pa.string()
        out = out.append_column(task.name, pa.array(values, type=kind))
        out = out.append_column(
            f"{task.name}_confidence",
            pa.array([round(p[task.name].confidence, 4) for p in preds], type=pa.float32()),
        )
    out = out.append_column("needs_review", pa.array([p.needs_review for p in preds]))
    version = predictor.model_version or ""
    out = out.append_column("model_version", pa.array([version] * len(preds), pa.string()))
    if "id" in out.column_names:
        names = ["id"] + [n for n in out.column_names if n != "id"]
        out = out.select(names)
    return out


@dataclass
class ScoreReport:
    rows: int = 0
    parts_written: int = 0
    parts_skipped: int = 0
    rows_scored: int = 0
    seconds: float = 0.0
    files: list[str] = field(default_factory=list)

    def to_dict(self) -> dict[str, Any]:
        return {
            "rows": self.rows,
            "rows_scored": self.rows_scored,
            "parts_written": self.parts_written,
            "parts_skipped": self.parts_skipped,
            "seconds": round(self.seconds, 1),
            "texts_per_s": round(self.rows_scored / self.seconds, 1) if self.seconds else None,
            "peak_memory_mib": round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024, 1),
            "files": self.files,
        }


def score_local(
    predictor,
    source: Path,
    out_dir: Path,
    part_rows: int = 10_000,
    text_column: str = "text",
    rating_column: str | None = "rating",
    on_part=lambda rows, scored: None,
) -> ScoreReport:
    """Score every input file into ``out_dir`` (see the module docstring);
    ``on_part(rows, scored)`` hears of each part (scored: False when it was skipped)."""
    import pyarrow.parquet as pq

    out_dir.mkdir(parents=True, exist_ok=True)
    report = ScoreReport()
    t0 = time.perf_counter()
    for f_index, path in enumerate(input_files(source)):
        report.files.append(str(path))
        for p_index, table in enumerate(read_parts(path, part_rows)):
            part = out_dir / f"part-{f_index:04d}-{p_index:06d}.parquet"
            report.rows += table.num_rows
            if part.exists():
                report.parts_skipped += 1
                on_part(table.num_rows, False)
                continue
            labelled = label_columns(predictor, table, text_column, rating_column)
            tmp = part.with_suffix(".parquet.tmp")
            pq.write_table(labelled, tmp)
            os.replace(tmp, part)
            report.parts_written += 1
            report.rows_scored += table.num_rows
            on_part(table.num_rows, True)
    report.seconds = time.perf_counter() - t0
    (out_dir / "_summary.json").write_text(
        json.dumps(report.to_dict(), indent=2) + "\n", encoding="utf-8"
    )
    return report


# -- on Ray ------------------------------------------------------------------------------


class Labeller:
    """Ray Data's stateful callable: one Predictor per worker, loaded once."""

    def __init__(self, model_dir: str, backend: str, threads: int | None, text_column: str,
                 rating_column: str | None) -> None:  # fmt: skip
        from model.predictor import Predictor

        self.predictor = Predictor.load(
            model_dir, backend=backend, num_threads=threads, evidence=False
        )
        self.text_column, self.rating_column = text_column, rating_column

    def __call__(self, batch):
        return label_columns(self.predictor, batch, self.text_column, self.rating_column)


def _ray_read(path: Path):
    import ray

    suffix = path.suffix.lower()
    if suffix == ".parquet":
        return ray.data.read_parquet(str(path))
    if suffix == ".csv":
        return ray.data.read_csv(str(path))
    return ray.data.read_json(str(path), lines=True)


def score_ray(
    model_dir: Path,
    source: Path,
    out_dir: Path,
    part_rows: int = 10_000,
    text_column: str = "text",
    rating_column: str | None = "rating",
    backend: str = "torch",
    threads: int | None = None,
    workers: int = 1,
    address: str | None = None,
) -> ScoreReport:
    """The same labels with Ray Data: each input file is read as a Ray dataset and
    labelled by ``map_batches`` with ``Labeller`` (one Predictor per worker, ``workers``
    of them), batches of ``part_rows`` rows, written as Parquet into
    ``file-{index:04d}/`` (renamed into place when the file is done: a rerun skips the
    files already done). The same code runs on a laptop (``ray.init()``) and a cluster
    (``address``, e.g. ``ray://head:10001`` or ``auto``)."""
    import shutil

    import pyarrow.parquet as pq
    import ray

    out_dir.mkdir(parents=True, exist_ok=True)
    if not ray.is_initialized():
        ray.init(address=address, include_dashboard=False, log_to_driver=False)
    report = ScoreReport()
    t0 = time.perf_counter()
    for f_index, path in enumerate(input_files(source)):
        report.files.append(str(path))
        done = out_dir / f"file-{f_index:04d}"
        if done.is_dir():
            report.parts_skipped += 1
            report.rows += sum(pq.ParquetFile(p).metadata.num_rows for p in done.glob("*.parquet"))
            continue
        labelled = _ray_read(path).map_batches(
            Labeller,
            fn_constructor_args=(str(model_dir), backend, threads, text_column, rating_column),
            batch_format="pyarrow",
            batch_size=part_rows,
            concurrency=workers,
        )
        tmp = out_dir / f".file-{f_index:04d}.tmp"
        shutil.rmtree(tmp, ignore_errors=True)
        labelled.write_parquet(str(tmp))
        os.replace(tmp, done)
        rows = sum(pq.ParquetFile(p).metadata.num_rows for p in done.glob("*.parquet"))
        report.rows += rows
        report.rows_scored += rows
        report.parts_written += 1
    report.seconds = time.perf_counter() - t0
    (out_dir / "_summary.json").write_text(
        json.dumps({**report.to_dict(), "engine": "ray"}, indent=2) + "\n", encoding="utf-8"
    )
    return report
