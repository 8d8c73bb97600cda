"""Hashed character and word n-grams: a fastText-style side channel for the encoder.

The English backbone has seen no Chinese; its extended CJK embeddings start from
noise. A learned bag of hashed n-grams (character 1-3 grams for any script, word
1-2 grams for space-separated ones), mean-pooled and concatenated with the
encoder's sentence vector, gives every head direct access to the surface form and
is trained jointly with the encoder. Hashing uses CRC32, stable across processes.
"""

from __future__ import annotations

import re
import zlib
from collections.abc import Iterator
from dataclasses import dataclass

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


def _grams(text: str, cfg: NgramConfig | SparseConfig) -> Iterator[str]:
    """The text's character n-grams (prefixed ``c``), then its word n-grams (``w``)."""
    text = _SPACE_RE.sub(" ", text[: cfg.max_chars].lower()).strip()
    for n in range(cfg.char_min_n, cfg.char_max_n + 1):
        for i in range(len(text) - n + 1):
            gram = text[i : i + n]
            if not gram.isspace():
                yield "c" + gram
    words = _WORD_RE.findall(text)
    for n in range(1, cfg.word_max_n + 1):
        for i in range(len(words) - n + 1):
            yield "w" + " ".join(words[i : i + n])


def ngram_ids(text: str, cfg: NgramConfig | SparseConfig) -> list[int]:
    """Bucket ids (1..buckets-1) of the text's character and word n-grams."""
    return [_bucket(g, cfg.buckets) for g in _grams(text, cfg)]


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
    """The sparse linear path: TF-IDF-weighted hashed n-grams (character 1-4 grams and
    word 1-2 grams by default) with one full-rank linear map per task, added to the
    heads' logits. It is fitted like a logistic regression before the encoder is
    fine-tuned, so the encoder learns what the surface form misses."""

    enabled: bool = False
    buckets: int = 1 << 20
    min_df: int = 2  # buckets in fewer training texts get idf 0 (ignored), as min_df does
    char_min_n: int = 1
    char_max_n: int = 4
    word_max_n: int = 2
    max_chars: int = 1024


def sparse_counts(text: str, cfg: SparseConfig) -> dict[int, int]:
    """Bucket id -> count of the text's n-grams (the term frequencies). Character
    n-grams hash into ``1 .. buckets/2 - 1``, word n-grams into ``buckets/2 ..
    buckets - 1``: the two blocks are normalised separately (``sparse_block``)."""
    half = cfg.buckets // 2
    counts: dict[int, int] = {}
    for g in _grams(text, cfg):
        i = _bucket(g, half) if g[0] == "c" else half + _bucket(g, half) - 1
        counts[i] = counts.get(i, 0) + 1
    return counts


def sparse_block(ids: torch.Tensor, cfg: SparseConfig) -> torch.Tensor:
    """1 where a bucket id holds word n-grams, 0 for character n-grams (and padding)."""
    return (ids >= cfg.buckets // 2).long()


def batch_sparse_inputs(texts: list[str], cfg: SparseConfig) -> tuple[torch.Tensor, torch.Tensor]:
    """([batch, width] bucket ids, [batch, width] term frequencies), right-padded with 0."""
    rows = [sparse_counts(t, cfg) for t in texts]
    width = max(1, max(len(r) for r in rows))
    ids = torch.zeros((len(rows), width), dtype=torch.long)
    tf = torch.zeros((len(rows), width), dtype=torch.float32)
    for i, r in enumerate(rows):
        if r:
            ids[i, : len(r)] = torch.tensor(list(r.keys()), dtype=torch.long)
            tf[i, : len(r)] = torch.tensor(list(r.values()), dtype=torch.float32)
    return ids, tf
