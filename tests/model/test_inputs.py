"""One reader of input files (model/inputs.py) for predict, score, model init and the
benchmarks: every format keeps its rows' fields, and a bad file names what to fix."""

from __future__ import annotations

import json

import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from typer.testing import CliRunner

from carelens.cli import app
from model.inputs import InputError, read_items, read_parts, read_texts

runner = CliRunner()
ROWS = [
    {"id": "a1", "text": "The charger caught fire", "rating": 1, "shop": "eu"},
    {"id": "a2", "text": "lovely strap", "rating": 5, "shop": "us"},
    {"id": "a3", "text": "where is my parcel?", "rating": None, "shop": "eu"},
]


def _write(tmp_path, suffix: str):
    path = tmp_path / f"in{suffix}"
    if suffix == ".jsonl":
        path.write_text("\n".join(json.dumps(r) for r in ROWS) + "\n\n", encoding="utf-8")
    elif suffix == ".parquet":
        pq.write_table(pa.Table.from_pylist(ROWS), path)
    else:
        lines = ["id,text,rating,shop"] + [
            f"{r['id']},{r['text']},{r['rating'] or ''},{r['shop']}" for r in ROWS
        ]
        path.write_text("\n".join(lines) + "\n", encoding="utf-8")
    return path


@pytest.mark.parametrize("suffix", [".csv", ".jsonl", ".parquet"])
def test_every_format_gives_the_same_rows(tmp_path, suffix):
    path = _write(tmp_path, suffix)
    assert read_items(path) == ROWS
    assert read_texts(path, limit=2) == [r["text"] for r in ROWS[:2]]
    assert [t.num_rows for t in read_parts(path, 2)] == [2, 1]


def test_plain_text_is_one_message_per_line(tmp_path):
    path = tmp_path / "in.txt"
    path.write_bytes("one\r\n\n 两个 \n".encode())
    assert read_items(path) == [{"text": "one"}, {"text": " 两个 "}]


def test_bad_files_name_the_row_and_what_to_fix(tmp_path):
    bad = tmp_path / "x.jsonl"
    bad.write_text('{"text": "fine"}\n[1, 2]\n', encoding="utf-8")
    with pytest.raises(InputError, match=r"x.jsonl:2: expected a JSON object"):
        read_items(bad)
    bad.write_text('{"text": "fine", "rating": 6}\n', encoding="utf-8")
    with pytest.raises(InputError, match=r"x.jsonl:1: 'rating' is 6"):
        read_items(bad)
    csv = tmp_path / "x.csv"
    csv.write_text("id,text\n1,fine\n2,\n", encoding="utf-8")
    assert read_items(csv)[1] == {"id": 2, "text": ""}  # empty, left to the predictor to refuse
    csv.write_text("id,body\n1,no text column\n", encoding="utf-8")
    with pytest.raises(InputError, match=r"x.csv: row 1: expected an object with a string"):
        read_items(csv)
    # a column that reads as numbers in the first block and is text further on
    big = tmp_path / "big.csv"
    big.write_text(
        "id,text\n" + "".join(f"{i},t{i}\n" for i in range(400_000)) + "x-1,late\n",
        encoding="utf-8",
    )
    with pytest.raises(InputError, match=r"big.csv: not a readable CSV file"):
        list(read_parts(big, 1000))
    with pytest.raises(InputError, match="no such file"):
        read_texts(tmp_path / "missing.csv")


def test_predict_keeps_each_csv_rows_fields(tiny_model_dir, tmp_path):
    path = _write(tmp_path, ".csv")
    r = runner.invoke(app, ["predict", "-m", str(tiny_model_dir), "-i", str(path), "--no-evidence"])
    assert r.exit_code == 0, r.output
    out = [json.loads(line) for line in r.stdout.splitlines()]
    assert [(o["id"], o["shop"], o.get("rating")) for o in out] == [
        ("a1", "eu", 1),
        ("a2", "us", 5),
        ("a3", "eu", None),
    ]
