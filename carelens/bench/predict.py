"""``carelens bench predict``: throughput and latency of each backend against a
Hugging Face-style baseline, measured in one run on the same texts.

- Backends: the ``Predictor`` with ``torch`` (fp32), ``onnx`` (ONNX Runtime fp32) and
  ``onnx-int8``: fast tokenizer, texts sorted by length into batches, dynamic padding,
  labels decided (no evidence spans).
- Baseline: what ``pipeline("text-classification")`` does with this encoder — the
  encoder loaded with plain ``transformers.AutoModel`` (fp32), ``AutoTokenizer``,
  batches in input order (no length sorting), each padded to its longest text,
  mean pooling and the model's heads. Same texts, same threads, same batch size.
- Compute limit: FLOPs per text from the encoder's shape and the mean token count,
  against the cores' peak (cores x clock x operations per cycle from the CPU's vector
  units), so the share says how close a backend gets to the hardware.
"""

from __future__ import annotations

import json
import os
import platform
import statistics
import time
from collections.abc import Callable
from pathlib import Path
from typing import Annotated, Any

import numpy as np
import torch
import typer

from model.inputs import read_texts
from model.modeling import CarelensModel
from model.predictor import Predictor


# -- the machine -------------------------------------------------------------------------
def cpu_flags() -> set[str]:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("flags"):
                return set(line.split(":", 1)[1].split())
    except OSError:
        pass
    return set()


def cpu_ghz() -> float | None:
    """Maximum clock (cpufreq), else the current one from /proc/cpuinfo."""
    try:
        khz = Path("/sys/devices/system/cpu/cpu0/cpufreq/cpuinfo_max_freq").read_text()
        return int(khz) / 1e6
    except (OSError, ValueError):
        pass
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("cpu MHz"):
                return float(line.split(":", 1)[1]) / 1000
    except (OSError, ValueError):
        pass
    return None


def cpu_name() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or "unknown"


def peak_ops(cores: int, ghz: float, flags: set[str]) -> dict[str, Any]:
    """Peak operations per second (a multiply-add counts 2) assuming two vector
    FMA / dot-product pipes per core, as on current x86 server cores.

    fp32: lanes x 2 (FMA) x 2 pipes. int8: VNNI ``vpdpbusd`` does 4 int8 multiply-adds
    per 32-bit lane: lanes x 4 x 2 x 2 pipes."""
    lanes = 16 if "avx512f" in flags else 8 if "avx2" in flags else 4
    fp32_per_cycle = lanes * 2 * 2
    vnni = "avx512_vnni" in flags or "avx_vnni" in flags
    int8_lanes = 16 if "avx512_vnni" in flags else 8
    # without VNNI int8 goes through vpmaddubsw + vpmaddwd: about half the rate
    int8_per_cycle = int8_lanes * 4 * 2 * 2 if vnni else lanes * 4 * 2
    return {
        "cores": cores,
        "ghz": round(ghz, 3),
        "isa": ("avx512" if lanes == 16 else "avx2" if lanes == 8 else "sse")
        + ("+vnni" if vnni else ""),
        "fp32_gflops": round(cores * ghz * fp32_per_cycle, 1),
        "int8_gops": round(cores * ghz * int8_per_cycle, 1),
        "assumption": "2 vector pipes per core; fp32 FMA = 2 FLOP per lane; "
        "int8 VNNI = 4 multiply-adds per 32-bit lane",
    }


def flops_per_text(model: CarelensModel, mean_tokens: float) -> float:
    """Forward-pass operations for one text of ``mean_tokens`` tokens: the linear
    layers (2 x parameters x tokens) plus the attention products (4 x T^2 x H per
    layer). Embedding lookups, softmax, layer norms and the heads are left out."""
    cfg = model.classifier.encoder.config
    h, layers = int(cfg.hidden_size), int(cfg.num_hidden_layers)
    ffn = int(getattr(cfg, "intermediate_size", 4 * h))
    linear_params = layers * (4 * h * h + 2 * h * ffn)
    t = float(mean_tokens)
    return 2.0 * linear_params * t + layers * 4.0 * t * t * h


