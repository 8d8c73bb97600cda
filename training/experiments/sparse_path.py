"""Experiment: the sparse TF-IDF path alone against the TF-IDF floor, per source.

    python -m training.experiments.sparse_path [--config data/configs/starter.yaml] [--fit rest|all]

Fits the model's sparse path (hashed n-grams, logistic regression) on the starter
config's rows that fine-tuning leaves out (``rest``) or on all training rows (``all``),
and scores it beside ``training.evaluate.TfidfBaseline`` (fitted on all training rows)
on each source's validation rows (up to max_val_rows_per_source).
"""

from __future__ import annotations

import argparse
import json
import time

import numpy as np
import torch

from model.classifier import ModelConfig
from model.ngrams import NgramConfig, SparseConfig
from model.pretrained import CarelensModel
from training.evaluate import TfidfBaseline
from training.pipeline import build_sets, load_taxonomy
from training.sparse import fit_sparse
from training.trainer import TrainConfig, quick_scores


def sparse_probs(model: CarelensModel, texts: list[str]) -> dict[str, np.ndarray]:
    clf = model.classifier
    out: dict[str, list[np.ndarray]] = {t.name: [] for t in model.taxonomy}
    for i in range(0, len(texts), 256):
        batch = model.encode(texts[i : i + 256])
        with torch.no_grad():
            s = clf.sparse_logits(batch.sparse_ids, batch.sparse_tf)
        for task in model.taxonomy:
            lo, hi = clf.sparse_slices[task.name]
            z = s[:, lo:hi]
            p = torch.sigmoid(z) if task.kind == "multilabel" else torch.softmax(z, -1)
            out[task.name].append(p.numpy())
    return {k: np.concatenate(v) for k, v in out.items()}


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--config", default="data/configs/starter.yaml")
    ap.add_argument("--fit", choices=["rest", "all"], default="rest")
    ap.add_argument("--c", type=float, default=4.0)
    ap.add_argument("--buckets", type=int, default=1 << 20)
    args = ap.parse_args()
    cfg = TrainConfig.from_file(args.config)
    taxonomy = load_taxonomy(cfg)
    train_rows, val, rest = build_sets(cfg, taxonomy)
    uniq = list({id(r): r for r in train_rows}.values())
    fit_rows = rest if args.fit == "rest" else uniq + rest
    print(f"fine-tune rows {len(uniq)}, rest {len(rest)}, fitting on {len(fit_rows)}")
    model = CarelensModel.from_backbone(
        None,
        taxonomy,
        ModelConfig(
            ngram=NgramConfig(enabled=False),
            sparse=SparseConfig(enabled=True, buckets=args.buckets),
        ),
    )
    summary = fit_sparse(model, fit_rows, c=args.c)
    t0 = time.perf_counter()
    base = TfidfBaseline(taxonomy).fit(uniq + rest)
    base_s = time.perf_counter() - t0
    th = {t.name: {"review_threshold": 0.5} for t in taxonomy}
    table = {}
    for name, rows in val.items():
        texts = [e.text for e in rows]
        ours = quick_scores(model, sparse_probs(model, texts), rows, th)
        floor = quick_scores(model, base.predict_proba(texts), rows, th)
        table[name] = {k: (round(ours[k], 3), round(floor[k], 3)) for k in ours}
        print(name, len(rows), table[name], flush=True)
    print(json.dumps({"sparse_fit_s": summary["seconds"], "floor_fit_s": round(base_s, 1)}))


if __name__ == "__main__":
    main()
