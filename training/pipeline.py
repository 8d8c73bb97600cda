"""A whole training run from a config: data → splits → model → train → calibrate → save."""

from __future__ import annotations

import logging
import random
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

from model.calibration import calibrate, check_recall_weights
from model.classifier import ModelConfig, task_probs
from model.modeling import CarelensModel
from model.ngrams import NgramConfig, SparseConfig
from model.taxonomy import Taxonomy
from model.tokenization import is_cjk
from training.corpus import load_corpus
from training.data import (
    DataError,
    Example,
    label_shares,
    read_labelled,
    targets,
    three_way_split,
    with_ratings,
)
from training.sources import REPO_DATA_DIR, data_dir, load_source
from training.sparse import fit_sparse, fit_sparse_crossed
from training.trainer import TrainConfig, pretrain_ngrams, quick_scores, train

log = logging.getLogger(__name__)


def load_taxonomy(cfg: TrainConfig) -> Taxonomy:
    return Taxonomy.load(cfg.taxonomy) if cfg.taxonomy else Taxonomy.default()


SPEC_KEYS = {
    "corpus",
    "source",
    "path",
    "name",
    "weight",
    "max_rows",
    "tasks",
    "val_fraction",
    "dev_fraction",
    "per_source",
    "max_val_rows",
}


def _resolve_path(raw: str, data_dir_setting: str | None) -> Path:
    """A labelled file: absolute, else relative to the working directory, to the
    repository's ``data/`` folder, or to the public data folder (first that exists)."""
    path = Path(raw)
    if path.is_absolute() or path.exists():
        return path
    for base in (REPO_DATA_DIR, REPO_DATA_DIR.parent):
        if (base / path).exists():
            return base / path
    return data_dir(data_dir_setting) / path


def load_spec(
    spec: dict[str, Any], taxonomy: Taxonomy, data_dir_setting: str | None
) -> tuple[str, list[Example]]:
    """One data entry's examples. Keys: ``source`` (a public source) or ``path`` (a
    labelled file; ``name`` names it, ``per_source: true`` reports its rows per their own
    ``source`` column as NAME/SOURCE); ``tasks``: only these tasks' labels are kept (the
    others are missing, not negative); ``weight``, ``max_rows``, ``val_fraction``,
    ``dev_fraction``: see ``build_sets`` and ``three_way_split``."""
    unknown = sorted(set(spec) - SPEC_KEYS)
    if unknown:
        raise DataError(f"data entry {spec}: unknown keys {unknown}; known: {sorted(SPEC_KEYS)}")
    if "corpus" in spec:
        # the labelled corpus: texts read from the public data by id, rows reported per
        # source as corpus/SOURCE (and pooled per language)
        path = _resolve_path(str(spec["corpus"]), data_dir_setting)
        name = spec.get("name") or "corpus"
        examples = load_corpus(path, taxonomy, data_dir_setting)
        for ex in examples:
            ex.meta["source"] = f"{name}/{ex.meta.get('source')}"
    elif "source" in spec:
        name, examples = spec["source"], load_source(spec["source"], taxonomy, data_dir_setting)
    elif "path" in spec:
        path = _resolve_path(str(spec["path"]), data_dir_setting)
        name = spec.get("name") or path.stem
        examples = read_labelled(path, taxonomy, source=name)
        if spec.get("per_source"):
            for ex in examples:
                own = ex.meta.get("source")
                ex.meta["source"] = f"{name}/{own}" if own and own != name else name
    else:
        raise DataError(
            f"data entry {spec} needs 'source' (a public source) or 'path' (a labelled file)"
        )
    if spec.get("tasks") is not None:
        keep = set(spec["tasks"])
        bad = sorted(keep - set(taxonomy.task_names))
        if bad:
            raise DataError(f"data entry {name}: tasks {bad} are not in the taxonomy")
        for ex in examples:
            ex.labels = {t: (v if t in keep else None) for t, v in ex.labels.items()}
    return name, examples


def split_sources(
    cfg: TrainConfig, taxonomy: Taxonomy
) -> Iterator[tuple[dict[str, Any], str, list[Example], list[Example], list[Example]]]:
    """(spec, name, train rows, dev rows, test rows) per data entry, split by text hash
    (``three_way_split``)."""
    if not cfg.data:
        raise DataError("the training config lists no data")
    for spec in cfg.data:
        name, examples = load_spec(spec, taxonomy, cfg.data_dir)
        for ex in examples:
            ex.meta.setdefault("source", name)
        val_fraction = float(spec.get("val_fraction", cfg.val_fraction))
        dev_fraction = float(spec.get("dev_fraction", cfg.dev_fraction))
        yield spec, name, *three_way_split(examples, val_fraction, dev_fraction)


