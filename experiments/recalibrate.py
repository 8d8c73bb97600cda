"""Experiment: calibrate a built model again on its own dev rows with other decision
settings, and save the copy, so ``carelens evaluate`` can score it beside the original.

    python -m experiments.recalibrate --model var/models/starter \\
        --recall-weight issue_type.safety_hazard=2 --out var/models/starter-f2
    carelens evaluate --model var/models/starter-f2 --held-out --no-baseline --no-record

The validation rows are those the build calibrated on (``build_sets`` of the model's
own ``train_config.json``; never its test rows); the weights and the encoder stay.
"""

from __future__ import annotations

import argparse
from pathlib import Path

from model.modeling import CarelensModel
from training.pipeline import build_sets, calibrate_model
from training.trainer import TrainConfig


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--model", type=Path, required=True)
    ap.add_argument("--out", type=Path, required=True)
    ap.add_argument(
        "--recall-weight",
        action="append",
        default=[],
        metavar="TASK.LABEL=BETA",
        help="a label whose threshold maximises F-beta (repeatable)",
    )
    args = ap.parse_args()
    model = CarelensModel.from_pretrained(args.model)
    weights: dict[str, dict[str, float]] = {}
    for item in args.recall_weight:
        key, _, beta = item.partition("=")
        task, _, label = key.partition(".")
        weights.setdefault(task, {})[label] = float(beta)
    cfg = TrainConfig.from_dict({**model.train_config, "recall_weights": weights})
    _, val, _ = build_sets(cfg, model.taxonomy)
    calibrate_model(model, [e for v in val.values() for e in v], cfg.target_precision, weights)
    model.train_config = cfg.to_dict()
    model.save_pretrained(args.out)
    for task, th in model.thresholds.items():
        for label in weights.get(task, {}):
            print(f"{task}.{label}: threshold {th['label_thresholds'][label]}")


if __name__ == "__main__":
    main()
