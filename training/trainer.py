"""The training loop: masked multi-task loss, length-bucketed batches, progress bars,
validation each epoch, best checkpoint kept."""

from __future__ import annotations

import logging
import math
import random
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
from tqdm.auto import tqdm

from model.classifier import class_weights, task_probs
from model.modeling import CarelensModel
from model.ngrams import batch_ngram_ids
from model.settings import DictConfig
from model.taxonomy import Task
from training.data import Example, targets
from training.evaluate import headline, task_metrics

log = logging.getLogger(__name__)


@dataclass
class TrainConfig(DictConfig):
    """Training settings; the resolved config is saved into the model directory."""

    kind = "training config"

    epochs: int = 1
    batch_size: int = 16
    learning_rate: float = 5e-5  # encoder
    head_learning_rate: float = 2e-3  # heads
    ngram_learning_rate: float = 2e-2  # n-gram table (sparse-ish, needs a larger step)
    weight_decay: float = 0.01
    warmup_ratio: float = 0.06
    # n-gram-only epochs (encoder skipped) before fine-tuning, over the training rows that
    # max_rows left out of fine-tuning (all training rows if none were left out)
    ngram_pretrain_epochs: int = 0
    ngram_pretrain_max_rows: int | None = None  # per source; None = all that are left
    max_length: int = 128
    seed: int = 0
    threads: int | None = None
    # what to train on: [{source: NAME} or {path: FILE}, weight: 1.0, max_rows: N]
    data: list[dict[str, Any]] = field(default_factory=list)
    backbone: str | None = None  # None: $CARELENS_BACKBONE or the default package
    taxonomy: str | None = None  # None: data/taxonomy.yaml
    data_dir: str | None = None  # None: $CARELENS_DATA or ../shared/data
    # held out of training: the text hash's lowest val_fraction; the lowest dev_fraction
    # of those are dev rows (up to max_val_rows_per_source per source calibrate, set the
    # review thresholds and pick the epoch), the others test rows that only
    # `carelens evaluate` scores
    val_fraction: float = 0.1
    dev_fraction: float = 0.5
    max_val_rows_per_source: int = 500
    cjk_min_count: int = 3
    ngram: bool = True
    # the sparse TF-IDF n-gram path (model.ngrams.SparseConfig), fitted by logistic
    # regression (inverse regularisation sparse_c) on the training rows that max_rows
    # left out of fine-tuning (all training rows if none were left out)
    sparse: bool = False
    sparse_c: float = 4.0
    # after fine-tuning, fit the sparse path again on all training rows (fine-tuned ones
    # included): the encoder learned its corrections against the out-of-sample fit
    sparse_refit: bool = True
    # 2 or more: instead, fit the path on all training rows before fine-tuning and
    # cross-fit it over this many folds of the fine-tuning rows (training.sparse.
    # fit_sparse_crossed): each fine-tuning row meets the path's logits from a fit that
    # never saw it, as a new message does, so the encoder learns what the whole floor
    # gets wrong on rows it labels for every task, not only on rows max_rows left out
    sparse_folds: int = 0
    # keep the encoder's word embeddings as pretrained (a multilingual backbone's 250,000
    # rows would otherwise get a dense Adam update every step, most for tokens no batch
    # holds); rows added for CJK characters are frozen too
    freeze_word_embeddings: bool = False
    # a SentencePiece backbone only: keep the vocabulary pieces written in Latin or
    # Chinese script, those the training texts use and every one-character piece, and
    # only their embedding rows (the starter: 250,003 rows, 384 MB of the encoder's
    # 470, to 134,626, 207 MB)
    trim_vocab: bool = False
    target_precision: float = 0.9
    # fine-tune with the encoder in bfloat16 (CPU autocast; weights, heads, sparse path
    # and optimiser stay float32): the starter fine-tunes 1.6 times as many rows/s on a
    # CPU with AVX-512 BF16; where PyTorch reports no bf16 support it trains in float32
    bf16: bool = False
    # rated rows (reviews with stars) read their rating as a lead-in of the text
    # (model.predictor.rated_text); hidden on this fraction of the training rows so the
    # model also reads texts that come without one (e-mails, chats)
    rating_hide_fraction: float = 0.3
    # keep the embeddings and this many of the lowest encoder layers as pretrained
    # (0: fine-tune every layer): the backward pass stops above them
    freeze_layers: int = 0
    # weigh the loss by class so rare labels count (model.classifier.class_weights; the
    # sparse path likewise): single-label tasks weigh each class by
    # (rows / (classes x its rows)) ** class_balance; multi-label tasks each label's
    # positives by (negatives / positives) ** label_balance. 0 weighs every row alike,
    # 1 balances fully. Multi-label tasks also get per-label thresholds tuned on the dev
    # rows, which balance precision and recall without inflating the probabilities.
    class_balance: float = 0.0
    label_balance: float = 0.0
    # {task: {label: beta}}: a multi-label task's labels whose decision threshold (tuned
    # on the dev rows) maximises F-beta instead of F1, recall weighing beta times as much
    # as precision, for labels a person would rather check twice than miss
    recall_weights: dict[str, dict[str, float]] = field(default_factory=dict)

    def __post_init__(self) -> None:
        for name in ("class_balance", "label_balance", "val_fraction", "dev_fraction"):
            value = getattr(self, name)
            if not 0.0 <= value <= 1.0:
                raise ValueError(f"{name} must be between 0 and 1, got {value}")
        if self.sparse_folds == 1 or self.sparse_folds < 0:
            raise ValueError(f"sparse_folds must be 0 (off) or 2 or more, got {self.sparse_folds}")

    def balance(self, task: Task) -> float:
        """The class-balance power for ``task``: label_balance for multi-label tasks."""
        return self.label_balance if task.kind == "multilabel" else self.class_balance


