"""Predictor behaviour on the tiny random model: outputs, thresholds, evidence, bad input."""

from __future__ import annotations

import shutil

import numpy as np
import pytest

from model.modeling import CarelensModel, ModelLoadError
from model.predictor import Predictor, clean_text, segments
from model.taxonomy import Taxonomy
from tests.conftest import tiny_model

TEXTS = [
    "The package arrived late and the box was broken. I want a refund!",
    "这个充电器起火了，太危险！我要投诉。",
    "great product, thanks 😀👍",
    "Mixed 中英文 message: 质量差 but fast shipping.",
]


def test_prediction_shape(tiny_predictor):
    preds = tiny_predictor.predict(TEXTS)
    assert len(preds) == len(TEXTS)
    tax = Taxonomy.default()
    for p in preds:
        assert set(p.tasks) == set(tax.task_names)
        for task in tax:
            tp = p[task.name]
            assert list(tp.probabilities) == task.label_names
            assert 0.0 <= tp.confidence <= 1.0
            assert tp.needs_review == (tp.confidence < 0.5)
            if task.kind != "multilabel":
                assert len(tp.labels) == 1
            if task.kind != "multilabel" and not p.rule_hits:  # a rule's label is certain
                assert tp.confidence == pytest.approx(max(tp.probabilities.values()), abs=1e-6)
                assert sum(tp.probabilities.values()) == pytest.approx(1.0, abs=1e-4)
        d = p.to_dict()
        assert d["tasks"]["sentiment"]["labels"] == [p["sentiment"].label]


def test_batching_and_order_do_not_change_results(tiny_model_dir):
    a = Predictor.load(tiny_model_dir, batch_size=1).predict_proba(TEXTS)
    b = Predictor.load(tiny_model_dir, batch_size=3).predict_proba(list(reversed(TEXTS)))
    for task in a:
        np.testing.assert_allclose(a[task], b[task][::-1], atol=1e-5)


def test_save_load_identical_outputs(tmp_path):
    model = tiny_model()
    before = Predictor(model).predict_proba(TEXTS)
    model.save_pretrained(tmp_path / "m")
    after = Predictor.load(tmp_path / "m").predict_proba(TEXTS)
    for task in before:
        np.testing.assert_allclose(before[task], after[task], atol=1e-6)


def test_multilabel_thresholds(tiny_model_dir):
    pred = Predictor.load(tiny_model_dir)
    probs = pred.predict([TEXTS[0]], evidence=False)[0]["issue_type"].probabilities
    names = list(probs)
    top = max(names, key=probs.get)
    th = pred.model.thresholds["issue_type"]["label_thresholds"]
    for name in names:
        th[name] = 1.01  # nothing passes
    tp = pred.predict([TEXTS[0]], evidence=False)[0]["issue_type"]
    assert tp.labels == []
    th[top] = probs[top] - 1e-4  # exactly one label passes its own threshold
    tp = pred.predict([TEXTS[0]], evidence=False)[0]["issue_type"]
    assert tp.labels == [top]
    for name in names:
        th[name] = 0.0  # everything passes, sorted by probability
    tp = pred.predict([TEXTS[0]], evidence=False)[0]["issue_type"]
    assert tp.labels == sorted(names, key=lambda n: -probs[n])


def test_review_threshold(tiny_model_dir):
    pred = Predictor.load(tiny_model_dir)
    pred.model.thresholds["sentiment"]["review_threshold"] = 0.0
    assert not pred.predict([TEXTS[0]])[0]["sentiment"].needs_review
    pred.model.thresholds["sentiment"]["review_threshold"] = 1.01
    assert pred.predict([TEXTS[0]])[0]["sentiment"].needs_review


def test_evidence_offsets_point_into_the_text(tiny_predictor):
    for text, pred in zip(TEXTS, tiny_predictor.predict(TEXTS), strict=True):
        for tp in pred.tasks.values():
            assert [e.label for e in tp.evidence] == tp.labels
            for ev in tp.evidence:
                assert 0 <= ev.start < ev.end <= len(text)
                assert text[ev.start : ev.end] == ev.text
                assert ev.text.strip() == ev.text


