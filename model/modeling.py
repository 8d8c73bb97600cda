"""A carelens model and its self-describing directory.

Layout written by ``save_pretrained`` (loading needs nothing else, never unpickles)::

    model_config.json     architecture (ModelConfig) + format version
    taxonomy.yaml         tasks and labels, in output order
    encoder/              the transformer in Hugging Face format (safetensors)
    tokenizer/            tokenizer.json (+ vocab.txt, tokenizer_config.json)
    heads.safetensors     the task heads, the n-gram table and the sparse path (if on)
    sparse_vocab.json     the sparse path's character and word n-grams (once fitted)
    calibration.json      temperature per task
    thresholds.json       per task: review threshold; per label decision thresholds (multi-label)
    train_config.json     the resolved training config (empty for an untrained model)
    metrics.json          training history, validation (dev) figures and, once
                          ``carelens evaluate --held-out`` ran, the test rows' ("test")
    README.md             generated model card (model/card.py)
"""

from __future__ import annotations

import json
import logging
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
from safetensors import SafetensorError
from safetensors.torch import load_file, save_file
from tokenizers import Tokenizer

from model.backbone import default_backbone, resolve_backbone
from model.card import render_model_card
from model.classifier import ModelConfig, MultiTaskClassifier
from model.ngrams import SparseVocab, batch_ngram_ids
from model.taxonomy import Taxonomy, TaxonomyError
from model.tokenization import (
    extend_cjk_vocab,
    load_tokenizer,
    save_tokenizer,
    special_ids,
    trim_unigram_vocab,
    unigram_pieces_to_keep,
)

log = logging.getLogger(__name__)

FORMAT_VERSION = 1
REQUIRED_FILES = (
    "model_config.json",
    "taxonomy.yaml",
    "encoder/config.json",
    "encoder/model.safetensors",
    "tokenizer/tokenizer.json",
    "heads.safetensors",
    "calibration.json",
    "thresholds.json",
)
DEFAULT_REVIEW_THRESHOLD = 0.5
DEFAULT_LABEL_THRESHOLD = 0.5


class ModelLoadError(ValueError):
    """A model directory that cannot be loaded; the message names the file and the problem."""


def default_thresholds(taxonomy: Taxonomy) -> dict[str, dict[str, Any]]:
    out: dict[str, dict[str, Any]] = {}
    for task in taxonomy:
        entry: dict[str, Any] = {"review_threshold": DEFAULT_REVIEW_THRESHOLD}
        if task.kind == "multilabel":
            entry["label_thresholds"] = dict.fromkeys(task.label_names, DEFAULT_LABEL_THRESHOLD)
        out[task.name] = entry
    return out


def default_calibration(taxonomy: Taxonomy) -> dict[str, dict[str, float]]:
    return {task.name: {"temperature": 1.0} for task in taxonomy}


def _load_encoder(path: Path) -> torch.nn.Module:
    from transformers import AutoConfig, AutoModel
    from transformers.utils import logging as hf_logging

    hf_logging.set_verbosity_error()
    hf_logging.disable_progress_bar()
    config = AutoConfig.from_pretrained(path, local_files_only=True)
    kwargs: dict[str, Any] = {"local_files_only": True}
    if config.model_type in ("bert", "roberta", "xlm-roberta", "electra"):
        kwargs["add_pooling_layer"] = False
    return AutoModel.from_pretrained(path, **kwargs)


@dataclass
class Batch:
    input_ids: torch.Tensor
    attention_mask: torch.Tensor
    ngram_ids: torch.Tensor | None
    truncated: list[bool]
    sparse_ids: torch.Tensor | None = None
    sparse_tf: torch.Tensor | None = None

    def model_inputs(self) -> dict[str, torch.Tensor]:
        out = {"input_ids": self.input_ids, "attention_mask": self.attention_mask}
        if self.ngram_ids is not None:
            out["ngram_ids"] = self.ngram_ids
        if self.sparse_ids is not None:
            out["sparse_ids"] = self.sparse_ids
            out["sparse_tf"] = self.sparse_tf
        return out


