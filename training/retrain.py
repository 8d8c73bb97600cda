"""Retraining from agents' labelled tickets, with a label audit and a promotion gate.

``retrain(labels_file, registry, cfg)``:

1. the registry's active version is the parent (an empty registry first imports the
   base model, e.g. the starter model, as ``v0001``);
2. the labelled tickets (the export format of ``GET /v1/labels/export``) are read and
   de-duplicated by text; the newest ``holdout_fraction`` (by labelling time) are held
   out to judge the candidate, the rest are training rows;
3. cleanlab audits the agents' labels (``training.audit``); flagged labels are
   reported, and masked out only with ``exclude_flagged``;
4. the frozen evaluation set is read from the registry, or chosen now (first
   retrain): up to ``frozen_rows_per_source`` rows of each public source's text-hash
   test rows (never trained or calibrated on), or the held-out tickets if there is no
   public data. It never changes afterwards;
5. the candidate is fine-tuned from the active model (or the backbone) on the training
   tickets (weight ``ticket_weight``) plus a replay sample of the public sources'
   training rows, then re-calibrated on the public sources' dev rows (the rows the
   active model calibrated on), outside the frozen set;
6. the candidate and the active model are scored on the same rows: the frozen set and
   the held-out tickets (headline per task: accuracy, micro-F1 for multi-label tasks;
   the frozen figure is the mean over (source, task) cells);
7. the gate: promote only if the candidate is not worse on the frozen set by more
   than ``tolerance`` (mean) nor in any one (source, task) cell by more than
   ``max_cell_drop`` than the active model AND than the first version ever promoted
   (so quality cannot slide a little with every promotion), AND significantly better
   on the held-out tickets: at least ``min_judged`` of them, and the one-sided
   ``confidence`` lower bound of a paired bootstrap of the per-ticket gain above
   ``min_gain``. Either way the candidate is kept as a version with the decision, the
   reason and every set of metrics (registry ``version.json`` and the returned result).
"""

from __future__ import annotations

import hashlib
import json
import logging
import random
import time
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from model.classifier import ModelConfig
from model.modeling import CarelensModel
from model.ngrams import NgramConfig
from model.paths import default_model_dir
from model.registry import Registry, write_json_atomic
from model.settings import RetrainConfig
from model.tokenization import is_cjk
from training.audit import audit_labels, exclude_flagged
from training.data import (
    DataError,
    Example,
    _rows,
    label_counts,
    label_shares,
    normalise_for_hash,
    read_labelled,
    targets,
    three_way_split,
)
from training.pipeline import calibrate_model, load_spec
from training.sources import SourceError
from training.trainer import TrainConfig, predict_probs, quick_scores, train

log = logging.getLogger(__name__)

Progress = Callable[[str, float, str], None]


class RetrainError(ValueError):
    """Retraining cannot run; the message says what to fix."""


@dataclass
class EvalSets:
    frozen: list[Example]
    holdout: list[Example]
    frozen_id: str
    frozen_info: dict[str, Any] = field(default_factory=dict)


# -- data ----------------------------------------------------------------------------


def read_tickets(path: str | Path, taxonomy) -> list[Example]:
    """The exported labelled tickets, with ``labelled_at``/``labelled_by`` kept in
    ``meta``; duplicates by normalised text keep the latest labels."""
    path = Path(path)
    examples = read_labelled(path, taxonomy, source="tickets")
    raw = [row for _, row in _rows(path)]
    if len(raw) == len(examples):
        for ex, row in zip(examples, raw, strict=True):
            for key in ("labelled_at", "labelled_by"):
                if row.get(key):
                    ex.meta[key] = str(row[key])
    by_text: dict[str, Example] = {}
    for ex in sorted(examples, key=lambda e: e.meta.get("labelled_at", "")):
        by_text[normalise_for_hash(ex.text)] = ex
    return list(by_text.values())


