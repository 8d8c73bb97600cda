"""What the sparse n-gram path costs per text: features and logits, no encoder.

    python -m experiments.sparse_cost --model var/models/starter \
        --data ../shared/data/amazon_reviews/musical_instruments.csv --limit 1000
"""

from __future__ import annotations

import argparse
import time
from pathlib import Path

import torch

from model.inputs import read_texts
from model.modeling import CarelensModel


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--model", default="var/models/starter")
    ap.add_argument("--data", default="../shared/data/amazon_reviews/musical_instruments.csv")
    ap.add_argument("--limit", type=int, default=1000)
    ap.add_argument("--batch-size", type=int, default=32)
    args = ap.parse_args()
    torch.set_num_threads(1)
    texts = read_texts(Path(args.data), args.limit)
    model = CarelensModel.from_pretrained(args.model)
    if not model.config.sparse.enabled:
        raise SystemExit(f"{args.model} has no sparse path")
    t0 = time.perf_counter()
    with torch.inference_mode():
        for i in range(0, len(texts), args.batch_size):
            ids, tf = model.classifier.sparse_inputs(texts[i : i + args.batch_size])
            model.classifier.sparse_logits(ids, tf)
    ms = 1000 * (time.perf_counter() - t0) / len(texts)
    chars = sum(map(len, texts)) / len(texts)
    print(f"{len(texts)} texts, mean {chars:.0f} characters: {ms:.3f} ms per text (one thread)")


if __name__ == "__main__":
    main()
