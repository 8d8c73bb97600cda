"""Training commands: ``carelens train`` and ``carelens data ...``."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Annotated

import typer
import yaml

app = typer.Typer(no_args_is_help=True)
data_app = typer.Typer(
    help="Public data sources and the labelled-data format.", no_args_is_help=True
)
app.add_typer(data_app, name="data")


def _fail(message: str) -> typer.Exit:
    typer.secho(f"error: {message}", err=True, fg=typer.colors.RED)
    return typer.Exit(code=2)


@app.command("train")
def train_cmd(
    config: Annotated[
        Path, typer.Option("--config", "-c", help="YAML training config (see README).")
    ],
    out: Annotated[Path, typer.Option("--out", "-o", help="Model directory to write.")],
    epochs: Annotated[int | None, typer.Option(min=1)] = None,
    batch_size: Annotated[int | None, typer.Option(min=1)] = None,
    learning_rate: Annotated[float | None, typer.Option()] = None,
    max_length: Annotated[int | None, typer.Option(min=8, help="Max tokens per text.")] = None,
    seed: Annotated[int | None, typer.Option()] = None,
    threads: Annotated[int | None, typer.Option(min=1)] = None,
    data_dir: Annotated[
        Path | None,
        typer.Option(help="Public data folder (default $CARELENS_DATA or ../shared/data)."),
    ] = None,
) -> None:
    """Fine-tune a model on the data listed in a config; calibrate it; save it."""
    from training.data import DataError
    from training.pipeline import run
    from training.sources import SourceError
    from training.trainer import TrainConfig

    if not config.is_file():
        raise _fail(f"config file not found: {config}")
    raw = yaml.safe_load(config.read_text(encoding="utf-8")) or {}
    flags = {
        "epochs": epochs,
        "batch_size": batch_size,
        "learning_rate": learning_rate,
        "max_length": max_length,
        "seed": seed,
        "threads": threads,
        "data_dir": str(data_dir) if data_dir else None,
    }
    raw.update({k: v for k, v in flags.items() if v is not None})
    try:
        cfg = TrainConfig.from_dict(raw)
        metrics = run(cfg, out)
    except (ValueError, DataError, SourceError) as exc:
        raise _fail(f"{config}: {exc}") from exc
    typer.echo(
        json.dumps(
            {
                "model": str(out),
                "validation_per_source": metrics["validation_per_source"],
                "train_seconds": metrics["train_seconds"],
            },
            indent=2,
        )
    )


@data_app.command("sources")
def sources() -> None:
    """List the public sources with a mapping in data/mappings/."""
    from training.sources import SourceMapping, available_sources, data_dir

    try:
        root = data_dir()
    except ValueError as exc:
        raise _fail(str(exc)) from exc
    for name, path in available_sources().items():
        m = SourceMapping.load(path)
        present = (root / m.path).is_file()
        typer.echo(
            f"{name:28s} {m.lang:3s} tasks={','.join(m.tasks):30s} {'ok' if present else 'MISSING'} {root / m.path}"
        )


@data_app.command("export")
def export(
    source: Annotated[str, typer.Option(help="Source name (see `carelens data sources`).")],
    out: Annotated[Path, typer.Option(help="Output .jsonl in the labelled-data format.")],
    taxonomy: Annotated[Path | None, typer.Option()] = None,
) -> None:
    """Write one public source in the labelled-data format."""
    from model.taxonomy import Taxonomy
    from training.sources import load_source

    tax = Taxonomy.load(taxonomy) if taxonomy else Taxonomy.default()
    try:
        rows = load_source(source, tax)
    except ValueError as exc:
        raise _fail(str(exc)) from exc
    with out.open("w", encoding="utf-8") as fh:
        for ex in rows:
            record = {"text": ex.text, **ex.meta}
            for task, labels in ex.labels.items():
                if labels is not None:
                    record[task] = labels if tax[task].kind == "multilabel" else labels[0]
            fh.write(json.dumps(record, ensure_ascii=False) + "\n")
    typer.echo(f"wrote {len(rows)} rows to {out}")
