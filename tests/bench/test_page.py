"""The benchmark figures page is generated from bench JSON, every figure from a file."""

from __future__ import annotations

import json

import pytest
from typer.testing import CliRunner

from carelens.cli import app

PREDICT = {
    "model": "var/models/starter",
    "data": "x/musical_instruments.csv",
    "n_texts": 1000,
    "mean_tokens": 66.9,
    "threads": 2,
    "batch_size": 32,
    "cpu": "AMD EPYC",
    "backends": {
        "torch": {"texts_per_s": 48.7, "p50_ms": 27.0, "p99_ms": 41.5, "batched": {"p50_ms": 600}},
        "onnx-int8": {
            "texts_per_s": 92.3,
            "p50_ms": 14.8,
            "p99_ms": 23.7,
            "batched": {"p50_ms": 310},
            "agreement_per_task": {"issue_type": 0.998, "sentiment": 0.993},
        },
        "onnx": {"error": "no export: run carelens export"},
    },
}
FIRST = {"commit": "abc1234", "cpu": "AMD EPYC", "cores": 2, "installed": 83.4,
         "first_answer": 228.8, "first_model": "starter-quick", "starter": 1745.0}  # fmt: skip


def test_page_renders_each_bench_file(tmp_path):
    d = tmp_path / "bench"
    d.mkdir()
    (d / "predict.json").write_text(json.dumps(PREDICT))
    (d / "first-answer.json").write_text(json.dumps(FIRST))
    (d / "queue.json").write_text(json.dumps({"p99_ms": 1.35, "sizes": [1, 2]}))
    bar = {"min_confidence": 0.9, "sent": 12, "sent_share": 0.0089, "sent_wrong": 1,
           "sent_wrong_share": 0.0833, "drafted": 30, "drafted_share": 0.0222,
           "drafted_wrong": 3, "drafted_wrong_share": 0.1}  # fmt: skip
    auto = {"bench": "autoreply", "model": "var/models/starter", "model_version": "v1",
            "policy": "data/autoreply.yaml", "policy_min_confidence": 0.9,
            "splits": {"test": {"rows": 1408, "messages": 500, "bars": [bar]}}}  # fmt: skip
    (d / "autoreply.json").write_text(json.dumps(auto))
    console = {"command": "carelens bench console --tickets 100000 --repeat 10", "cpus": 2,
               "date": "2026-12-04", "repeat": 10, "store": {"messages": 100000, "open": 9,
               "events": 5}, "pages": {"/console": {"p50_ms": 37.8, "p95_ms": 41.2}},
               "counting": {"/console/team": {"p50_ms": 612.0, "p95_ms": 700.5}}}  # fmt: skip
    (d / "console.json").write_text(json.dumps(console))
    out = tmp_path / "figures.md"
    r = CliRunner().invoke(app, ["bench", "page", "--json-dir", str(d), "--out", str(out)])
    assert r.exit_code == 0, r.output
    page = out.read_text()
    assert "## predict" in page and "| `onnx-int8` | 92.3 | 14.8 / 23.7" in page
    assert "issue_type 99.8%, sentiment 99.3%" in page and "skipped: no export" in page
    assert "3 min 49 s (229 s)" in page and "`starter-quick`" in page
    assert "29 min 05 s" in page and "| p99_ms | 1.35 |" in page
    assert "test: 1,408 rows, 500 of them messages" in page
    assert "| 0.90 | 12 (0.9%) | 1 (8.3%) | 30 (2.2%) | 3 (10.0%) |" in page
    assert "store of 100,000 messages" in page and "| `/console` | 37.8 | 41.2 |" in page
    assert "| `/console/team` | 612.0 | 700.5 |" in page


@pytest.mark.parametrize("content", [None, "{not json", "[1, 2]"])
def test_page_refuses_what_it_cannot_read(tmp_path, content):
    d = tmp_path / "bench"
    d.mkdir()
    if content is not None:
        (d / "x.json").write_text(content)
    r = CliRunner().invoke(
        app, ["bench", "page", "--json-dir", str(d), "--out", str(tmp_path / "o")]
    )
    assert r.exit_code == 2 and "error:" in r.output