def write_labelled(path: Path, examples: list[Example], taxonomy) -> None:
    """Examples in the labelled-data format (JSONL)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    with path.open("w", encoding="utf-8") as fh:
        for ex in examples:
            rec: dict[str, Any] = {"text": ex.text, **ex.meta}
            for task, labels in ex.labels.items():
                if labels is not None:
                    rec[task] = labels if taxonomy[task].kind == "multilabel" else labels[0]
            fh.write(json.dumps(rec, ensure_ascii=False) + "\n")


def summarise(examples: list[Example], taxonomy) -> dict[str, Any]:
    """Counts, label distribution per task, languages, sources, labelling dates."""
    dist = label_counts(examples, taxonomy)
    dates = sorted(ex.meta["labelled_at"] for ex in examples if ex.meta.get("labelled_at"))
    return {
        "rows": len(examples),
        "label_distribution": dist,
        "languages": dict(Counter(str(ex.meta.get("lang", "?")) for ex in examples)),
        "sources": dict(Counter(ex.source for ex in examples)),
        "labelled_at": {"first": dates[0], "last": dates[-1]} if dates else None,
    }


def _public_splits(
    specs: list[dict[str, Any]],
    taxonomy,
    data_dir: str | None,
    val_fraction: float,
    dev_fraction: float,
) -> dict[str, tuple[list[Example], list[Example], list[Example]]]:
    """(train, dev, test) rows per public source, split as the active model's were."""
    out = {}
    for spec in specs:
        name, rows = load_spec(spec, taxonomy, data_dir)
        for ex in rows:
            ex.meta.setdefault("source", name)
        out[name] = three_way_split(rows, val_fraction, dev_fraction)
    return out


def _key(ex: Example) -> str:
    return normalise_for_hash(ex.text)


# -- scoring and the gate -----------------------------------------------------------


def score(
    model: CarelensModel,
    rows: list[Example],
    per_source: bool,
    probs: dict[str, np.ndarray] | None = None,
) -> dict[str, Any]:
    """Headline per task (calibrated, at the model's thresholds); with ``per_source``
    per (source, task) cell. ``mean`` averages the cells. ``probs``: the model's
    calibrated probabilities of ``rows`` if already computed."""
    if not rows:
        return {"rows": 0, "mean": None}
    if probs is None:
        probs = predict_probs(model, rows, calibrated=True)
    if not per_source:
        tasks = quick_scores(model, probs, rows, model.thresholds)
        return {
            "rows": len(rows),
            "tasks": tasks,
            "mean": float(np.mean(list(tasks.values()))) if tasks else None,
        }
    groups: dict[str, list[int]] = {}
    for i, ex in enumerate(rows):
        groups.setdefault(ex.source, []).append(i)
    sources, cells = {}, []
    for name, idx in sorted(groups.items()):
        sub = [rows[i] for i in idx]
        sub_probs = {k: v[idx] for k, v in probs.items()}
        tasks = quick_scores(model, sub_probs, sub, model.thresholds)
        sources[name] = {"rows": len(idx), **tasks}
        cells += list(tasks.values())
    return {
        "rows": len(rows),
        "sources": sources,
        "mean": float(np.mean(cells)) if cells else None,
    }


def ticket_scores(
    model: CarelensModel, probs: dict[str, np.ndarray], rows: list[Example]
) -> np.ndarray:
    """Per row, the mean over the tasks it is labelled for of 1 (right) or 0 (wrong)
    for single-label tasks and the Jaccard overlap of predicted and true label sets
    for multi-label ones (two empty sets agree), at the model's thresholds; NaN for a
    row labelled for no task. The unit of the gate's paired comparison."""
    y = targets(rows, model.taxonomy)
    total, count = np.zeros(len(rows)), np.zeros(len(rows))
    for task in model.taxonomy:
        t, p = y[task.name].numpy(), probs[task.name]
        if task.kind == "multilabel":
            labelled = (t >= 0).all(1)
            lt = (model.thresholds.get(task.name) or {}).get("label_thresholds", {})
            pred = p >= np.array([lt.get(n, 0.5) for n in task.label_names])
            gold = t > 0.5
            union = (pred | gold).sum(1)
            right = np.where(union == 0, 1.0, (pred & gold).sum(1) / np.maximum(union, 1))
        else:
            labelled = t >= 0
            right = (p.argmax(1) == t).astype(float)
        total += np.where(labelled, right, 0.0)
        count += labelled
    return np.where(count > 0, total / np.maximum(count, 1), np.nan)


