"""`carelens train` end to end on a tiny backbone and hand-made labelled files."""

from __future__ import annotations

import json
import random

import pytest
import yaml
from typer.testing import CliRunner

from carelens.cli import app
from model.predictor import Predictor

runner = CliRunner()


def _write_data(tmp_path, n=160, seed=0):
    rng = random.Random(seed)
    en = tmp_path / "en.csv"
    zh = tmp_path / "zh.jsonl"
    lines = ["text,issue_type,sentiment"]
    zh_rows = []
    for i in range(n):
        if rng.random() < 0.5:
            lines.append(f"the box arrived broken {i},damaged_defective,negative")
            zh_rows.append({"text": f"质量差 退款 {i}", "sentiment": "negative"})
        else:
            lines.append(f"great product thanks {i},praise,positive")
            zh_rows.append({"text": f"很好 很快 {i}", "sentiment": "positive"})
    en.write_text("\n".join(lines) + "\n", encoding="utf-8")
    zh.write_text("\n".join(json.dumps(r, ensure_ascii=False) for r in zh_rows), encoding="utf-8")
    return en, zh


@pytest.mark.slow
def test_train_command_end_to_end(tmp_path, tiny_backbone_dir):
    en, zh = _write_data(tmp_path)
    cfg = {
        "backbone": str(tiny_backbone_dir),
        "data": [
            {"path": str(en), "name": "toy_en"},
            {"path": str(zh), "name": "toy_zh", "weight": 0.5},
        ],
        "epochs": 3,
        "batch_size": 16,
        "learning_rate": 1e-3,
        "head_learning_rate": 1e-2,
        "max_length": 32,
        "cjk_min_count": 1,
        "ngram_pretrain_epochs": 2,
        "val_fraction": 0.25,
    }
    (tmp_path / "cfg.yaml").write_text(yaml.safe_dump(cfg), encoding="utf-8")
    r = runner.invoke(
        app, ["train", "--config", str(tmp_path / "cfg.yaml"), "--out", str(tmp_path / "m")]
    )
    assert r.exit_code == 0, r.output
    pred = Predictor.load(tmp_path / "m")
    m = pred.model
    assert m.train_config["epochs"] == 3 and m.train_config["data"][1]["weight"] == 0.5
    assert set(m.metrics["validation_per_source"]) == {"toy_en", "toy_zh"}
    # the training rows' label shares: what label drift is measured against
    shares = m.metrics["label_distribution"]
    assert set(shares["sentiment"]) <= {"negative", "neutral", "positive"}
    assert all(abs(sum(t.values()) - 1) < 1e-3 for t in shares.values())
    assert m.metrics["validation_per_source"]["toy_en"]["sentiment"] > 0.9
    assert (
        "issue_type" not in m.metrics["validation_per_source"]["toy_zh"]
    )  # unlabelled task skipped
    assert (
        "[UNK]" not in m.tokenizer.encode("质量差").tokens
    )  # CJK characters of the data were added
    assert all(m.calibration[t]["temperature"] > 0 for t in ("issue_type", "sentiment", "urgency"))
    assert set(m.thresholds["issue_type"]["label_thresholds"]) >= {"praise", "damaged_defective"}
    out = pred.predict(["the box arrived broken", "great product thanks"])
    assert [p["sentiment"].label for p in out] == ["negative", "positive"]


def test_train_refuses_bad_configs(tmp_path):
    (tmp_path / "c.yaml").write_text("epochz: 3\n", encoding="utf-8")
    r = runner.invoke(app, ["train", "-c", str(tmp_path / "c.yaml"), "-o", str(tmp_path / "m")])
    assert r.exit_code == 2 and "unknown training config keys ['epochz']" in r.output
    (tmp_path / "c.yaml").write_text("data: [{source: nope}]\n", encoding="utf-8")
    r = runner.invoke(app, ["train", "-c", str(tmp_path / "c.yaml"), "-o", str(tmp_path / "m")])
    assert r.exit_code == 2 and "unknown source 'nope'" in r.output
    bad = tmp_path / "bad.csv"
    bad.write_text("text,sentiment\nhello,furious\n", encoding="utf-8")
    (tmp_path / "c.yaml").write_text(f"data: [{{path: {bad}}}]\n", encoding="utf-8")
    r = runner.invoke(app, ["train", "-c", str(tmp_path / "c.yaml"), "-o", str(tmp_path / "m")])
    assert (
        r.exit_code == 2
        and "bad.csv:2: sentiment value 'furious' is not in the taxonomy" in r.output
    )
    assert not (tmp_path / "m").exists()  # nothing written half


