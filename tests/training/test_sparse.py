"""The sparse TF-IDF n-gram path: fitted by scikit-learn, computed in torch."""

from __future__ import annotations

import random

import numpy as np
import pytest
import torch

from model.classifier import combine_sparse, ordinal_probs, task_probs
from model.modeling import CarelensModel
from model.taxonomy import Taxonomy
from tests.conftest import tiny_model
from training.data import Example
from training.sparse import ABSENT_LOGIT, fit_sparse, fit_sparse_crossed, tfidf_matrix

PHRASES = {
    "damaged_defective": ("arrived broken", "stopped working", "坏了"),
    "shipping_delivery": ("delivery late", "never arrived", "快递慢"),
    "praise": ("great product", "love it", "很好"),
}


def _rows(n: int = 240, seed: int = 0) -> list[Example]:
    rng = random.Random(seed)
    rows = []
    for i in range(n):
        issue = rng.choice(list(PHRASES))
        text = f"{rng.choice(PHRASES[issue])} {rng.choice(['the box', 'my order', '这个'])} {i}"
        sentiment = "positive" if issue == "praise" else rng.choice(["negative", "neutral"])
        urgency = "low" if issue == "praise" else rng.choice(["medium", "high"])
        labels = {"issue_type": [issue], "sentiment": [sentiment], "urgency": [urgency]}
        if i % 5 == 0:
            labels.pop("urgency")  # a task some rows leave unlabelled
        rows.append(Example(text=text, labels=labels))
    return rows


def test_sparse_path_alone_is_the_floor():
    """Fitted on the floor's rows, the path computes the floor's regressions' logits."""
    from training.evaluate import TfidfBaseline

    model = tiny_model(ngram=False, sparse=True)
    rows = _rows()
    fit_sparse(model, rows, progress=False)
    clf = model.classifier
    texts = ["arrived broken, the box", "great product 这个很好", "never arrived!!", "x"]
    batch = model.encode(texts)
    with torch.no_grad():
        got = clf.sparse_logits(batch.sparse_ids, batch.sparse_tf).numpy()

    floor = TfidfBaseline(model.taxonomy).fit(rows)
    xq = floor._features(texts)
    tax = model.taxonomy
    lr, _ = floor.models["sentiment"]
    lo, _ = clf.sparse_slices["sentiment"]
    want = lr.decision_function(xq)
    for k, cls in enumerate(lr.classes_):
        np.testing.assert_allclose(got[:, lo + cls], want[:, k], atol=1e-3)
    lr_u, _ = floor.models["urgency"]
    absent = set(range(tax["urgency"].num_labels)) - set(lr_u.classes_.tolist())
    lo_u, _ = clf.sparse_slices["urgency"]
    assert absent and all(got[0, lo_u + a] == ABSENT_LOGIT for a in absent)

    ovr, cols = floor.models["issue_type"]
    lo, _ = clf.sparse_slices["issue_type"]
    for est, j in zip(ovr.estimators_, np.flatnonzero(cols), strict=True):
        np.testing.assert_allclose(got[:, lo + j], est.decision_function(xq), atol=1e-3)
    # a label no row shows stays unlikely
    never = tax["issue_type"].label_names.index("safety_hazard")
    assert torch.sigmoid(torch.tensor(got[:, lo + never])).max() < 0.05
    # urgency was fitted only on the rows that label it: its figures say so
    assert got[2, clf.sparse_slices["urgency"][0] + tax["urgency"].label_names.index("low")] < 0
    # the same probabilities as the floor's, for every task
    probs = clf.sparse_task_probs(batch.sparse_ids, batch.sparse_tf)
    fp = floor.predict_proba(texts)
    np.testing.assert_allclose(
        probs["issue_type"][:, cols].numpy(), fp["issue_type"][:, cols], atol=1e-4
    )
    np.testing.assert_allclose(
        probs["sentiment"].numpy()[:, lr.classes_], fp["sentiment"][:, lr.classes_], atol=1e-3
    )


