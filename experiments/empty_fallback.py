"""Experiment: when no issue type passes its threshold, take the one nearest to its own
(the highest probability / threshold), if that ratio reaches a floor ``r``.

    python -m experiments.empty_fallback --model var/models/starter

Only the model's validation rows (the dev rows it calibrated on; never its test rows):
they are cut in two by a hash of the text, ``r`` is chosen on one half (the micro-F1
of the issue-type sets over a grid) and scored on the other, both ways round. Prints
per language the micro- and macro-F1 of the issue-type sets with and without the
fallback, the share of rows whose gold set is empty and whose predicted set is empty,
and the ``r`` each fold chose.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import numpy as np

from experiments.lang_thresholds import f1s, issue_dev_rows
from model.modeling import CarelensModel

GRID = np.round(np.arange(0.2, 1.001, 0.05), 2)


def with_fallback(probs: np.ndarray, th: np.ndarray, r: float) -> np.ndarray:
    """Threshold decisions, plus the nearest label on rows left empty whose
    probability / threshold ratio is at least ``r``."""
    pred = probs >= th
    ratio = probs / th
    best = ratio.argmax(1)
    add = (~pred.any(1)) & (ratio[np.arange(len(probs)), best] >= r)
    pred[np.flatnonzero(add), best[add]] = True
    return pred


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--model", type=Path, required=True)
    args = ap.parse_args()
    model = CarelensModel.from_pretrained(args.model)
    task = model.taxonomy["issue_type"]
    probs, target, lang, fold = issue_dev_rows(model)
    gold = target > 0.5
    label_th = model.thresholds[task.name].get("label_thresholds", {})
    th = np.array([label_th.get(n, 0.5) for n in task.label_names])
    plain = probs >= th
    fallback = np.zeros_like(gold)
    chosen = []
    for f in (True, False):
        fit, score = fold == f, fold != f
        r = max(GRID, key=lambda r: f1s(gold[fit], with_fallback(probs[fit], th, r))[0])
        chosen.append(float(r))
        fallback[score] = with_fallback(probs[score], th, r)
    for code in np.unique(lang):
        sel = lang == code
        for name, pred in (("thresholds", plain), ("with fallback", fallback)):
            micro, macro = f1s(gold[sel], pred[sel])
            print(json.dumps({"lang": str(code), "rows": int(sel.sum()), "scheme": name,
                              "micro_f1": micro, "macro_f1": macro,
                              "gold_empty": round(float((~gold[sel].any(1)).mean()), 3),
                              "predicted_empty": round(float((~pred[sel].any(1)).mean()), 3)}))  # fmt: skip
    print(json.dumps({"r_per_fold": chosen}))


if __name__ == "__main__":
    main()