def test_build_sets_weights_caps_and_rest(tmp_path):
    from model.taxonomy import Taxonomy
    from training.data import three_way_split
    from training.pipeline import build_sets
    from training.trainer import TrainConfig

    en, zh = _write_data(tmp_path, n=200)
    cfg = TrainConfig(
        data=[
            {"path": str(en), "name": "en", "max_rows": 50, "weight": 2.0},
            {"path": str(zh), "name": "zh", "weight": 0.5},
        ],
        val_fraction=0.2,
    )
    train_rows, val, rest = build_sets(cfg, Taxonomy.default())
    en_rows = [r for r in train_rows if r.source == "en"]
    assert len(en_rows) == 100 and len({id(r) for r in en_rows}) == 50  # weight 2: each row twice
    en_train, zh_train = (len(three_way_split(rows, 0.2)[0]) for rows in _sources(cfg))
    assert len([r for r in train_rows if r.source == "zh"]) == round(zh_train * 0.5)
    assert len(rest) == en_train - 50 and all(r.source == "en" for r in rest)
    held = {r.text for rows in val.values() for r in rows}
    assert not held & {r.text for r in train_rows + rest}  # validation never trained on


def _held_out_config(tmp_path, n=200):
    en, zh = _write_data(tmp_path, n=n)
    with en.open("a", encoding="utf-8") as fh:  # near-duplicates must land on the same side
        fh.write("The box arrived BROKEN 7!,damaged_defective,negative\n")
        fh.write('"great product, thanks 8",praise,positive\n')
    return {
        "data": [
            {"path": str(en), "name": "en", "max_rows": 60},  # the rest: n-gram pre-training
            {"path": str(zh), "name": "zh"},
        ],
        "val_fraction": 0.2,
        "max_val_rows_per_source": 10,
    }


def test_held_out_rows_never_overlap_training_rows(tmp_path):
    from model.taxonomy import Taxonomy
    from training.data import normalise_for_hash, three_way_split
    from training.pipeline import build_sets, held_out_sets
    from training.trainer import TrainConfig

    cfg = TrainConfig.from_dict(_held_out_config(tmp_path))
    train_rows, val, rest = build_sets(cfg, Taxonomy.default())
    held = held_out_sets(cfg, Taxonomy.default())
    assert set(held) == {"en", "zh"} and all(len(held[s]) > len(val[s]) for s in held)
    seen = {normalise_for_hash(r.text) for r in train_rows + rest}
    for rows in held.values():
        assert not seen & {normalise_for_hash(r.text) for r in rows}
    # the calibration (dev) rows are never test rows
    for source, rows in held.items():
        assert val[source] and not {r.text for r in val[source]} & {r.text for r in rows}
    # every row is trained on, a dev row or a test row
    trained = len({id(r) for r in train_rows + rest})
    _, dev, test = zip(*[three_way_split(rows, 0.2, 0.5) for rows in _sources(cfg)], strict=True)
    assert sum(len(r) for r in held.values()) == sum(map(len, test))
    assert sum(map(len, dev)) + sum(map(len, test)) + trained == 2 * 200 + 2


def _sources(cfg):
    from model.taxonomy import Taxonomy
    from training.pipeline import load_spec

    return [load_spec(spec, Taxonomy.default(), None)[1] for spec in cfg.data]


def test_three_way_split_keeps_training_rows_and_duplicates_together():
    from training.data import Example, hash_split, three_way_split

    texts = [f"message number {i}" for i in range(400)] + ["Message number 7!!"]
    exs = [Example(text=t, labels={}) for t in texts]
    train2, held = hash_split(exs, 0.2)
    train3, dev, test = three_way_split(exs, 0.2, 0.5)
    assert [e.text for e in train3] == [e.text for e in train2]  # the same training rows
    assert sorted(e.text for e in dev + test) == sorted(e.text for e in held)
    assert 20 < len(dev) < 60 and 20 < len(test) < 60  # about half each of about 80
    both = {"message number 7", "Message number 7!!"}  # one normalised text: one side
    assert (
        both <= {e.text for e in train3}
        or both <= {e.text for e in dev}
        or both <= {e.text for e in test}
    )
    assert three_way_split(exs, 0.2, 1.0)[2] == [] and three_way_split(exs, 0.2, 0.0)[1] == []


def test_dev_fraction_does_not_change_the_training_rows(tmp_path):
    from model.taxonomy import Taxonomy
    from training.pipeline import build_sets
    from training.trainer import TrainConfig

    raw = _held_out_config(tmp_path)
    runs = [
        build_sets(TrainConfig.from_dict({**raw, "dev_fraction": f}), Taxonomy.default())
        for f in (0.3, 0.7)
    ]
    assert [r.text for r in runs[0][0]] == [r.text for r in runs[1][0]]  # fine-tuning rows
    assert [r.text for r in runs[0][2]] == [r.text for r in runs[1][2]]  # the sparse rows
    with pytest.raises(ValueError, match="dev_fraction must be between 0 and 1"):
        TrainConfig.from_dict({**raw, "dev_fraction": 1.5})


