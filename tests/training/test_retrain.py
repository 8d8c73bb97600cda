"""Retraining on the tiny model: label audit, frozen set, the gate both ways, the
version record in the registry, the CLI."""

from __future__ import annotations

import json

import numpy as np
import pytest
from typer.testing import CliRunner

from model.registry import Registry
from model.taxonomy import Taxonomy
from tests.conftest import tiny_model
from tests.training.tickets import write_tickets
from training.audit import audit_labels, exclude_flagged
from training.data import Example
from training.retrain import RetrainConfig, RetrainError, read_tickets, retrain

# a tiny random model learns fast with large steps; the gate is what is tested
FAST = dict(
    epochs=4,
    batch_size=8,
    learning_rate=1e-3,
    head_learning_rate=1e-2,
    ngram_learning_rate=5e-2,
    min_labelled=20,
    min_holdout=10,
    min_judged=10,
    tolerance=1.0,
    audit_folds=3,
)


def test_audit_flags_wrong_labels_and_never_changes_them(tmp_path):
    tax = Taxonomy.default()
    rows = read_tickets(write_tickets(tmp_path / "t.jsonl", 60, flip=4), tax)
    before = [dict(r.labels) for r in rows]
    report = audit_labels(rows, tax, folds=3)
    assert [r.labels for r in rows] == before  # reported, not changed
    flagged = {(f["id"], f["task"]) for f in report["flagged"]}
    wrong = {(f"msg-{i}", "sentiment") for i in range(4)}
    assert len(flagged & wrong) >= 3, report["flagged"]
    assert report["tasks"]["sentiment"]["rows"] == 60
    # 60 rows: the audit runs and says it is too small to mean much
    assert "too few" in report["warning"] and "too few" in report["tasks"]["sentiment"]["warning"]
    kept = exclude_flagged(rows, report)
    masked = [r for r in kept if r.meta["id"] == "msg-0"]
    if ("msg-0", "sentiment") in flagged:
        assert masked and masked[0].labels["sentiment"] is None
        assert masked[0].labels["issue_type"] == ["refund_return"]


@pytest.mark.slow
def test_retrain_gate_promotes_then_refuses(tiny_model_dir, tmp_path):
    reg = Registry(tmp_path / "reg")
    labels = write_tickets(tmp_path / "tickets.jsonl", 60, flip=2)
    out = retrain(
        labels, reg, RetrainConfig(**FAST), base_model_dir=tiny_model_dir, show_bars=False
    )
    # the empty registry imported the base model first; the candidate is v0002
    assert out["parent"] == "v0001" and out["version"] == "v0002"
    assert out["decision"] == "promoted", out["reason"]
    assert reg.active() == "v0002"
    m = out["metrics"]
    assert m["candidate"]["new_tickets"]["mean"] > m["active"]["new_tickets"]["mean"]
    assert m["candidate"]["new_tickets"]["rows"] == 12  # newest 20%
    v2 = reg.get("v0002")
    assert v2.info["parent"] == "v0001" and v2.info["status"] == "promoted"
    assert v2.info["gate"]["decision"] == "promoted"
    assert set(v2.info["gate"]) >= {"candidate", "active", "reason", "tolerance", "paired"}
    paired = out["paired"]
    assert paired["tickets"] == 12 and paired["low"] > 0.0  # significant, and reported
    assert "lower bound" in out["reason"]
    summary = v2.info["data_summary"]
    assert summary["tickets"]["rows"] == 60
    assert summary["tickets"]["labelled_at"]["first"].startswith("2026-11-01T00:00")
    assert summary["tickets"]["label_distribution"]["sentiment"]["negative"] >= 40
    assert (v2.path / "retrain" / "tickets.jsonl").is_file()
    assert json.loads((v2.path / "retrain" / "audit.json").read_text())["flagged"] is not None
    # no public data here: the frozen set is the first retrain's held-out tickets
    frozen = reg.frozen_eval_file.read_text()
    assert frozen.count("\n") == 12
    # a second run with a gate it cannot pass: kept as a version, not promoted
    out2 = retrain(labels, reg, RetrainConfig(**{**FAST, "min_gain": 1.0}), show_bars=False)
    assert out2["version"] == "v0003" and out2["parent"] == "v0002"
    assert out2["decision"] == "rejected"
    assert "not significantly better on the newest labelled tickets" in out2["reason"]
    assert reg.active() == "v0002"
    assert reg.get("v0003").info["status"] == "rejected"
    assert reg.frozen_eval_file.read_text() == frozen  # frozen: chosen once
    # the active model's frozen figures were cached in its record
    assert reg.get("v0002").info["frozen_eval"]