def measured_fp32_gflops(threads: int, seconds: float = 1.0) -> float:
    """What torch's fp32 GEMM reaches here (n = 1024), for comparison with the peak."""
    torch.set_num_threads(threads)
    a, b = torch.randn(1024, 1024), torch.randn(1024, 1024)
    a @ b
    n, start = 0, time.perf_counter()
    while time.perf_counter() - start < seconds:
        a @ b
        n += 1
    return 2 * 1024**3 * n / (time.perf_counter() - start) / 1e9


# -- timing ------------------------------------------------------------------------------
def pct(values: list[float], q: float) -> float:
    return float(np.percentile(np.asarray(values), q)) if values else float("nan")


def latency_summary(ms: list[float]) -> dict[str, float]:
    return {
        "p50_ms": round(pct(ms, 50), 2),
        "p95_ms": round(pct(ms, 95), 2),
        "p99_ms": round(pct(ms, 99), 2),
        "mean_ms": round(statistics.fmean(ms), 2) if ms else float("nan"),
    }


def time_runs(
    run: Callable[[list[str]], Any], texts: list[str], batch_size: int, single: int
) -> tuple[dict[str, Any], Any]:
    """Throughput over all texts in one call, per-batch latency on consecutive chunks
    of ``batch_size`` (input order), per-text latency for the first ``single`` texts
    alone. Returns the figures and the full-run output."""
    run(texts[: min(len(texts), batch_size)])  # warm-up
    start = time.perf_counter()
    out = run(texts)
    elapsed = time.perf_counter() - start
    batched = []
    for i in range(0, len(texts), batch_size):
        t0 = time.perf_counter()
        run(texts[i : i + batch_size])
        batched.append((time.perf_counter() - t0) * 1000)
    one = []
    for text in texts[:single]:
        t0 = time.perf_counter()
        run([text])
        one.append((time.perf_counter() - t0) * 1000)
    figures = {
        "texts_per_s": round(len(texts) / elapsed, 2),
        "seconds": round(elapsed, 3),
        **latency_summary(one),
        "batched": {"batch_size": batch_size, **latency_summary(batched)},
    }
    return figures, out


# -- the baseline ------------------------------------------------------------------------
class HFBaseline:
    """The encoder through plain transformers, as ``pipeline("text-classification")``
    runs it: fp32, batches in input order padded to their longest text."""

    def __init__(self, model_dir: Path, batch_size: int = 32) -> None:
        from transformers import AutoModel, AutoTokenizer
        from transformers.utils import logging as hf_logging

        hf_logging.set_verbosity_error()
        self.model = CarelensModel.from_pretrained(model_dir)  # heads, n-gram parts
        self.encoder = AutoModel.from_pretrained(model_dir / "encoder", local_files_only=True)
        self.encoder.eval()
        self.tokenizer = AutoTokenizer.from_pretrained(
            model_dir / "tokenizer", local_files_only=True
        )
        self.max_length = self.model.config.max_length
        self.batch_size = batch_size

    @torch.inference_mode()
    def __call__(self, texts: list[str]) -> list[dict[str, int]]:
        from model.classifier import task_probs
        from model.ngrams import batch_ngram_ids

        out: list[dict[str, int]] = []
        ngram_cfg = self.model.config.ngram
        for i in range(0, len(texts), self.batch_size):
            chunk = texts[i : i + self.batch_size]
            enc = self.tokenizer(
                chunk,
                padding=True,
                truncation=True,
                max_length=self.max_length,
                return_tensors="pt",
            )
            hidden = self.encoder(
                input_ids=enc["input_ids"], attention_mask=enc["attention_mask"]
            ).last_hidden_state
            mask = enc["attention_mask"].unsqueeze(-1).to(hidden.dtype)
            pooled = (hidden * mask).sum(1) / mask.sum(1).clamp_min(1.0)
            ngram = batch_ngram_ids(chunk, ngram_cfg) if ngram_cfg.enabled else None
            sparse_ids = sparse_tf = None
            if self.model.classifier.sparse_table is not None:
                sparse_ids, sparse_tf = self.model.classifier.sparse_inputs(chunk)
            logits = self.model.classifier(
                enc["input_ids"],
                enc["attention_mask"],
                ngram,
                pooled=pooled,
                sparse_ids=sparse_ids,
                sparse_tf=sparse_tf,
            )["logits"]
            probs = {t.name: task_probs(t, logits[t.name]) for t in self.model.taxonomy}
            for j in range(len(chunk)):
                out.append({name: int(p[j].argmax()) for name, p in probs.items()})
        return out


