from __future__ import annotations

import numpy as np
import pytest
import torch

from model.calibration import (
    best_f1_thresholds,
    calibrate,
    check_recall_weights,
    fit_temperature,
    review_threshold,
)
from model.classifier import IGNORE_INDEX
from model.taxonomy import Taxonomy

TAX = Taxonomy.default()


def _overconfident(n=2000, seed=0):
    """Logits that are 4x too sharp for the true probabilities."""
    g = torch.Generator().manual_seed(seed)
    true_logits = torch.randn((n, 3), generator=g)
    y = torch.multinomial(torch.softmax(true_logits, 1), 1, generator=g).squeeze(1)
    return true_logits * 4.0, y


def test_temperature_recovers_overconfidence():
    logits, y = _overconfident()
    t = fit_temperature(TAX["sentiment"], logits, y)
    assert 3.0 < t < 5.0


def test_temperature_ignores_unlabelled_rows():
    logits, y = _overconfident()
    y_masked = y.clone()
    y_masked[1000:] = IGNORE_INDEX
    t_half = fit_temperature(TAX["sentiment"], logits, y_masked)
    t_first = fit_temperature(TAX["sentiment"], logits[:1000], y[:1000])
    assert abs(t_half - t_first) < 1e-3
    assert fit_temperature(TAX["sentiment"], logits, torch.full_like(y, IGNORE_INDEX)) == 1.0


def test_review_threshold_reaches_target_precision():
    rng = np.random.default_rng(0)
    conf = rng.uniform(0.34, 1.0, 5000)
    correct = rng.uniform(size=5000) < conf  # calibrated: P(correct) = confidence
    t = review_threshold(conf, correct, target_precision=0.9)
    accepted = conf >= t
    assert correct[accepted].mean() >= 0.9
    assert 0.75 < t < 0.85  # the lowest such threshold, not an arbitrary high one
    assert review_threshold(conf[:5], correct[:5]) == 0.5  # too little data
    assert review_threshold(conf, np.zeros(5000, bool)) == 1.0  # never precise enough


def test_best_f1_thresholds_per_label():
    task = TAX["issue_type"]
    n = 400
    rng = np.random.default_rng(1)
    target = (rng.uniform(size=(n, task.num_labels)) < 0.2).astype(np.float32)
    probs = np.where(target > 0, 0.35, 0.05) + rng.uniform(0, 0.04, size=target.shape)
    th = best_f1_thresholds(task, probs.astype(np.float32), target)
    assert all(0.05 < v <= 0.35 for v in th.values())  # separates 0.05-0.09 from 0.35-0.39


def test_calibrate_returns_both_entries():
    logits, y = _overconfident()
    cal, th = calibrate(TAX["sentiment"], logits, y, target_precision=0.8)
    assert (
        cal["temperature"] > 1 and 0 < th["review_threshold"] <= 1 and th["target_precision"] == 0.8
    )
    ml_logits = torch.randn((300, 13))
    ml_target = (torch.rand((300, 13)) < 0.2).float()
    cal, th = calibrate(TAX["issue_type"], ml_logits, ml_target)
    assert set(th["label_thresholds"]) == set(TAX["issue_type"].label_names)
    ord_logits = torch.randn((300, 3)).sort(dim=1, descending=True).values
    cal, th = calibrate(TAX["urgency"], ord_logits, torch.randint(0, 4, (300,)))
    assert cal["temperature"] > 0


def test_a_recall_weight_lowers_a_labels_threshold_to_catch_more():
    """F-beta (beta 2) for one label: its threshold drops to where recall rises at the
    cost of precision; the other labels keep their F1 thresholds."""
    task = TAX["issue_type"]
    n = 600
    rng = np.random.default_rng(2)
    target = (rng.uniform(size=(n, task.num_labels)) < 0.2).astype(np.float32)
    # positives spread over 0.2-0.8, negatives over 0.0-0.5: recall costs precision
    probs = np.where(
        target > 0, rng.uniform(0.2, 0.8, target.shape), rng.uniform(0, 0.5, target.shape)
    )
    probs = probs.astype(np.float32)
    label = task.label_names[0]
    f1 = best_f1_thresholds(task, probs, target)
    f2 = best_f1_thresholds(task, probs, target, recall_weights={label: 2.0})
    assert f2[label] < f1[label]
    assert {k: v for k, v in f2.items() if k != label} == {
        k: v for k, v in f1.items() if k != label
    }
    pos = target[:, 0] > 0
    assert (probs[pos, 0] >= f2[label]).mean() > (probs[pos, 0] >= f1[label]).mean()
    with pytest.raises(ValueError, match="not labels"):
        best_f1_thresholds(task, probs, target, recall_weights={"fire": 2.0})


@pytest.mark.parametrize(
    "weights,needle",
    [
        ({"sentiment": {"negative": 2.0}}, "not a multi-label task"),
        ({"issue_typ": {"safety_hazard": 2.0}}, "not a multi-label task"),
        ({"issue_type": {"fire": 2.0}}, "not labels"),
        ({"issue_type": {"safety_hazard": 0.0}}, "above 0"),
    ],
)
def test_recall_weights_that_cannot_apply_are_refused(weights, needle):
    with pytest.raises(ValueError, match=needle):
        check_recall_weights(TAX, weights)
    check_recall_weights(TAX, {"issue_type": {"safety_hazard": 2.0}})