def test_too_few_tickets_is_refused(tiny_model_dir, tmp_path):
    reg = Registry(tmp_path / "reg")
    labels = write_tickets(tmp_path / "tickets.jsonl", 5)
    with pytest.raises(RetrainError, match="retraining needs at least 20"):
        retrain(labels, reg, RetrainConfig(**FAST), base_model_dir=tiny_model_dir)


@pytest.mark.slow
def test_retrain_cli(tiny_model_dir, tmp_path):
    from carelens.cli import app

    labels = write_tickets(tmp_path / "tickets.jsonl", 40)
    cfg = tmp_path / "retrain.yaml"
    cfg.write_text("\n".join(f"{k}: {v}" for k, v in {**FAST, "epochs": 1}.items()))
    result = tmp_path / "result.json"
    progress = tmp_path / "progress.json"
    r = CliRunner().invoke(
        app,
        [
            "retrain", "--labels", str(labels), "--config", str(cfg),
            "--registry", str(tmp_path / "reg"), "--base", str(tiny_model_dir),
            "--no-promote", "--result", str(result), "--progress-file", str(progress), "--quiet",
        ],
    )  # fmt: skip
    assert r.exit_code == 0, r.output
    summary = json.loads(r.output[r.output.index("{") :])
    assert summary["version"] == "v0002" and summary["decision"] in ("passed", "rejected")
    assert Registry(tmp_path / "reg").active() == "v0001"  # --no-promote
    assert json.loads(result.read_text())["version"] == "v0002"
    assert json.loads(progress.read_text())["stage"] == "done"
    bad = tmp_path / "bad.yaml"
    bad.write_text("epoch: 2\n")
    r = CliRunner().invoke(app, ["retrain", "--labels", str(labels), "--config", str(bad)])
    assert r.exit_code == 2 and "unknown retrain config keys ['epoch']" in r.output
    bad.write_text("epochs: 0\n")  # the bounds the API's request also has
    r = CliRunner().invoke(app, ["retrain", "--labels", str(labels), "--config", str(bad)])
    assert r.exit_code == 2 and "epochs must be >= 1 (got 0)" in r.output


def test_the_api_takes_the_retrain_settings_an_admin_may_set_per_run():
    """One declaration: the API's request model is built from RetrainConfig."""
    from model.settings import RetrainConfig
    from serving.routes.models import RetrainIn

    per_run = {f.name for f in RetrainConfig.per_run()}
    assert set(RetrainIn.model_fields) == per_run
    assert {"epochs", "promote", "min_gain", "exclude_flagged"} <= per_run
    assert "public_data" not in per_run  # a file setting, not one for the API
    epochs = RetrainIn.model_json_schema()["properties"]["epochs"]
    assert epochs["anyOf"][0] == {"type": "integer", "minimum": 1, "maximum": 20}


def test_retrain_without_labels_uses_the_exporter_it_was_given(tiny_model_dir, tmp_path):
    """The command is composed with its store exporter; without one it asks for --labels."""
    import typer

    from training.cli import retrain_command

    calls = []

    def exporter(database_url, taxonomy_file, out):
        calls.append((database_url, taxonomy_file.name))
        raise RuntimeError("the store is closed")

    for export, expected in (
        (None, "give --labels FILE"),
        (exporter, "exporting labelled tickets from the store: the store is closed"),
    ):
        cli = typer.Typer()
        cli.command()(retrain_command(export))
        r = CliRunner().invoke(
            cli,
            ["--registry", str(tmp_path / "reg"), "--base", str(tiny_model_dir),
             "--database-url", "sqlite:///x.db"],
        )  # fmt: skip
        assert r.exit_code == 2 and expected in r.output, r.output
    assert calls == [("sqlite:///x.db", "taxonomy.yaml")]