# -- where the time goes -----------------------------------------------------------------
def onnx_op_profile(
    model_dir: Path, backend: str, texts: list[str], batch_size: int, threads: int
) -> dict[str, Any]:
    """ONNX Runtime's own per-node profile over the texts (length-sorted batches of
    ``batch_size``), summed per operator type: which kernels take the time."""
    import tempfile
    from collections import Counter

    import onnxruntime as ort

    from model.onnx_backend import onnx_path, session_options

    model = CarelensModel.from_pretrained(model_dir)
    ordered = sorted(texts, key=len)
    with tempfile.TemporaryDirectory() as tmp:
        so = session_options(threads)
        so.enable_profiling = True
        so.profile_file_prefix = str(Path(tmp) / "ort")
        session = ort.InferenceSession(
            str(onnx_path(model_dir, backend)), so, providers=["CPUExecutionProvider"]
        )
        for i in range(0, len(ordered), batch_size):
            b = model.encode(ordered[i : i + batch_size])
            session.run(
                ["pooled"],
                {"input_ids": b.input_ids.numpy(), "attention_mask": b.attention_mask.numpy()},
            )
        events = json.loads(Path(session.end_profiling()).read_text())
    per_op: Counter[str] = Counter()
    for e in events:
        if e.get("cat") == "Node" and e.get("name", "").endswith("_kernel_time"):
            per_op[e["args"]["op_name"]] += int(e["dur"])
    total = sum(per_op.values()) or 1
    return {
        "backend": backend,
        "kernel_ms": round(total / 1000, 1),
        "share_per_op": {op: round(us / total, 4) for op, us in per_op.most_common()},
    }


# -- the run -----------------------------------------------------------------------------
def _labels(preds) -> list[dict[str, list[str]]]:
    return [{name: tp.labels for name, tp in p.tasks.items()} for p in preds]


def _probs(preds) -> dict[str, np.ndarray]:
    if not preds:
        return {}
    return {
        name: np.array([list(p.tasks[name].probabilities.values()) for p in preds])
        for name in preds[0].tasks
    }


def agreement(
    ref: list[dict[str, list[str]]], other: list[dict[str, list[str]]]
) -> dict[str, float]:
    tasks = ref[0].keys() if ref else []
    return {
        t: round(float(np.mean([a[t] == b[t] for a, b in zip(ref, other, strict=True)])), 4)
        for t in tasks
    }


