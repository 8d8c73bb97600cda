"""Input files: the one reader behind ``carelens predict --input``, ``carelens score``,
``carelens model init --cjk-from`` and the bench commands.

A ``.csv`` (a header row), ``.jsonl`` (one JSON object per line) or ``.parquet`` file is
read as rows with every column kept; any other file holds one text per line. Rows are
streamed ``rows`` at a time (``read_parts``: Parquet and CSV through pyarrow's streaming
readers, JSONL line by line), so a file of millions of rows never sits in memory whole.
A bad file raises ``InputError`` naming the file and, where there is one, the line.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

SUFFIXES = (".csv", ".jsonl", ".parquet")
# where a text is found when the command is not told its column (bench, vocabulary)
TEXT_COLUMNS = ("text", "reviewText", "review", "content", "body", "message")


class InputError(ValueError):
    """An input file that cannot be read; the message says what to fix."""


def input_files(path: Path) -> list[Path]:
    """The file, or the folder's CSV/JSONL/Parquet files in name order."""
    if path.is_file():
        if path.suffix.lower() not in SUFFIXES:
            raise InputError(f"{path}: expected a .csv, .jsonl or .parquet file")
        return [path]
    if path.is_dir():
        files = sorted(p for p in path.iterdir() if p.suffix.lower() in SUFFIXES)
        if not files:
            raise InputError(f"{path}: no .csv, .jsonl or .parquet file in the folder")
        return files
    raise InputError(f"{path}: no such file or folder")


def _lines(path: Path) -> Iterator[tuple[int, str]]:
    """Non-blank lines with their numbers; invalid UTF-8 names its line."""
    with path.open("rb") as fh:
        for lineno, raw in enumerate(fh, start=1):
            if not raw.strip():
                continue
            try:
                yield lineno, raw.decode("utf-8").rstrip("\r\n")
            except UnicodeDecodeError as exc:
                raise InputError(
                    f"{path}:{lineno}: invalid UTF-8 at byte {exc.start} of the line"
                ) from exc


def _jsonl(path: Path) -> Iterator[tuple[str, dict[str, Any]]]:
    """(``file:line``, object) per non-blank line."""
    for lineno, line in _lines(path):
        try:
            obj = json.loads(line)
        except json.JSONDecodeError as exc:
            raise InputError(f"{path}:{lineno}: not valid JSON: {exc.msg}") from exc
        if not isinstance(obj, dict):
            raise InputError(f"{path}:{lineno}: expected a JSON object")
        yield f"{path}:{lineno}", obj


def _rechunk(batches: Iterator[Any], rows: int) -> Iterator[Any]:
    """Tables of exactly ``rows`` rows (the last may be shorter), whatever the reader's
    own batch sizes: the same parts on every run."""
    import pyarrow as pa

    pending: list[Any] = []
    size = 0
    for batch in batches:
        while batch.num_rows:
            take = min(rows - size, batch.num_rows)
            pending.append(batch.slice(0, take))
            size += take
            batch = batch.slice(take)
            if size == rows:
                yield pa.Table.from_batches(pending).combine_chunks()
                pending, size = [], 0
    if size:
        yield pa.Table.from_batches(pending).combine_chunks()


def _arrow_batches(path: Path, rows: int) -> Iterator[Any]:
    import pyarrow as pa

    if path.suffix.lower() == ".parquet":
        import pyarrow.parquet as pq

        try:
            yield from pq.ParquetFile(path).iter_batches(batch_size=rows)
        except (pa.ArrowException, OSError) as exc:
            raise InputError(f"{path}: not a readable Parquet file ({exc})") from exc
        return
    import pyarrow.csv as pcsv

    try:
        reader = pcsv.open_csv(path, read_options=pcsv.ReadOptions(block_size=1 << 22))
        yield from reader
    except pa.ArrowException as exc:
        # e.g. a column whose first rows were numbers and a later row is not
        raise InputError(f"{path}: not a readable CSV file ({exc})") from exc


def read_parts(path: Path, rows: int) -> Iterator[Any]:
    """pyarrow Tables of ``rows`` rows from a CSV, JSONL or Parquet file."""
    import pyarrow as pa

    if path.suffix.lower() in (".csv", ".parquet"):
        yield from _rechunk(_arrow_batches(path, rows), rows)
        return
    chunk: list[dict[str, Any]] = []
    for _, obj in _jsonl(path):
        chunk.append(obj)
        if len(chunk) == rows:
            yield pa.Table.from_pylist(chunk)
            chunk = []
    if chunk:
        yield pa.Table.from_pylist(chunk)


def _rating(where: str, rating: Any) -> int | None:
    """A star rating as a whole number (CSV and Parquet give 4.0 for 4)."""
    if rating is not None and (
        isinstance(rating, bool)
        or not isinstance(rating, (int, float))
        or rating != int(rating)
        or not 1 <= rating <= 5
    ):
        raise InputError(
            f"{where}: 'rating' is {rating!r}: a star rating is a whole number from 1 to 5, "
            "or empty"
        )
    return None if rating is None else int(rating)


def read_items(path: Path) -> list[dict[str, Any]]:
    """Rows with a string ``text`` (and every other field the row has, such as ``id``
    and ``rating``, 1 to 5 stars) from a CSV, JSONL or Parquet file, or texts from a
    plain file (one per line). A row without a text, or with a rating that is not
    1 to 5 stars, raises ``InputError`` naming it."""
    suffix = path.suffix.lower()
    if suffix not in SUFFIXES:
        return [{"text": line} for _, line in _lines(path)]
    if suffix == ".jsonl":
        rows = _jsonl(path)
    else:
        parts = read_parts(path, 10_000)
        rows = (
            (f"{path}: row {i}", row)
            for i, row in enumerate((r for part in parts for r in part.to_pylist()), start=1)
        )
    items = []
    for at, row in rows:
        if not isinstance(row.get("text"), str):
            raise InputError(f"{at}: expected an object with a string field 'text'")
        if "rating" in row:
            row["rating"] = _rating(at, row["rating"])
        items.append(row)
    return items


def read_texts(path: Path, limit: int | None = None) -> list[str]:
    """The first ``limit`` non-blank texts of a file: rows' first column of
    ``TEXT_COLUMNS`` (CSV, JSONL, Parquet), or lines of a plain file."""
    if not path.is_file():
        raise InputError(f"{path}: no such file")
    texts: list[str] = []
    if path.suffix.lower() not in SUFFIXES:
        texts = [line for _, line in _lines(path)][:limit]
    else:
        for part in read_parts(path, 10_000):
            column = next((c for c in TEXT_COLUMNS if c in part.column_names), None)
            if column is None:
                raise InputError(f"{path}: no text column (one of {', '.join(TEXT_COLUMNS)})")
            texts += [
                t for t in part.column(column).to_pylist() if isinstance(t, str) and t.strip()
            ]
            if limit is not None and len(texts) >= limit:
                break
        texts = texts[:limit]
    if not texts:
        raise InputError(f"{path}: no texts")
    return texts