def set_seed(seed: int) -> None:
    random.seed(seed)
    np.random.seed(seed)
    torch.manual_seed(seed)


def bf16_supported() -> bool:
    """Whether PyTorch's CPU kernels (oneDNN) run bfloat16 matrix products here."""
    try:
        return bool(
            torch.backends.mkldnn.is_available() and torch.ops.mkldnn._is_mkldnn_bf16_supported()
        )
    except (AttributeError, RuntimeError):
        return False


def freeze_lower_layers(encoder: torch.nn.Module, n: int) -> None:
    """Keep the embeddings and the lowest ``n`` transformer layers as pretrained: the
    backward pass stops above them (fewer products per step)."""
    if n <= 0:
        return
    layers = getattr(getattr(encoder, "encoder", None), "layer", None)
    if layers is None:
        raise ValueError("freeze_layers: this encoder has no `encoder.layer` list")
    if n > len(layers):
        raise ValueError(f"freeze_layers: {n} is more than the encoder's {len(layers)} layers")
    for p in encoder.embeddings.parameters():
        p.requires_grad_(False)
    for layer in layers[:n]:
        for p in layer.parameters():
            p.requires_grad_(False)


def make_batches(
    examples: list[Example], batch_size: int, rng: random.Random, bucket: int = 50
) -> list[list[int]]:
    """Shuffled indices grouped so each batch holds texts of similar length."""
    order = list(range(len(examples)))
    rng.shuffle(order)
    batches = []
    chunk = batch_size * bucket
    for start in range(0, len(order), chunk):
        part = sorted(order[start : start + chunk], key=lambda i: len(examples[i].text))
        batches += [part[j : j + batch_size] for j in range(0, len(part), batch_size)]
    rng.shuffle(batches)
    return batches


def _optimizer(
    model: CarelensModel, cfg: TrainConfig, encoder: bool = True
) -> torch.optim.Optimizer:
    clf = model.classifier
    enc, heads, ngram = [], [], []
    for name, p in clf.named_parameters():
        if not p.requires_grad or name.startswith("sparse_"):
            continue  # the sparse path is fitted beforehand (training.sparse) and kept
        (
            enc if name.startswith("encoder.") else ngram if name.startswith("ngram_") else heads
        ).append(p)
    groups = [{"params": heads, "lr": cfg.head_learning_rate, "weight_decay": 0.0}]
    if encoder:
        groups.append({"params": enc, "lr": cfg.learning_rate, "weight_decay": cfg.weight_decay})
    if ngram:
        groups.append({"params": ngram, "lr": cfg.ngram_learning_rate, "weight_decay": 0.0})
    return torch.optim.AdamW(groups)


