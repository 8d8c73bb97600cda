"""Experiment: how much of the sparse n-gram path to add to the encoder heads' logits.

    python -m experiments.sparse_mix --model var/models/starter

The model's output per task is its heads' logits plus the sparse path's
(``combine_sparse``). This scores ``heads + a * sparse`` for a few weights ``a``: each
variant is calibrated on the model's validation rows (temperature and thresholds, as
``calibrate_model`` does) and scored on the corpus's test rows per language (issue-type
micro- and macro-F1, sentiment and urgency macro-F1; rated rows read with their rating,
no critical rules). ``a = 1`` is the shipped model, ``a = 0`` the encoder alone.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import numpy as np
import torch

from model.calibration import calibrate
from model.classifier import combine_sparse, task_probs
from model.modeling import CarelensModel
from model.predictor import rated_text
from training.data import example_rating, targets
from training.pipeline import build_sets, held_out_sets
from training.trainer import TrainConfig


def parts(model: CarelensModel, texts: list[str]) -> tuple[dict, dict]:
    """Per task, the heads' raw logits (sparse path silenced) and the sparse path's."""
    clf = model.classifier
    weight, bias = clf.sparse_table.weight.data.clone(), clf.sparse_bias.data.clone()
    clf.sparse_table.weight.data.zero_()
    clf.sparse_bias.data.zero_()
    try:
        heads, _ = model.batched_logits(texts, 64, calibrated=False)
    finally:
        clf.sparse_table.weight.data.copy_(weight)
        clf.sparse_bias.data.copy_(bias)
    sparse = {}
    with torch.no_grad():
        chunks = []
        for start in range(0, len(texts), 256):
            ids, tf = clf.sparse_inputs(texts[start : start + 256])
            chunks.append(clf.sparse_logits(ids, tf))
        both = torch.cat(chunks)
    for task in model.taxonomy:
        lo, hi = clf.sparse_slices[task.name]
        sparse[task.name] = both[:, lo:hi]
    return heads, sparse


def fit_scales(task, heads: torch.Tensor, sparse: torch.Tensor, target: torch.Tensor):
    """(head scale, sparse scale) minimising the validation NLL of their combination."""
    from model.calibration import _labelled
    from model.classifier import task_loss

    mask = _labelled(task, target)
    h, s, t = heads[mask].float(), sparse[mask].float(), target[mask]
    logs = torch.zeros(2, requires_grad=True)
    opt = torch.optim.LBFGS([logs], lr=0.1, max_iter=200, line_search_fn="strong_wolfe")

    def closure():
        opt.zero_grad()
        loss, _ = task_loss(task, combine_sparse(task, logs[0].exp() * h, logs[1].exp() * s), t)
        loss.backward()
        return loss

    opt.step(closure)
    return [round(float(x), 3) for x in logs.detach().exp()]


def scores(task, probs: np.ndarray, target: np.ndarray, th: dict) -> tuple[float, float]:
    from sklearn.metrics import f1_score

    if task.kind == "multilabel":
        keep = (target >= 0).all(1)
        gold = target[keep] > 0.5
        cut = np.array([th["label_thresholds"][n] for n in task.label_names])
        pred = probs[keep] >= cut
        sup = gold.sum(0) > 0
        micro = f1_score(gold, pred, average="micro", zero_division=0)
        macro = f1_score(gold[:, sup], pred[:, sup], average="macro", zero_division=0)
        return round(float(micro), 3), round(float(macro), 3)
    keep = target >= 0
    gold, pred = target[keep], probs[keep].argmax(1)
    acc = float((gold == pred).mean())
    return round(acc, 3), round(float(f1_score(gold, pred, average="macro")), 3)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--model", type=Path, required=True)
    ap.add_argument("--weights", type=float, nargs="+", default=[0.0, 0.25, 0.5, 0.75, 1.0])
    ap.add_argument("--head-weights", type=float, nargs="+", default=[1.0])
    ap.add_argument("--fit", action="store_true", help="fit both scales on the validation NLL")
    args = ap.parse_args()
    model = CarelensModel.from_pretrained(args.model)
    cfg = TrainConfig.from_dict(model.train_config)
    _, val, _ = build_sets(cfg, model.taxonomy)
    val_rows = [e for v in val.values() for e in v]
    test_rows = held_out_sets(cfg, model.taxonomy)["corpus"]
    lang = np.array([e.meta.get("lang") for e in test_rows])
    # validation rows already read their rating (``with_ratings``); test rows as evaluate
    vh, vs = parts(model, [e.text for e in val_rows])
    th_, ts = parts(model, [rated_text(e.text, example_rating(e)) for e in test_rows])
    vy, ty = targets(val_rows, model.taxonomy), targets(test_rows, model.taxonomy)
    for task in model.taxonomy:
        if args.fit:
            h, a = fit_scales(task, vh[task.name], vs[task.name], vy[task.name])
            args.head_weights, args.weights = [1.0, h], [1.0, a]
        for h, a in ((h, a) for h in args.head_weights for a in args.weights):
            v = combine_sparse(task, h * vh[task.name], a * vs[task.name])
            cal, th = calibrate(task, v, vy[task.name], cfg.target_precision)
            t = combine_sparse(task, h * th_[task.name], a * ts[task.name]) / cal["temperature"]
            probs = task_probs(task, t).numpy()
            out = {"task": task.name, "head_weight": h, "weight": a}
            for code in ("en", "zh"):
                sel = lang == code
                out[code] = scores(task, probs[sel], ty[task.name].numpy()[sel], th)
            print(json.dumps(out))


if __name__ == "__main__":
    main()
