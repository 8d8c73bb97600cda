"""Experiment: how the English MiniLM backbone copes with Chinese reviews.

    python -m experiments.chinese_vocab --variant ext+ngram --variant ext --variant plain

Data: chinese_reviews/online_shopping_dev.csv (sentiment 0/1). Rows are split by a
hash of the normalised text (10% test pool, so duplicates never straddle); 2,000
test rows and N training rows are drawn from the two pools with a fixed seed. Each
variant fine-tunes for 1 epoch at max_length 64 and reports test accuracy of the
sentiment head, next to a TF-IDF character 1-3-gram logistic regression trained on
the same rows.
"""

from __future__ import annotations

import argparse
import json
import os
import random
import time
from pathlib import Path

from model.classifier import ModelConfig
from model.modeling import CarelensModel
from model.ngrams import NgramConfig
from model.taxonomy import Taxonomy
from training.data import Example, hash_split
from training.trainer import TrainConfig, predict_probs, train

VARIANTS = {
    "plain": {"extend": False, "ngram": False},
    "ext": {"extend": True, "ngram": False},
    "ext+ngram": {"extend": True, "ngram": True},
    # n-gram part pre-trained on the whole train pool first (encoder skipped), then joint
    "ext+ngram-pre": {"extend": True, "ngram": True, "pretrain": 2},
}


def load(data_dir: Path) -> list[Example]:
    import csv

    rows = []
    with (data_dir / "chinese_reviews" / "online_shopping_dev.csv").open(
        encoding="utf-8-sig", newline=""
    ) as fh:
        for r in csv.DictReader(fh):
            text = (r["review"] or "").strip()
            if text:
                label = "positive" if r["label"] == "1" else "negative"
                rows.append(
                    Example(
                        text=text, labels={"sentiment": [label]}, meta={"source": "online_shopping"}
                    )
                )
    return rows


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--data", default=os.environ.get("CARELENS_DATA", "../shared/data"))
    ap.add_argument("--variant", action="append", choices=sorted(VARIANTS))
    ap.add_argument("--train-rows", type=int, default=3000)
    ap.add_argument("--test-rows", type=int, default=2000)
    ap.add_argument("--epochs", type=int, default=1)
    ap.add_argument("--max-length", type=int, default=64)
    ap.add_argument("--seed", type=int, default=0)
    args = ap.parse_args()
    rows = load(Path(args.data))
    train_pool, test_pool = hash_split(rows, 0.1)
    rng = random.Random(args.seed)
    rng.shuffle(train_pool)
    rng.shuffle(test_pool)
    tr, te = train_pool[: args.train_rows], test_pool[: args.test_rows]
    gold = [e.labels["sentiment"][0] for e in te]
    results: dict[str, object] = {
        "train_rows": len(tr),
        "test_rows": len(te),
        "train_pool": len(train_pool),
    }

    from sklearn.feature_extraction.text import TfidfVectorizer
    from sklearn.linear_model import LogisticRegression

    for name, pool in (("tfidf_same_rows", tr), ("tfidf_all_train_pool", train_pool)):
        vec = TfidfVectorizer(analyzer="char", ngram_range=(1, 3), sublinear_tf=True, min_df=2)
        x = vec.fit_transform([e.text for e in pool])
        clf = LogisticRegression(max_iter=2000, C=4.0).fit(
            x, [e.labels["sentiment"][0] for e in pool]
        )
        acc = float((clf.predict(vec.transform([e.text for e in te])) == gold).mean())
        results[name] = round(acc, 4)
        print(name, results[name], flush=True)

    tax = Taxonomy.from_dict({"tasks": [Taxonomy.default()["sentiment"].to_dict()]})
    for variant in args.variant or ["ext+ngram"]:
        opts = VARIANTS[variant]
        t0 = time.perf_counter()
        cfg = ModelConfig(max_length=args.max_length, ngram=NgramConfig(enabled=opts["ngram"]))
        model = CarelensModel.from_backbone(
            taxonomy=tax,
            config=cfg,
            cjk_texts=[e.text for e in train_pool] if opts["extend"] else None,
            seed=args.seed,
        )
        tc = TrainConfig(
            epochs=args.epochs, batch_size=16, max_length=args.max_length, seed=args.seed
        )
        if opts.get("pretrain"):
            from training.trainer import pretrain_ngrams

            pretrain_ngrams(model, train_pool, tc, epochs=opts["pretrain"])
            ng = predict_probs(model, te, max_length=args.max_length)["sentiment"]
            results[variant + ":after_ngram_pretrain"] = round(
                float(
                    sum(
                        tax["sentiment"].label_names[int(p.argmax())] == g
                        for p, g in zip(ng, gold, strict=True)
                    )
                    / len(gold)
                ),
                4,
            )
            print(
                "after n-gram pre-training:", results[variant + ":after_ngram_pretrain"], flush=True
            )
        info = train(model, tr, [], tc, progress=True)
        probs = predict_probs(model, te, max_length=args.max_length)["sentiment"]
        names = tax["sentiment"].label_names
        acc = float(
            sum(names[int(p.argmax())] == g for p, g in zip(probs, gold, strict=True)) / len(gold)
        )
        unk = model.tokenizer.token_to_id("[UNK]")
        ids = [i for e in te for i in model.tokenizer.encode(e.text).ids[1:-1]]
        results[variant] = {
            "accuracy": round(acc, 4),
            "unk_share": round(sum(i == unk for i in ids) / len(ids), 4),
            "vocab": model.tokenizer.get_vocab_size(),
            "train_examples_per_s": round(info["history"][-1]["examples_per_s"], 1),
            "seconds": round(time.perf_counter() - t0, 1),
        }
        print(variant, json.dumps(results[variant]), flush=True)
    print(json.dumps(results, indent=2))


if __name__ == "__main__":
    main()
