from __future__ import annotations

import json
import warnings

import numpy as np
import pytest
from typer.testing import CliRunner

from carelens.cli import app
from model.charts import chart_lang
from model.predictor import Predictor
from model.taxonomy import Taxonomy
from training.data import Example, read_labelled
from training.evaluate import (
    TfidfBaseline,
    evaluate,
    expected_calibration_error,
    paired_counts,
    score_sets,
    task_metrics,
)

TAX = Taxonomy.default()


def test_ece_known_values():
    conf = np.array([0.9] * 10 + [0.6] * 10)
    correct = np.array([1] * 9 + [0] + [1] * 3 + [0] * 7, dtype=bool)
    # bin 0.9: acc 0.9 -> gap 0; bin 0.6: acc 0.3 -> gap 0.3; weights 1/2 each
    assert abs(expected_calibration_error(conf, correct) - 0.15) < 1e-9


def test_task_metrics_single_and_multi_label():
    probs = np.array(
        [[0.8, 0.1, 0.1], [0.2, 0.7, 0.1], [0.1, 0.2, 0.7], [0.6, 0.3, 0.1]], dtype=np.float32
    )
    gold = np.array([0, 1, 0, -100])  # last row unlabelled
    m = task_metrics(TAX["sentiment"], probs, gold, {"review_threshold": 0.65})
    assert m["n"] == 3 and abs(m["accuracy"] - 2 / 3) < 1e-9
    assert m["confusion"] == [[1, 0, 1], [0, 1, 0], [0, 0, 0]]
    assert abs(m["coverage"] - 1.0) < 1e-9  # confidences 0.8, 0.7, 0.7 >= 0.65
    ordinal = task_metrics(
        TAX["urgency"], np.eye(4, dtype=np.float32)[[0, 3]], np.array([1, 1]), {}
    )
    assert ordinal["mae"] == 1.5
    ml_probs = np.full((3, 13), 0.1, dtype=np.float32)
    ml_probs[0, 0] = 0.9
    ml_gold = np.zeros((3, 13), dtype=np.float32)
    ml_gold[0, 0] = 1
    ml_gold[1, 1] = 1
    ml_gold[2] = -1  # unlabelled for issue_type
    m = task_metrics(TAX["issue_type"], ml_probs, ml_gold, {})
    assert m["n"] == 2 and abs(m["micro_f1"] - 2 / 3) < 1e-9 and m["subset_accuracy"] == 0.5
    assert task_metrics(TAX["sentiment"], probs, np.full(4, -100), {}) is None


def _rows(n=60):
    out = []
    for i in range(n):
        pos = i % 2 == 0
        out.append(
            Example(
                text=("great product thanks" if pos else "box arrived broken") + f" {i}",
                labels={"sentiment": ["positive" if pos else "negative"]},
                meta={"source": "toy"},
            )
        )
    return out


def test_paired_counts_split_the_discordant_rows():
    # sentiment: 12 rows, the model right on all, the floor wrong on the first 10;
    # urgency: model and floor each wrong on a different row
    rows = [Example(text=f"t{i}", labels={"sentiment": ["negative"]}) for i in range(12)]
    rows += [
        Example(text=f"u{i}", labels={"urgency": ["low"]}, meta={"source": "b"}) for i in range(4)
    ]
    tax_len = {t.name: t.num_labels for t in TAX}
    model = {n: np.zeros((16, k), dtype=np.float32) for n, k in tax_len.items()}
    floor = {n: np.zeros((16, k), dtype=np.float32) for n, k in tax_len.items()}
    model["sentiment"][:12, 0] = 1.0
    floor["sentiment"][:12, 0] = 1.0
    floor["sentiment"][:10] = [0.0, 0.0, 1.0]
    model["urgency"][12:, 0] = floor["urgency"][12:, 0] = 1.0
    model["urgency"][12] = floor["urgency"][13] = [0.0, 0.0, 0.0, 1.0]
    out = paired_counts(TAX, {}, model, floor, rows)
    s = out["unknown"]["sentiment"]  # rows without a source
    assert (s["model_only"], s["floor_only"]) == (10, 0)
    assert abs(s["p_value"] - 2 * 0.5**10) < 1e-12  # exact two-sided binomial
    u = out["b"]["urgency"]
    assert (u["model_only"], u["floor_only"], u["p_value"]) == (1, 1, 1.0)
    assert "issue_type" not in out["b"]  # no row labelled for it


