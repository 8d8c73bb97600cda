"""Export a model directory's encoder to ONNX (fp32) and quantize it (dynamic int8).

``carelens export --model DIR --backend onnx-int8`` writes ``DIR/onnx/`` (see
``model.onnx_backend`` for the layout and the runtime side). The graph is the encoder
plus the model's pooling: inputs ``input_ids`` and ``attention_mask`` [batch, seq],
output ``pooled`` [batch, hidden]; batch and sequence length are dynamic. The n-gram
side channel and the heads are not in the graph (they stay in torch at run time).

Exporter: ``torch.onnx.export`` with the TorchScript tracer (``dynamo=False``): it
exports the Hugging Face BERT family in well under a second and needs no extra
packages. Quantization: ``onnxruntime.quantization.quantize_dynamic`` (int8 weights,
per output channel; activations quantized per batch at run time), the attention's
query and key projections only — every other MatMul (the value projection, the
attention output, both feed-forward projections), the embeddings and the attention
products stay fp32 (``_fp32_matmuls``).
"""

from __future__ import annotations

import json
import logging
import re
import shutil
import tempfile
import warnings
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import numpy as np
import torch

from model.modeling import CarelensModel
from model.onnx_backend import (
    EXPORT_INFO,
    ONNX_DIR,
    ONNX_FILES,
    check_backend,
    encoder_digest,
    session_options,
)

OPSET = 17
SAMPLE_TEXTS = [
    "The package arrived late and the box was broken.",
    "great",
    "我要退款，质量太差了",
    "It stopped working after two days, I want a refund please. The seller never replied.",
]


class ExportError(ValueError):
    pass


class _Pooler(torch.nn.Module):
    def __init__(self, classifier: torch.nn.Module) -> None:
        super().__init__()
        self.classifier = classifier

    def forward(self, input_ids: torch.Tensor, attention_mask: torch.Tensor) -> torch.Tensor:
        return self.classifier.pool(input_ids, attention_mask)


def _use_eager_attention(encoder: torch.nn.Module) -> None:
    """Plain attention ops in the graph instead of the traced SDPA path, whose mask
    handling adds IsNaN/Where nodes on every layer (measured: int8 MiniLM-L6 190 vs
    170 texts/s at batch 32, same outputs)."""
    setter = getattr(encoder, "set_attn_implementation", None)
    if setter is not None:
        try:
            setter("eager")
            return
        except (ValueError, TypeError):
            pass
    encoder.config._attn_implementation = "eager"


def _export_fp32(model: CarelensModel, path: Path) -> None:
    model.classifier.eval()
    _use_eager_attention(model.classifier.encoder)
    batch = model.encode(SAMPLE_TEXTS[:2])
    wrapper = _Pooler(model.classifier).eval()
    with warnings.catch_warnings(), torch.inference_mode(False), torch.no_grad():
        warnings.simplefilter("ignore")  # tracer warnings about Python bools in HF code
        torch.onnx.export(
            wrapper,
            (batch.input_ids, batch.attention_mask),
            str(path),
            input_names=["input_ids", "attention_mask"],
            output_names=["pooled"],
            dynamic_axes={
                "input_ids": {0: "batch", 1: "sequence"},
                "attention_mask": {0: "batch", 1: "sequence"},
                "pooled": {0: "batch"},
            },
            opset_version=OPSET,
            dynamo=False,
        )


# the attention projections int8 quantizes: on the starter, query and key alone keep
# 99.7% or more of every task's labels equal to torch at the speed of all three, which
# keep 99.2% (python -m experiments.int8_layers; docs/benchmarks.md)
QUANTIZED = ("query", "key")


def _fp32_matmuls(
    src: Path, projections: tuple[str, ...] = QUANTIZED, layers: int | None = None
) -> list[str]:
    """Every weight MatMul of the encoder's layers but the attention ``projections`` of
    its lowest ``layers`` (None: all). The feed-forward layers' inputs (the layer-normed
    states and the GELU activations) have outliers that a per-batch int8 scale crushes:
    quantized, they flip the issue-type decisions that sit near a threshold
    (docs/benchmarks.md, int8)."""
    import onnx

    graph = onnx.load(str(src), load_external_data=False).graph
    keep = []
    for n in graph.node:
        layer = re.search(r"/layer\.(\d+)/", n.name)
        if n.op_type != "MatMul" or layer is None:
            continue
        quantized = any(f"/{p}/" in n.name for p in projections) and (
            layers is None or int(layer.group(1)) < layers
        )
        if not quantized:
            keep.append(n.name)
    return keep