def test_gate_refuses_a_hidden_regression_in_one_frozen_cell():
    from training.retrain import gate

    def figures(frozen_cells):
        cells = [v for s in frozen_cells.values() for k, v in s.items() if k != "rows"]
        return {"frozen": {"mean": sum(cells) / len(cells), "sources": frozen_cells}}

    gain = {"tickets": 50, "gain": 0.1, "low": 0.05, "high": 0.15, "confidence": 0.95}
    gain |= {"better": 10, "worse": 5}
    active = figures({"a": {"rows": 100, "x": 0.80, "y": 0.90}, "b": {"rows": 100, "x": 0.9}})
    cand = figures({"a": {"rows": 100, "x": 0.72, "y": 0.95}, "b": {"rows": 100, "x": 0.93}})
    assert gate(active, cand, gain, tolerance=0.01, min_gain=0.0)[0] is True  # the mean hides it
    ok, why = gate(active, cand, gain, tolerance=0.01, min_gain=0.0, max_cell_drop=0.05)
    assert not ok and "a/x" in why and "max_cell_drop" in why
    # small cells are too noisy to veto
    active["frozen"]["sources"]["a"]["rows"] = cand["frozen"]["sources"]["a"]["rows"] = 20
    assert gate(active, cand, gain, tolerance=0.01, min_gain=0.0, max_cell_drop=0.05)[0] is True
    worse = figures({"a": {"rows": 100, "x": 0.6, "y": 0.6}, "b": {"rows": 100, "x": 0.6}})
    ok, why = gate(active, worse, gain, tolerance=0.01, min_gain=0.0)
    assert not ok and why.startswith("worse on the frozen set")


def test_gate_needs_a_significant_gain_on_enough_tickets():
    from training.retrain import gate, paired_gain

    same = {"frozen": {"mean": 0.8, "sources": {}}}
    active = np.array([1.0, 0.0] * 30)
    # 60 tickets, the candidate right on 3 more and wrong on 1: a gain the interval cannot tell from noise
    noisy = active.copy()
    noisy[[1, 3, 5]] = 1.0
    noisy[[0]] = 0.0
    small = paired_gain(active, noisy)
    assert small["gain"] > 0 and small["low"] <= 0.0
    ok, why = gate(same, same, small, tolerance=0.01, min_gain=0.0)
    assert not ok and "not significantly better" in why and "lower bound" in why
    # right on every ticket the active model missed: significant
    clear = paired_gain(active, np.ones(60))
    assert clear["low"] > 0.3 and clear["better"] == 30 and clear["worse"] == 0
    assert gate(same, same, clear, tolerance=0.01, min_gain=0.0)[0] is True
    # the same gain on too few tickets is not judged
    few = paired_gain(active[:10], np.ones(10))
    ok, why = gate(same, same, few, tolerance=0.01, min_gain=0.0, min_judged=30)
    assert not ok and "too few held-out tickets" in why and "10 < min_judged 30" in why


def test_gate_compares_the_frozen_set_with_the_first_promoted_version():
    """Small steps down, each within tolerance of the active model, add up: the gate
    also holds the candidate to the first version ever promoted."""
    from training.retrain import gate

    gain = {"tickets": 50, "gain": 0.1, "low": 0.05, "high": 0.15, "confidence": 0.95}
    gain |= {"better": 10, "worse": 5}
    first = {"version": "v0001", "frozen": {"mean": 0.85}}
    active = {"frozen": {"mean": 0.845}}
    cand = {"frozen": {"mean": 0.838}}  # 0.007 below active, 0.012 below the first
    assert gate(active, cand, gain, tolerance=0.01, min_gain=0.0)[0] is True
    ok, why = gate(active, cand, gain, tolerance=0.01, min_gain=0.0, first=first)
    assert not ok and "the first promoted version v0001" in why


