"""Fast (Rust) tokenization: WordPiece, the CJK vocabulary extension, and trimming a
SentencePiece vocabulary to the pieces a model needs.

The English backbone's vocabulary holds only 244 CJK characters, so most Chinese
text becomes [UNK]. BERT's normaliser already isolates every CJK character as its
own word, so adding characters straight to the WordPiece vocabulary (not as
"added tokens") makes each one a single token; the encoder's embedding matrix is
grown to match (see ``model.classifier.MultiTaskClassifier.extend_embeddings``).

A multilingual SentencePiece vocabulary (XLM-R's 250,002 pieces, 100 languages) is
mostly rows a seller's messages never use: ``unigram_pieces_to_keep`` and
``trim_unigram_vocab`` keep the pieces written in Latin or Chinese script, those the
training texts use and every one-character piece, and
``MultiTaskClassifier.keep_embeddings`` keeps the matching rows.
"""

from __future__ import annotations

import json
from collections import Counter
from collections.abc import Iterable
from pathlib import Path

from tokenizers import Tokenizer, normalizers, pre_tokenizers, processors
from tokenizers.models import WordPiece

SPECIAL_TOKENS = ("[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]")


def is_cjk(ch: str) -> bool:
    """True for the characters BERT's normaliser treats as Chinese (CJK ideographs)."""
    cp = ord(ch)
    return (
        0x4E00 <= cp <= 0x9FFF
        or 0x3400 <= cp <= 0x4DBF
        or 0x20000 <= cp <= 0x2A6DF
        or 0x2A700 <= cp <= 0x2B73F
        or 0x2B740 <= cp <= 0x2B81F
        or 0x2B820 <= cp <= 0x2CEAF
        or 0xF900 <= cp <= 0xFAFF
        or 0x2F800 <= cp <= 0x2FA1F
    )


def build_wordpiece_tokenizer(vocab: Iterable[str], lowercase: bool = True) -> Tokenizer:
    """A BERT-style fast tokenizer from a word list (specials are added first)."""
    tokens = list(SPECIAL_TOKENS) + [t for t in vocab if t not in SPECIAL_TOKENS]
    vocab_map = {tok: i for i, tok in enumerate(dict.fromkeys(tokens))}
    tok = Tokenizer(WordPiece(vocab_map, unk_token="[UNK]", max_input_chars_per_word=100))
    tok.normalizer = normalizers.BertNormalizer(
        clean_text=True, handle_chinese_chars=True, strip_accents=None, lowercase=lowercase
    )
    tok.pre_tokenizer = pre_tokenizers.BertPreTokenizer()
    tok.post_processor = processors.TemplateProcessing(
        single="[CLS] $A [SEP]",
        pair="[CLS] $A [SEP] $B:1 [SEP]:1",
        special_tokens=[("[CLS]", vocab_map["[CLS]"]), ("[SEP]", vocab_map["[SEP]"])],
    )
    tok.add_special_tokens(list(SPECIAL_TOKENS))
    return tok


def special_ids(tok: Tokenizer) -> tuple[int, int | None]:
    """(padding id, end-of-sequence id) of a BERT ([PAD]/[SEP]) or SentencePiece
    (<pad>/</s>) vocabulary; 0 and None when it has neither."""
    for pad, sep in (("[PAD]", "[SEP]"), ("<pad>", "</s>")):
        if tok.token_to_id(pad) is not None:
            return tok.token_to_id(pad), tok.token_to_id(sep)
    return 0, None


def load_tokenizer(path: str | Path) -> Tokenizer:
    """Load ``tokenizer.json`` from a file or a directory, with padding/truncation off."""
    path = Path(path)
    file = path / "tokenizer.json" if path.is_dir() else path
    if not file.is_file():
        raise FileNotFoundError(f"tokenizer file missing: {file}")
    tok = Tokenizer.from_file(str(file))
    tok.no_padding()
    tok.no_truncation()
    return tok


def save_tokenizer(tok: Tokenizer, directory: str | Path) -> None:
    """Write ``tokenizer.json`` plus the small Hugging Face side files."""
    directory = Path(directory)
    directory.mkdir(parents=True, exist_ok=True)
    tok.save(str(directory / "tokenizer.json"))
    vocab = tok.get_vocab()
    ordered = sorted(vocab.items(), key=lambda kv: kv[1])
    (directory / "vocab.txt").write_text("\n".join(t for t, _ in ordered) + "\n", encoding="utf-8")
    if json.loads(tok.to_str())["model"]["type"] == "Unigram":  # SentencePiece (XLM-R)
        specials = {"bos_token": "<s>", "eos_token": "</s>", "cls_token": "<s>"}
        specials |= {"sep_token": "</s>", "unk_token": "<unk>", "pad_token": "<pad>"}
        config = {"tokenizer_class": "PreTrainedTokenizerFast", **specials}
    else:
        config = {
            "tokenizer_class": "BertTokenizer",
            "do_lower_case": True,
            "tokenize_chinese_chars": True,
            "unk_token": "[UNK]",
            "sep_token": "[SEP]",
            "pad_token": "[PAD]",
            "cls_token": "[CLS]",
            "mask_token": "[MASK]",
        }
    config["model_max_length"] = 512
    (directory / "tokenizer_config.json").write_text(json.dumps(config, indent=2), encoding="utf-8")


