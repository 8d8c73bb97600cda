"""``carelens models list|show|promote|rollback|import``: the model registry by hand.

A running service follows the registry's active pointer (it polls it), so a
promotion or rollback made here is served within a few seconds without a restart.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Annotated

import typer
from rich.console import Console
from rich.table import Table

from model.registry import Registry, RegistryError

app = typer.Typer(
    no_args_is_help=True,
    help="The model registry: versions, the active one, promotion and rollback.",
)

RegistryOpt = Annotated[
    Path | None,
    typer.Option(
        "--registry",
        help="Registry folder (default $CARELENS_REGISTRY or $CARELENS_HOME/registry).",
    ),
]


def _fail(message: str) -> typer.Exit:
    typer.secho(f"error: {message}", err=True, fg=typer.colors.RED)
    return typer.Exit(code=2)


def _headline(metrics: dict | None) -> str:
    if not metrics:
        return ""
    return " ".join(
        f"{k}={v:.3f}" for k, v in metrics.items() if isinstance(v, float) and k.endswith("mean")
    )


@app.command("list")
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


@app.command("show")
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


@app.command("promote")
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


@app.command("rollback")
def rollback(registry: RegistryOpt = None) -> None:
    """Make the previously active version active again."""
    reg = Registry(registry)
    try:
        ptr = reg.rollback(actor="cli")
    except RegistryError as exc:
        raise _fail(str(exc)) from exc
    typer.echo(f"active: {ptr['version']}")


@app.command("import")
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
