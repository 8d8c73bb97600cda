"""Inference backends: the torch encoder (fp32) or ONNX Runtime (fp32 or dynamic int8).

An ONNX export (``carelens export --model DIR --backend onnx|onnx-int8``, written by
``training.export``) lives inside the model directory::

    onnx/encoder.onnx         encoder + pooling, fp32 (inputs input_ids, attention_mask;
                              output pooled [batch, hidden])
    onnx/encoder.int8.onnx    the same, weights quantized to int8 (dynamic quantization)
    onnx/export.json          which files, and the digest of the encoder weights they
                              came from (a stale export is refused at load)

Only the encoder runs in ONNX Runtime. Tokenization (fast Rust tokenizer), the hashed
n-gram side channel (an embedding lookup) and the small task heads stay in torch, so
calibration, thresholds and evidence work the same on every backend.
"""

from __future__ import annotations

import hashlib
import json
import os
from pathlib import Path
from typing import Any

import numpy as np
import torch

BACKENDS = ("torch", "onnx", "onnx-int8")
ONNX_DIR = "onnx"
ONNX_FILES = {"onnx": "encoder.onnx", "onnx-int8": "encoder.int8.onnx"}
EXPORT_INFO = "export.json"


class BackendError(ValueError):
    """A backend that cannot be used; the message says what to run."""


def check_backend(backend: str) -> str:
    if backend not in BACKENDS:
        raise BackendError(f"unknown backend {backend!r}: use one of {', '.join(BACKENDS)}")
    return backend


def encoder_digest(model_dir: str | Path) -> str:
    """sha256 of the encoder weights: an export records it, loading compares it."""
    h = hashlib.sha256()
    with (Path(model_dir) / "encoder" / "model.safetensors").open("rb") as fh:
        for chunk in iter(lambda: fh.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


def onnx_path(model_dir: str | Path, backend: str) -> Path:
    return Path(model_dir) / ONNX_DIR / ONNX_FILES[check_backend(backend)]


def read_export_info(model_dir: str | Path) -> dict[str, Any]:
    path = Path(model_dir) / ONNX_DIR / EXPORT_INFO
    if not path.is_file():
        return {}
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, json.JSONDecodeError):
        return {}
    return data if isinstance(data, dict) else {}


def default_threads() -> int:
    """The cores this process may run on."""
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:  # not on Linux
        return os.cpu_count() or 1


def session_options(num_threads: int | None):
    import onnxruntime as ort

    so = ort.SessionOptions()
    so.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
    so.execution_mode = ort.ExecutionMode.ORT_SEQUENTIAL
    so.intra_op_num_threads = int(num_threads or default_threads())
    so.inter_op_num_threads = 1
    # no busy-waiting between runs: the service shares its cores with the web workers
    so.add_session_config_entry("session.intra_op.allow_spinning", "0")
    return so


class OnnxPooler:
    """Runs the exported encoder + pooling in ONNX Runtime; called like
    ``pooler(input_ids, attention_mask) -> pooled`` (torch tensors in and out)."""

    def __init__(self, model_dir: str | Path, backend: str, num_threads: int | None = None):
        check_backend(backend)
        if backend == "torch":
            raise BackendError("the torch backend needs no ONNX session")
        model_dir = Path(model_dir)
        path = onnx_path(model_dir, backend)
        hint = f"run `carelens export --model {model_dir} --backend {backend}`"
        if not path.is_file():
            raise BackendError(f"{path} not found: {hint}")
        info = read_export_info(model_dir)
        digest = info.get("encoder_sha256")
        if digest is None:
            raise BackendError(
                f"{model_dir / ONNX_DIR / EXPORT_INFO} missing or unreadable: {hint}"
            )
        if digest != encoder_digest(model_dir):
            raise BackendError(
                f"{path} was exported from other encoder weights (the model was retrained "
                f"since): {hint}"
            )
        try:
            import onnxruntime as ort
        except ImportError as exc:  # pragma: no cover - a dependency
            raise BackendError("onnxruntime is not installed: pip install onnxruntime") from exc
        self.backend = backend
        self.path = path
        self.num_threads = int(num_threads or default_threads())
        self.session = ort.InferenceSession(
            str(path), session_options(self.num_threads), providers=["CPUExecutionProvider"]
        )

    def __call__(self, input_ids: torch.Tensor, attention_mask: torch.Tensor) -> torch.Tensor:
        feeds = {
            "input_ids": input_ids.numpy().astype(np.int64, copy=False),
            "attention_mask": attention_mask.numpy().astype(np.int64, copy=False),
        }
        (pooled,) = self.session.run(["pooled"], feeds)
        return torch.from_numpy(pooled)