def held_out_sets(
    cfg: TrainConfig, taxonomy: Taxonomy, split: str = "test"
) -> dict[str, list[Example]]:
    """Each data entry's test rows: held out of training and never used to calibrate,
    set thresholds or pick an epoch (``build_sets`` takes those validation rows from
    the dev part of the held-out split). What ``carelens evaluate --held-out`` scores.
    ``split="dev"``: the dev rows instead (for comparing settings between builds)."""
    if split not in ("test", "dev"):
        raise ValueError(f"split must be 'test' or 'dev', got {split!r}")
    out: dict[str, list[Example]] = {}
    for _, name, _, dev, test in split_sources(cfg, taxonomy):
        out.setdefault(name, []).extend(test if split == "test" else dev)
    return out


def build_sets(
    cfg: TrainConfig, taxonomy: Taxonomy
) -> tuple[list[Example], dict[str, list[Example]], list[Example]]:
    """Fine-tuning rows (weighted by repetition/sub-sampling), validation rows per
    source (up to ``max_val_rows_per_source`` of its dev rows, never its test rows),
    and the training rows that ``max_rows`` kept out of fine-tuning."""
    rng = random.Random(cfg.seed)
    train_rows: list[Example] = []
    val: dict[str, list[Example]] = {}
    rest: list[Example] = []
    for spec, name, tr, dev, test in split_sources(cfg, taxonomy):
        rng.shuffle(tr)
        # one shuffle of the whole held-out split, so the random draws (and with them
        # the fine-tuning rows of the sources after this one) do not depend on dev_fraction
        held, dev_ids = dev + test, {id(e) for e in dev}
        rng.shuffle(held)
        va = with_ratings([e for e in held if id(e) in dev_ids])
        tr = with_ratings(tr, cfg.rating_hide_fraction, rng)
        if spec.get("max_rows"):
            extra = tr[int(spec["max_rows"]) :]
            if cfg.ngram_pretrain_max_rows is not None:
                extra = extra[: cfg.ngram_pretrain_max_rows]
            rest += extra
            tr = tr[: int(spec["max_rows"])]
        weight = float(spec.get("weight", 1.0))
        whole, frac = int(weight), weight - int(weight)
        train_rows += tr * whole + tr[: int(round(frac * len(tr)))]
        val[name] = va[: int(spec.get("max_val_rows", cfg.max_val_rows_per_source))]
        log.info(
            "%s: %d train rows (weight %.2f), %d validation rows",
            name,
            len(tr),
            weight,
            len(val[name]),
        )
    return train_rows, val, rest


def calibrate_model(
    model: CarelensModel,
    val_rows: list[Example],
    target_precision: float,
    recall_weights: dict[str, dict[str, float]] | None = None,
) -> dict[str, Any]:
    """Fit temperature and review thresholds per task on validation rows (a task none
    of them labels keeps what it had); returns their uncalibrated logits (divide by the
    temperatures for the calibrated ones). Training and retraining both calibrate here.
    ``recall_weights``: {task: {label: beta}} (``TrainConfig.recall_weights``)."""
    check_recall_weights(model.taxonomy, recall_weights or {})
    if not val_rows:
        return {}
    logits, _ = model.batched_logits([e.text for e in val_rows], 64, calibrated=False)
    y = targets(val_rows, model.taxonomy)
    for task in model.taxonomy:
        if not (y[task.name] >= 0).any():
            continue
        cal, th = calibrate(
            task,
            logits[task.name],
            y[task.name],
            target_precision,
            (recall_weights or {}).get(task.name),
        )
        model.calibration[task.name] = cal
        model.thresholds[task.name] = th
    return logits


Report = Callable[[str, float, str], None]  # (stage, fraction done, message)


