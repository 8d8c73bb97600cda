"""Experiment: what the public positive/negative sources do to the TF-IDF floor's
sentiment on the corpus's Chinese rows, whose neutral class they never label.

    python -m experiments.floor_neutral [--config data/configs/starter.yaml]

The floor's sentiment regression (the sparse path's features, ``TfidfBaseline``) is
fitted twice on the config's training rows: on all of them, and without the rows of
the Chinese public sources (``chinese_*``: positive or negative only). Both are scored
on the corpus's Chinese dev rows (never its test rows): accuracy, macro-F1 and F1 per
class, one JSON line per fit.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import numpy as np
from sklearn.metrics import f1_score

from training.evaluate import TfidfBaseline
from training.pipeline import load_taxonomy, split_sources
from training.trainer import TrainConfig


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--config", type=Path, default=Path("data/configs/starter.yaml"))
    args = ap.parse_args()
    cfg = TrainConfig.from_file(args.config, {})
    taxonomy = load_taxonomy(cfg)
    task = taxonomy["sentiment"]
    # only the sentiment task is fitted: the other tasks' labels are dropped
    sentiment_only = type(taxonomy)((task,))
    train, dev = [], []
    for spec, _, tr, dv, _ in split_sources(cfg, taxonomy):
        train += [e for e in tr if e.labels.get("sentiment")]
        if "corpus" in spec:
            dev += [e for e in dv if e.meta.get("lang") == "zh" and e.labels.get("sentiment")]
    gold = np.array([task.label2id[e.labels["sentiment"][0]] for e in dev])
    fits = {
        "all training rows": train,
        "without chinese_* public rows": [e for e in train if not e.source.startswith("chinese_")],
    }
    for name, rows in fits.items():
        floor = TfidfBaseline(sentiment_only).fit(rows)
        pred = floor.predict_proba([e.text for e in dev])["sentiment"].argmax(1)
        per_class = f1_score(gold, pred, labels=range(task.num_labels), average=None)
        print(json.dumps({
            "fit": name, "train_rows": len(rows), "dev_rows": len(dev),
            "accuracy": round(float((pred == gold).mean()), 3),
            "macro_f1": round(float(f1_score(gold, pred, average="macro")), 3),
            "f1": {n: round(float(f), 3) for n, f in zip(task.label_names, per_class, strict=True)},
            "predicted_neutral": int((pred == task.label2id["neutral"]).sum()),
            "gold_neutral": int((gold == task.label2id["neutral"]).sum()),
        }, ensure_ascii=False))  # fmt: skip


if __name__ == "__main__":
    main()