def test_binary_source_scored_within_its_label_space():
    # a positive/negative source: a neutral answer counts as the likelier of the two;
    # a source with neutral among its labels, and the corpus's rows, are scored as given
    sent = TAX["sentiment"].label_names
    probs = np.array([[0.1, 0.6, 0.3], [0.2, 0.7, 0.1]], dtype=np.float32)
    gold = ["positive", "negative"]
    assert sent == ["negative", "neutral", "positive"]

    def accuracy(source: str) -> float:
        rows = [
            Example(text=f"t{i}", labels={"sentiment": [g]}, meta={"source": source})
            for i, g in enumerate(gold)
        ]
        tax_len = {t.name: t.num_labels for t in TAX}
        p = {n: np.zeros((2, k), dtype=np.float32) for n, k in tax_len.items()}
        p["sentiment"] = probs
        return score_sets(TAX, {}, p, rows)[source]["sentiment"]["accuracy"]

    assert accuracy("chinese_waimai") == 1.0
    assert accuracy("twitter_airline") == 0.0
    assert accuracy("corpus/chinese_waimai") == 0.0


def test_baseline_learns_a_separable_task():
    base = TfidfBaseline(TAX).fit(_rows())
    p = base.predict_proba(["great product thanks", "box arrived broken"])["sentiment"]
    assert p[0].argmax() == 2 and p[1].argmax() == 0
    assert np.allclose(p.sum(1), 1.0)
    assert "issue_type" not in base.models  # no rows labelled for it


def test_report_files_and_per_source_split(tiny_model_dir, tmp_path):
    f = tmp_path / "held.csv"
    f.write_text(
        "text,source,sentiment,urgency\nbox arrived broken,shop_a,negative,high\n"
        "great product thanks,shop_a,positive,low\nrefund please,shop_b,neutral,\n",
        encoding="utf-8",
    )
    rows = read_labelled(f, TAX)
    report = evaluate(
        Predictor.load(tiny_model_dir), rows, tmp_path / "rep", baseline_train=_rows()
    )
    assert set(report["sources"]) == {"shop_a", "shop_b"}
    assert set(report["sources"]["shop_a"]) == {
        "sentiment",
        "urgency",
    }  # issue_type absent: skipped
    assert set(report["sources"]["shop_b"]) == {"sentiment"}
    assert report["baseline"]["sources"]["shop_a"]["sentiment"]["n"] == 2
    names = {p.name for p in (tmp_path / "rep").iterdir()}
    assert {
        "metrics.json",
        "report.md",
        "confusion_sentiment.png",
        "reliability_sentiment.png",
        "confusion_urgency.png",
    } <= names
    assert (tmp_path / "rep" / "confusion_sentiment.png").read_bytes()[:4] == b"\x89PNG"
    md = (tmp_path / "rep" / "report.md").read_text(encoding="utf-8")
    assert "TF-IDF floor" in md and "shop_b" in md and "McNemar" in md
    paired = report["baseline"]["paired"]["shop_a"]["sentiment"]
    assert paired["model_only"] + paired["floor_only"] <= 2 and 0 <= paired["p_value"] <= 1
    assert json.loads((tmp_path / "rep" / "metrics.json").read_text())["n"] == 3


@pytest.mark.skipif(chart_lang("zh") != "zh", reason="no CJK font installed")
def test_report_plots_name_labels_in_chinese(tiny_model_dir, tmp_path):
    f = tmp_path / "held.csv"
    f.write_text("text,sentiment\nbox arrived broken,negative\nthanks,positive\n")
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        evaluate(Predictor.load(tiny_model_dir), read_labelled(f, TAX), tmp_path / "r", lang="zh")
    assert not [w for w in caught if "missing from font" in str(w.message)]
    evaluate(Predictor.load(tiny_model_dir), read_labelled(f, TAX), tmp_path / "e", lang="en")
    zh, en = ((tmp_path / d / "confusion_sentiment.png").read_bytes() for d in ("r", "e"))
    assert zh[:4] == b"\x89PNG" and zh != en  # 负面/中性/正面 where en has Negative...


def test_evaluate_command(tiny_model_dir, tmp_path):
    f = tmp_path / "held.jsonl"
    f.write_text('{"text": "box arrived broken", "sentiment": "negative"}\n', encoding="utf-8")
    r = CliRunner().invoke(
        app, ["evaluate", "-m", str(tiny_model_dir), "-d", str(f), "-o", str(tmp_path / "r")]
    )
    assert r.exit_code == 0, r.output
    assert (
        "held" in r.output and "sentiment" in r.output and (tmp_path / "r" / "report.md").is_file()
    )
    r = CliRunner().invoke(app, ["evaluate", "-m", str(tiny_model_dir), "-o", str(tmp_path / "r")])
    assert r.exit_code == 2 and "give --data FILE" in r.output
