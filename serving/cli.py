"""Service commands: ``carelens serve``, ``carelens db upgrade``, ``carelens keys ...``,
``carelens chaos``."""

from __future__ import annotations

import os
from enum import StrEnum
from pathlib import Path
from typing import Annotated

import typer
from rich.console import Console
from rich.table import Table

from serving.chaos import chaos_cmd

app = typer.Typer(no_args_is_help=True)
db_app = typer.Typer(no_args_is_help=True, help="The service's database.")
keys_app = typer.Typer(no_args_is_help=True, help="API keys (stored hashed; shown once).")
app.add_typer(db_app, name="db")
app.add_typer(keys_app, name="keys")
report_app = typer.Typer(
    no_args_is_help=True, help="Reports from the store: Markdown with PNG charts."
)
app.add_typer(report_app, name="report")
app.command("chaos")(chaos_cmd)
mail_app = typer.Typer(
    no_args_is_help=True,
    help="The mailbox: read customer mail over IMAP, send queued replies over SMTP "
    "(settings: CARELENS_IMAP_*, CARELENS_SMTP_*, CARELENS_MAIL_FROM).",
)
app.add_typer(mail_app, name="mail")

DbUrl = Annotated[
    str | None,
    typer.Option("--database-url", help="Default: $CARELENS_DATABASE_URL or the SQLite file."),
]


def _settings(**overrides):
    from serving.settings import Settings

    return Settings(**{k: v for k, v in overrides.items() if v is not None})


class Lang(StrEnum):
    en = "en"
    zh = "zh"


def _taxonomy(settings):
    """The taxonomy of the model the settings serve; the default one without a model."""
    from model.taxonomy import Taxonomy

    path = settings.model_dir / "taxonomy.yaml"
    return Taxonomy.load(path) if path.is_file() else Taxonomy.default()


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
    build_missing: Annotated[
        bool | None,
        typer.Option(
            "--build-missing",
            help="With no model there yet: serve at once, build the quick model (minutes), "
            "then the starter (about half an hour), switching to each when it is ready.",
        ),
    ] = None,
    workers: Annotated[
        int,
        typer.Option(
            min=1,
            help="Service processes on the port (uvicorn workers; PostgreSQL only). They "
            "share the queues, the retrain lock and the registry; /metrics adds them up.",
        ),
    ] = 1,
) -> None:
    """Run the HTTP API under uvicorn (migrates the database first)."""
    import uvicorn

    from serving.redact import uvicorn_log_config

    overrides = {
        "model_dir": model,
        "host": host,
        "port": port,
        "database_url": database_url,
        "build_missing": build_missing,
    }
    settings = _settings(**overrides)
    extra = {"log_config": uvicorn_log_config()} if settings.redact_logs else {}
    if workers == 1:
        from serving.app import create_app

        uvicorn.run(
            create_app(settings), host=settings.host, port=settings.port, log_level="info", **extra
        )
        return
    from serving.db import normalise_url
    from serving.metrics import multiprocess_metrics_dir

    if not normalise_url(settings.database_url).startswith("postgresql"):
        raise typer.BadParameter(
            "several workers need PostgreSQL (--database-url postgresql://USER@HOST/DB or "
            "CARELENS_DATABASE_URL): SQLite serves one process",
            param_hint="--workers",
        )
    # the workers build their app from the environment: hand them this command's options
    for name, value in overrides.items():
        if value is not None:
            os.environ[f"CARELENS_{name.upper()}"] = (
                str(value).lower() if isinstance(value, bool) else str(value)
            )
    multiprocess_metrics_dir()
    uvicorn.run(
        "serving.app:create_app",
        factory=True,
        workers=workers,
        host=settings.host,
        port=settings.port,
        log_level="info",
        **extra,
    )


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


def _period(since: str, until: str | None):
    from serving.reports import parse_day
    from serving.store import utcnow

    try:
        start = parse_day(since)
        end = parse_day(until, end=True) if until else utcnow()
    except ValueError as exc:
        raise typer.BadParameter(str(exc)) from exc
    if start >= end:
        raise typer.BadParameter(f"--since {since} must be before --until {until or 'now'}")
    return start, end


Since = Annotated[str, typer.Option("--since", help="First day (YYYY-MM-DD, UTC) or date-time.")]
Until = Annotated[
    str | None,
    typer.Option("--until", help="Last day, included (YYYY-MM-DD) or date-time; default now."),
]
OutDir = Annotated[Path, typer.Option("--out", help="Folder for report.md and the PNG charts.")]


