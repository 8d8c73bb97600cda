"""Experiment: one decision threshold per issue type for every language, or one per
language (falling back to the pooled one where a language has few positives of a label).

    python -m experiments.lang_thresholds --model var/models/starter

Only the model's validation rows (the dev rows it calibrated on; never its test rows):
they are cut in two by a hash of the text, thresholds are fitted on one half the way
calibration fits them (``best_f1_thresholds``) and scored on the other, both ways round.
Prints per language the micro- and macro-F1 of the issue-type sets under each scheme,
summed over the two folds' predictions.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import numpy as np

from model.calibration import best_f1_thresholds
from model.classifier import task_probs
from model.modeling import CarelensModel
from serving.inbound import detect_language
from training.data import split_bucket, targets
from training.pipeline import build_sets
from training.trainer import TrainConfig


def f1s(gold: np.ndarray, pred: np.ndarray) -> tuple[float, float]:
    from sklearn.metrics import f1_score

    sup = gold.sum(0) > 0
    micro = f1_score(gold, pred, average="micro", zero_division=0)
    macro = f1_score(gold[:, sup], pred[:, sup], average="macro", zero_division=0)
    return round(float(micro), 3), round(float(macro), 3)


def issue_dev_rows(
    model: CarelensModel,
) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """The issue-type probabilities and targets of the model's validation rows labelled
    for issue types, each row's language, and a fold (a hash of the text) cutting them
    in two."""
    task = model.taxonomy["issue_type"]
    cfg = TrainConfig.from_dict(model.train_config)
    _, val, _ = build_sets(cfg, model.taxonomy)
    rows = [e for v in val.values() for e in v]
    logits, _ = model.batched_logits([e.text for e in rows], 64)
    probs = task_probs(task, logits[task.name]).numpy()
    target = targets(rows, model.taxonomy)[task.name].numpy()
    keep = (target >= 0).all(1)
    kept = [e for e, k in zip(rows, keep, strict=True) if k]
    lang = np.array([detect_language(e.text) for e in kept])
    fold = np.array([split_bucket(e.text + "#fold") < 0.5 for e in kept])
    return probs[keep], target[keep], lang, fold


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--model", type=Path, required=True)
    ap.add_argument("--min-positives", type=int, nargs="+", default=[3, 5, 10])
    args = ap.parse_args()
    model = CarelensModel.from_pretrained(args.model)
    task = model.taxonomy["issue_type"]
    probs, target, lang, fold = issue_dev_rows(model)
    gold = target > 0.5
    schemes: dict[str, np.ndarray] = {"pooled": np.zeros_like(gold)}
    for m in args.min_positives:
        schemes[f"per language (min {m} positives)"] = np.zeros_like(gold)
    for f in (True, False):
        fit, score = fold == f, fold != f
        pooled = best_f1_thresholds(task, probs[fit], target[fit])
        th_pooled = np.array([pooled[n] for n in task.label_names])
        schemes["pooled"][score] = probs[score] >= th_pooled
        for m in args.min_positives:
            out = schemes[f"per language (min {m} positives)"]
            for code in np.unique(lang):
                sel_fit, sel_score = fit & (lang == code), score & (lang == code)
                own = best_f1_thresholds(task, probs[sel_fit], target[sel_fit])
                enough = gold[sel_fit].sum(0) >= m
                th = np.where(enough, [own[n] for n in task.label_names], th_pooled)
                out[sel_score] = probs[sel_score] >= th
    for code in np.unique(lang):
        sel = lang == code
        for name, pred in schemes.items():
            micro, macro = f1s(gold[sel], pred[sel])
            print(json.dumps({"lang": str(code), "rows": int(sel.sum()), "scheme": name,
                              "micro_f1": micro, "macro_f1": macro}))  # fmt: skip


if __name__ == "__main__":
    main()