def run_bench(
    model_dir: Path,
    data: Path,
    backends: list[str],
    limit: int = 1000,
    single: int = 100,
    batch_size: int = 32,
    threads: int = 2,
    baseline: bool = True,
    peak_gflops: float | None = None,
    peak_gops: float | None = None,
    profile: bool = False,
    log: Callable[[str], None] = lambda _: None,
) -> dict[str, Any]:
    texts = read_texts(data, limit)
    torch.set_num_threads(threads)
    load_before = os.getloadavg()
    probe = CarelensModel.from_pretrained(model_dir)
    lengths = []
    for i in range(0, len(texts), 256):
        lengths += probe.encode(texts[i : i + 256]).attention_mask.sum(1).tolist()
    mean_tokens = float(np.mean(lengths))
    flops = flops_per_text(probe, mean_tokens)
    flags = cpu_flags()
    cores = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count()
    peak = peak_ops(min(threads, cores or threads), cpu_ghz() or 2.0, flags)
    if peak_gflops:
        peak["fp32_gflops"] = peak_gflops
        peak["assumption"] = "given with --peak-gflops / --peak-gops"
    if peak_gops:
        peak["int8_gops"] = peak_gops
        peak["assumption"] = "given with --peak-gflops / --peak-gops"
    peak["measured_torch_fp32_gemm_gflops"] = round(measured_fp32_gflops(threads), 1)
    del probe
    report: dict[str, Any] = {
        "model": str(model_dir),
        "data": str(data),
        "n_texts": len(texts),
        "single_texts": min(single, len(texts)),
        "mean_chars": round(statistics.fmean(len(t) for t in texts), 1),
        "mean_tokens": round(mean_tokens, 1),
        "threads": threads,
        "batch_size": batch_size,
        "evidence": False,
        "cpu": cpu_name(),
        "peak": peak,
        "gflop_per_text": round(flops / 1e9, 3),
        "backends": {},
    }
    ref_labels: list[dict[str, list[str]]] | None = None
    ref_probs: dict[str, np.ndarray] = {}
    for backend in backends:
        log(f"{backend}: loading")
        try:
            predictor = Predictor.load(
                model_dir,
                backend=backend,
                batch_size=batch_size,
                num_threads=threads,
                evidence=False,
            )
        except ValueError as exc:  # no export: say so, go on with the others
            report["backends"][backend] = {"error": str(exc)}
            log(f"{backend}: skipped ({exc})")
            continue
        log(f"{backend}: timing {len(texts)} texts")
        figures, preds = time_runs(
            lambda xs, p=predictor: p.predict(xs, evidence=False), texts, batch_size, single
        )
        labels = _labels(preds)
        probs = _probs(preds)
        if backend == "torch":
            ref_labels, ref_probs = labels, probs
        if ref_labels is not None:
            per_task = agreement(ref_labels, labels)
            figures["agreement_per_task"] = per_task
            figures["agreement_with_torch"] = min(per_task.values()) if per_task else 1.0
            figures["max_prob_diff_per_task"] = {
                t: round(float(np.abs(probs[t] - ref_probs[t]).max()), 5) for t in probs
            }
        is_int8 = backend.endswith("int8")
        limit_ops = (peak["int8_gops"] if is_int8 else peak["fp32_gflops"]) * 1e9
        figures["compute_limit_texts_per_s"] = round(limit_ops / flops, 1)
        figures["compute_limit_share"] = round(figures["texts_per_s"] * flops / limit_ops, 6)
        figures["compute_limit_of"] = "int8" if is_int8 else "fp32"
        report["backends"][backend] = figures
        log(f"{backend}: {figures['texts_per_s']} texts/s")
        del predictor
    if baseline:
        log("baseline (plain transformers, input order): timing")
        torch.set_num_threads(threads)  # the ONNX backends leave torch at one thread
        base = HFBaseline(model_dir, batch_size)
        figures, base_labels = time_runs(base, texts, batch_size, single)
        report["baseline"] = {
            "what": 'pipeline("text-classification")-style: transformers AutoModel fp32, '
            "AutoTokenizer, input order (no length sorting), padding to the longest "
            "of each batch",
            **figures,
        }
        report["baseline_texts_per_s"] = figures["texts_per_s"]
        for fig in report["backends"].values():
            if "texts_per_s" in fig:
                fig["speedup_vs_baseline"] = round(fig["texts_per_s"] / figures["texts_per_s"], 2)
    if profile and "texts_per_s" in report["backends"].get("onnx-int8", {}):
        log("onnx-int8: per-operator profile")
        report["int8_op_profile"] = onnx_op_profile(
            model_dir, "onnx-int8", texts, batch_size, threads
        )
    best = report["backends"].get("onnx-int8") or {}
    report["compute_limit_share"] = best.get("compute_limit_share")
    report["load_average"] = {"before": load_before, "after": os.getloadavg()}
    return report


# -- the command -------------------------------------------------------------------------
def _fail(message: str) -> typer.Exit:
    typer.secho(f"error: {message}", err=True, fg=typer.colors.RED)
    return typer.Exit(code=2)


