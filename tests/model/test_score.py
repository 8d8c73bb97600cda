"""Backlog scoring: CSV, JSONL and Parquet (or a folder of them) into Parquet parts that
keep every input column, resumable part by part."""

from __future__ import annotations

import json

import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from typer.testing import CliRunner

from carelens.cli import app
from model.inputs import InputError
from model.predictor import Predictor
from model.score import score_local

runner = CliRunner()


def _rows(n: int) -> list[dict]:
    texts = ["box arrived broken", "great product thanks", "refund please", "这个充电器起火了"]
    return [
        {"shop": "eu", "id": f"r{i}", "text": texts[i % 4], "rating": [1, 5, None, 7][i % 4]}
        for i in range(n)
    ]


def _parts(out) -> list:
    return sorted(out.glob("part-*.parquet"))


def _folder(tmp_path, n: int):
    """An input folder with ``n`` rows as a JSONL file and the same as a Parquet file."""
    src = tmp_path / "in"
    src.mkdir()
    rows = _rows(n)
    (src / "a.jsonl").write_text("\n".join(json.dumps(r) for r in rows) + "\n", encoding="utf-8")
    pq.write_table(pa.Table.from_pylist(rows), src / "b.parquet")
    return src


def test_csv_scored_into_parts_that_keep_every_column_and_resume(tiny_model_dir, tmp_path):
    src = tmp_path / "backlog.csv"
    lines = ["shop,id,text,rating"] + [
        f"{r['shop']},{r['id']},{r['text']},{'' if r['rating'] is None else r['rating']}"
        for r in _rows(25)
    ]
    src.write_text("\n".join(lines) + "\n", encoding="utf-8")
    out = tmp_path / "scored"
    r = runner.invoke(
        app,
        ["score", "-i", str(src), "-o", str(out), "-m", str(tiny_model_dir), "--part-rows", "10"],
    )
    assert r.exit_code == 0, r.output
    assert "25 rows" in r.output and "3 parts written, 0 skipped" in r.output
    parts = _parts(out)
    assert [p.name for p in parts] == [f"part-0000-00000{i}.parquet" for i in range(3)]
    table = pa.concat_tables(pq.read_table(p) for p in parts)
    assert table.num_rows == 25 and table.column_names[0] == "id"
    assert {"shop", "text", "rating", "issue_type", "sentiment_confidence", "urgency",
            "needs_review", "model_version"} <= set(table.column_names)  # fmt: skip
    assert table.column("id").to_pylist() == [f"r{i}" for i in range(25)]
    assert table.schema.field("issue_type").type == pa.list_(pa.string())
    tiny = Predictor.load(tiny_model_dir, evidence=False)
    first = tiny.predict(["box arrived broken"], ratings=[1])[0]
    assert table.column("sentiment").to_pylist()[0] == first["sentiment"].label  # rated as read
    summary = json.loads((out / "_summary.json").read_text())
    assert summary["rows_scored"] == 25 and summary["peak_memory_mib"] > 0

    # an interrupted run: the missing part is scored again, the others are kept
    kept = parts[0].stat().st_mtime_ns
    parts[1].unlink()
    r = runner.invoke(
        app,
        ["score", "-i", str(src), "-o", str(out), "-m", str(tiny_model_dir), "--part-rows", "10"],
    )
    assert r.exit_code == 0, r.output
    assert "1 parts written, 2 skipped" in r.output
    assert parts[0].stat().st_mtime_ns == kept and parts[1].exists()


def test_jsonl_and_parquet_in_a_folder(tiny_model_dir, tmp_path):
    src = _folder(tmp_path, 7)
    (src / "notes.txt").write_text("not an input")
    predictor = Predictor.load(tiny_model_dir, evidence=False)
    report = score_local(predictor, src, tmp_path / "out", part_rows=5)
    assert report.rows == 14 and report.parts_written == 4
    names = [p.name for p in _parts(tmp_path / "out")]
    assert names == ["part-0000-000000.parquet", "part-0000-000001.parquet",
                     "part-0001-000000.parquet", "part-0001-000001.parquet"]  # fmt: skip
    table = pq.read_table(tmp_path / "out" / "part-0001-000001.parquet")
    assert table.column("id").to_pylist() == ["r5", "r6"]


def test_inputs_that_cannot_be_scored_say_why(tiny_model_dir, tmp_path):
    predictor = Predictor.load(tiny_model_dir, evidence=False)
    bad = tmp_path / "x.jsonl"
    bad.write_text('{"text": "ok"}\n{not json}\n')
    with pytest.raises(InputError, match="x.jsonl:2: not valid JSON"):
        score_local(predictor, bad, tmp_path / "o1")
    other = tmp_path / "y.csv"
    other.write_text("body\nhello\n")
    with pytest.raises(InputError, match="no column 'text'.*--text-column"):
        score_local(predictor, other, tmp_path / "o2")
    report = score_local(predictor, other, tmp_path / "o3", text_column="body")
    assert report.rows_scored == 1
    r = runner.invoke(app, ["score", "-i", str(tmp_path / "nope.csv"), "-o", str(tmp_path / "o")])
    assert r.exit_code == 2 and "no such file or folder" in r.output
    r = runner.invoke(
        app, ["score", "-i", str(other), "-o", str(tmp_path / "o"), "--engine", "gpu"]
    )
    assert r.exit_code == 2 and "--engine must be local or ray" in r.output


def _ray():
    try:
        import ray
    except ImportError:
        return None
    return ray


@pytest.mark.slow
@pytest.mark.skipif(
    _ray() is None and __import__("os").environ.get("CI") != "true",
    reason="Ray is not installed (pip install 'carelens[ray]')",
)
def test_the_ray_engine_gives_the_local_labels(tiny_model_dir, tmp_path):
    import ray

    from model.score import score_ray

    src = _folder(tmp_path, 23)
    ray.init(num_cpus=2, include_dashboard=False, log_to_driver=False)
    try:
        report = score_ray(tiny_model_dir, src, tmp_path / "ray", part_rows=10, workers=1)
        again = score_ray(tiny_model_dir, src, tmp_path / "ray", part_rows=10)
    finally:
        ray.shutdown()
    assert report.rows == 46 and report.parts_written == 2
    assert again.parts_skipped == 2 and again.rows_scored == 0  # both files done
    local = score_local(Predictor.load(tiny_model_dir, evidence=False), src, tmp_path / "loc")
    assert local.rows == 46

    def by_id(folder):
        cols = ["id", "issue_type", "sentiment", "urgency"]
        rows = [
            r for p in folder.rglob("*.parquet") for r in pq.read_table(p, columns=cols).to_pylist()
        ]
        return sorted(rows, key=lambda r: (r["id"], str(r)))

    ray_rows, local_rows = by_id(tmp_path / "ray"), by_id(tmp_path / "loc")
    assert len(ray_rows) == 46 and ray_rows == local_rows