@report_app.command("products")
def report_products(
    since: Since,
    out: OutDir,
    until: Until = None,
    min_messages: Annotated[int, typer.Option(help="Leave out products with fewer.")] = 1,
    window_days: Annotated[int | None, typer.Option(help="Spike test: recent window.")] = None,
    baseline_days: Annotated[int | None, typer.Option(help="Spike test: baseline.")] = None,
    min_count: Annotated[int | None, typer.Option(help="Spike test: fewest to test.")] = None,
    alpha: Annotated[float | None, typer.Option(help="Spike test: significance.")] = None,
    lang: Annotated[
        Lang,
        typer.Option(
            help="Language of the report: issue types by their English or Chinese display "
            "names and definitions (Chinese charts need a CJK font, e.g. fonts-wqy-microhei).",
        ),
    ] = Lang.en,
    database_url: DbUrl = None,
) -> None:
    """Quality feedback per product: issue mix, weekly trends, flagged spikes with
    examples (the spike windows end at --until)."""
    from serving import db
    from serving.insights import SpikeConfig
    from serving.reports import products_report

    start, end = _period(since, until)
    settings = _settings(database_url=database_url)
    cfg = SpikeConfig.from_settings(
        settings,
        window_days=window_days,
        baseline_days=baseline_days,
        min_count=min_count,
        alpha=alpha,
    )
    engine = db.make_engine(settings.database_url)
    try:
        with db.session_factory(engine)() as s:
            result = products_report(
                s,
                out,
                start,
                end,
                cfg,
                min_messages=min_messages,
                taxonomy=_taxonomy(settings),
                lang=lang.value,
            )
    finally:
        engine.dispose()
    if result["charts_lang"] != lang.value:
        Console(stderr=True).print(
            "[yellow]No CJK font installed: the charts use English names "
            "(apt-get install fonts-wqy-microhei).[/yellow]"
        )
    typer.echo(
        f"{result['report']}: {result['products']} products, {len(result['spikes'])} spikes"
        + "".join(
            f"\n  spike: {x['product_id']} {x['issue_type']} (p={x['p_value']:.2g})"
            for x in result["spikes"]
        )
    )


@report_app.command("kpis")
def report_kpis(
    since: Since,
    out: OutDir,
    until: Until = None,
    database_url: DbUrl = None,
) -> None:
    """Per agent and per queue: first-response median/p90, SLA met %, handled, reopened."""
    from serving import db
    from serving.reports import kpis_report
    from serving.routing import RoutingConfig

    start, end = _period(since, until)
    settings = _settings(database_url=database_url)
    queues = list(RoutingConfig.load(settings.routing_file).queues)
    engine = db.make_engine(settings.database_url)
    try:
        with db.session_factory(engine)() as s:
            result = kpis_report(s, out, start, end, end, queues)
    finally:
        engine.dispose()
    typer.echo(f"{result['report']}: {result['agents']} agents, {result['queues']} queues")


@mail_app.command("poll")
def mail_poll(
    url: Annotated[
        str, typer.Option(help="The running service that stores the messages.")
    ] = "http://127.0.0.1:8000",
    api_key: Annotated[
        str | None,
        typer.Option(envvar="CARELENS_API_KEY", help="A service key ($CARELENS_API_KEY)."),
    ] = None,
    every: Annotated[
        float | None,
        typer.Option(help="Poll again every SECONDS until stopped (default: once)."),
    ] = None,
) -> None:
    """Read the unseen messages of the IMAP mailbox (CARELENS_IMAP_HOST, _PORT,
    _SECURITY, _USER, _PASSWORD, _FOLDER) into the service, marking each seen once
    its ticket is stored."""
    import time

    from carelens_client import CarelensClient

    from serving.mailbox import ImapConfig, MailboxError, MailboxStop, http_handler, poll_once

    console = Console(stderr=True)
    cfg = ImapConfig.from_settings(_settings())
    if cfg is None:
        console.print("[red]No mailbox: set CARELENS_IMAP_HOST (and _USER, _PASSWORD).[/red]")
        raise typer.Exit(2)
    if not api_key:
        console.print("[red]No service key: pass --api-key or set CARELENS_API_KEY.[/red]")
        raise typer.Exit(2)
    with CarelensClient(url, api_key=api_key) as client:
        handle = http_handler(client)
        while True:
            try:
                report = poll_once(cfg, handle)
            except MailboxStop as exc:
                console.print(f"[red]{exc}[/red]")
                raise typer.Exit(1) from exc
            except MailboxError as exc:
                console.print(f"[red]{exc}[/red]")
                if every is None:
                    raise typer.Exit(1) from exc
            else:
                console.print(
                    f"{report.unseen} unseen: {report.stored} stored, "
                    f"{report.already_stored} already stored, {len(report.rejected)} rejected"
                    + (f"; {report.error}" if report.error else "")
                )
                for line in report.rejected:
                    console.print(f"  rejected {line}")
            if every is None:
                return
            time.sleep(every)