def pretrain_ngrams(
    model: CarelensModel,
    examples: list[Example],
    cfg: TrainConfig,
    epochs: int,
    progress: bool = True,
) -> list[dict[str, Any]]:
    """Train the n-gram table and the n-gram part of every head with the encoder
    skipped (a fastText model inside the classifier): cheap enough for every row, so
    the later joint fine-tuning on fewer rows starts from a strong surface-form model."""
    clf = model.classifier
    if clf.ngram_embedding is None or epochs <= 0:
        return []
    rng = random.Random(cfg.seed + 1)
    # the encoder's half of every head starts at zero: the model is then exactly the
    # n-gram model, and joint fine-tuning learns the encoder's contribution on top
    hidden = int(clf.encoder.config.hidden_size)
    with torch.no_grad():
        for head in clf.heads.values():
            linear = head.score if hasattr(head, "score") else head
            linear.weight[:, :hidden] = 0.0
    opt = _optimizer(model, cfg, encoder=False)
    for group in opt.param_groups:  # fastText-style: one (large) step size for table and heads
        group["lr"] = cfg.ngram_learning_rate
    clf.train()
    history = []
    for epoch in range(epochs):
        batches = make_batches(examples, 64, rng)
        bar = tqdm(
            batches,
            desc=f"n-gram pre-training {epoch + 1}/{epochs}",
            disable=not progress,
            unit="batch",
        )
        t0, running = time.perf_counter(), None
        for idx in bar:
            exs = [examples[i] for i in idx]
            ngram = batch_ngram_ids([e.text for e in exs], model.config.ngram)
            dummy = torch.zeros((len(exs), 1), dtype=torch.long)
            out = clf(dummy, dummy, ngram, labels=targets(exs, model.taxonomy), skip_encoder=True)
            opt.zero_grad(set_to_none=True)
            out["loss"].backward()
            opt.step()
            loss = float(out["loss"].detach())
            running = loss if running is None else 0.95 * running + 0.05 * loss
            bar.set_postfix(loss=f"{running:.4f}")
        history.append(
            {"ngram_epoch": epoch + 1, "loss": running, "seconds": time.perf_counter() - t0}
        )
    return history


def predict_probs(
    model: CarelensModel,
    examples: list[Example],
    batch_size: int = 64,
    max_length: int | None = None,
    calibrated: bool = False,
) -> dict[str, np.ndarray]:
    """Probabilities per task, in input order (uncalibrated unless asked)."""
    logits, _ = model.batched_logits(
        [e.text for e in examples], batch_size, max_length, calibrated=calibrated
    )
    return {t.name: task_probs(t, logits[t.name]).numpy() for t in model.taxonomy}


def quick_scores(
    model: CarelensModel,
    probs: dict[str, np.ndarray],
    examples: list[Example],
    thresholds: dict[str, Any] | None = None,
) -> dict[str, float]:
    """The headline figure per task (accuracy; micro-F1 for multi-label tasks) on the
    rows labelled for it, as ``carelens evaluate`` computes it; ``thresholds``
    default to 0.5 per label (the training loop's validation)."""
    y = targets(examples, model.taxonomy)
    scores = {}
    for task in model.taxonomy:
        m = task_metrics(
            task, probs[task.name], y[task.name].numpy(), (thresholds or {}).get(task.name, {})
        )
        if m is not None:
            scores[task.name] = headline(task, m)
    return scores