def paired_gain(
    active: np.ndarray,
    candidate: np.ndarray,
    confidence: float = 0.95,
    resamples: int = 2000,
    seed: int = 0,
) -> dict[str, Any]:
    """The candidate's mean per-ticket gain over the active model on the same tickets,
    with a paired bootstrap interval (tickets resampled with replacement): ``low`` is
    the one-sided ``confidence`` lower bound, ``high`` the upper one."""
    both = ~np.isnan(active) & ~np.isnan(candidate)
    diff = candidate[both] - active[both]
    out: dict[str, Any] = {
        "tickets": int(len(diff)),
        "confidence": confidence,
        "better": int((diff > 0).sum()),
        "worse": int((diff < 0).sum()),
    }
    if len(diff) == 0:
        return {**out, "gain": None, "low": None, "high": None}
    rng = np.random.default_rng(seed)
    means = diff[rng.integers(0, len(diff), size=(resamples, len(diff)))].mean(1)
    return {
        **out,
        "gain": float(diff.mean()),
        "low": float(np.quantile(means, 1.0 - confidence)),
        "high": float(np.quantile(means, confidence)),
    }


def frozen_regression(
    name: str,
    reference: dict[str, Any],
    candidate: dict[str, Any],
    tolerance: float,
    max_cell_drop: float | None,
    min_cell_rows: int = 50,
) -> str | None:
    """Why the candidate is worse than ``reference`` (named ``name``) on the frozen
    set, or None: its mean dropped by more than ``tolerance``, or one (source, task)
    cell with at least ``min_cell_rows`` rows by more than ``max_cell_drop`` (a mean
    can hide it)."""
    rf, cf = reference.get("mean"), candidate.get("mean")
    if rf is not None and cf is not None and rf - cf > tolerance:
        return (
            f"worse on the frozen set: {cf:.4f} vs {name} {rf:.4f} "
            f"(drop {rf - cf:.4f} > tolerance {tolerance:.4f})"
        )
    if max_cell_drop is None:
        return None
    r_src = reference.get("sources") or {}
    c_src = candidate.get("sources") or {}
    drops = [
        (r_src[s][t] - c_src[s][t], s, t)
        for s in r_src
        if s in c_src and r_src[s].get("rows", 0) >= min_cell_rows
        for t in r_src[s]
        if t != "rows" and t in c_src[s]
    ]
    worst = max(drops, default=None)
    if worst is not None and worst[0] > max_cell_drop:
        d, s, t = worst
        return (
            f"worse on the frozen set's {s}/{t}: {c_src[s][t]:.4f} vs {name} "
            f"{r_src[s][t]:.4f} (drop {d:.4f} > max_cell_drop {max_cell_drop:.4f})"
        )
    return None