def test_sparse_features_match_scikit_learn():
    model = tiny_model(ngram=False, sparse=True)
    rows = _rows()
    texts = [e.text for e in rows]
    x, vocab, idf = tfidf_matrix(texts, model)
    model.classifier.set_sparse_vocab(vocab)
    model.classifier.sparse_idf.copy_(torch.from_numpy(idf).float())
    ids, tf = model.classifier.sparse_inputs(texts[:20] + ["unseen words only", ""])
    w = model.classifier.sparse_weights(ids, tf)
    dense = torch.zeros(ids.shape[0], len(vocab)).scatter_add_(1, ids, w)[:, 1:]
    np.testing.assert_allclose(dense[:20].numpy(), x[:20].toarray(), atol=1e-5)
    assert dense[21].abs().sum() == 0  # nothing known, nothing weighed
    assert vocab.chars and vocab.words and len(vocab) == 1 + x.shape[1]


def test_combined_ordinal_is_the_normalised_product():
    task = Taxonomy.default()["urgency"]
    k = task.num_labels
    head = torch.randn(5, k - 1).sort(dim=1, descending=True).values  # a valid ordinal output
    sparse = torch.randn(5, k)
    combined = combine_sparse(task, head, sparse)
    assert combined.shape == head.shape
    want = ordinal_probs(head) * torch.softmax(sparse, -1)
    want = want / want.sum(1, keepdim=True)
    torch.testing.assert_close(task_probs(task, combined), want, atol=1e-5, rtol=1e-4)
    multi = Taxonomy.default()["issue_type"]
    h, s = torch.randn(2, multi.num_labels), torch.randn(2, multi.num_labels)
    torch.testing.assert_close(combine_sparse(multi, h, s), h + s)


def test_sparse_model_saves_loads_and_needs_its_inputs(tmp_path):
    model = tiny_model(ngram=False, sparse=True)
    fit_sparse(model, _rows(), progress=False)
    model.save_pretrained(tmp_path / "m")
    again = CarelensModel.from_pretrained(tmp_path / "m")
    assert again.config.sparse.enabled and again.config.sparse.size == len(
        model.classifier.sparse_vocab
    )
    texts = ["arrived broken", "很好 great product"]
    a, _ = model.batched_logits(texts)
    b, _ = again.batched_logits(texts)
    for name in a:
        torch.testing.assert_close(a[name], b[name])
    batch = again.encode(texts)
    with pytest.raises(ValueError, match="sparse n-gram path"):
        again.classifier(batch.input_ids, batch.attention_mask)


def test_fit_refuses_a_model_without_the_path():
    with pytest.raises(ValueError, match="no sparse path"):
        fit_sparse(tiny_model(), _rows(20), progress=False)


def _toy_config(tmp_path, backbone, n_rows: int = 300, **overrides):
    """A training config over ``n_rows`` toy rows written to a labelled file."""
    import json

    from training.trainer import TrainConfig

    path = tmp_path / "toy.jsonl"
    path.write_text(
        "\n".join(
            json.dumps({"text": e.text, **e.labels}, ensure_ascii=False) for e in _rows(n_rows)
        ),
        encoding="utf-8",
    )
    spec = {
        "backbone": str(backbone),
        "data": [{"path": str(path), "name": "toy", "max_rows": 100}],
        "epochs": 1,
        "max_length": 32,
        "cjk_min_count": 1,
        "ngram": False,
        "sparse": True,
        "val_fraction": 0.2,
    }
    return TrainConfig.from_dict({**spec, **overrides})


def test_training_fits_the_path_out_of_sample_then_refits_it(tmp_path, tiny_backbone_dir):
    from training.pipeline import run
    from training.trainer import _optimizer

    cfg = _toy_config(tmp_path, tiny_backbone_dir)
    metrics = run(cfg, tmp_path / "m", progress=False)
    steps = {k: v for entry in metrics["history"] for k, v in entry.items()}
    # first on the rows fine-tuning leaves out, then on all training rows
    assert steps["sparse_fit"]["rows"] < 200 < steps["sparse_refit"]["rows"]
    assert steps["sparse_refit"]["rows"] == steps["sparse_fit"]["rows"] + 100
    assert metrics["validation_per_source"]["toy"]["issue_type"] > 0.9  # phrases decide it
    model = CarelensModel.from_pretrained(tmp_path / "m")
    sparse_params = {id(p) for n, p in model.classifier.named_parameters() if "sparse" in n}
    groups = _optimizer(model, cfg).param_groups
    assert sparse_params and not any(id(p) in sparse_params for g in groups for p in g["params"])


