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
    from model.pretrained import CarelensModel

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