def gate(
    active: dict[str, Any],
    candidate: dict[str, Any],
    paired: dict[str, Any],
    tolerance: float,
    min_gain: float,
    max_cell_drop: float | None = None,
    min_judged: int = 30,
    first: dict[str, Any] | None = None,
    min_cell_rows: int = 50,
) -> tuple[bool, str]:
    """(promote?, reason) from the models' frozen figures (the active model's, the
    candidate's and, as ``first = {"version": name, "frozen": ...}``, those of the first
    version ever promoted) and the paired comparison on the held-out tickets
    (``paired_gain``)."""
    references = [("active", active["frozen"])]
    if first is not None:
        references.append((f"the first promoted version {first['version']}", first["frozen"]))
    for name, reference in references:
        why = frozen_regression(
            name, reference, candidate["frozen"], tolerance, max_cell_drop, min_cell_rows
        )
        if why:
            return False, why
    n = paired["tickets"]
    if n == 0:
        return False, "no held-out labelled tickets to judge the candidate on"
    if n < min_judged:
        return False, (
            f"too few held-out tickets to judge the candidate: {n} < min_judged {min_judged}"
        )
    gain, low = paired["gain"], paired["low"]
    interval = (
        f"gain {gain:+.4f} per ticket over {n} tickets ({paired['better']} better, "
        f"{paired['worse']} worse), {paired['confidence']:.0%} lower bound {low:+.4f}"
    )
    if low <= min_gain:
        return False, (
            f"not significantly better on the newest labelled tickets: {interval} "
            f"(needs > {min_gain:+.4f})"
        )
    cf = candidate["frozen"].get("mean")
    frozen = "no frozen set" if cf is None else f"frozen set {cf:.4f}"
    return True, f"better on the newest labelled tickets: {interval}; {frozen}"


def first_promoted(registry: Registry) -> str | None:
    """The first version the registry ever made active (by promotion or import)."""
    for event in registry.history():
        if event.get("action") == "promote" and event.get("to"):
            return str(event["to"])
    return None


# -- the run -------------------------------------------------------------------------


