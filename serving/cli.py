"""Service commands: ``carelens serve``, ``carelens db upgrade``, ``carelens keys ...``."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer
from rich.console import Console
from rich.table import Table

app = typer.Typer(no_args_is_help=True)
db_app = typer.Typer(no_args_is_help=True, help="The service's database.")
keys_app = typer.Typer(no_args_is_help=True, help="API keys (stored hashed; shown once).")
app.add_typer(db_app, name="db")
app.add_typer(keys_app, name="keys")

DbUrl = Annotated[
    str | None,
    typer.Option("--database-url", help="Default: $CARELENS_DATABASE_URL or the SQLite file."),
]


def _settings(**overrides):
    from serving.settings import Settings

    return Settings(**{k: v for k, v in overrides.items() if v is not None})


@app.command()
def serve(
    model: Annotated[
        Path | None,
        typer.Option(
            "--model",
            "-m",
            help="Model directory (default: $CARELENS_MODEL_DIR or the starter model).",
        ),
    ] = None,
    host: Annotated[str | None, typer.Option(help="Bind address (default 127.0.0.1).")] = None,
    port: Annotated[int | None, typer.Option(help="Port (default 8000).")] = None,
    database_url: DbUrl = None,
) -> None:
    """Run the HTTP API under uvicorn (migrates the database first)."""
    import uvicorn

    from serving.app import create_app

    settings = _settings(model_dir=model, host=host, port=port, database_url=database_url)
    uvicorn.run(create_app(settings), host=settings.host, port=settings.port, log_level="info")


@db_app.command("upgrade")
def db_upgrade(
    database_url: DbUrl = None,
    revision: Annotated[str, typer.Option(help="Target revision.")] = "head",
) -> None:
    """Apply the Alembic migrations (also done when the service starts)."""
    from serving import db

    url = _settings(database_url=database_url).database_url
    db.upgrade(url, revision)
    engine = db.make_engine(url)
    try:
        typer.echo(
            f"database at revision {db.current_revision(engine)} ({engine.url.render_as_string()})"
        )
    finally:
        engine.dispose()


@keys_app.command("create")
def keys_create(
    role: Annotated[str, typer.Option(help="service, agent or admin.")],
    name: Annotated[str, typer.Option(help="Who or what uses the key.")],
    database_url: DbUrl = None,
) -> None:
    """Create an API key and print it once (only its hash is stored)."""
    from serving import db
    from serving.auth import create_key

    url = _settings(database_url=database_url).database_url
    db.upgrade(url)
    engine = db.make_engine(url)
    try:
        with db.transaction(db.session_factory(engine)) as s:
            row, key = create_key(s, name, role)
    except ValueError as exc:
        raise typer.BadParameter(str(exc)) from exc
    finally:
        engine.dispose()
    Console(stderr=True).print(f"key {row.id} ({row.role}, {row.name}) — shown once, keep it safe:")
    typer.echo(key)


@keys_app.command("list")
def keys_list(database_url: DbUrl = None) -> None:
    """List keys (never the keys themselves)."""
    from sqlalchemy import select

    from serving import db
    from serving.store import ApiKey

    url = _settings(database_url=database_url).database_url
    db.upgrade(url)
    engine = db.make_engine(url)
    table = Table("id", "name", "role", "prefix", "created", "revoked")
    with db.session_factory(engine)() as s:
        for r in s.scalars(select(ApiKey).order_by(ApiKey.id)):
            table.add_row(
                str(r.id),
                r.name,
                r.role,
                r.prefix,
                f"{r.created_at:%Y-%m-%d %H:%M}",
                f"{r.revoked_at:%Y-%m-%d %H:%M}" if r.revoked_at else "",
            )
    engine.dispose()
    Console().print(table)


@keys_app.command("revoke")
def keys_revoke(key_id: int, database_url: DbUrl = None) -> None:
    """Revoke a key by id."""
    from serving import db
    from serving.auth import revoke

    url = _settings(database_url=database_url).database_url
    engine = db.make_engine(url)
    try:
        with db.transaction(db.session_factory(engine)) as s:
            ok = revoke(s, key_id)
    finally:
        engine.dispose()
    if not ok:
        raise typer.BadParameter(f"no active key {key_id}")
    typer.echo(f"key {key_id} revoked")