def _quantize(src: Path, dst: Path, fp32: list[str] | None = None) -> None:
    """``src`` with its weight MatMuls quantized to int8, but those named in ``fp32``
    (default ``_fp32_matmuls(src)``)."""
    from onnxruntime.quantization import QuantType, quantize_dynamic

    root = logging.getLogger()
    level = root.level
    root.setLevel(logging.ERROR)  # its "consider pre-processing" hint is for static quantization
    try:
        quantize_dynamic(
            str(src),
            str(dst),
            weight_type=QuantType.QInt8,
            # per output channel: on MiniLM-L6 the pooled vectors keep cosine >= 0.987 to
            # fp32 (0.873 per tensor) at the same speed
            per_channel=True,
            op_types_to_quantize=["MatMul"],
            nodes_to_exclude=_fp32_matmuls(src) if fp32 is None else fp32,
            extra_options={"MatMulConstBOnly": True},
        )
    finally:
        root.setLevel(level)


def _max_abs_diff(model: CarelensModel, path: Path) -> float:
    """Largest |pooled_onnx - pooled_torch| over the sample texts (a smoke check)."""
    import onnxruntime as ort

    session = ort.InferenceSession(
        str(path), session_options(1), providers=["CPUExecutionProvider"]
    )
    batch = model.encode(SAMPLE_TEXTS)
    (got,) = session.run(
        ["pooled"],
        {"input_ids": batch.input_ids.numpy(), "attention_mask": batch.attention_mask.numpy()},
    )
    with torch.inference_mode():
        want = model.classifier.pool(batch.input_ids, batch.attention_mask).numpy()
    return float(np.abs(got - want).max())


def export_onnx(model_dir: str | Path, backend: str = "onnx-int8") -> dict[str, Any]:
    """Write ``model_dir/onnx/`` for ``backend`` (``onnx`` or ``onnx-int8``; the int8
    file is made from the fp32 one, so both are written for ``onnx-int8``). Files are
    built in a temporary folder and moved in place at the end: an export that fails
    leaves the previous one untouched. Returns what ``onnx/export.json`` records."""
    check_backend(backend)
    if backend == "torch":
        raise ExportError("the torch backend needs no export: use --backend onnx or onnx-int8")
    model_dir = Path(model_dir)
    model = CarelensModel.from_pretrained(model_dir)
    out_dir = model_dir / ONNX_DIR
    out_dir.mkdir(exist_ok=True)
    info: dict[str, Any] = {
        "encoder_sha256": encoder_digest(model_dir),
        "exported_at": datetime.now(UTC).isoformat(timespec="seconds"),
        "opset": OPSET,
        "torch": torch.__version__,
        "pooling": model.config.pooling,
        "hidden_size": int(model.classifier.encoder.config.hidden_size),
        "files": {},
    }
    with tempfile.TemporaryDirectory(dir=out_dir, prefix=".export-") as tmp:
        tmp_dir = Path(tmp)
        fp32 = tmp_dir / ONNX_FILES["onnx"]
        _export_fp32(model, fp32)
        written = {"onnx": fp32}
        if backend == "onnx-int8":
            int8 = tmp_dir / ONNX_FILES["onnx-int8"]
            _quantize(fp32, int8)
            written["onnx-int8"] = int8
        for name, path in written.items():
            info["files"][name] = {
                "file": path.name,
                "bytes": path.stat().st_size,
                "max_abs_diff_vs_torch": round(_max_abs_diff(model, path), 6),
            }
        for path in written.values():
            shutil.move(str(path), out_dir / path.name)
        for name, file in ONNX_FILES.items():
            if name not in written:  # from an earlier export, maybe of other weights
                (out_dir / file).unlink(missing_ok=True)
    (out_dir / EXPORT_INFO).write_text(json.dumps(info, indent=2) + "\n", encoding="utf-8")
    return info