@mail_app.command("send")
def mail_send(database_url: DbUrl = None) -> None:
    """Deliver the replies due in the outbox once, over the SMTP relay
    (CARELENS_SMTP_HOST, _PORT, _SECURITY, _USER, _PASSWORD)."""
    from serving import db
    from serving.outbox import SmtpConfig, deliver_due
    from serving.store import utcnow

    console = Console(stderr=True)
    settings = _settings(database_url=database_url)
    cfg = SmtpConfig.from_settings(settings)
    if cfg is None:
        console.print("[red]No SMTP relay: set CARELENS_SMTP_HOST.[/red]")
        raise typer.Exit(2)
    engine = db.make_engine(settings.database_url)
    try:
        report = deliver_due(
            db.session_factory(engine),
            cfg,
            utcnow,
            max_attempts=settings.outbox_max_attempts,
            skip_locked=db.is_postgres(engine),
        )
    finally:
        engine.dispose()
    console.print(
        f"{report.sent} sent, {report.retrying} to retry, {report.failed} failed"
        + (f"; last error: {report.error}" if report.error else "")
    )


@mail_app.command("check")
def mail_check(
    paths: Annotated[list[Path], typer.Argument(help="E-mail files (.eml) or folders of them.")],
    out: Annotated[
        Path | None, typer.Option(help="Write the counts and each file's outcome as JSON.")
    ] = None,
    show: Annotated[int, typer.Option(help="List up to N refused or failed files.")] = 20,
) -> None:
    """Parse e-mail files as the service would (nothing is stored): how many give a
    message, how many are refused and why (no text, over a limit), and how many make
    the parser fail (a fault of carelens: please report it)."""
    import json
    import traceback
    from collections import Counter

    from serving.inbound import EmailError, parse_email

    console = Console()
    files = sorted(
        f
        for p in paths
        for f in ([p] if p.is_file() else p.rglob("*"))
        if f.is_file() and not f.name.startswith(".")
    )
    if not files:
        console.print("[red]No files found.[/red]")
        raise typer.Exit(2)
    outcomes, reasons = [], Counter()
    for f in files:
        try:
            parsed = parse_email(f.read_bytes())
            outcomes.append(
                {
                    "file": str(f),
                    "outcome": "parsed",
                    "chars": len(parsed.text),
                    "attachments": len(parsed.attachments),
                }
            )
        except EmailError as exc:
            reasons[str(exc)] += 1
            outcomes.append({"file": str(f), "outcome": "refused", "reason": str(exc)})
        except Exception as exc:  # a fault of ours
            outcomes.append(
                {
                    "file": str(f),
                    "outcome": "failed",
                    "reason": repr(exc),
                    "trace": traceback.format_exc(limit=3),
                }
            )
    counts = Counter(o["outcome"] for o in outcomes)
    table = Table("outcome", "files")
    for name in ("parsed", "refused", "failed"):
        table.add_row(name, str(counts.get(name, 0)))
    table.add_row("all", str(len(files)))
    console.print(table)
    for reason, n in reasons.most_common():
        console.print(f"  refused ({n}): {reason}")
    for o in [o for o in outcomes if o["outcome"] != "parsed"][:show]:
        console.print(f"  {o['outcome']}: {o['file']}: {o['reason']}")
    if out is not None:
        out.parent.mkdir(parents=True, exist_ok=True)
        summary = {
            "files": len(files),
            **{k: counts.get(k, 0) for k in ("parsed", "refused", "failed")},
        }
        out.write_text(json.dumps({"summary": summary, "files": outcomes}, indent=1))
    if counts.get("failed"):
        raise typer.Exit(1)
