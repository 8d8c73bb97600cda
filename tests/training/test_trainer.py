from __future__ import annotations

import random

import pytest

from model.predictor import Predictor
from tests.conftest import tiny_model
from training.data import Example
from training.trainer import TrainConfig, predict_probs, quick_scores, train

POS = [
    "great product thanks",
    "love it works great",
    "good quality fast delivery",
    "thanks good seller",
]
NEG = [
    "box arrived broken",
    "never arrived refund",
    "cheap item stopped work",
    "rude seller bad service",
]


def _data(n: int, seed: int = 0) -> list[Example]:
    rng = random.Random(seed)
    out = []
    for _ in range(n):
        pos = rng.random() < 0.5
        text = rng.choice(POS if pos else NEG)
        labels = {"sentiment": ["positive" if pos else "negative"]}
        if rng.random() < 0.5:  # half the rows carry no urgency label
            labels["urgency"] = ["low" if pos else "medium"]
        out.append(Example(text=text, labels=labels, meta={"source": "toy"}))
    return out


@pytest.mark.slow
def test_training_learns_and_saves_best(tmp_path):
    model = tiny_model()
    train_set, val_set = _data(96), _data(32, seed=1)
    before = quick_scores(model, predict_probs(model, val_set), val_set)
    cfg = TrainConfig(
        epochs=4, batch_size=8, learning_rate=1e-3, head_learning_rate=1e-2, max_length=32
    )
    result = train(model, train_set, val_set, cfg, out_dir=tmp_path / "m", progress=False)
    after = quick_scores(model, predict_probs(model, val_set), val_set)
    assert (
        after["sentiment"] >= 0.9 > before["sentiment"] or after["sentiment"] > before["sentiment"]
    )
    assert len(result["history"]) == 4 and result["steps"] == 4 * 12
    saved = Predictor.load(tmp_path / "m")
    assert saved.model.train_config["epochs"] == 4  # resolved config is saved with the weights
    assert saved.predict(["box arrived broken"])[0]["sentiment"].label == "negative"


@pytest.mark.parametrize("bf16", [False, True])
def test_same_seed_same_metrics(bf16):
    import torch

    from training.trainer import bf16_supported

    if bf16 and not bf16_supported():
        pytest.skip("PyTorch reports no bfloat16 support on this CPU")
    runs = []
    for _ in range(2):
        model = tiny_model()
        cfg = TrainConfig(
            epochs=1, batch_size=8, learning_rate=1e-3, max_length=32, seed=3, bf16=bf16
        )
        epoch = train(model, _data(48), _data(16, seed=1), cfg, progress=False)["history"][0]
        weights = torch.cat([p.detach().flatten() for p in model.classifier.parameters()])
        runs.append((epoch["train_loss"], epoch["val"], weights))
    assert runs[0][:2] == runs[1][:2]
    # the same weights bit for bit, not only the same rounded figures
    assert torch.equal(runs[0][2], runs[1][2])
    assert not torch.equal(
        runs[0][2], torch.cat([p.detach().flatten() for p in tiny_model().classifier.parameters()])
    )


def test_ngram_pretraining_leaves_the_encoder_alone():
    import torch

    from training.trainer import pretrain_ngrams

    model = tiny_model()
    enc_before = {k: v.clone() for k, v in model.classifier.encoder.state_dict().items()}
    ngram_before = model.classifier.ngram_embedding.weight.detach().clone()
    data = _data(128)
    before = quick_scores(model, predict_probs(model, data), data)["sentiment"]
    pretrain_ngrams(model, data, TrainConfig(), epochs=10, progress=False)
    after = quick_scores(model, predict_probs(model, data), data)["sentiment"]
    assert all(
        torch.equal(v, model.classifier.encoder.state_dict()[k]) for k, v in enc_before.items()
    )
    assert not torch.equal(ngram_before, model.classifier.ngram_embedding.weight)
    assert after > max(before, 0.9)


def test_freeze_word_embeddings_keeps_them_and_trains_the_rest():
    model = tiny_model()
    enc = model.classifier.encoder
    emb0 = enc.get_input_embeddings().weight.detach().clone()
    layer0 = next(p for n, p in enc.named_parameters() if "layer.0" in n).detach().clone()
    cfg = TrainConfig(epochs=1, batch_size=8, learning_rate=1e-3, freeze_word_embeddings=True)
    train(model, _data(32), [], cfg, progress=False)
    assert enc.get_input_embeddings().weight.equal(emb0)
    assert not next(p for n, p in enc.named_parameters() if "layer.0" in n).equal(layer0)
    # and without the flag the embeddings of the batch's tokens move
    train(
        model,
        _data(32),
        [],
        TrainConfig(epochs=1, batch_size=8, learning_rate=1e-3),
        progress=False,
    )
    assert not enc.get_input_embeddings().weight.equal(emb0)


def test_bf16_runs_the_encoder_in_bfloat16_only_while_fine_tuning():
    import torch

    from training.trainer import bf16_supported

    if not bf16_supported():
        pytest.skip("PyTorch reports no bfloat16 support on this CPU")
    model = tiny_model()
    seen: list[torch.dtype] = []
    # the encoder's matrix products (its LayerNorms give float32 under autocast)
    linear = next(m for m in model.classifier.encoder.modules() if isinstance(m, torch.nn.Linear))
    linear.register_forward_hook(lambda mod, args, out: seen.append(out.dtype))
    data = _data(64)
    cfg = TrainConfig(
        epochs=3, batch_size=8, learning_rate=1e-3, head_learning_rate=1e-2, bf16=True
    )
    result = train(model, data, [], cfg, progress=False)
    assert seen and set(seen) == {torch.bfloat16}  # every training step
    assert [h["precision"] for h in result["history"]] == ["bf16"] * 3
    assert all(p.dtype == torch.float32 for p in model.classifier.parameters())
    seen.clear()
    after = quick_scores(model, predict_probs(model, data), data)["sentiment"]
    assert seen and set(seen) == {torch.float32}  # predictions after training: float32
    assert after >= 0.9
    fp32 = train(tiny_model(), data, [], TrainConfig(epochs=1, batch_size=8), progress=False)
    assert fp32["history"][0]["precision"] == "fp32"


def test_freeze_layers_keeps_the_lower_layers_as_they_were():
    import torch

    from tests.conftest import tiny_bert
    from training.trainer import freeze_lower_layers

    enc = tiny_bert(50)
    before = [p.detach().clone() for p in enc.encoder.layer[0].parameters()]
    freeze_lower_layers(enc, 1)
    assert not any(p.requires_grad for p in enc.encoder.layer[0].parameters())
    assert not any(p.requires_grad for p in enc.embeddings.parameters())
    assert all(p.requires_grad for p in enc.encoder.layer[1].parameters())
    out = enc(input_ids=torch.tensor([[1, 2, 3]])).last_hidden_state.sum()
    out.backward()
    assert all(p.grad is None for p in enc.encoder.layer[0].parameters())
    assert all(
        torch.equal(a, b) for a, b in zip(before, enc.encoder.layer[0].parameters(), strict=True)
    )
    with pytest.raises(ValueError, match="more than"):
        freeze_lower_layers(tiny_bert(50), 5)