@dataclass
class CarelensModel:
    """The classifier with its tokenizer, taxonomy, calibration and thresholds."""

    classifier: MultiTaskClassifier
    tokenizer: Tokenizer
    calibration: dict[str, dict[str, float]] = field(default_factory=dict)
    thresholds: dict[str, dict[str, Any]] = field(default_factory=dict)
    train_config: dict[str, Any] = field(default_factory=dict)
    metrics: dict[str, Any] = field(default_factory=dict)
    path: Path | None = None
    # the encoder + pooling run elsewhere (ONNX Runtime, see model.onnx_backend);
    # None: the torch encoder. The n-gram channel and the heads always run in torch.
    pooler: Callable[[torch.Tensor, torch.Tensor], torch.Tensor] | None = field(
        default=None, repr=False
    )

    def __post_init__(self) -> None:
        self.calibration = {**default_calibration(self.taxonomy), **self.calibration}
        merged = default_thresholds(self.taxonomy)
        for task, entry in self.thresholds.items():
            merged.setdefault(task, {}).update(entry)
        self.thresholds = merged

    @property
    def taxonomy(self) -> Taxonomy:
        return self.classifier.taxonomy

    @property
    def config(self) -> ModelConfig:
        return self.classifier.config

    # -- construction ------------------------------------------------------------
    @classmethod
    def from_backbone(
        cls,
        backbone: str | Path | None = None,
        taxonomy: Taxonomy | None = None,
        config: ModelConfig | None = None,
        cjk_texts: list[str] | None = None,
        cjk_min_count: int = 3,
        seed: int = 0,
    ) -> CarelensModel:
        """A new model: pretrained encoder, fresh heads. With ``cjk_texts`` the
        vocabulary gains the CJK characters seen in them (see model.tokenization)."""
        path = resolve_backbone(backbone)
        taxonomy = taxonomy or Taxonomy.default()
        config = config or ModelConfig()
        config.backbone = str(backbone) if backbone is not None else default_backbone()
        encoder = _load_encoder(path)
        tokenizer = load_tokenizer(path)
        return cls.from_parts(encoder, tokenizer, taxonomy, config, cjk_texts, cjk_min_count, seed)

    @classmethod
    def from_parts(
        cls,
        encoder: torch.nn.Module,
        tokenizer: Tokenizer,
        taxonomy: Taxonomy,
        config: ModelConfig,
        cjk_texts: list[str] | None = None,
        cjk_min_count: int = 3,
        seed: int = 0,
    ) -> CarelensModel:
        torch.manual_seed(seed)
        classifier = MultiTaskClassifier(encoder, taxonomy, config)
        if cjk_texts:
            old_size = classifier.encoder.get_input_embeddings().weight.shape[0]
            tokenizer, added = extend_cjk_vocab(tokenizer, cjk_texts, min_count=cjk_min_count)
            needed = tokenizer.get_vocab_size() - old_size
            classifier.extend_embeddings(max(needed, 0), seed=seed)
            log.info("vocabulary extended by %d CJK characters", len(added))
        return cls(classifier=classifier, tokenizer=tokenizer)

    def trim_vocabulary(self, texts: list[str]) -> tuple[int, int]:
        """Keep only the SentencePiece pieces ``model.tokenization.unigram_pieces_to_keep``
        keeps (Latin or Chinese script, used by ``texts``, or one character) and their
        embedding rows. ``texts`` are cut exactly as before; returns (pieces before,
        pieces after)."""
        before = self.tokenizer.get_vocab_size()
        keep = unigram_pieces_to_keep(self.tokenizer, texts)
        rows = self.classifier.encoder.get_input_embeddings().weight.shape[0]
        if keep[-1] >= rows:
            raise ValueError(f"the tokenizer has ids up to {keep[-1]}, the encoder {rows} rows")
        self.tokenizer = trim_unigram_vocab(self.tokenizer, keep)
        self.classifier.keep_embeddings(keep)
        return before, len(keep)

    # -- encoding -------------------------------------------------------------------
    def encode(self, texts: list[str], max_length: int | None = None, sparse: bool = True) -> Batch:
        """Tokenize with dynamic padding (to the longest text of the batch).
        ``sparse=False`` leaves out the sparse path's inputs (for a caller that passes
        the path's logits instead)."""
        max_length = max_length or self.config.max_length
        max_chars = max_length * 16
        pad_id, sep_id = special_ids(self.tokenizer)
        cut = [t[:max_chars] for t in texts]
        encodings = self.tokenizer.encode_batch(cut)
        rows, truncated = [], []
        for text, enc in zip(texts, encodings, strict=True):
            ids = enc.ids
            was_cut = len(text) > max_chars
            if len(ids) > max_length:
                ids = ids[: max_length - 1] + (
                    [sep_id] if sep_id is not None else ids[max_length - 1 : max_length]
                )
                was_cut = True
            rows.append(ids)
            truncated.append(was_cut)
        width = max(len(r) for r in rows)
        input_ids = torch.full((len(rows), width), pad_id, dtype=torch.long)
        attention_mask = torch.zeros((len(rows), width), dtype=torch.long)
        for i, r in enumerate(rows):
            input_ids[i, : len(r)] = torch.tensor(r, dtype=torch.long)
            attention_mask[i, : len(r)] = 1
        ngram = batch_ngram_ids(texts, self.config.ngram) if self.config.ngram.enabled else None
        sparse_ids = sparse_tf = None
        if sparse and self.config.sparse.enabled:
            sparse_ids, sparse_tf = self.classifier.sparse_inputs(texts)
        return Batch(input_ids, attention_mask, ngram, truncated, sparse_ids, sparse_tf)

    @torch.inference_mode()
    def logits(self, batch: Batch, calibrated: bool = True) -> dict[str, torch.Tensor]:
        """Head outputs for a batch, temperature-scaled unless ``calibrated=False``."""
        pooled = None
        if self.pooler is not None:
            pooled = self.pooler(batch.input_ids, batch.attention_mask)
        out = self.classifier(**batch.model_inputs(), pooled=pooled)["logits"]
        return self.calibrated(out) if calibrated else out

    def calibrated(self, logits: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
        """Each task's logits divided by its fitted temperature."""
        return {
            name: value / float(self.calibration[name]["temperature"])
            for name, value in logits.items()
        }

    def batched_logits(
        self,
        texts: list[str],
        batch_size: int = 32,
        max_length: int | None = None,
        calibrated: bool = True,
    ) -> tuple[dict[str, torch.Tensor], list[bool]]:
        """Head outputs for many texts (eval mode), in input order, plus truncation
        flags. Texts are sorted by length into batches so padding stays small."""
        was_training = self.classifier.training
        self.classifier.eval()
        n = len(texts)
        order = sorted(range(n), key=lambda i: len(texts[i]))
        parts: dict[str, list[torch.Tensor]] = {t.name: [] for t in self.taxonomy}
        truncated = [False] * n
        for start in range(0, n, batch_size):
            idx = order[start : start + batch_size]
            batch = self.encode([texts[i] for i in idx], max_length=max_length)
            for name, value in self.logits(batch, calibrated=calibrated).items():
                parts[name].append(value)
            for j, i in enumerate(idx):
                truncated[i] = batch.truncated[j]
        self.classifier.train(was_training)
        inverse = torch.empty(n, dtype=torch.long)
        inverse[torch.tensor(order, dtype=torch.long)] = torch.arange(n)
        out = {name: torch.cat(v)[inverse] for name, v in parts.items()} if n else {}
        return out, truncated

    # -- save / load --------------------------------------------------------------------
    def save_pretrained(self, directory: str | Path) -> Path:
        directory = Path(directory)
        directory.mkdir(parents=True, exist_ok=True)
        cfg = {"format_version": FORMAT_VERSION, **self.config.to_dict()}
        _write_json(directory / "model_config.json", cfg)
        self.taxonomy.save(directory / "taxonomy.yaml")
        self.classifier.encoder.save_pretrained(directory / "encoder", safe_serialization=True)
        save_tokenizer(self.tokenizer, directory / "tokenizer")
        heads = {
            k: v.detach().contiguous().cpu() for k, v in self.classifier.head_state_dict().items()
        }
        save_file(heads, str(directory / "heads.safetensors"), metadata={"format": "pt"})
        vocab_file = directory / "sparse_vocab.json"
        if self.classifier.sparse_vocab is not None:
            _write_json(vocab_file, self.classifier.sparse_vocab.to_dict())
        elif vocab_file.exists():
            vocab_file.unlink()
        _write_json(directory / "calibration.json", self.calibration)
        _write_json(directory / "thresholds.json", self.thresholds)
        _write_json(directory / "train_config.json", self.train_config)
        _write_json(directory / "metrics.json", self.metrics)
        (directory / "README.md").write_text(render_model_card(self), encoding="utf-8")
        self.path = directory
        return directory

    def record_test_figures(self, test: dict[str, Any]) -> None:
        """Store figures on the model's own test rows (``carelens evaluate --held-out``)
        as ``metrics["test"]`` and rewrite ``metrics.json`` and the model card; the
        weights and everything else in the directory stay as they are."""
        if self.path is None:
            raise ValueError("the model has no directory: save it first")
        self.metrics = {**self.metrics, "test": test}
        _write_json(self.path / "metrics.json", self.metrics)
        (self.path / "README.md").write_text(render_model_card(self), encoding="utf-8")

    @classmethod
    def from_pretrained(cls, directory: str | Path) -> CarelensModel:
        directory = Path(directory)
        if not directory.is_dir():
            raise ModelLoadError(f"model directory not found: {directory}")
        for rel in REQUIRED_FILES:
            if not (directory / rel).is_file():
                raise ModelLoadError(
                    f"{directory}: required file {rel} is missing (not a complete carelens model directory)"
                )
        raw_cfg = _read_json(directory / "model_config.json")
        version = raw_cfg.pop("format_version", None)
        if version != FORMAT_VERSION:
            raise ModelLoadError(
                f"{directory / 'model_config.json'}: format_version {version!r}, expected {FORMAT_VERSION}"
            )
        try:
            config = ModelConfig.from_dict(raw_cfg)
        except (TypeError, ValueError) as exc:
            raise ModelLoadError(f"{directory / 'model_config.json'}: {exc}") from exc
        try:
            taxonomy = Taxonomy.load(directory / "taxonomy.yaml")
        except TaxonomyError as exc:
            raise ModelLoadError(str(exc)) from exc
        try:
            encoder = _load_encoder(directory / "encoder")
        except Exception as exc:  # transformers raises many kinds
            raise ModelLoadError(
                f"{directory / 'encoder'}: cannot load the encoder: {exc}"
            ) from exc
        try:
            tokenizer = load_tokenizer(directory / "tokenizer")
        except Exception as exc:
            raise ModelLoadError(
                f"{directory / 'tokenizer/tokenizer.json'}: cannot load: {exc}"
            ) from exc
        emb_rows = encoder.get_input_embeddings().weight.shape[0]
        if tokenizer.get_vocab_size() > emb_rows:
            raise ModelLoadError(
                f"{directory / 'tokenizer/tokenizer.json'}: vocabulary has {tokenizer.get_vocab_size()} tokens "
                f"but the encoder has only {emb_rows} embeddings"
            )
        classifier = MultiTaskClassifier(encoder, taxonomy, config)
        try:
            heads = load_file(str(directory / "heads.safetensors"))
        except (SafetensorError, OSError) as exc:
            raise ModelLoadError(
                f"{directory / 'heads.safetensors'}: not a valid safetensors file: {exc}"
            ) from exc
        _check_heads(directory, classifier, heads)
        if config.sparse.enabled and config.sparse.size > 1:
            vocab_file = directory / "sparse_vocab.json"
            if not vocab_file.is_file():
                raise ModelLoadError(f"{vocab_file} is missing (the sparse path's n-grams)")
            vocab = SparseVocab.from_dict(config.sparse, _read_json(vocab_file))
            if len(vocab) != config.sparse.size or len(vocab.chars) != config.sparse.char_size:
                raise ModelLoadError(
                    f"{vocab_file}: {len(vocab)} n-grams, model_config.json says {config.sparse.size}"
                )
            classifier.sparse_vocab = vocab
        classifier.load_state_dict(heads, strict=False)
        classifier.eval()
        calibration = _read_json(directory / "calibration.json")
        thresholds = _read_json(directory / "thresholds.json")
        for name, data in (("calibration.json", calibration), ("thresholds.json", thresholds)):
            extra = set(data) - set(taxonomy.task_names)
            if extra:
                raise ModelLoadError(
                    f"{directory / name}: tasks {sorted(extra)} are not in taxonomy.yaml"
                )
        model = cls(
            classifier=classifier,
            tokenizer=tokenizer,
            calibration=calibration,
            thresholds=thresholds,
            train_config=_read_json_optional(directory / "train_config.json"),
            metrics=_read_json_optional(directory / "metrics.json"),
            path=directory,
        )
        return model


def _check_heads(
    directory: Path, classifier: MultiTaskClassifier, heads: dict[str, torch.Tensor]
) -> None:
    expected = classifier.head_state_dict()
    where = directory / "heads.safetensors"
    saved_tasks = sorted({k.split(".")[1] for k in heads if k.startswith("heads.")})
    wanted_tasks = sorted(classifier.taxonomy.task_names)
    if saved_tasks != wanted_tasks:
        raise ModelLoadError(
            f"{where}: heads for tasks {saved_tasks} but taxonomy.yaml defines {wanted_tasks}"
        )
    missing = sorted(set(expected) - set(heads))
    if missing:
        raise ModelLoadError(
            f"{where}: missing tensors {missing} (n-gram settings in model_config.json differ?)"
        )
    extra = sorted(set(heads) - set(expected))
    if extra:
        raise ModelLoadError(
            f"{where}: unexpected tensors {extra} (n-gram settings in model_config.json differ?)"
        )
    for key, tensor in expected.items():
        if tuple(heads[key].shape) != tuple(tensor.shape):
            task = key.split(".")[1] if key.startswith("heads.") else None
            if task is not None:
                n = classifier.taxonomy[task].num_labels
                raise ModelLoadError(
                    f"{where}: head {task!r} tensor {key} has shape {tuple(heads[key].shape)} but "
                    f"taxonomy.yaml lists {n} labels for {task!r} (expected {tuple(tensor.shape)})"
                )
            raise ModelLoadError(
                f"{where}: {key} has shape {tuple(heads[key].shape)}, expected {tuple(tensor.shape)}"
            )


def _write_json(path: Path, data: Any) -> None:
    path.write_text(
        json.dumps(data, ensure_ascii=False, indent=2, sort_keys=False) + "\n", encoding="utf-8"
    )


def _read_json(path: Path) -> dict[str, Any]:
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise ModelLoadError(f"{path}: not valid JSON: {exc}") from exc
    if not isinstance(data, dict):
        raise ModelLoadError(f"{path}: expected a JSON object")
    return data


def _read_json_optional(path: Path) -> dict[str, Any]:
    return _read_json(path) if path.is_file() else {}
