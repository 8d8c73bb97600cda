"""Shared fixtures: the local PostgreSQL (a fresh schema per test), and a tiny random
BERT (hidden 32, 2 layers) with a tokenizer from a small vocabulary, built from config
in tmp_path. No network, no downloaded weights."""

from __future__ import annotations

import os
import uuid
from pathlib import Path

import pytest

from tests.postgres import PG_URL, unavailable

os.environ.setdefault("HF_HUB_OFFLINE", "1")
# the signal tests run the scan themselves; no app starts its hourly worker
os.environ["CARELENS_SIGNAL_POLL_SECONDS"] = "0"

WORDS = (
    "the a an it is was this my i you we they not no very but and or to of for in on with "
    "great good bad love hate broke broken arrived late never delivery shipping package box "
    "refund return money charged twice card order cancel account password login size small "
    "big fit fire burn smoke hurt lawyer thanks thank works work stopped quality cheap item "
    "wrong color missing help please fast slow product seller service rude reply email"
).split()
CJK = list("这个充电器起火了太危险我要投诉很好质量差快递慢退款发错尺码小")
PUNCT = list(".,!?;:'\"()-") + ["，", "。", "！", "？"]


def tiny_tokenizer():
    from model.tokenization import build_wordpiece_tokenizer

    vocab = (
        WORDS
        + CJK
        + PUNCT
        + ["##s", "##ed", "##ing"]
        + list("abcdefghijklmnopqrstuvwxyz0123456789")
    )
    return build_wordpiece_tokenizer(vocab)


def tiny_bert(vocab_size: int):
    """A random BERT encoder: hidden 32, 2 layers, built from config (no weights)."""
    from transformers import BertConfig, BertModel

    cfg = BertConfig(
        vocab_size=vocab_size,
        hidden_size=32,
        num_hidden_layers=2,
        num_attention_heads=2,
        intermediate_size=64,
        max_position_embeddings=128,
    )
    return BertModel(cfg, add_pooling_layer=False)


def tiny_model(taxonomy=None, ngram: bool = True, seed: int = 0, sparse: bool = False):
    import torch

    from model.classifier import ModelConfig
    from model.modeling import CarelensModel
    from model.ngrams import NgramConfig, SparseConfig
    from model.taxonomy import Taxonomy

    tok = tiny_tokenizer()
    torch.manual_seed(seed)
    encoder = tiny_bert(tok.get_vocab_size())
    config = ModelConfig(
        backbone="tiny-random",
        max_length=64,
        ngram=NgramConfig(enabled=ngram, buckets=1024, dim=8),
        sparse=SparseConfig(enabled=sparse),
    )
    return CarelensModel.from_parts(encoder, tok, taxonomy or Taxonomy.default(), config, seed=seed)


@pytest.fixture(scope="session")
def tiny_model_dir(tmp_path_factory) -> Path:
    """A saved tiny model directory (read-only use: copy it before modifying)."""
    directory = tmp_path_factory.mktemp("tiny") / "model"
    tiny_model().save_pretrained(directory)
    return directory


@pytest.fixture(scope="session")
def tiny_predictor(tiny_model_dir):
    from model.predictor import Predictor

    return Predictor.load(tiny_model_dir)


@pytest.fixture(scope="session")
def tiny_backbone_dir(tmp_path_factory) -> Path:
    """A tiny random BERT saved as a Hugging Face folder (config.json, safetensors,
    tokenizer.json): usable anywhere a backbone path is accepted."""
    import torch

    from model.tokenization import save_tokenizer

    directory = tmp_path_factory.mktemp("backbone")
    tok = tiny_tokenizer()
    torch.manual_seed(0)
    tiny_bert(tok.get_vocab_size()).save_pretrained(directory)
    save_tokenizer(tok, directory)
    return directory


# -- PostgreSQL: skipped where there is none, a failure under CI=true ----------------------
@pytest.fixture(scope="session")
def pg_ready() -> None:
    reason = unavailable()
    if reason is not None:
        if os.environ.get("CI") == "true":
            pytest.fail(f"PostgreSQL must answer in CI ({PG_URL}): {reason}")
        pytest.skip(f"no PostgreSQL at {PG_URL} ({reason}); CI=true makes this a failure")


@pytest.fixture
def pg_url(pg_ready):
    """A PostgreSQL URL whose search_path is a fresh schema (dropped afterwards)."""
    import psycopg

    schema = f"t_{uuid.uuid4().hex[:12]}"
    with psycopg.connect(PG_URL, autocommit=True) as conn:
        conn.execute(f'CREATE SCHEMA "{schema}"')
    yield f"{PG_URL}?options=-csearch_path%3D{schema}"
    with psycopg.connect(PG_URL, autocommit=True) as conn:
        conn.execute(f'DROP SCHEMA "{schema}" CASCADE')
