"""Experiment: per-class offsets on the log-probabilities of the single-label tasks
(sentiment, urgency), fitted to maximise macro-F1, so the rare classes (neutral, high,
critical) are called more often.

    python -m experiments.class_offsets --model var/models/starter

Only the model's validation rows (the dev rows it calibrated on; never its test rows):
they are cut in two by a hash of the text, offsets are fitted on one half (coordinate
ascent over a grid) and scored on the other, both ways round. Prints per language and
task the accuracy and macro-F1 without and with offsets (pooled, and per language).
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import numpy as np
from sklearn.metrics import accuracy_score, f1_score

from model.classifier import task_probs
from model.modeling import CarelensModel
from serving.inbound import detect_language
from training.data import split_bucket, targets
from training.pipeline import build_sets
from training.trainer import TrainConfig

GRID = np.round(np.arange(-2.0, 2.01, 0.1), 2)


def macro(gold: np.ndarray, pred: np.ndarray, k: int) -> float:
    return float(f1_score(gold, pred, labels=list(range(k)), average="macro", zero_division=0))


def fit_offsets(logp: np.ndarray, gold: np.ndarray, sweeps: int = 3) -> np.ndarray:
    k = logp.shape[1]
    b = np.zeros(k)
    best = macro(gold, logp.argmax(1), k)
    for _ in range(sweeps):
        for c in range(1, k):  # class 0 stays the reference
            for v in GRID:
                trial = b.copy()
                trial[c] = v
                score = macro(gold, (logp + trial).argmax(1), k)
                if score > best + 1e-9:
                    best, b = score, trial
    return b


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--model", type=Path, required=True)
    args = ap.parse_args()
    model = CarelensModel.from_pretrained(args.model)
    cfg = TrainConfig.from_dict(model.train_config)
    _, val, _ = build_sets(cfg, model.taxonomy)
    rows = [e for v in val.values() for e in v]
    logits, _ = model.batched_logits([e.text for e in rows], 64)
    y = targets(rows, model.taxonomy)
    lang = np.array([detect_language(e.text) for e in rows])
    fold = np.array([split_bucket(e.text + "#fold") < 0.5 for e in rows])
    corpus = np.array([str(e.meta.get("source", "")).startswith("corpus/") for e in rows])
    for task in model.taxonomy:
        if task.kind == "multilabel":
            continue
        logp = np.log(task_probs(task, logits[task.name]).numpy().clip(1e-7))
        gold = y[task.name].numpy()
        k = task.num_labels
        for scheme in ("pooled", "per language"):
            pred = logp.argmax(1).copy()
            for f in (True, False):
                groups = (
                    [np.ones(len(rows), bool)]
                    if scheme == "pooled"
                    else [lang == code for code in np.unique(lang)]
                )
                for g in groups:
                    fit, score = g & (fold == f) & (gold >= 0), g & (fold != f)
                    b = fit_offsets(logp[fit], gold[fit])
                    pred[score] = (logp[score] + b).argmax(1)
            for code in ("en", "zh"):
                for only_corpus in (False, True):
                    sel = (lang == code) & (gold >= 0) & (corpus if only_corpus else True)
                    base = logp[sel].argmax(1)
                    print(json.dumps({
                        "task": task.name, "scheme": scheme, "lang": code,
                        "rows": "corpus" if only_corpus else "all dev", "n": int(sel.sum()),
                        "acc": [round(accuracy_score(gold[sel], base), 3),
                                round(accuracy_score(gold[sel], pred[sel]), 3)],
                        "macro_f1": [round(macro(gold[sel], base, k), 3),
                                     round(macro(gold[sel], pred[sel], k), 3)],
                    }))  # fmt: skip


if __name__ == "__main__":
    main()
