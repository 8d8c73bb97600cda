"""Experiment: the star rating as an input, written into the review's text.

``../shared/TAXONOMY.md`` labels a review "from its text alone (plus the star rating
when a review has one: the rating is a feature, not the label)"; the model reads text
only. This writes the files for the starter's config with every Amazon review's text
prefixed by ``Rating: N of 5 stars.`` (and the Amazon rows of the hand-labelled set
likewise), so one build shows what the rating would add:

    python -m experiments.rating_prefix --out var/exp/rating_prefix
    carelens train --config var/exp/rating_prefix/starter.yaml --out var/exp/rating_prefix/model
    carelens evaluate --model var/exp/rating_prefix/model --data var/exp/rating_prefix/review_issue_types.csv \\
        --out var/reports/rated_hand
    carelens evaluate --model var/exp/rating_prefix/model --held-out --no-record \\
        --out var/reports/rated_heldout

Read the hand set's issue types (hand labels): its sentiment is the stars' own mapping,
and so are the Amazon rows' sentiment and urgency, so with the rating as input those
say little about the text. The prefix changes the texts and with them the hash split,
so the Amazon test rows are not the starter's (``--held-out --source amazon_reviews``
scores only them).
"""

from __future__ import annotations

import argparse
import csv
import json
from pathlib import Path

import yaml

from model.taxonomy import Taxonomy
from training.data import write_jsonl
from training.sources import REPO_DATA_DIR, load_source


def prefixed(text: str, rating: object) -> str:
    return f"Rating: {int(float(rating))} of 5 stars. {text}"


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--config", default=str(REPO_DATA_DIR / "configs" / "starter.yaml"))
    ap.add_argument("--out", default="var/exp/rating_prefix")
    args = ap.parse_args()
    out = Path(args.out).resolve()
    out.mkdir(parents=True, exist_ok=True)
    rows = load_source("amazon_reviews", Taxonomy.default())
    for ex in rows:
        ex.text = prefixed(ex.text, ex.meta["rating"])
    write_jsonl(rows, out / "amazon_reviews.jsonl", Taxonomy.default())
    with open(
        REPO_DATA_DIR / "labels" / "review_issue_types.csv", newline="", encoding="utf-8"
    ) as f:
        hand = list(csv.DictReader(f))
    for r in hand:
        if r["source"] == "amazon_reviews":
            r["text"] = prefixed(r["text"], r["rating"])
    with open(out / "review_issue_types.csv", "w", newline="", encoding="utf-8") as f:
        w = csv.DictWriter(f, fieldnames=list(hand[0]))
        w.writeheader()
        w.writerows(hand)
    cfg = yaml.safe_load(Path(args.config).read_text(encoding="utf-8"))
    for spec in cfg["data"]:
        if spec.get("source") == "amazon_reviews":
            del spec["source"]
            spec.update(path=str(out / "amazon_reviews.jsonl"), name="amazon_reviews")
    (out / "starter.yaml").write_text(yaml.safe_dump(cfg, sort_keys=False), encoding="utf-8")
    print(json.dumps({"amazon_rows": len(rows), "hand_rows": len(hand), "out": str(out)}))


if __name__ == "__main__":
    main()