def test_cross_fitted_logits_come_from_fits_that_never_saw_the_row():
    rows = _rows(90)
    tuned, rest = rows[:60], rows[60:]
    model = tiny_model(ngram=False, sparse=True)
    summary, offsets = fit_sparse_crossed(model, tuned, rest, folds=3, progress=False)
    assert summary["folds"] == 3 and summary["rows"] == 90
    assert set(offsets) == {id(e) for e in tuned}  # every fine-tuning row, no other
    # the path itself is the fit on every row: as fit_sparse on all rows
    whole = tiny_model(ngram=False, sparse=True)
    fit_sparse(whole, rows, progress=False)
    batch = model.encode([e.text for e in rows[:5]], max_length=32)
    ids, tf = batch.sparse_ids, batch.sparse_tf
    torch.testing.assert_close(
        model.classifier.sparse_logits(ids, tf), whole.classifier.sparse_logits(ids, tf)
    )
    # a row's offsets are not the whole path's logits on it: the row was out of its fit
    own = model.classifier.sparse_logits(ids, tf)
    assert not torch.allclose(torch.stack([offsets[id(e)] for e in rows[:5]]), own)


def test_a_cross_fitted_row_stays_out_of_its_own_fit():
    # one text with a label no other row has: out of fold, the fit never saw the label
    rows = _rows(60)
    odd = Example(text="zzqx wrong colour strap", labels={"issue_type": ["wrong_item"]})
    model = tiny_model(ngram=False, sparse=True)
    _, offsets = fit_sparse_crossed(model, [odd, *rows[:30]], rows[30:], folds=2, progress=False)
    lo, _ = model.classifier.sparse_slices["issue_type"]
    wrong = lo + model.taxonomy["issue_type"].label_names.index("wrong_item")
    assert float(offsets[id(odd)][wrong]) == ABSENT_LOGIT  # out of fold: never seen
    batch = model.encode([odd.text], max_length=32)
    whole = model.classifier.sparse_logits(batch.sparse_ids, batch.sparse_tf)[0, wrong]
    assert float(whole) != ABSENT_LOGIT  # the whole path has learned it


def test_training_with_a_cross_fitted_path_fits_it_once_on_all_rows(tmp_path, tiny_backbone_dir):
    from training.pipeline import run

    cfg = _toy_config(tmp_path, tiny_backbone_dir, sparse_folds=2)
    metrics = run(cfg, tmp_path / "m", progress=False)
    steps = {k: v for entry in metrics["history"] for k, v in entry.items()}
    assert "sparse_refit" not in steps  # fitted on every training row up front
    assert steps["sparse_fit"]["folds"] == 2 and steps["sparse_fit"]["rows"] > 200
    assert metrics["validation_per_source"]["toy"]["issue_type"] > 0.9
    with pytest.raises(ValueError, match="sparse_folds"):
        _toy_config(tmp_path, tiny_backbone_dir, sparse_folds=1)


def test_bench_baseline_runs_the_sparse_path_too(tmp_path):
    from carelens.bench.predict import HFBaseline
    from model.classifier import task_probs

    model = tiny_model(ngram=False, sparse=True)
    fit_sparse(model, _rows(), progress=False)
    model.save_pretrained(tmp_path / "m")
    texts = ["arrived broken, the box", "great product 这个很好", "never arrived"]
    got = HFBaseline(tmp_path / "m", batch_size=2)(texts)
    logits, _ = model.batched_logits(texts, calibrated=False)
    want = [
        {t.name: int(task_probs(t, logits[t.name])[i].argmax()) for t in model.taxonomy}
        for i in range(len(texts))
    ]
    assert got == want


def test_evidence_of_a_sparse_model_points_at_the_sentence_that_says_it():
    from model.predictor import Predictor

    model = tiny_model(ngram=False, sparse=True)
    fit_sparse(model, _rows(), progress=False)
    pred = Predictor(model)
    text = "Great product, love it. But my order never arrived, delivery late!"
    out = pred.predict([text])[0]
    spans = {e.label: e.text for t in out.tasks.values() for e in t.evidence}
    # segments are scored by the sparse path: each issue is found in its own sentence
    seg = pred._segment_probs(
        ["Great product, love it.", "But my order never arrived, delivery late!"]
    )
    names = model.taxonomy["issue_type"].label_names
    assert seg["issue_type"][0, names.index("praise")] > seg["issue_type"][1, names.index("praise")]
    assert (
        seg["issue_type"][1, names.index("shipping_delivery")]
        > seg["issue_type"][0, names.index("shipping_delivery")]
    )
    assert {"praise", "shipping_delivery"} & set(spans)
    for label, span in spans.items():
        if label == "praise":
            assert span == "Great product, love it."
        if label == "shipping_delivery":
            assert span == "But my order never arrived, delivery late!"