def retrain(
    labels_file: str | Path,
    registry: Registry,
    cfg: RetrainConfig | None = None,
    base_model_dir: str | Path | None = None,
    progress: Progress | None = None,
    show_bars: bool = True,
) -> dict[str, Any]:
    """One retraining run (see the module docstring); returns the result record."""
    cfg = cfg or RetrainConfig()
    t0 = time.perf_counter()
    timings: dict[str, float] = {}

    def stage(name: str, fraction: float, message: str) -> None:
        log.info("[%s %.0f%%] %s", name, 100 * fraction, message)
        if progress is not None:
            progress(name, fraction, message)

    def lap(name: str, since: float) -> float:
        now = time.perf_counter()
        timings[name] = round(now - since, 2)
        return now

    if cfg.threads:
        import torch

        torch.set_num_threads(cfg.threads)
    # 1. the parent
    stage("load", 0.01, "reading the registry")
    if registry.active() is None:
        base = Path(base_model_dir) if base_model_dir else default_model_dir()
        stage(
            "load",
            0.02,
            f"registry {registry.root} is empty: importing {base} as the first version",
        )
        registry.import_model(base, note="base model for the first retrain", activate=True)
    parent = registry.get(registry.active())
    model = CarelensModel.from_pretrained(parent.path)
    taxonomy = model.taxonomy
    t = lap("load_active", t0)

    # 2. the tickets
    stage("data", 0.05, f"reading labelled tickets from {labels_file}")
    try:
        tickets = read_tickets(labels_file, taxonomy)
    except DataError as exc:
        raise RetrainError(str(exc)) from exc
    if len(tickets) < cfg.min_labelled:
        raise RetrainError(
            f"{len(tickets)} labelled tickets (after removing duplicate texts); retraining needs "
            f"at least {cfg.min_labelled} (min_labelled)"
        )
    tickets.sort(key=lambda e: e.meta.get("labelled_at", ""))

    # 3. the audit (before the split, so flagged held-out labels are reported too)
    audit: dict[str, Any] = {"skipped": "audit: false"}
    if cfg.audit:
        stage("audit", 0.08, f"cleanlab label audit of {len(tickets)} tickets")
        audit = audit_labels(tickets, taxonomy, folds=cfg.audit_folds, seed=cfg.seed)
        audit["excluded"] = bool(cfg.exclude_flagged)
        if cfg.exclude_flagged and audit.get("flagged"):
            tickets = exclude_flagged(tickets, audit)
    n_hold = int(round(cfg.holdout_fraction * len(tickets)))
    n_hold = min(max(n_hold, cfg.min_holdout), cfg.max_holdout, len(tickets) // 2)
    holdout, train_tickets = tickets[len(tickets) - n_hold :], tickets[: len(tickets) - n_hold]
    t = lap("audit", t)

    # 4. public data, the frozen set, calibration rows
    stage("data", 0.12, "public data and the frozen evaluation set")
    tc = model.train_config or {}
    specs = cfg.public_data if cfg.public_data is not None else list(tc.get("data") or [])
    data_dir = cfg.data_dir or tc.get("data_dir")
    val_fraction = float(tc.get("val_fraction", 0.1))
    dev_fraction = float(tc.get("dev_fraction", 0.5))
    try:
        public = (
            _public_splits(specs, taxonomy, data_dir, val_fraction, dev_fraction) if specs else {}
        )
    except (DataError, SourceError) as exc:
        if cfg.public_data is not None:
            raise RetrainError(f"public data: {exc}") from exc
        log.warning("public data unavailable (%s): retraining on tickets only", exc)
        public = {}
    rng = random.Random(cfg.seed)
    ticket_keys = {_key(e) for e in tickets}
    sets = _frozen_set(registry, taxonomy, public, holdout, ticket_keys, cfg, rng, parent.name)
    held = {_key(e) for e in sets.frozen} | {_key(e) for e in holdout}
    train_tickets = [e for e in train_tickets if _key(e) not in held]
    replay, calib = [], []
    for _name, (tr, va, _) in sorted(public.items()):
        tr = [e for e in tr if _key(e) not in held and _key(e) not in ticket_keys]
        va = [e for e in va if _key(e) not in held and _key(e) not in ticket_keys]
        replay += rng.sample(tr, min(cfg.public_rows_per_source, len(tr)))
        calib += rng.sample(va, min(cfg.calibration_rows_per_source, len(va)))
    weight = cfg.ticket_weight
    train_rows = (
        train_tickets * int(weight) + train_tickets[: int(round((weight % 1) * len(train_tickets)))]
    )
    train_rows += replay
    if not train_tickets:
        raise RetrainError("no training tickets left after holding out the newest ones")
    t = lap("data", t)

    # 6a. the active model's figures (cached per frozen set in its version.json)
    stage("evaluate", 0.15, f"scoring the active model {parent.name}")
    active_probs = predict_probs(model, holdout, calibrated=True)
    active_metrics = {
        "frozen": _frozen_figures(registry, parent.name, sets, model),
        "new_tickets": score(model, holdout, per_source=False, probs=active_probs),
    }
    active_tickets = ticket_scores(model, active_probs, holdout)
    first_name = first_promoted(registry)
    first = None
    if first_name is not None and first_name != parent.name and first_name in registry.names():
        stage("evaluate", 0.17, f"scoring the first promoted version {first_name}")
        first = {"version": first_name, "frozen": _frozen_figures(registry, first_name, sets)}
    t = lap("evaluate_active", t)

    # 5. the candidate
    max_length = cfg.max_length or model.config.max_length
    if cfg.from_backbone:
        cjk = [e.text for e in train_rows if any(is_cjk(ch) for ch in e.text[:200])]
        model = CarelensModel.from_backbone(
            cfg.backbone,
            taxonomy,
            ModelConfig(
                max_length=max_length, ngram=NgramConfig(enabled=model.config.ngram.enabled)
            ),
            cjk_texts=cjk or None,
            seed=cfg.seed,
        )
    tcfg = TrainConfig(
        epochs=cfg.epochs,
        batch_size=cfg.batch_size,
        learning_rate=cfg.learning_rate,
        head_learning_rate=cfg.head_learning_rate,
        ngram_learning_rate=cfg.ngram_learning_rate,
        max_length=max_length,
        seed=cfg.seed,
        threads=cfg.threads,
        data=[*specs, {"path": "retrain/tickets.jsonl", "name": "tickets", "weight": weight}],
        taxonomy=tc.get("taxonomy"),
        data_dir=data_dir,
        val_fraction=val_fraction,
        dev_fraction=dev_fraction,
        target_precision=cfg.target_precision,
        # as the active model was trained (a multilingual backbone's 250,000 word
        # embeddings stay as pretrained)
        freeze_word_embeddings=bool(tc.get("freeze_word_embeddings", False)),
        bf16=bool(tc.get("bf16", False)),
        freeze_layers=int(tc.get("freeze_layers", 0)),
        rating_hide_fraction=float(tc.get("rating_hide_fraction", 0.3)),
        class_balance=float(tc.get("class_balance", 0.0)),
        label_balance=float(tc.get("label_balance", 0.0)),
        recall_weights=dict(tc.get("recall_weights") or {}),
    )

    def on_step(step: int, total: int) -> None:
        if step == total or step % 5 == 0:
            stage("train", 0.2 + 0.6 * step / total, f"step {step}/{total}")

    stage(
        "train",
        0.2,
        f"fine-tuning on {len(train_rows)} rows ({len(train_tickets)} tickets x {weight}, {len(replay)} public)",
    )
    history = train(
        model,
        train_rows,
        calib if cfg.epochs > 1 else [],
        tcfg,
        out_dir=None,
        progress=show_bars,
        on_step=on_step,
    )
    t = lap("train", t)
    if calib:
        stage("calibrate", 0.82, f"calibrating on {len(calib)} public dev rows")
        calibrate_model(model, calib, cfg.target_precision, tcfg.recall_weights)
    t = lap("calibrate", t)

    # 6b. the candidate's figures
    stage("evaluate", 0.86, "scoring the candidate")
    cand_probs = predict_probs(model, holdout, calibrated=True)
    cand_metrics = {
        "frozen": score(model, sets.frozen, per_source=True),
        "new_tickets": score(model, holdout, per_source=False, probs=cand_probs),
    }
    paired = paired_gain(
        active_tickets,
        ticket_scores(model, cand_probs, holdout),
        cfg.confidence,
        cfg.bootstrap_resamples,
        cfg.seed,
    )
    t = lap("evaluate_candidate", t)

    # 7. the gate
    passed, reason = gate(
        active_metrics,
        cand_metrics,
        paired,
        cfg.tolerance,
        cfg.min_gain,
        cfg.max_cell_drop,
        cfg.min_judged,
        first,
    )
    decision = ("promoted" if cfg.promote else "passed") if passed else "rejected"
    stage("gate", 0.92, f"{decision}: {reason}")

    # save the version
    data_summary = {
        "tickets": summarise(tickets, taxonomy),
        "train_tickets": len(train_tickets),
        "holdout_tickets": len(holdout),
        "ticket_weight": weight,
        "public_replay": dict(Counter(e.source for e in replay)),
        "calibration_rows": len(calib),
        "frozen_set": {"id": sets.frozen_id, "rows": len(sets.frozen), **sets.frozen_info},
        "excluded_by_audit": len(audit.get("flagged", [])) if cfg.exclude_flagged else 0,
    }
    staged = registry.new_staging()
    model.train_config = tcfg.to_dict()
    model.metrics = {
        "retrain": {"candidate": cand_metrics, "active": active_metrics, "parent": parent.name},
        "history": history["history"],
        "train_rows": len(train_rows),
        "label_distribution": label_shares(train_rows, taxonomy),
    }
    model.save_pretrained(staged)
    write_labelled(staged / "retrain" / "tickets.jsonl", train_tickets + holdout, taxonomy)
    (staged / "retrain" / "audit.json").write_text(
        json.dumps(audit, indent=2, ensure_ascii=False), encoding="utf-8"
    )
    t = lap("save", t)
    timings["total"] = round(time.perf_counter() - t0, 2)
    gate_record = {
        "decision": decision,
        "reason": reason,
        "tolerance": cfg.tolerance,
        "max_cell_drop": cfg.max_cell_drop,
        "min_gain": cfg.min_gain,
        "min_judged": cfg.min_judged,
        "paired": paired,
        "candidate": cand_metrics,
        "active": active_metrics,
        "active_version": parent.name,
        "first_promoted": first,
    }
    version = registry.add(
        staged,
        {
            "status": "candidate" if passed else "rejected",
            "parent": parent.name,
            "metrics": cand_metrics,
            "frozen_eval": {sets.frozen_id: cand_metrics["frozen"]},
            "data_summary": data_summary,
            "gate": gate_record,
            "audit": {k: v for k, v in audit.items() if k != "flagged"}
            | {"flagged_count": len(audit.get("flagged", []))},
            "retrain_config": cfg.to_dict(),
            "timings": timings,
        },
    )
    if passed and cfg.promote:
        registry.promote(version.name, actor="retrain", reason=reason)
        registry.update_info(version.name, status="promoted")
    stage("done", 1.0, f"{version.name}: {decision}")
    return {
        "version": version.name,
        "parent": parent.name,
        "decision": decision,
        "reason": reason,
        "active": registry.active(),
        "metrics": {"candidate": cand_metrics, "active": active_metrics},
        "paired": paired,
        "first_promoted": first,
        "audit": audit,
        "data_summary": data_summary,
        "timings": timings,
    }


def _frozen_figures(
    registry: Registry, version: str, sets: EvalSets, model: CarelensModel | None = None
) -> dict[str, Any]:
    """A version's figures on the frozen set: cached in its ``version.json`` per frozen
    set, else scored now (loading the version unless ``model`` is it) and cached."""
    cached = (registry.get(version).info.get("frozen_eval") or {}).get(sets.frozen_id)
    if cached:
        return cached
    model = model or CarelensModel.from_pretrained(registry.path_of(version))
    figures = score(model, sets.frozen, per_source=True)
    frozen_eval = dict(registry.get(version).info.get("frozen_eval") or {})
    registry.update_info(version, frozen_eval={**frozen_eval, sets.frozen_id: figures})
    return figures


def _frozen_set(
    registry: Registry,
    taxonomy,
    public: dict[str, tuple[list[Example], list[Example], list[Example]]],
    holdout: list[Example],
    ticket_keys: set[str],
    cfg: RetrainConfig,
    rng: random.Random,
    parent: str,
) -> EvalSets:
    path = registry.frozen_eval_file
    if not path.is_file():
        rows: list[Example] = []
        # test rows: the active model neither trained nor calibrated on them
        for _, (_, _, test) in sorted(public.items()):
            test = [e for e in test if _key(e) not in ticket_keys]
            rows += rng.sample(test, min(cfg.frozen_rows_per_source, len(test)))
        origin = "public test rows" if rows else "held-out tickets of the first retrain"
        if not rows:
            rows = list(holdout)
        write_labelled(path, rows, taxonomy)
        write_json_atomic(
            path.with_suffix(".json"),
            {
                "rows": len(rows),
                "origin": origin,
                "sources": dict(Counter(e.source for e in rows)),
                "chosen_at_retrain_of": parent,
            },
        )
    frozen = read_labelled(path, taxonomy)
    digest = hashlib.sha256(path.read_bytes()).hexdigest()[:16]
    info = {}
    meta_path = path.with_suffix(".json")
    if meta_path.is_file():
        info = json.loads(meta_path.read_text(encoding="utf-8"))
        info.pop("rows", None)
    return EvalSets(frozen=frozen, holdout=holdout, frozen_id=digest, frozen_info=info)