def bench_predict(
    model: Annotated[Path, typer.Option("--model", "-m", help="Model directory.")],
    data: Annotated[
        Path,
        typer.Option(
            "--data",
            "-d",
            help="Texts: a CSV, JSONL or Parquet file (column text/reviewText/review...) or a "
            "text file (one per line).",
        ),
    ],
    backends: Annotated[
        str, typer.Option(help="Comma-separated backends to time (the first sets the reference).")
    ] = "torch,onnx,onnx-int8",
    limit: Annotated[int, typer.Option(min=1, help="Texts to use (the first N).")] = 1000,
    single: Annotated[
        int, typer.Option(min=1, help="Texts timed one at a time (batch-1 latency).")
    ] = 100,
    batch_size: Annotated[int, typer.Option(min=1)] = 32,
    threads: Annotated[int, typer.Option(min=1, help="Inference threads.")] = 2,
    baseline: Annotated[
        bool, typer.Option(help="Also time the plain-transformers baseline.")
    ] = True,
    peak_gflops: Annotated[
        float | None, typer.Option(help="fp32 peak of the cores used (default: estimated).")
    ] = None,
    peak_gops: Annotated[
        float | None, typer.Option(help="int8 peak of the cores used (default: estimated).")
    ] = None,
    profile: Annotated[
        bool, typer.Option(help="Also profile the int8 graph per operator type (ONNX Runtime).")
    ] = False,
    json_out: Annotated[
        Path | None, typer.Option("--json", help="Write the figures to this JSON file.")
    ] = None,
) -> None:
    """Texts/s and latency per backend against a Hugging Face pipeline-style baseline
    (same encoder, plain transformers fp32, no length sorting), and the share of the
    machine's estimated compute limit."""
    from model.inputs import InputError
    from model.modeling import ModelLoadError
    from model.onnx_backend import BACKENDS

    names = [b.strip() for b in backends.split(",") if b.strip()]
    bad = [b for b in names if b not in BACKENDS]
    if bad or not names:
        raise _fail(f"--backends: {bad or backends!r}: use some of {', '.join(BACKENDS)}")
    if not data.is_file():
        raise _fail(f"data file not found: {data}")
    try:
        report = run_bench(
            model,
            data,
            names,
            limit=limit,
            single=single,
            batch_size=batch_size,
            threads=threads,
            baseline=baseline,
            peak_gflops=peak_gflops,
            peak_gops=peak_gops,
            profile=profile,
            log=lambda m: typer.secho(m, err=True, dim=True),
        )
    except (ModelLoadError, InputError, ValueError) as exc:
        raise _fail(str(exc)) from exc
    peak = report["peak"]
    typer.echo(
        f"{report['n_texts']} texts, mean {report['mean_tokens']} tokens "
        f"({report['gflop_per_text']} GFLOP/text), {report['threads']} threads, "
        f"batch {report['batch_size']}; {report['cpu']}"
    )
    typer.echo(
        f"peak estimate: {peak['fp32_gflops']} GFLOP/s fp32, {peak['int8_gops']} GOP/s int8 "
        f"({peak['isa']}, {peak['cores']} cores x {peak['ghz']} GHz); "
        f"torch fp32 GEMM measured {peak['measured_torch_fp32_gemm_gflops']} GFLOP/s"
    )
    header = (
        f"{'backend':10s} {'texts/s':>8s} {'x base':>7s} {'p50':>7s} {'p95':>7s} {'p99':>7s} "
        f"{'b32 p50':>8s} {'b32 p99':>8s} {'agree':>6s} {'% limit':>8s}"
    )
    typer.echo(header)
    rows = dict(report["backends"])
    if "baseline" in report:
        rows["baseline"] = report["baseline"]
    for name, f in rows.items():
        if "error" in f:
            typer.echo(f"{name:10s} skipped: {f['error']}")
            continue
        speed = f.get("speedup_vs_baseline", 1.0 if name == "baseline" else None)
        agree = f.get("agreement_with_torch")
        share = f.get("compute_limit_share")
        typer.echo(
            f"{name:10s} {f['texts_per_s']:8.1f} {speed if speed is not None else '-':>7} "
            f"{f['p50_ms']:7.1f} {f['p95_ms']:7.1f} {f['p99_ms']:7.1f} "
            f"{f['batched']['p50_ms']:8.1f} {f['batched']['p99_ms']:8.1f} "
            f"{agree if agree is not None else '-':>6} "
            f"{f'{share * 100:.1f}%' if share is not None else '-':>8}"
        )
    typer.echo("(p50/p95/p99: one text per call, ms; b32: one call per 32 texts in input order)")
    for name, f in report["backends"].items():
        if name != "torch" and "agreement_per_task" in f:
            typer.echo(
                f"{name}: labels equal to torch fp32 per task {f['agreement_per_task']}; "
                f"largest probability difference {f['max_prob_diff_per_task']}"
            )
    if "int8_op_profile" in report:
        prof = report["int8_op_profile"]
        top = list(prof["share_per_op"].items())[:8]
        typer.echo(
            f"onnx-int8 kernel time {prof['kernel_ms']} ms: "
            + ", ".join(f"{op} {share * 100:.1f}%" for op, share in top)
        )
    typer.echo(f"load average before/after: {report['load_average']}")
    if json_out is not None:
        json_out.parent.mkdir(parents=True, exist_ok=True)
        json_out.write_text(json.dumps(report, indent=2) + "\n", encoding="utf-8")
        typer.echo(f"figures: {json_out}")
