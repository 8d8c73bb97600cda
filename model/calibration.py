"""Calibration and review thresholds, fitted on validation data.

- Temperature scaling per head: one scalar ``T`` per task minimising the validation
  negative log-likelihood of ``logits / T`` (softmax, sigmoid or ordered-logit).
- ``needs_review`` thresholds: the lowest confidence ``t`` such that predictions with
  confidence >= t are right at least ``target_precision`` of the time on validation
  data (exact label set for multi-label tasks); below ``t`` a person should look.
- Multi-label decision thresholds: per label, the threshold that maximises F1 on the
  validation rows labelled for the task, or F-beta for a label whose misses cost more
  than its false alarms (``recall_weights``: beta, recall weighing beta times as much).
"""

from __future__ import annotations

import numpy as np
import torch

from model.classifier import IGNORE_INDEX, task_loss, task_probs
from model.taxonomy import Task, Taxonomy


def _labelled(task: Task, target: torch.Tensor) -> torch.Tensor:
    return (target >= 0).all(1) if task.kind == "multilabel" else target != IGNORE_INDEX


def fit_temperature(
    task: Task, logits: torch.Tensor, target: torch.Tensor, max_iter: int = 100
) -> float:
    """The temperature (0.05..20) minimising NLL on the labelled rows; 1.0 without any."""
    mask = _labelled(task, target)
    if int(mask.sum()) < 2:
        return 1.0
    logits, target = logits[mask].detach().float(), target[mask]
    log_t = torch.zeros(1, requires_grad=True)
    opt = torch.optim.LBFGS([log_t], lr=0.1, max_iter=max_iter, line_search_fn="strong_wolfe")

    def closure():
        opt.zero_grad()
        loss, _ = task_loss(task, logits / log_t.exp(), target)
        loss.backward()
        return loss

    opt.step(closure)
    return float(log_t.detach().exp().clamp(0.05, 20.0))


def confidence_and_correct(
    task: Task, probs: np.ndarray, target: np.ndarray, label_thresholds: np.ndarray | None = None
) -> tuple[np.ndarray, np.ndarray]:
    """Per labelled row: the Predictor's confidence and whether its decision is right."""
    if task.kind == "multilabel":
        mask = (target >= 0).all(1)
        p, t = probs[mask], target[mask] > 0.5
        th = label_thresholds if label_thresholds is not None else np.full(p.shape[1], 0.5)
        pred = p >= th
        conf = np.where(pred, p, 1.0 - p).min(1)
        return conf, (pred == t).all(1)
    mask = target >= 0
    p, t = probs[mask], target[mask]
    return p.max(1), p.argmax(1) == t


def review_threshold(
    confidence: np.ndarray, correct: np.ndarray, target_precision: float = 0.9, min_rows: int = 20
) -> float:
    """Lowest threshold whose accepted set (confidence >= t) reaches the target precision.

    Returns 1.0 (review everything) if no threshold with at least ``min_rows`` accepted
    rows reaches it, 0.5 if there is too little data to decide."""
    if len(confidence) < min_rows:
        return 0.5
    order = np.argsort(-confidence)
    conf, ok = confidence[order], correct[order].astype(float)
    precision = np.cumsum(ok) / np.arange(1, len(ok) + 1)
    best = None
    for k in range(min_rows - 1, len(conf)):
        if precision[k] >= target_precision and (k + 1 == len(conf) or conf[k + 1] < conf[k]):
            best = float(conf[k])
    return round(best, 6) if best is not None else 1.0


def best_f1_thresholds(
    task: Task,
    probs: np.ndarray,
    target: np.ndarray,
    grid: np.ndarray | None = None,
    recall_weights: dict[str, float] | None = None,
) -> dict[str, float]:
    """Per label, the decision threshold maximising F1 on labelled rows (0.5 if the
    label never occurs in the validation data); F-beta for the labels of
    ``recall_weights`` (label: beta)."""
    grid = grid if grid is not None else np.round(np.arange(0.05, 0.96, 0.025), 3)
    recall_weights = recall_weights or {}
    unknown = sorted(set(recall_weights) - set(task.label_names))
    if unknown:
        raise ValueError(f"recall_weights: {unknown} are not labels of {task.name}")
    mask = (target >= 0).all(1)
    p, t = probs[mask], target[mask] > 0.5
    out = {}
    for j, name in enumerate(task.label_names):
        if t[:, j].sum() == 0:
            out[name] = 0.5
            continue
        best_score, best_th = -1.0, 0.5
        b2 = float(recall_weights.get(name, 1.0)) ** 2
        for th in grid:
            pred = p[:, j] >= th
            tp = float((pred & t[:, j]).sum())
            score = (1 + b2) * tp / (pred.sum() + b2 * t[:, j].sum())  # F-beta (F1: beta 1)
            if score > best_score + 1e-9:
                best_score, best_th = score, float(th)
        out[name] = best_th
    return out


def check_recall_weights(taxonomy: Taxonomy, weights: dict[str, dict[str, float]]) -> None:
    """Refuse recall weights ({task: {label: beta}}) for a task that is not a multi-label
    task of ``taxonomy``, a label it does not have, or a beta that is not above 0."""
    for name, labels in weights.items():
        if name not in taxonomy or taxonomy[name].kind != "multilabel":
            raise ValueError(f"recall_weights: {name!r} is not a multi-label task of the taxonomy")
        unknown = sorted(set(labels) - set(taxonomy[name].label_names))
        if unknown:
            raise ValueError(f"recall_weights: {unknown} are not labels of {name}")
        bad = {label: beta for label, beta in labels.items() if not float(beta) > 0}
        if bad:
            raise ValueError(f"recall_weights.{name}: beta must be above 0, got {bad}")


def calibrate(
    task: Task,
    logits: torch.Tensor,
    target: torch.Tensor,
    target_precision: float = 0.9,
    recall_weights: dict[str, float] | None = None,
) -> tuple[dict[str, float], dict[str, object]]:
    """Fit temperature and thresholds for one task: (calibration entry, thresholds entry).
    ``recall_weights`` (label: beta) set those labels' thresholds by F-beta."""
    temperature = fit_temperature(task, logits, target)
    probs = task_probs(task, logits / temperature).detach().numpy()
    tgt = target.numpy()
    thresholds: dict[str, object] = {}
    label_th = None
    if task.kind == "multilabel":
        per_label = best_f1_thresholds(task, probs, tgt, recall_weights=recall_weights)
        thresholds["label_thresholds"] = per_label
        label_th = np.array([per_label[n] for n in task.label_names])
    conf, correct = confidence_and_correct(task, probs, tgt, label_th)
    thresholds["review_threshold"] = review_threshold(conf, correct, target_precision)
    thresholds["target_precision"] = target_precision
    return {"temperature": round(temperature, 6)}, thresholds
