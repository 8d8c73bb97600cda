from __future__ import annotations

from model.predictor import Predictor
from model.tokenization import extend_cjk_vocab, is_cjk
from tests.conftest import tiny_model, tiny_tokenizer

ZH = ["物流很慢，包装破损", "物流太慢了", "包装破损严重", "客服态度恶劣", "物流慢"]


def test_is_cjk():
    assert is_cjk("物") and is_cjk("㐀")
    assert not is_cjk("a") and not is_cjk("，") and not is_cjk("😀")


def test_extension_turns_unknown_characters_into_tokens():
    tok = tiny_tokenizer()
    assert "[UNK]" in tok.encode("物流").tokens
    extended, added = extend_cjk_vocab(tok, ZH, min_count=2)
    assert added[:2] == ["物", "流"]  # most frequent first
    assert sorted(added) == sorted("物流包装破损")  # count >= 2 and not known (慢 already is)
    assert extended.encode("物流很慢").tokens[1:3] == ["物", "流"]
    assert "[UNK]" not in extended.encode("物流慢").tokens
    assert extended.get_vocab_size() == tok.get_vocab_size() + len(added)
    assert extended.encode("the box").tokens == tok.encode("the box").tokens  # English untouched


def test_min_count_filters_rare_characters():
    _, added = extend_cjk_vocab(tiny_tokenizer(), ZH, min_count=3)
    assert added == ["物", "流"]  # 慢 (3 times) is in the vocabulary already


def test_model_grows_embeddings_and_round_trips(tmp_path):
    base = tiny_model()
    rows = base.classifier.encoder.get_input_embeddings().weight.shape[0]
    from model.modeling import CarelensModel

    m = CarelensModel.from_parts(
        base.classifier.encoder,
        base.tokenizer,
        base.taxonomy,
        base.config,
        cjk_texts=ZH,
        cjk_min_count=1,
    )
    grown = m.classifier.encoder.get_input_embeddings().weight.shape[0]
    assert grown == m.tokenizer.get_vocab_size() > rows
    m.save_pretrained(tmp_path / "m")
    p = Predictor.load(tmp_path / "m")
    assert p.model.tokenizer.get_vocab_size() == grown
    assert p.predict(["客服态度恶劣"])[0]["sentiment"].label


# -- trimming a SentencePiece (Unigram) vocabulary ------------------------------------

UNIGRAM_PIECES = [
    ("<s>", 0.0), ("<pad>", 0.0), ("</s>", 0.0), ("<unk>", 0.0),
    ("\u2581", -2.0), ("\u2581hello", -3.0), ("\u2581world", -3.0), ("\u2581wor", -5.0),
    ("ld", -5.0), ("好", -4.0), ("吃", -4.0), ("好吃", -4.5),
    ("\u2581привет", -3.0), ("при", -4.0), ("вет", -4.0), ("\u2581мир", -3.0),
    ("п", -6.0), ("р", -6.0), ("и", -6.0), ("в", -6.0), ("е", -6.0), ("т", -6.0),
    ("м", -6.0), ("<mask>", 0.0),
]  # fmt: skip


def unigram_tokenizer():
    from tokenizers import Tokenizer, pre_tokenizers, processors
    from tokenizers.models import Unigram

    tok = Tokenizer(Unigram(UNIGRAM_PIECES, unk_id=3, byte_fallback=False))
    tok.pre_tokenizer = pre_tokenizers.Metaspace()
    tok.post_processor = processors.TemplateProcessing(
        single="<s> $A </s>", special_tokens=[("<s>", 0), ("</s>", 2)]
    )
    tok.add_special_tokens(["<s>", "<pad>", "</s>", "<unk>"])
    return tok


def test_trimming_keeps_used_latin_chinese_and_single_character_pieces():
    from model.tokenization import trim_unigram_vocab, unigram_pieces_to_keep

    tok = unigram_tokenizer()
    texts = ["hello world", "好吃", "xвет"]
    keep = unigram_pieces_to_keep(tok, texts)
    kept = {UNIGRAM_PIECES[i][0] for i in keep}
    # specials; Latin and Chinese pieces (used or not); the used Cyrillic piece; every
    # one-character piece; not the unused Cyrillic words
    assert {"<s>", "<pad>", "</s>", "<unk>", "\u2581wor", "ld", "好吃", "вет", "п", "м"} <= kept
    assert not kept & {"\u2581привет", "при", "\u2581мир"}
    small = trim_unigram_vocab(tok, keep)
    assert small.get_vocab_size() == len(keep) < tok.get_vocab_size()
    for text in texts + ["wor ld 好"]:  # cut exactly as before, ids renumbered
        assert [keep[i] for i in small.encode(text).ids] == tok.encode(text).ids
    assert small.encode("hello").ids[0] == 0 and small.encode("hello").ids[-1] == 2
    # a word whose pieces went is cut into the pieces left, not <unk>
    assert tok.encode("привет", add_special_tokens=False).tokens == ["\u2581привет"]
    assert small.encode("привет", add_special_tokens=False).tokens == [
        "\u2581",
        "п",
        "р",
        "и",
        "вет",
    ]


def test_only_a_unigram_vocabulary_is_trimmed():
    import pytest

    from model.tokenization import unigram_pieces_to_keep

    with pytest.raises(ValueError, match="Unigram"):
        unigram_pieces_to_keep(tiny_tokenizer(), ["hello"])


def test_trimmed_model_scores_its_texts_as_before_and_round_trips(tmp_path):
    import torch

    from model.classifier import ModelConfig
    from model.modeling import CarelensModel
    from model.taxonomy import Taxonomy
    from tests.conftest import tiny_bert

    torch.manual_seed(0)
    tok = unigram_tokenizer()
    model = CarelensModel.from_parts(
        tiny_bert(tok.get_vocab_size()), tok, Taxonomy.default(), ModelConfig(backbone="tiny")
    )
    texts = ["hello world", "好吃 hello", "вет"]
    before, _ = model.batched_logits(texts)
    assert model.trim_vocabulary(texts) == (len(UNIGRAM_PIECES), model.tokenizer.get_vocab_size())
    rows = model.classifier.encoder.get_input_embeddings().weight.shape[0]
    assert rows == model.tokenizer.get_vocab_size() < len(UNIGRAM_PIECES)
    after, _ = model.batched_logits(texts)
    for name in before:
        assert torch.allclose(before[name], after[name], atol=1e-6), name
    model.save_pretrained(tmp_path / "m")
    loaded = CarelensModel.from_pretrained(tmp_path / "m")
    assert loaded.classifier.encoder.get_input_embeddings().weight.shape[0] == rows
    again, _ = loaded.batched_logits(texts)
    for name in before:
        assert torch.allclose(before[name], again[name], atol=1e-6), name