def test_evidence_picks_a_sentence_of_a_multi_sentence_text(tiny_predictor):
    text = "I love it.  The charger caught fire!\nPlease help."
    pred = tiny_predictor.predict([text])[0]
    spans = {(s, e) for s, e in segments(text)}
    assert spans == {(0, 10), (12, 36), (37, 49)}
    spans |= {(h.start, h.end) for h in pred.rule_hits}  # a rule's phrase is its evidence
    for tp in pred.tasks.values():
        for ev in tp.evidence:
            assert (ev.start, ev.end) in spans


@pytest.mark.parametrize(
    "text",
    [
        "<html><body><p>My <b>order</b> never arrived</p></body></html>",
        "emoji only 🔥🔥🔥",
        "🔥",
        "ctrl\x00chars\x07in\x1bside",
        "lone surrogate \ud800 here",
        "zero\u200bwidth and bidi\u202e text",
        "中文English混合mixed",
    ],
)
def test_odd_inputs_get_a_prediction(tiny_predictor, text):
    (pred,) = tiny_predictor.predict([text])
    assert pred["sentiment"].label in {"negative", "neutral", "positive"}
    for tp in pred.tasks.values():
        for ev in tp.evidence:
            assert text[ev.start : ev.end] == ev.text


def test_one_megabyte_text_is_truncated_and_flagged(tiny_predictor):
    text = "the box was broken. " * 52_429  # ~1 MB
    assert len(text.encode()) >= 1_000_000
    (pred,) = tiny_predictor.predict([text])
    assert pred.truncated
    assert not tiny_predictor.predict(["short text"])[0].truncated


@pytest.mark.parametrize(
    ("texts", "message"),
    [
        ([""], r"texts\[0\] is empty"),
        (["ok", "   \n\t "], r"texts\[1\] is empty"),
        (["\x00\x01"], r"texts\[0\] is empty"),
        ([None], r"texts\[0\] is NoneType, expected str"),
        ([b"bytes"], r"texts\[0\] is bytes"),
        ("a plain string", "wrap a single text in a list"),
    ],
)
def test_bad_inputs_raise_clear_value_errors(tiny_predictor, texts, message):
    with pytest.raises(ValueError, match=message):
        tiny_predictor.predict(texts)


def test_empty_list_gives_empty_result(tiny_predictor):
    assert tiny_predictor.predict([]) == []


def test_clean_text_preserves_length():
    raw = "a\x00b\ud800c\u200bd\n"
    assert len(clean_text(raw)) == len(raw)


def test_custom_taxonomy_with_a_fourth_task(tmp_path):
    data = Taxonomy.default().to_dict()
    data["tasks"].append(
        {"name": "channel_intent", "kind": "multiclass", "labels": ["buy", "complain", "ask"]}
    )
    tax = Taxonomy.from_dict(data)
    tiny_model(taxonomy=tax).save_pretrained(tmp_path / "m4")
    pred = Predictor.load(tmp_path / "m4").predict(["where is my order"])[0]
    assert list(pred.tasks) == ["issue_type", "sentiment", "urgency", "channel_intent"]
    assert pred["channel_intent"].label in {"buy", "complain", "ask"}


def test_model_without_ngram_branch(tmp_path):
    tiny_model(ngram=False).save_pretrained(tmp_path / "plain")
    assert Predictor.load(tmp_path / "plain").predict(["hello"])[0]["urgency"].label


# -- broken model directories --------------------------------------------------------


@pytest.fixture
def model_copy(tiny_model_dir, tmp_path):
    target = tmp_path / "copy"
    shutil.copytree(tiny_model_dir, target)
    return target


