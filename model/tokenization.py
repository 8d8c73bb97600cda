"""Fast (Rust) WordPiece tokenization and the CJK vocabulary extension.

The English backbone's vocabulary holds only 244 CJK characters, so most Chinese
text becomes [UNK]. BERT's normaliser already isolates every CJK character as its
own word, so adding characters straight to the WordPiece vocabulary (not as
"added tokens") makes each one a single token; the encoder's embedding matrix is
grown to match (see ``model.classifier.MultiTaskClassifier.extend_vocabulary``).
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
