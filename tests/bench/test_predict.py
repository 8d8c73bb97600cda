"""`carelens bench predict` runs end to end on the tiny model and writes its figures."""

from __future__ import annotations

import json
import shutil

import pytest
from typer.testing import CliRunner

from carelens.bench.predict import flops_per_text, peak_ops
from carelens.cli import app
from model.modeling import CarelensModel

runner = CliRunner()


@pytest.mark.slow
def test_bench_predict_writes_every_backend_and_the_baseline(tiny_model_dir, tmp_path):
    model = tmp_path / "model"
    shutil.copytree(tiny_model_dir, model)
    assert runner.invoke(app, ["export", "--model", str(model)]).exit_code == 0
    data = tmp_path / "texts.csv"
    rows = ["my order never arrived", "great product, thanks!", "退款。质量差", "box was broken"]
    data.write_text("id,reviewText\n" + "".join(f'{i},"{t}"\n' for i, t in enumerate(rows * 5)))
    out = tmp_path / "bench.json"
    r = runner.invoke(
        app,
        [
            "bench",
            "predict",
            "-m",
            str(model),
            "-d",
            str(data),
            "--single",
            "3",
            "--batch-size",
            "8",
            "--profile",
            "--json",
            str(out),
        ],
    )
    assert r.exit_code == 0, r.output
    report = json.loads(out.read_text())
    assert report["n_texts"] == 20
    shares = report["int8_op_profile"]["share_per_op"]
    assert {"DynamicQuantizeMatMul", "MatMulInteger", "MatMulIntegerToFloat"} & set(shares), shares
    for name in ("torch", "onnx", "onnx-int8"):
        fig = report["backends"][name]
        for key in ("texts_per_s", "p50_ms", "p99_ms", "agreement_with_torch"):
            assert fig[key] > 0, (name, key)
        assert fig["speedup_vs_baseline"] > 0
    assert report["backends"]["torch"]["agreement_with_torch"] == 1.0
    assert report["baseline_texts_per_s"] > 0
    assert 0 < report["compute_limit_share"] < 1
    assert "onnx-int8" in r.output and "baseline" in r.output


def test_bench_predict_skips_a_backend_that_was_not_exported(tiny_model_dir, tmp_path):
    data = tmp_path / "texts.txt"
    data.write_text("one text\nanother text\n")
    out = tmp_path / "bench.json"
    r = runner.invoke(
        app,
        [
            "bench",
            "predict",
            "-m",
            str(tiny_model_dir),
            "-d",
            str(data),
            "--backends",
            "torch,onnx-int8",
            "--no-baseline",
            "--single",
            "1",
            "--json",
            str(out),
        ],
    )
    assert r.exit_code == 0, r.output
    report = json.loads(out.read_text())
    assert "carelens export" in report["backends"]["onnx-int8"]["error"]
    assert report["backends"]["torch"]["texts_per_s"] > 0


def test_compute_limit_arithmetic(tiny_model_dir):
    m = CarelensModel.from_pretrained(tiny_model_dir)  # hidden 32, 2 layers, ffn 64
    linear = 2 * (4 * 32 * 32 + 2 * 32 * 64)
    assert flops_per_text(m, 10) == 2 * linear * 10 + 2 * 4 * 10 * 10 * 32
    peak = peak_ops(2, 2.5, {"avx512f", "avx512_vnni", "avx2"})
    assert peak["fp32_gflops"] == 2 * 2.5 * 16 * 2 * 2
    assert peak["int8_gops"] == 2 * 2.5 * 16 * 4 * 2 * 2
