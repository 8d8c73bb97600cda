"""``carelens retrain``: labelled tickets → audited fine-tuning → gated promotion.

The command is mounted by the thin ``carelens/cli.py``, which also hands it an
exporter (``EXPORTER``) that reads the labelled tickets from the service's store when
no ``--labels`` file is given: training never imports serving.
"""

from __future__ import annotations

import json
import tempfile
from collections.abc import Callable
from pathlib import Path
from typing import Annotated

import typer

# (database_url or None, taxonomy_file, out_path) -> rows written; set by carelens/cli.py
EXPORTER: Callable[[str | None, Path, Path], int] | None = None


def _fail(message: str) -> typer.Exit:
    typer.secho(f"error: {message}", err=True, fg=typer.colors.RED)
    return typer.Exit(code=2)


def retrain_cmd(
    labels: Annotated[
        Path | None,
        typer.Option(
            "--labels",
            "-l",
            help="Labelled tickets (the GET /v1/labels/export format). Default: export them "
            "from the service's store (--database-url).",
        ),
    ] = None,
    database_url: Annotated[
        str | None,
        typer.Option(
            help="Store to export from (default $CARELENS_DATABASE_URL or the SQLite file)."
        ),
    ] = None,
    config: Annotated[
        Path | None, typer.Option("--config", "-c", help="YAML of RetrainConfig fields.")
    ] = None,
    registry: Annotated[
        Path | None,
        typer.Option(
            help="Registry folder (default $CARELENS_REGISTRY or $CARELENS_HOME/registry)."
        ),
    ] = None,
    base: Annotated[
        Path | None,
        typer.Option(
            help="Model imported as v0001 when the registry is empty (default: the starter)."
        ),
    ] = None,
    promote: Annotated[
        bool | None, typer.Option("--promote/--no-promote", help="Promote when the gate passes.")
    ] = None,
    exclude_flagged: Annotated[
        bool | None,
        typer.Option("--exclude-flagged/--keep-flagged", help="Mask labels cleanlab flags."),
    ] = None,
    from_backbone: Annotated[
        bool | None,
        typer.Option("--from-backbone", help="Start from the backbone, not the active model."),
    ] = None,
    epochs: Annotated[int | None, typer.Option(min=1)] = None,
    threads: Annotated[int | None, typer.Option(min=1)] = None,
    data_dir: Annotated[Path | None, typer.Option(help="Public data folder.")] = None,
    result: Annotated[
        Path | None, typer.Option(help="Also write the result record (JSON) here.")
    ] = None,
    progress_file: Annotated[
        Path | None,
        typer.Option("--progress-file", help="Keep {stage, fraction, message} here (JSON)."),
    ] = None,
    quiet: Annotated[bool, typer.Option(help="No progress bars.")] = False,
) -> None:
    """Retrain on the agents' labelled tickets; audit the labels with cleanlab; evaluate
    candidate and active model on the frozen set and the newest tickets; promote only
    if the gate passes. The candidate is kept as a registry version either way."""
    from model.pretrained import ModelLoadError
    from model.registry import Registry, RegistryError, write_json_atomic
    from training.retrain import RetrainConfig, RetrainError, retrain

    if config is not None and not config.is_file():
        raise _fail(f"config file not found: {config}")
    flags = {
        "promote": promote,
        "exclude_flagged": exclude_flagged,
        "from_backbone": from_backbone,
        "epochs": epochs,
        "threads": threads,
        "data_dir": str(data_dir) if data_dir else None,
    }
    try:
        cfg = RetrainConfig.from_file(config, flags)
    except (TypeError, ValueError) as exc:
        raise _fail(f"{config or 'retrain config'}: {exc}") from exc
    reg = Registry(registry)

    def report(stage: str, fraction: float, message: str) -> None:
        if progress_file is not None:
            write_json_atomic(
                progress_file, {"stage": stage, "fraction": round(fraction, 3), "message": message}
            )

    with tempfile.TemporaryDirectory() as tmp:
        if labels is None:
            if EXPORTER is None:
                raise _fail("give --labels FILE (no store exporter is registered)")
            from model.paths import default_model_dir

            active = reg.active_path() or (base or default_model_dir())
            labels = Path(tmp) / "labels.jsonl"
            try:
                n = EXPORTER(database_url, Path(active) / "taxonomy.yaml", labels)
            except Exception as exc:
                raise _fail(f"exporting labelled tickets from the store: {exc}") from exc
            typer.echo(f"exported {n} labelled tickets from the store", err=True)
        try:
            out = retrain(
                labels, reg, cfg, base_model_dir=base, progress=report, show_bars=not quiet
            )
        except (RetrainError, RegistryError, ModelLoadError) as exc:
            report("failed", 1.0, str(exc))
            raise _fail(str(exc)) from exc
    if result is not None:
        write_json_atomic(result, out)
    m = out["metrics"]
    summary = {
        "version": out["version"],
        "parent": out["parent"],
        "decision": out["decision"],
        "reason": out["reason"],
        "active": out["active"],
        "frozen_mean": {k: m[k]["frozen"]["mean"] for k in ("active", "candidate")},
        "new_tickets_mean": {k: m[k]["new_tickets"]["mean"] for k in ("active", "candidate")},
        "flagged_labels": len(out["audit"].get("flagged", [])),
        "seconds": out["timings"]["total"],
    }
    typer.echo(json.dumps(summary, indent=2))