def test_paired_ticket_scores():
    from training.retrain import ticket_scores

    model = tiny_model()
    tax = model.taxonomy
    rows = [
        Example("a", {"issue_type": ["praise"], "sentiment": ["positive"], "urgency": ["low"]}),
        Example("b", {"issue_type": [], "sentiment": ["negative"]}),
        Example("c", {}),
    ]
    probs = {t.name: np.zeros((3, t.num_labels)) for t in tax}
    probs["issue_type"][0, tax["issue_type"].label2id["praise"]] = 0.9
    probs["issue_type"][0, tax["issue_type"].label2id["shipping_delivery"]] = 0.9
    probs["sentiment"][:, tax["sentiment"].label2id["positive"]] = 1.0
    probs["urgency"][:, tax["urgency"].label2id["low"]] = 1.0
    got = ticket_scores(model, probs, rows)
    # row a: issue Jaccard 1/2, sentiment right, urgency right; row b: issue (both
    # empty) right, sentiment wrong; row c: labelled for nothing
    assert got[0] == pytest.approx((0.5 + 1 + 1) / 3)
    assert got[1] == pytest.approx(0.5)
    assert np.isnan(got[2])


@pytest.mark.slow
def test_retrain_freezes_test_rows_and_calibrates_on_dev_rows(tiny_model_dir, tmp_path):
    """With public data, the frozen set is drawn from the rows the active model neither
    trained nor calibrated on (test rows), and the candidate calibrates on dev rows."""
    from training.data import normalise_for_hash, read_labelled, three_way_split

    tax = Taxonomy.default()
    public = write_tickets(tmp_path / "public.jsonl", 400, seed=3)
    rows = read_labelled(public, tax)
    _, dev, test = three_way_split(rows, 0.1, 0.5)
    reg = Registry(tmp_path / "reg")
    labels = write_tickets(tmp_path / "tickets.jsonl", 60)
    cfg = RetrainConfig(
        **{**FAST, "epochs": 1},
        public_data=[{"path": str(public), "name": "pub"}],
        frozen_rows_per_source=1000,
        calibration_rows_per_source=1000,
        public_rows_per_source=20,
    )
    out = retrain(labels, reg, cfg, base_model_dir=tiny_model_dir, show_bars=False)
    frozen = read_labelled(reg.frozen_eval_file, tax)
    key = lambda e: normalise_for_hash(e.text)  # noqa: E731
    assert dev and {key(e) for e in frozen} == {key(e) for e in test}
    assert reg.get(out["version"]).info["data_summary"]["calibration_rows"] == len(dev)


def test_retrain_trains_as_the_active_model_was_trained(tiny_model_dir, tmp_path):
    """The candidate inherits the active model's frozen word embeddings and bf16."""
    import shutil

    from model.modeling import CarelensModel
    from training.trainer import bf16_supported

    base = tmp_path / "base"
    shutil.copytree(tiny_model_dir, base)
    m = CarelensModel.from_pretrained(base)
    m.train_config = {**m.train_config, "freeze_word_embeddings": True, "bf16": True}
    m.save_pretrained(base)
    reg = Registry(tmp_path / "reg")
    labels = write_tickets(tmp_path / "tickets.jsonl", 60)
    out = retrain(
        labels, reg, RetrainConfig(**{**FAST, "epochs": 1}), base_model_dir=base, show_bars=False
    )
    cand = CarelensModel.from_pretrained(reg.get(out["version"]).path)
    assert cand.train_config["freeze_word_embeddings"] is True
    assert cand.train_config["bf16"] is True
    epochs = [h for h in cand.metrics["history"] if "epoch" in h]
    assert [h["precision"] for h in epochs] == ["bf16" if bf16_supported() else "fp32"]
    assert set(cand.metrics["label_distribution"]) >= {"sentiment"}  # for label drift
    emb = lambda model: model.classifier.encoder.get_input_embeddings().weight  # noqa: E731
    assert emb(cand).equal(emb(m))
