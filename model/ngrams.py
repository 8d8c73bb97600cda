"""Hashed character and word n-grams: a fastText-style side channel for the encoder.

The English backbone has seen no Chinese; its extended CJK embeddings start from
noise. A learned bag of hashed n-grams (character 1-3 grams for any script, word
1-2 grams for space-separated ones), mean-pooled and concatenated with the
encoder's sentence vector, gives every head direct access to the surface form and
is trained jointly with the encoder. Hashing uses CRC32, stable across processes.

Also the sparse path's features (``SparseConfig``, ``SparseVocab``): exact-vocabulary
TF-IDF n-grams, the same as the evaluation floor's.
"""

from __future__ import annotations

import functools
import re
import zlib
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch

_WORD_RE = re.compile(r"\w+", re.UNICODE)
_SPACE_RE = re.compile(r"\s+")


@dataclass
class NgramConfig:
    enabled: bool = True
    buckets: int = 1 << 18
    dim: int = 64
    char_min_n: int = 1
    char_max_n: int = 3
    word_max_n: int = 2
    max_chars: int = 1024  # n-grams are taken from the first max_chars characters


def _bucket(gram: str, buckets: int) -> int:
    return zlib.crc32(gram.encode("utf-8", "replace")) % (buckets - 1) + 1  # 0 is padding


def ngram_ids(text: str, cfg: NgramConfig) -> list[int]:
    """Bucket ids (1..buckets-1) of the text's character and word n-grams."""
    text = _SPACE_RE.sub(" ", text[: cfg.max_chars].lower()).strip()
    ids: list[int] = []
    for n in range(cfg.char_min_n, cfg.char_max_n + 1):
        for i in range(len(text) - n + 1):
            gram = text[i : i + n]
            if not gram.isspace():
                ids.append(_bucket("c" + gram, cfg.buckets))
    words = _WORD_RE.findall(text)
    for n in range(1, cfg.word_max_n + 1):
        for i in range(len(words) - n + 1):
            ids.append(_bucket("w" + " ".join(words[i : i + n]), cfg.buckets))
    return ids


def batch_ngram_ids(texts: list[str], cfg: NgramConfig) -> torch.Tensor:
    """A [batch, max_len] LongTensor of bucket ids, right-padded with 0."""
    rows = [ngram_ids(t, cfg) or [0] for t in texts]
    width = max(len(r) for r in rows)
    out = torch.zeros((len(rows), width), dtype=torch.long)
    for i, r in enumerate(rows):
        out[i, : len(r)] = torch.tensor(r, dtype=torch.long)
    return out


@dataclass
class SparseConfig:
    """The sparse linear path: the TF-IDF features of the evaluation floor
    (``training.evaluate.TfidfBaseline``) -- word 1-2-grams and ``char_wb`` character
    1-4-grams over exact vocabularies, sublinear TF, each block L2-normalised -- with
    one full-rank linear map per task, added to the heads' logits. It is fitted like
    a logistic regression before the encoder is fine-tuned, so the encoder learns what
    the surface form misses. ``size`` and ``char_size`` are set when it is fitted:
    row 0 of its table is padding, rows ``1..char_size`` the character n-grams, the
    rest the word n-grams."""

    enabled: bool = False
    min_df: int = 2  # n-grams in fewer training texts are left out, as min_df does
    char_max_n: int = 4
    word_max_n: int = 2
    max_char_features: int = 300_000
    max_word_features: int = 200_000
    max_chars: int = 20_000  # longer texts: n-grams of their first max_chars characters
    size: int = 1
    char_size: int = 0


def _clip_lower(text: str, max_chars: int) -> str:
    return text[:max_chars].lower()


def sparse_vectorizers(cfg: SparseConfig) -> tuple[Any, Any]:
    """Unfitted scikit-learn (character, word) ``TfidfVectorizer``s: one definition for
    the sparse path and the floor, so the path alone computes the floor's features."""
    from sklearn.feature_extraction.text import TfidfVectorizer

    common = {
        "min_df": cfg.min_df,
        "sublinear_tf": True,
        "dtype": np.float64,
        "preprocessor": functools.partial(_clip_lower, max_chars=cfg.max_chars),
    }
    char = TfidfVectorizer(
        analyzer="char_wb",
        ngram_range=(1, cfg.char_max_n),
        max_features=cfg.max_char_features,
        **common,
    )
    word = TfidfVectorizer(
        analyzer="word",
        ngram_range=(1, cfg.word_max_n),
        max_features=cfg.max_word_features,
        **common,
    )
    return char, word


class SparseVocab:
    """The fitted vocabularies: text -> (row id -> count) of its known n-grams, with
    the same analyzers (lower-casing, tokenisation, ``char_wb`` padding) as
    ``sparse_vectorizers``. Saved with the model as ``sparse_vocab.json``."""

    def __init__(self, cfg: SparseConfig, chars: list[str], words: list[str]) -> None:
        self.cfg = cfg
        self.chars, self.words = chars, words
        char_vec, word_vec = sparse_vectorizers(cfg)
        self._char_an = char_vec.build_analyzer()
        self._word_an = word_vec.build_analyzer()
        self._ids = {g: i + 1 for i, g in enumerate(chars)}
        self._word_ids = {g: i + 1 + len(chars) for i, g in enumerate(words)}

    @classmethod
    def from_vectorizers(cls, cfg: SparseConfig, char_vec: Any, word_vec: Any) -> SparseVocab:
        """From fitted vectorizers: their columns in order (row id = 1 + column)."""
        chars = [g for g, _ in sorted(char_vec.vocabulary_.items(), key=lambda kv: kv[1])]
        words = [g for g, _ in sorted(word_vec.vocabulary_.items(), key=lambda kv: kv[1])]
        return cls(cfg, chars, words)

    def __len__(self) -> int:
        return 1 + len(self.chars) + len(self.words)

    def counts(self, text: str) -> dict[int, int]:
        """Row id -> count of the text's n-grams that are in the vocabularies."""
        out: dict[int, int] = {}
        for grams, ids in ((self._char_an(text), self._ids), (self._word_an(text), self._word_ids)):
            for g in grams:
                i = ids.get(g)
                if i is not None:
                    out[i] = out.get(i, 0) + 1
        return out

    def to_dict(self) -> dict[str, list[str]]:
        return {"char": self.chars, "word": self.words}

    @classmethod
    def from_dict(cls, cfg: SparseConfig, data: dict[str, list[str]]) -> SparseVocab:
        return cls(cfg, list(data["char"]), list(data["word"]))


def sparse_block(ids: torch.Tensor, cfg: SparseConfig) -> torch.Tensor:
    """1 where a row id holds a word n-gram, 0 for character n-grams (and padding)."""
    return (ids > cfg.char_size).long()


def batch_sparse_inputs(
    texts: list[str], vocab: SparseVocab | None
) -> tuple[torch.Tensor, torch.Tensor]:
    """([batch, width] row ids, [batch, width] term frequencies), right-padded with 0.
    Without a vocabulary (a path not fitted yet) every row is padding only."""
    rows = [vocab.counts(t) if vocab is not None else {} for t in texts]
    width = max(1, max((len(r) for r in rows), default=0))
    ids = torch.zeros((len(rows), width), dtype=torch.long)
    tf = torch.zeros((len(rows), width), dtype=torch.float32)
    for i, r in enumerate(rows):
        if r:
            ids[i, : len(r)] = torch.tensor(list(r.keys()), dtype=torch.long)
            tf[i, : len(r)] = torch.tensor(list(r.values()), dtype=torch.float32)
    return ids, tf
