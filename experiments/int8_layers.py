"""Experiment: which attention projections the int8 export quantizes, and in how many of
the encoder's layers; each variant's labels against torch fp32 and its speed.

    python -m experiments.int8_layers --model var/models/starter \\
        --data ../shared/data/amazon_reviews/musical_instruments.csv --limit 1000

The model's fp32 ONNX file is exported once; each variant quantizes it into a scratch
copy of the model directory and labels the same texts with the ``onnx-int8`` backend.
Prints one JSON line per variant: the share of texts whose labels equal torch's per
task, and texts per second (batch 32, 2 threads, after a warm-up).
"""

from __future__ import annotations

import argparse
import json
import shutil
import tempfile
import time
from pathlib import Path

from carelens.bench.predict import _labels, agreement
from model.inputs import read_texts
from model.onnx_backend import ONNX_DIR, ONNX_FILES
from model.predictor import Predictor
from training.export import QUANTIZED, _fp32_matmuls, _quantize, export_onnx

QKV = ("query", "key", "value")
VARIANTS = {
    "qkv, 12 layers": (QKV, None),
    "qkv, lowest 8": (QKV, 8),
    "qkv, lowest 6": (QKV, 6),
    "qk, 12 layers (shipped)": (QUANTIZED, None),
    "q, 12 layers": (("query",), None),
}


def timed_labels(model_dir: Path, backend: str, texts: list[str]) -> tuple[list, float]:
    predictor = Predictor.load(model_dir, backend=backend, num_threads=2, evidence=False)
    predictor.predict(texts[:32])  # warm-up
    start = time.perf_counter()
    labels = _labels(predictor.predict(texts))
    return labels, len(texts) / (time.perf_counter() - start)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--model", type=Path, required=True)
    ap.add_argument("--data", type=Path, required=True)
    ap.add_argument("--limit", type=int, default=1000)
    args = ap.parse_args()
    texts = read_texts(args.data, args.limit)
    with tempfile.TemporaryDirectory() as tmp:
        model_dir = Path(tmp) / "model"
        shutil.copytree(args.model, model_dir, ignore=shutil.ignore_patterns(ONNX_DIR))
        export_onnx(model_dir, "onnx-int8")
        fp32 = model_dir / ONNX_DIR / ONNX_FILES["onnx"]
        int8 = model_dir / ONNX_DIR / ONNX_FILES["onnx-int8"]
        ref, speed = timed_labels(model_dir, "torch", texts)
        print(json.dumps({"variant": "torch fp32", "texts_per_s": round(speed, 1)}), flush=True)
        labels, speed = timed_labels(model_dir, "onnx", texts)
        print(json.dumps({"variant": "onnx fp32", "agreement": agreement(ref, labels),
                          "texts_per_s": round(speed, 1)}), flush=True)  # fmt: skip
        for name, (projections, layers) in VARIANTS.items():
            _quantize(fp32, int8, _fp32_matmuls(fp32, projections, layers))
            labels, speed = timed_labels(model_dir, "onnx-int8", texts)
            row = {"variant": name, "agreement": agreement(ref, labels)}
            print(json.dumps({**row, "texts_per_s": round(speed, 1)}), flush=True)


if __name__ == "__main__":
    main()