@pytest.mark.parametrize(
    "missing",
    [
        "heads.safetensors",
        "taxonomy.yaml",
        "tokenizer/tokenizer.json",
        "encoder/model.safetensors",
        "calibration.json",
        "thresholds.json",
        "model_config.json",
    ],
)
def test_missing_file_is_named(model_copy, missing):
    (model_copy / missing).unlink()
    with pytest.raises(ModelLoadError, match=f"required file {missing} is missing"):
        CarelensModel.from_pretrained(model_copy)


def test_taxonomy_not_matching_heads(model_copy):
    tax = Taxonomy.default().to_dict()
    tax["tasks"][0]["labels"] = tax["tasks"][0]["labels"][:-1]  # 12 issue types, heads have 13
    Taxonomy.from_dict(tax).save(model_copy / "taxonomy.yaml")
    with pytest.raises(
        ModelLoadError, match=r"heads.safetensors: head 'issue_type' .* lists 12 labels"
    ):
        CarelensModel.from_pretrained(model_copy)


def test_taxonomy_with_other_tasks_than_heads(model_copy):
    tax = Taxonomy.default().to_dict()
    tax["tasks"][1]["name"] = "mood"
    Taxonomy.from_dict(tax).save(model_copy / "taxonomy.yaml")
    with pytest.raises(
        ModelLoadError, match=r"heads for tasks .*'sentiment'.* but taxonomy.yaml defines .*'mood'"
    ):
        CarelensModel.from_pretrained(model_copy)


def test_corrupt_files_are_named(model_copy):
    (model_copy / "thresholds.json").write_text("{not json", encoding="utf-8")
    with pytest.raises(ModelLoadError, match="thresholds.json: not valid JSON"):
        CarelensModel.from_pretrained(model_copy)
    shutil.copy(model_copy / "calibration.json", model_copy / "thresholds.json")
    (model_copy / "heads.safetensors").write_bytes(b"garbage")
    with pytest.raises(ModelLoadError, match="heads.safetensors: not a valid safetensors file"):
        CarelensModel.from_pretrained(model_copy)


def test_missing_directory(tmp_path):
    with pytest.raises(ModelLoadError, match="model directory not found"):
        Predictor.load(tmp_path / "nowhere")


def test_saved_directory_is_self_describing(tiny_model_dir):
    names = {
        p.relative_to(tiny_model_dir).as_posix() for p in tiny_model_dir.rglob("*") if p.is_file()
    }
    assert {"README.md", "train_config.json", "metrics.json", "tokenizer/vocab.txt"} <= names
    assert not any(n.endswith((".bin", ".pt", ".pkl")) for n in names)  # never pickles
    card = (tiny_model_dir / "README.md").read_text(encoding="utf-8")
    assert "safety_hazard" in card and "安全隐患" in card and "Untrained" in card
    safety = next(
        lb for lb in Taxonomy.default()["issue_type"].labels if lb.name == "safety_hazard"
    )
    assert f"| {safety.definition} | {safety.definition_zh} |" in card


def test_a_rating_is_read_with_the_text(tiny_predictor):
    from model.predictor import rated_text

    text = "it arrived"
    plain = tiny_predictor.predict_proba([text])
    rated = tiny_predictor.predict_proba([text], ratings=[1])
    same = tiny_predictor.predict_proba([rated_text(text, 1)])
    for task in plain:
        np.testing.assert_allclose(rated[task], same[task], atol=1e-6)
    assert any(not np.allclose(plain[t], rated[t]) for t in plain)
    # evidence offsets stay offsets into the caller's text
    pred = tiny_predictor.predict(["Box crushed. Lamp broken."], ratings=[2])[0]
    for tp in pred.tasks.values():
        for ev in tp.evidence:
            assert "star review" not in ev.text


@pytest.mark.parametrize(
    "ratings,needle",
    [
        ([1], "one per text"),
        ([0, None], "ratings[0]"),
        ([2.5, None], "whole number"),
        ("5", "list"),
    ],
)
def test_bad_ratings_are_refused(tiny_predictor, ratings, needle):
    with pytest.raises(ValueError, match=needle.replace("[", r"\[").replace("]", r"\]")):
        tiny_predictor.predict(["a", "b"], ratings=ratings)