def run(
    cfg: TrainConfig, out_dir: str | Path, progress: bool = True, report: Report | None = None
) -> dict[str, Any]:
    """Train a model from ``cfg`` into ``out_dir``; returns a summary. ``report(stage,
    fraction, message)`` hears how far it is (stages: data, vocabulary, sparse,
    fine-tuning, calibrating, done)."""
    t0 = time.perf_counter()
    report = report or (lambda stage, fraction, message: None)
    report("data", 0.0, "reading the training data")
    taxonomy = load_taxonomy(cfg)
    check_recall_weights(taxonomy, cfg.recall_weights)  # before the build, not after it
    train_rows, val, rest = build_sets(cfg, taxonomy)
    if not train_rows:
        raise DataError("no training rows after splitting")
    val_rows = [ex for rows in val.values() for ex in rows]
    cjk_texts = [ex.text for ex in train_rows if any(is_cjk(ch) for ch in ex.text[:200])]
    model = CarelensModel.from_backbone(
        cfg.backbone,
        taxonomy,
        ModelConfig(
            max_length=cfg.max_length,
            ngram=NgramConfig(enabled=cfg.ngram),
            sparse=SparseConfig(enabled=cfg.sparse),
        ),
        cjk_texts=cjk_texts or None,
        cjk_min_count=cfg.cjk_min_count,
        seed=cfg.seed,
    )
    pre_history: list[dict] = []
    unique_train = list({id(r): r for r in train_rows}.values())
    report("vocabulary", 0.03, f"{len(train_rows)} training rows; preparing the vocabulary")
    if cfg.trim_vocab:
        # every text it trains on (fine-tuning and the sparse path's rows), never the
        # validation texts: those are cut as any new message would be
        try:
            before, after = model.trim_vocabulary([ex.text for ex in unique_train + rest])
        except ValueError as exc:
            raise ValueError(f"trim_vocab: {exc}") from exc
        log.info("vocabulary trimmed from %d to %d pieces", before, after)
        pre_history.append({"vocabulary_trimmed": {"before": before, "after": after}})
    sparse_only = cfg.epochs == 0
    if sparse_only:
        if not cfg.sparse:
            raise ValueError("epochs: 0 trains nothing without the sparse path (set sparse: true)")
        # no fine-tuning: the model is its sparse path alone, fitted once on all rows
        # below (a quick model, built in minutes); the heads are made neutral and the
        # encoder is never run
        model.config.sparse_only = True
        model.classifier.silence_heads()
    # the share of the whole build each stage takes (fine-tuning dominates if it runs)
    tuned = 0.0 if sparse_only else 0.85
    offsets = None
    crossed = cfg.sparse and not sparse_only and cfg.sparse_folds >= 2
    if crossed:
        report("sparse", 0.05, "fitting and cross-fitting the sparse n-gram path")
        sparse, offsets = fit_sparse_crossed(
            model,
            unique_train,
            rest,
            cfg.sparse_folds,
            cfg.sparse_c,
            progress,
            cfg.class_balance,
            cfg.label_balance,
            cfg.seed,
            n_jobs=cfg.threads,
        )
        pre_history.append({"sparse_fit": sparse})
    elif cfg.sparse and not sparse_only:
        report("sparse", 0.05, "fitting the sparse n-gram path")
        # fitted on rows fine-tuning will not see, so on the fine-tuning rows its logits
        # are out-of-sample and the encoder learns what it gets wrong
        if not rest:
            log.warning(
                "no rows left out of fine-tuning (set max_rows): the sparse path is fitted "
                "on the fine-tuning rows themselves, so the encoder learns little on top of it"
            )
        sparse = fit_sparse(
            model,
            rest or unique_train,
            cfg.sparse_c,
            progress,
            cfg.class_balance,
            cfg.label_balance,
            n_jobs=cfg.threads,
        )
        pre_history.append({"sparse_fit": sparse})
    if cfg.ngram_pretrain_epochs:
        # rows the fine-tuning will not see, so the encoder learns what the n-grams miss
        # (on rows they have memorised, the joint loss would start near zero)
        pre_rows = rest or unique_train
        pre_history += pretrain_ngrams(model, pre_rows, cfg, cfg.ngram_pretrain_epochs, progress)

    def on_step(step: int, total: int) -> None:
        if step == total or step % 20 == 0:
            epoch = min(cfg.epochs, 1 + (step - 1) * cfg.epochs // max(total, 1))
            message = f"fine-tuning, epoch {epoch}/{cfg.epochs}, step {step}/{total}"
            report("fine-tuning", 0.1 + tuned * step / max(total, 1), message)

    result = train(
        model,
        train_rows,
        val_rows,
        cfg,
        out_dir=out_dir,
        progress=progress,
        on_step=on_step,
        sparse_offsets=offsets,
    )
    # cross-fitted: the path was fitted on all training rows before fine-tuning
    if cfg.sparse and not crossed and ((cfg.sparse_refit and rest) or sparse_only):
        report("sparse", 0.1 + tuned, "fitting the sparse n-gram path on all training rows")
        sparse = fit_sparse(
            model,
            unique_train + rest,
            cfg.sparse_c,
            progress,
            cfg.class_balance,
            cfg.label_balance,
            n_jobs=cfg.threads,
        )
        result["history"].append({"sparse_refit": sparse})
    report("calibrating", 0.97 if tuned else 0.9, "calibrating on the validation rows")
    val_logits = calibrate_model(model, val_rows, cfg.target_precision, cfg.recall_weights)
    # the same figures `carelens evaluate` reports: calibrated, at the fitted thresholds
    per_source = {}
    start = 0
    for name, rows in val.items():
        if rows:
            part = model.calibrated(
                {k: v[start : start + len(rows)] for k, v in val_logits.items()}
            )
            probs = {t.name: task_probs(t, part[t.name]).numpy() for t in model.taxonomy}
            start += len(rows)
            per_source[name] = {
                "rows": len(rows),
                **quick_scores(model, probs, rows, model.thresholds),
            }
    model.train_config = cfg.to_dict()
    model.metrics = {
        "validation_per_source": per_source,
        "history": pre_history + result["history"],
        "train_rows": len(train_rows),
        "label_distribution": label_shares(unique_train, taxonomy),
        "train_seconds": round(time.perf_counter() - t0, 1),
    }
    model.save_pretrained(out_dir)
    report("done", 1.0, f"saved to {out_dir}")
    return model.metrics