def train(
    model: CarelensModel,
    train_examples: list[Example],
    val_examples: list[Example],
    cfg: TrainConfig,
    out_dir: str | Path | None = None,
    progress: bool = True,
    on_step: Callable[[int, int], None] | None = None,
    sparse_offsets: dict[int, torch.Tensor] | None = None,
) -> dict[str, Any]:
    """Fine-tune ``model`` in place; keep the best epoch (by mean validation score).

    ``sparse_offsets`` ({id(example): logits}, from ``training.sparse.
    fit_sparse_crossed``) replace the sparse path's logits on those training rows.

    With ``out_dir`` the best model is saved there after each improving epoch, and
    Ctrl-C saves the current weights there too if no epoch has finished yet.
    ``on_step(step, total_steps)`` is called after every optimiser step."""
    if cfg.threads:
        torch.set_num_threads(cfg.threads)
    set_seed(cfg.seed)
    rng = random.Random(cfg.seed)
    model.config.max_length = cfg.max_length
    model.train_config = cfg.to_dict()
    clf = model.classifier
    clf.train()
    clf.encoder.get_input_embeddings().weight.requires_grad_(not cfg.freeze_word_embeddings)
    freeze_lower_layers(clf.encoder, cfg.freeze_layers)
    all_targets = targets(train_examples, model.taxonomy)
    weights = {
        t.name: class_weights(t, all_targets[t.name], cfg.balance(t)) for t in model.taxonomy
    }
    clf.class_weight = {name: w for name, w in weights.items() if w is not None}
    opt = _optimizer(model, cfg)
    steps_per_epoch = math.ceil(len(train_examples) / cfg.batch_size)
    total = max(1, steps_per_epoch * cfg.epochs)
    warmup = int(total * cfg.warmup_ratio)

    def lr_lambda(step: int) -> float:
        if step < warmup:
            return (step + 1) / max(1, warmup)
        return max(0.0, (total - step) / max(1, total - warmup))

    sched = torch.optim.lr_scheduler.LambdaLR(opt, lr_lambda)
    low = torch.bfloat16 if cfg.bf16 and bf16_supported() else None
    if cfg.bf16 and low is None:
        log.warning("bf16: PyTorch reports no bfloat16 support on this CPU; training in float32")
    history: list[dict[str, Any]] = []
    best_score, best_state = -1.0, None
    step = 0
    try:
        for epoch in range(cfg.epochs):
            clf.train()
            batches = make_batches(train_examples, cfg.batch_size, rng)
            bar = tqdm(
                batches, desc=f"epoch {epoch + 1}/{cfg.epochs}", disable=not progress, unit="batch"
            )
            seen, t0, running = 0, time.perf_counter(), None
            for idx in bar:
                exs = [train_examples[i] for i in idx]
                # with the cross-fitted logits given, the path's own inputs are not needed
                batch = model.encode(
                    [e.text for e in exs],
                    max_length=cfg.max_length,
                    sparse=sparse_offsets is None,
                )
                labels = targets(exs, model.taxonomy)
                clf.encoder_autocast = low
                try:
                    inputs = batch.model_inputs()
                    if sparse_offsets is not None:
                        inputs["sparse_logits"] = torch.stack([sparse_offsets[id(e)] for e in exs])
                    out = clf(**inputs, labels=labels)
                finally:
                    clf.encoder_autocast = None
                opt.zero_grad(set_to_none=True)
                out["loss"].backward()
                torch.nn.utils.clip_grad_norm_(clf.parameters(), 1.0)
                opt.step()
                sched.step()
                step += 1
                if on_step is not None:
                    on_step(step, total)
                seen += len(exs)
                loss = float(out["loss"].detach())
                running = loss if running is None else 0.95 * running + 0.05 * loss
                bar.set_postfix(
                    loss=f"{running:.4f}", ex_s=f"{seen / (time.perf_counter() - t0):.1f}"
                )
            elapsed = time.perf_counter() - t0
            entry: dict[str, Any] = {
                "epoch": epoch + 1,
                "train_loss": running,
                "examples_per_s": seen / elapsed,
                "precision": "bf16" if low is not None else "fp32",
            }
            if val_examples:
                scores = quick_scores(
                    model,
                    predict_probs(model, val_examples, max_length=cfg.max_length),
                    val_examples,
                )
                entry["val"] = scores
                mean = float(np.mean(list(scores.values()))) if scores else 0.0
                entry["val_mean"] = mean
            else:
                mean = float(epoch)
            history.append(entry)
            log.info("epoch %d: %s", epoch + 1, entry)
            if mean > best_score:
                best_score = mean
                best_state = {k: v.detach().clone() for k, v in clf.state_dict().items()}
                if out_dir is not None:
                    model.save_pretrained(out_dir)
    except KeyboardInterrupt:
        log.warning("interrupted at step %d", step)
        if out_dir is not None and best_state is None:
            model.save_pretrained(out_dir)
        history.append({"interrupted_at_step": step})
    clf.class_weight = {}
    if best_state is not None:
        clf.load_state_dict(best_state)
    clf.eval()
    return {"history": history, "best_val_mean": best_score, "steps": step}
