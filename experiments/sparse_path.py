"""Experiment: the sparse TF-IDF path alone, against the TF-IDF floor or the whole model.

    python -m experiments.sparse_path [--config data/configs/starter.yaml] [--fit rest|all]
    python -m experiments.sparse_path --model var/models/starter [--source NAME ...]
        [--changes TASK]

Without ``--model``: fits the sparse path (the floor's n-grams, logistic regression) of a
fresh model on the config's rows that fine-tuning leaves out (``rest``) or on all
training rows (``all``), and scores it beside ``training.evaluate.TfidfBaseline``
(fitted on all training rows) on each source's validation (dev) rows (up to
max_val_rows_per_source). With ``--model``: scores that model's sparse path alone and
the whole model on each source's test rows (what the encoder adds); with
``--changes TASK`` (a single-label task) it also lists the rows where the encoder
changes the sparse path's label, with the gold one.
"""

from __future__ import annotations

import argparse
import json
import time

import numpy as np
import torch

from model.classifier import ModelConfig
from model.modeling import CarelensModel
from model.ngrams import NgramConfig, SparseConfig
from training.evaluate import TfidfBaseline
from training.pipeline import build_sets, held_out_sets, load_taxonomy
from training.sparse import fit_sparse
from training.trainer import TrainConfig, predict_probs, quick_scores


@torch.inference_mode()
def sparse_probs(model: CarelensModel, texts: list[str]) -> dict[str, np.ndarray]:
    """Each task's probabilities from the sparse path alone."""
    out: dict[str, list[np.ndarray]] = {t.name: [] for t in model.taxonomy}
    for i in range(0, len(texts), 256):
        ids, tf = model.classifier.sparse_inputs(texts[i : i + 256])
        for name, p in model.classifier.sparse_task_probs(ids, tf).items():
            out[name].append(p.numpy())
    return {k: np.concatenate(v) for k, v in out.items()}


def r3(scores: dict[str, float]) -> dict[str, float]:
    return {k: round(v, 3) for k, v in scores.items()}


def against_model(model_dir: str, sources: list[str], changes: str | None = None) -> None:
    model = CarelensModel.from_pretrained(model_dir)
    cfg = TrainConfig.from_dict(model.train_config)
    task = model.taxonomy[changes] if changes else None
    if task is not None and task.kind == "multilabel":
        raise SystemExit(f"--changes needs a single-label task, not {changes}")
    for name, rows in held_out_sets(cfg, model.taxonomy).items():
        if sources and name not in sources:
            continue
        sparse = sparse_probs(model, [e.text for e in rows])
        whole_p = predict_probs(model, rows, calibrated=True)
        alone = quick_scores(model, sparse, rows)
        whole = quick_scores(model, whole_p, rows, model.thresholds)
        print(f"{name} n={len(rows)} sparse path alone {r3(alone)}  whole model {r3(whole)}")
        if task is None:
            continue
        names = task.label_names
        for i, ex in enumerate(rows):
            gold = ex.labels.get(task.name)
            a, w = (
                names[int(sparse[task.name][i].argmax())],
                names[int(whole_p[task.name][i].argmax())],
            )
            if gold and a != w:
                verdict = "fixed" if w == gold[0] else "broken" if a == gold[0] else "still wrong"
                print(
                    f"  {verdict:11s} gold {gold[0]:10s} sparse {a:10s} model {w:10s} {ex.text[:90]!r}"
                )


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--config", default="data/configs/starter.yaml")
    ap.add_argument("--fit", choices=["rest", "all"], default="rest")
    ap.add_argument("--c", type=float, default=4.0)
    ap.add_argument("--model", help="score this model's sparse path against the whole model")
    ap.add_argument("--source", action="append", default=[], help="with --model: only these")
    ap.add_argument("--changes", help="with --model: list rows where the encoder changes TASK")
    args = ap.parse_args()
    if args.model:
        against_model(args.model, args.source, args.changes)
        return
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
            sparse=SparseConfig(enabled=True),
        ),
    )
    summary = fit_sparse(model, fit_rows, c=args.c)
    t0 = time.perf_counter()
    base = TfidfBaseline(taxonomy).fit(uniq + rest)
    base_s = time.perf_counter() - t0
    th = {t.name: {"review_threshold": 0.5} for t in taxonomy}
    for name, rows in val.items():
        texts = [e.text for e in rows]
        ours = quick_scores(model, sparse_probs(model, texts), rows, th)
        floor = quick_scores(model, base.predict_proba(texts), rows, th)
        print(name, len(rows), {k: (round(ours[k], 3), round(floor[k], 3)) for k in ours})
    print(json.dumps({"sparse_fit_s": summary["seconds"], "floor_fit_s": round(base_s, 1)}))


if __name__ == "__main__":
    main()