def test_class_balance_raises_the_rare_class():
    """Weighted by class, the path gives a rare label more mass."""
    rows = _rows()
    rare = [r for r in rows if r.labels["issue_type"] == ["damaged_defective"]][:6]
    rows = [r for r in rows if r.labels["issue_type"] != ["damaged_defective"]] + rare
    texts = [r.text for r in rare]

    def rare_prob(balance: float) -> float:
        model = tiny_model(ngram=False, sparse=True)
        fit_sparse(model, rows, progress=False, label_balance=balance)
        batch = model.encode(texts)
        with torch.no_grad():
            probs = model.classifier.sparse_task_probs(batch.sparse_ids, batch.sparse_tf)
        rare_id = model.taxonomy["issue_type"].label2id["damaged_defective"]
        return float(probs["issue_type"][:, rare_id].mean())

    assert rare_prob(1.0) > rare_prob(0.0)


def test_zero_epochs_is_the_sparse_path_alone(tmp_path, tiny_backbone_dir):
    """``epochs: 0`` (``carelens starter --quick``): one sparse fit on every training
    row, neutral heads, the encoder never run; the reports name each stage."""
    from training.pipeline import run

    rows = _rows(300)
    cfg = _toy_config(tmp_path, tiny_backbone_dir, epochs=0)
    reports = []
    metrics = run(cfg, tmp_path / "m", progress=False, report=lambda *r: reports.append(r))
    steps = {k: v for entry in metrics["history"] for k, v in entry.items()}
    assert "sparse_fit" not in steps and steps["sparse_refit"]["rows"] > 200
    assert metrics["validation_per_source"]["toy"]["issue_type"] > 0.9
    assert [r[0] for r in reports][-2:] == ["calibrating", "done"]
    fractions = [r[1] for r in reports]
    assert fractions == sorted(fractions) and fractions[-1] == 1.0

    model = CarelensModel.from_pretrained(tmp_path / "m")
    clf = model.classifier
    assert model.config.sparse_only
    ordinal = ordinal_probs(clf.heads["urgency"](torch.randn(3, 32)))
    assert torch.allclose(ordinal, torch.full_like(ordinal, 1 / ordinal.shape[1]), atol=1e-3)
    calls = []
    clf.encoder.register_forward_hook(lambda *a: calls.append(1))
    texts = [e.text for e in rows[:8]]
    logits, _ = model.batched_logits(texts, 8, calibrated=False)
    ids, tf = clf.sparse_inputs(texts)
    sparse = clf.sparse_logits(ids, tf)
    lo, hi = clf.sparse_slices["issue_type"]
    assert not calls  # the encoder never ran
    assert torch.allclose(logits["issue_type"], sparse[:, lo:hi], atol=1e-5)


def test_zero_epochs_needs_the_sparse_path(tmp_path, tiny_backbone_dir):
    from training.pipeline import run

    cfg = _toy_config(tmp_path, tiny_backbone_dir, 60, epochs=0, sparse=False)
    with pytest.raises(ValueError, match="sparse"):
        run(cfg, tmp_path / "m", progress=False)


def test_regressions_in_worker_processes_fit_the_same_path(monkeypatch):
    """The regressions of every fold and of the whole path run in parallel processes:
    the path and the cross-fitted logits are those of fitting them one by one."""
    import training.sparse as sparse

    rows = _rows(90)
    serial = tiny_model(ngram=False, sparse=True)
    _, want = fit_sparse_crossed(serial, rows[:60], rows[60:], folds=3, progress=False, n_jobs=1)
    monkeypatch.setattr(sparse, "MIN_PARALLEL_ROWS", 0)
    parallel = tiny_model(ngram=False, sparse=True)
    _, got = fit_sparse_crossed(parallel, rows[:60], rows[60:], folds=3, progress=False, n_jobs=2)
    for e in rows[:60]:
        torch.testing.assert_close(got[id(e)], want[id(e)])
    a, b = serial.classifier, parallel.classifier
    torch.testing.assert_close(a.sparse_table.weight, b.sparse_table.weight)
    torch.testing.assert_close(a.sparse_bias, b.sparse_bias)
