"""ONNX Runtime backends (fp32, dynamic int8) against the torch encoder, on the tiny model."""

from __future__ import annotations

import json
import random
import shutil

import numpy as np
import pytest
import torch
from typer.testing import CliRunner

from carelens.cli import app
from model.modeling import CarelensModel, ModelLoadError
from model.predictor import Predictor
from tests.conftest import CJK, WORDS

runner = CliRunner()


def sample_texts(n: int = 200, seed: int = 0) -> list[str]:
    """A fixed sample: short and long texts, English and Chinese, with punctuation."""
    rng = random.Random(seed)
    out = []
    for i in range(n):
        if i % 7 == 0:
            out.append("".join(rng.choice(CJK) for _ in range(rng.randint(2, 30))) + "。")
        else:
            words = [rng.choice(WORDS) for _ in range(rng.randint(1, 60))]
            out.append(" ".join(words) + rng.choice([".", "!", "?", ""]))
    return out


@pytest.fixture(scope="module")
def exported_dir(tiny_model_dir, tmp_path_factory):
    directory = tmp_path_factory.mktemp("onnx") / "model"
    shutil.copytree(tiny_model_dir, directory)
    r = runner.invoke(app, ["export", "--model", str(directory), "--backend", "onnx-int8"])
    assert r.exit_code == 0, r.output
    return directory


def test_export_writes_both_graphs_and_what_they_came_from(exported_dir):
    files = sorted(p.name for p in (exported_dir / "onnx").iterdir())
    assert files == ["encoder.int8.onnx", "encoder.onnx", "export.json"]
    info = json.loads((exported_dir / "onnx" / "export.json").read_text())
    assert set(info["files"]) == {"onnx", "onnx-int8"}
    assert len(info["encoder_sha256"]) == 64
    assert info["files"]["onnx"]["max_abs_diff_vs_torch"] < 1e-4


def test_int8_quantizes_only_the_attention_query_and_key(exported_dir):
    """The value, attention-output and feed-forward MatMuls stay fp32: quantized, they
    flip labels near a threshold (experiments/int8_layers)."""
    import onnx

    graph = onnx.load(str(exported_dir / "onnx" / "encoder.int8.onnx")).graph
    int8 = {n.name for n in graph.node if n.op_type == "MatMulInteger"}
    fp32 = {n.name for n in graph.node if n.op_type == "MatMul"}
    assert int8 and all(any(k in n for k in ("/query/", "/key/")) for n in int8)
    layers = {n.split("/layer.")[1].split("/")[0] for n in int8}
    assert len(int8) == 2 * len(layers)  # query and key in every layer
    for kept in ("/value/", "/intermediate/dense/", "/output/dense/", "/attention/output/dense/"):
        assert any(kept in n for n in fp32), kept


@pytest.mark.parametrize("backend", ["onnx", "onnx-int8"])
def test_backend_labels_agree_with_torch(exported_dir, backend):
    texts = sample_texts()
    torch_p = Predictor.load(exported_dir, evidence=False)
    other = Predictor.load(exported_dir, backend=backend, evidence=False)
    assert other.backend == backend
    want, got = torch_p.predict(texts), other.predict(texts)
    for task in torch_p.taxonomy.task_names:
        agree = np.mean([w[task].labels == g[task].labels for w, g in zip(want, got, strict=True)])
        assert agree >= 0.99, (backend, task, agree)
    tol = 1e-5 if backend == "onnx" else 5e-3
    for w, g in zip(want, got, strict=True):
        for task in w.tasks:
            pw, pg = w[task].probabilities, g[task].probabilities
            assert max(abs(pw[k] - pg[k]) for k in pw) < tol


def test_onnx_predictions_keep_evidence_and_input_order(exported_dir):
    p = Predictor.load(exported_dir, backend="onnx-int8")
    texts = ["box was broken. thanks for the fast reply!", "great", "退款。质量差"]
    preds = p.predict(texts)
    assert len(preds) == 3
    ev = preds[0]["sentiment"].evidence[0]
    assert texts[0][ev.start : ev.end] == ev.text


def test_missing_or_stale_export_is_refused_with_the_command_to_run(tiny_model_dir, tmp_path):
    directory = tmp_path / "model"
    shutil.copytree(tiny_model_dir, directory)
    with pytest.raises(ModelLoadError, match="carelens export --model .* --backend onnx-int8"):
        Predictor.load(directory, backend="onnx-int8")
    with pytest.raises(ModelLoadError, match="unknown backend 'tensorrt'"):
        Predictor.load(directory, backend="tensorrt")
    r = runner.invoke(app, ["export", "--model", str(directory), "--backend", "onnx"])
    assert r.exit_code == 0, r.output
    Predictor.load(directory, backend="onnx")
    # retrained since the export: the encoder weights changed
    m = CarelensModel.from_pretrained(directory)
    with torch.no_grad():
        m.classifier.encoder.get_input_embeddings().weight[5] += 1.0
    m.save_pretrained(directory)
    with pytest.raises(ModelLoadError, match="other encoder weights"):
        Predictor.load(directory, backend="onnx")


def test_export_refuses_the_torch_backend(tiny_model_dir):
    r = runner.invoke(app, ["export", "--model", str(tiny_model_dir), "--backend", "torch"])
    assert r.exit_code == 2
    assert "needs no export" in r.output