def test_evaluate_held_out_scores_the_models_own_test_rows(tmp_path, tiny_model_dir):
    import shutil

    from model.modeling import CarelensModel
    from model.taxonomy import Taxonomy
    from training.pipeline import build_sets, held_out_sets
    from training.trainer import TrainConfig

    raw = _held_out_config(tmp_path)
    model_dir = tmp_path / "model"
    shutil.copytree(tiny_model_dir, model_dir)
    m = CarelensModel.from_pretrained(model_dir)
    m.train_config = TrainConfig.from_dict(raw).to_dict()
    m.save_pretrained(model_dir)
    r = runner.invoke(
        app, ["evaluate", "-m", str(model_dir), "--held-out", "-o", str(tmp_path / "rep")]
    )
    assert r.exit_code == 0, r.output
    report = json.loads((tmp_path / "rep" / "metrics.json").read_text(encoding="utf-8"))
    cfg = TrainConfig.from_dict(raw)
    held = held_out_sets(cfg, Taxonomy.default())
    train_rows, _, rest = build_sets(cfg, Taxonomy.default())
    assert report["n"] == sum(len(v) for v in held.values())
    assert report["sources"]["en"]["sentiment"]["n"] == len(held["en"])
    assert report["baseline"]["train_rows"] == len({id(x) for x in train_rows + rest})
    assert "en" in r.output and "baseline" in r.output
    # --held-out alone records the test figures in the model directory and its card
    metrics = json.loads((model_dir / "metrics.json").read_text(encoding="utf-8"))
    cells = {(c["source"], c["task"]): c for c in metrics["test"]["cells"]}
    assert cells[("en", "sentiment")]["n"] == len(held["en"])
    assert metrics["test"]["rows"] == report["n"]
    card = (model_dir / "README.md").read_text(encoding="utf-8")
    assert "## Test rows" in card and "| en | sentiment |" in card
    # not with --no-record, nor when other rows are mixed in, nor on the dev rows
    (model_dir / "metrics.json").write_text("{}", encoding="utf-8")
    for extra in (["--no-record"], ["--data", raw["data"][0]["path"]], ["--split", "dev"]):
        args = ["evaluate", "-m", str(model_dir), "--held-out", "-o", str(tmp_path / "r2")]
        r = runner.invoke(app, args + extra)
        assert r.exit_code == 0, r.output
        assert "test" not in json.loads((model_dir / "metrics.json").read_text(encoding="utf-8"))
    # --split dev scores the dev rows (all of them, not only the calibration ones)
    dev = held_out_sets(cfg, Taxonomy.default(), "dev")
    report = json.loads((tmp_path / "r2" / "metrics.json").read_text(encoding="utf-8"))
    assert report["sources"]["en"]["sentiment"]["n"] == len(dev["en"]) >= 10
    assert not {r.text for r in dev["en"]} & {r.text for r in held["en"]}
    assert "dev rows: the model calibrated on these" in r.output
    r = runner.invoke(app, args + ["--split", "val"])
    assert r.exit_code == 2 and "--split must be test or dev" in r.output
    # --source with --held-out: only those entries' test rows, each once
    r = runner.invoke(app, args + ["--source", "en"])
    assert r.exit_code == 0, r.output
    report = json.loads((tmp_path / "r2" / "metrics.json").read_text(encoding="utf-8"))
    assert set(report["sources"]) == {"en"} and report["n"] == len(held["en"])
    r = runner.invoke(app, args + ["--source", "en", "--source", "fr"])
    assert r.exit_code == 2 and "--source fr: not a data entry" in r.output


def test_same_config_and_seed_same_model_metrics(tmp_path, tiny_backbone_dir):
    """The whole run (n-gram pre-training, fine-tuning with dropout, calibration)
    twice in one process: the same metrics to 3 decimals, the same calibration."""
    from training.pipeline import run
    from training.trainer import TrainConfig

    en, zh = _write_data(tmp_path, n=48)  # few steps: AdamW over the n-gram table is the cost
    raw = {
        "backbone": str(tiny_backbone_dir),
        "data": [{"path": str(en), "name": "en", "max_rows": 24}, {"path": str(zh), "name": "zh"}],
        "epochs": 1,
        "batch_size": 16,
        "learning_rate": 1e-3,
        "max_length": 16,
        "cjk_min_count": 1,
        "ngram_pretrain_epochs": 1,
        "val_fraction": 0.25,
        "seed": 7,
    }

    def rounded(obj):
        if isinstance(obj, dict):
            return {
                k: rounded(v)
                for k, v in obj.items()
                if "seconds" not in k and k != "examples_per_s"
            }
        if isinstance(obj, list):
            return [rounded(v) for v in obj]
        return round(obj, 3) if isinstance(obj, float) else obj

    runs = []
    for i in range(2):
        metrics = run(TrainConfig.from_dict(raw), tmp_path / f"m{i}", progress=False)
        files = [
            (tmp_path / f"m{i}" / f).read_text() for f in ("calibration.json", "thresholds.json")
        ]
        runs.append((rounded(metrics), files))
    assert runs[0] == runs[1]
    assert runs[0][0]["history"][0]["loss"] is not None  # the n-gram pre-training ran
