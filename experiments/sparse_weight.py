"""Experiment: should the sparse path's logits and the heads' be weighed, per task?

    python -m experiments.sparse_weight --model var/models/starter

The model adds the sparse path's logits to each head's (``combine_sparse``) with weight
1. The encoder learned its correction against a sparse path fitted on other rows, and
the path is then refitted on all training rows, so the two may be better weighed as
``a * head (+) b * sparse`` per task. This fits (a, b) per task by negative
log-likelihood on one half of the dev rows (split by text hash; never the test rows),
calibrates as the pipeline does (temperature, thresholds) on that half, scores the other
half, and swaps: every figure is out-of-fold. Printed per source and task: the
weights-1 model against the weighed one (mean of the two folds' headline figures,
weighted by the source's rows in each fold), the corpus's rows per language.
"""

from __future__ import annotations

import argparse
import hashlib

import numpy as np
import torch

from model.calibration import calibrate
from model.classifier import combine_sparse, task_loss, task_probs
from model.modeling import CarelensModel
from training.data import targets
from training.pipeline import held_out_sets
from training.trainer import TrainConfig, quick_scores


@torch.inference_mode()
def head_and_sparse(model: CarelensModel, texts: list[str]):
    """Each task's head logits without the sparse path, and the sparse path's logits."""
    clf = model.classifier
    w, b = clf.sparse_table.weight.data.clone(), clf.sparse_bias.data.clone()
    clf.sparse_table.weight.data.zero_()
    clf.sparse_bias.data.zero_()
    try:
        heads, _ = model.batched_logits(texts, 64, calibrated=False)
    finally:
        clf.sparse_table.weight.data.copy_(w)
        clf.sparse_bias.data.copy_(b)
    sparse = []
    for i in range(0, len(texts), 256):
        ids, tf = clf.sparse_inputs(texts[i : i + 256])
        sparse.append(clf.sparse_logits(ids, tf))
    both = torch.cat(sparse)
    return heads, {t.name: both[:, slice(*clf.sparse_slices[t.name])] for t in model.taxonomy}


def fit_weights(task, head, sparse, target) -> tuple[float, float]:
    """(a, b) minimising the NLL of combine_sparse(a * head, b * sparse)."""
    log_ab = torch.zeros(2, requires_grad=True)
    opt = torch.optim.LBFGS([log_ab], lr=0.1, max_iter=100, line_search_fn="strong_wolfe")

    def closure():
        opt.zero_grad()
        a, b = log_ab.exp()
        loss, _ = task_loss(task, combine_sparse(task, a * head, b * sparse), target)
        loss.backward()
        return loss

    opt.step(closure)
    a, b = log_ab.detach().exp().clamp(0.05, 20.0)
    return float(a), float(b)


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--model", default="var/models/starter")
    args = ap.parse_args()
    model = CarelensModel.from_pretrained(args.model)
    cfg = TrainConfig.from_dict(model.train_config)
    sets = held_out_sets(cfg, model.taxonomy, "dev")
    rows = [ex for part in sets.values() for ex in part]
    heads, sparse = head_and_sparse(model, [e.text for e in rows])
    y = targets(rows, model.taxonomy)
    fold = np.array([hashlib.sha1(e.text.encode()).digest()[0] % 2 for e in rows])
    # the corpus's rows pooled per language (its sources are "corpus/<source>")
    src = np.array(
        [
            f"corpus ({e.meta.get('lang')})"
            if e.meta["source"].startswith("corpus")
            else e.meta["source"]
            for e in rows
        ]
    )
    groups = list(dict.fromkeys(src))
    results: dict[tuple[str, str, str], list[tuple[float, int]]] = {}
    for k in (0, 1):
        fit, ev = np.flatnonzero(fold == k), np.flatnonzero(fold != k)
        for variant in ("weights 1", "weighed"):
            th, probs = {}, {}
            for task in model.taxonomy:
                h, s, t = heads[task.name], sparse[task.name], y[task.name]
                a, b = (1.0, 1.0)
                if variant == "weighed":
                    a, b = fit_weights(task, h[fit], s[fit], t[fit])
                    print(f"fold {k} {task.name}: a={a:.3f} b={b:.3f}")
                z = combine_sparse(task, a * h, b * s)
                cal, th[task.name] = calibrate(task, z[fit], t[fit], cfg.target_precision)
                probs[task.name] = task_probs(task, z[ev] / cal["temperature"]).numpy()
            for name in groups:
                idx = np.flatnonzero(src[ev] == name)
                part = [rows[i] for i in ev[idx]]
                sc = quick_scores(model, {t: p[idx] for t, p in probs.items()}, part, th)
                for task_name, v in sc.items():
                    results.setdefault((name, task_name, variant), []).append((v, len(idx)))
    print(f"\n{'source':28s} {'task':12s} {'weights 1':>9s} {'weighed':>8s}")
    for name in groups:
        for task in model.taxonomy:
            cells = [results.get((name, task.name, v)) for v in ("weights 1", "weighed")]
            if not cells[0]:
                continue
            means = [sum(v * n for v, n in c) / max(1, sum(n for _, n in c)) for c in cells]
            print(f"{name:28s} {task.name:12s} {means[0]:9.3f} {means[1]:8.3f}")


if __name__ == "__main__":
    main()