def cjk_char_counts(texts: Iterable[str]) -> Counter[str]:
    counts: Counter[str] = Counter()
    for text in texts:
        counts.update(ch for ch in text if is_cjk(ch))
    return counts


def extend_cjk_vocab(
    tok: Tokenizer, texts: Iterable[str], min_count: int = 3, max_new: int = 8000
) -> tuple[Tokenizer, list[str]]:
    """Return a tokenizer whose WordPiece vocabulary also holds the CJK characters
    seen at least ``min_count`` times in ``texts`` (most frequent first, at most
    ``max_new``), and the list of characters added (their ids follow the old vocab).
    """
    vocab = tok.get_vocab()
    counts = cjk_char_counts(texts)
    new = [ch for ch, n in counts.most_common() if n >= min_count and ch not in vocab][:max_new]
    if not new:
        return tok, []
    data = json.loads(tok.to_str())
    if data["model"]["type"] == "Unigram":
        # a SentencePiece vocabulary: (piece, log-probability) rows, ids by position;
        # a new character gets the lowest score, so it only wins where it is the sole
        # piece that covers the character (before, the character was <unk>)
        pieces: list[list] = data["model"]["vocab"]
        if len(pieces) != len(vocab):
            raise ValueError("a Unigram tokenizer with added tokens cannot be extended")
        low = min(score for _, score in pieces)
        pieces += [[ch, low] for ch in new]
    else:
        wp_vocab: dict[str, int] = data["model"]["vocab"]
        next_id = max(max(wp_vocab.values()), max(vocab.values())) + 1
        for i, ch in enumerate(new):
            wp_vocab[ch] = next_id + i
    extended = Tokenizer.from_str(json.dumps(data, ensure_ascii=False))
    extended.no_padding()
    extended.no_truncation()
    return extended, new


def _latin_or_chinese(piece: str) -> bool:
    """A piece written only in the scripts of English and Chinese messages: Latin
    (up to Latin Extended-B, accents included), CJK ideographs, CJK punctuation and
    full-width forms."""
    text = piece.replace("\u2581", "")
    return all(
        ord(ch) < 0x250 or is_cjk(ch) or 0x3000 <= ord(ch) <= 0x303F or 0xFF00 <= ord(ch) <= 0xFFEF
        for ch in text
    )


def unigram_pieces_to_keep(tok: Tokenizer, texts: Iterable[str], batch: int = 4096) -> list[int]:
    """The ids a trimmed SentencePiece (Unigram) vocabulary keeps, ascending: the
    special tokens, every piece the tokenizer uses on ``texts``, every piece written
    only in Latin or Chinese script (so English and Chinese messages the texts do not
    cover are still cut as the full vocabulary cuts them, nearly always), and every
    piece of one character (with or without the word-start mark ``▁``), so a text in
    another script still has a segmentation without ``<unk>`` wherever the full
    vocabulary had one (into smaller pieces than before)."""
    data = json.loads(tok.to_str())
    if data["model"]["type"] != "Unigram":
        raise ValueError(
            f"only a SentencePiece (Unigram) vocabulary can be trimmed, not {data['model']['type']}"
        )
    pieces = data["model"]["vocab"]
    keep = {int(t["id"]) for t in data.get("added_tokens", [])}
    keep.add(int(data["model"]["unk_id"]))
    keep.update(
        i
        for i, (p, _) in enumerate(pieces)
        if len(p.replace("\u2581", "")) <= 1 or _latin_or_chinese(p)
    )
    texts = list(texts)
    for start in range(0, len(texts), batch):
        for enc in tok.encode_batch(texts[start : start + batch], add_special_tokens=False):
            keep.update(enc.ids)
    return sorted(keep)


def trim_unigram_vocab(tok: Tokenizer, keep: list[int]) -> Tokenizer:
    """The tokenizer with only the pieces ``keep`` (ascending old ids; the new id of a
    piece is its position there). Scores stay, so a text made of kept pieces is cut
    exactly as before; other texts are cut into the best kept pieces."""
    data = json.loads(tok.to_str())
    if data["model"]["type"] != "Unigram":
        raise ValueError("only a SentencePiece (Unigram) vocabulary can be trimmed")
    if any(b <= a for a, b in zip(keep, keep[1:], strict=False)):
        raise ValueError("keep must be ascending ids without repeats")
    new_id = {old: new for new, old in enumerate(keep)}
    specials = [int(t["id"]) for t in data.get("added_tokens", [])] + [data["model"]["unk_id"]]
    missing = [i for i in specials if i not in new_id]
    if missing:
        raise ValueError(f"a trimmed vocabulary must keep the special tokens (ids {missing})")
    pieces = data["model"]["vocab"]
    data["model"]["vocab"] = [pieces[i] for i in keep]
    data["model"]["unk_id"] = new_id[data["model"]["unk_id"]]
    for t in data.get("added_tokens", []):
        t["id"] = new_id[int(t["id"])]
    post = data.get("post_processor") or {}
    for entry in (post.get("special_tokens") or {}).values():  # TemplateProcessing
        entry["ids"] = [new_id[int(i)] for i in entry["ids"]]
    for key in ("cls", "sep"):  # RobertaProcessing / BertProcessing: [token, id]
        if isinstance(post.get(key), list):
            post[key][1] = new_id[int(post[key][1])]
    trimmed = Tokenizer.from_str(json.dumps(data, ensure_ascii=False))
    trimmed.no_padding()
    trimmed.no_truncation()
    return trimmed
