"""The FastAPI application (``create_app``): settings, store, model, routes.

Inference never runs on the event loop (sync routes run in the thread pool; async
ones hand the model to ``run_in_threadpool``)."""

from __future__ import annotations

import logging
from collections.abc import Callable
from contextlib import asynccontextmanager
from datetime import datetime
from pathlib import Path
from typing import Any

from carelens_client.vocabulary import CHANNELS
from fastapi import FastAPI, HTTPException
from fastapi.concurrency import run_in_threadpool
from fastapi.responses import Response
from fastapi.staticfiles import StaticFiles
from pydantic import BaseModel, Field

from model.modeling import ModelLoadError
from model.paths import carelens_home
from model.predictor import Predictor
from model.registry import Registry
from serving import alerts, db, errors, signals
from serving.auth import ensure_key
from serving.autoreply import AutoReplyError, AutoReplyPolicy
from serving.batcher import MicroBatcher
from serving.builder import ModelBuilder
from serving.deps import Services
from serving.guard import RequestGuard
from serving.links import load_secret
from serving.mailbox import Every, ImapConfig, poll_once
from serving.metrics import CONTENT_TYPE, LatencyMiddleware, Metrics
from serving.model_versions import JobRunner, ModelManager
from serving.outbox import SmtpConfig, deliver_due
from serving.redact import install_log_redaction
from serving.routes import ROUTERS, messages
from serving.routing import RoutingConfig, RoutingError
from serving.settings import Settings
from serving.snapshots import Snapshots
from serving.store import utcnow
from serving.templates import load_file_templates

log = logging.getLogger(__name__)
STATIC = Path(__file__).resolve().parent / "static"  # the console's CSS and JavaScript


class NotReady(BaseModel):
    detail: dict[str, Any] = Field(description='{"ready": false, "reason": "..."}')


def start_workers(svc: Services) -> dict[str, Every]:
    """The background workers, each when configured with a period: the mailbox poller,
    the outbox delivery, the SLA alerts, the signal alerts. Over PostgreSQL a round runs
    in one process at a time (``db.one_at_a_time``): with several service processes,
    the others skip that round."""
    settings, workers = svc.settings, {}

    def every(name: str, fn: Callable[[], object], seconds: float) -> Every:
        def alone() -> object:
            with db.one_at_a_time(svc.engine, f"carelens worker {name}") as mine:
                return fn() if mine else {"skipped": "another process ran this round"}

        return Every(name, alone, seconds).start()

    if settings.sla_alert_poll_seconds > 0:
        workers["sla_alerts"] = every(
            "sla-alerts", lambda: alerts.run_once(svc), settings.sla_alert_poll_seconds
        )
    if settings.signal_poll_seconds > 0:
        workers["signals"] = every(
            "signals", lambda: signals.run_once(svc), settings.signal_poll_seconds
        )
    imap = ImapConfig.from_settings(settings)
    if imap is not None and settings.imap_poll_seconds > 0:
        handle = messages.mailbox_handler(svc)
        workers["inbox"] = every(
            "mailbox-poll", lambda: poll_once(imap, handle), settings.imap_poll_seconds
        )
    smtp = SmtpConfig.from_settings(settings)
    if smtp is not None and settings.outbox_poll_seconds > 0:
        workers["outbox"] = every(
            "outbox-delivery",
            lambda: deliver_due(
                svc.sessions,
                smtp,
                svc.clock,
                max_attempts=settings.outbox_max_attempts,
                skip_locked=svc.skip_locked,
            ),
            settings.outbox_poll_seconds,
        )
    return workers


def worker_status(workers: dict[str, Every]) -> dict[str, Any]:
    """What /readyz says of the background workers: the last round's report and
    error, the mail workers under ``mail``."""
    out: dict[str, Any] = {}
    for name, worker in workers.items():
        last = worker.last
        view = {
            "every_seconds": worker.seconds,
            "error": worker.error or getattr(last, "error", None),
            "last": last.to_dict() if hasattr(last, "to_dict") else last,
        }
        if name in ("inbox", "outbox"):
            out.setdefault("mail", {})[name] = view
        else:
            out[name] = view
    return out


def create_app(
    settings: Settings | None = None,
    predictor: Predictor | None = None,
    clock: Callable[[], datetime] = utcnow,
) -> FastAPI:
    """Build the app. A bad routing file or an unreachable/unmigratable database stops
    it here, with the reason; a model that fails to load leaves it running but not
    ready (``/readyz`` says why) and it serves no labels."""
    settings = settings or Settings()
    if settings.redact_logs:
        install_log_redaction()
    routing = RoutingConfig.load(settings.routing_file)
    file_templates = load_file_templates(settings.templates_dir)  # a bad file stops the app
    autoreply = AutoReplyPolicy.load(settings.autoreply_file)  # so does a bad policy file
    autoreply.validate(list(routing.queues), file_templates)
    if settings.sla_hours:
        routing.sla_default_hours = settings.sla_hours
    engine = db.make_engine(settings.database_url)
    metrics = Metrics()
    svc = Services(
        settings=settings,
        engine=engine,
        sessions=db.session_factory(engine),
        routing=routing,
        metrics=metrics,
        clock=clock,
        autoreply=autoreply,
        snapshots=Snapshots(settings.console_figures_seconds, clock),
        link_secret=load_secret(
            settings.secret_key.get_secret_value() if settings.secret_key else None,
            carelens_home(),
        ),
    )
    metrics.watch_store(svc.sessions, clock)
    models = ModelManager(svc, Registry(settings.registry) if settings.follow_registry else None)
    builder = ModelBuilder(models, settings.model_dir, settings.jobs_dir / "model-build")
    workers: dict[str, Every] = {}

    @asynccontextmanager
    async def lifespan(app: FastAPI):
        if settings.redact_logs:
            install_log_redaction()  # also on the handlers the server set up since
        if settings.migrate_on_start:
            await run_in_threadpool(db.upgrade, settings.database_url, "head", engine)
        if settings.bootstrap_admin_key is not None:
            with db.transaction(svc.sessions) as s:
                ensure_key(
                    s, "bootstrap-admin", "admin", settings.bootstrap_admin_key.get_secret_value()
                )
        svc.predictor = predictor
        startup = models.startup_dir() if predictor is None else None
        if startup == settings.model_dir and settings.build_missing and builder.needed():
            # nothing to serve yet: answer at once, build in the background
            svc.model_error = f"no model at {settings.model_dir} yet: building one"
            builder.start()
        elif predictor is None:
            try:
                svc.predictor = await run_in_threadpool(
                    Predictor.load,
                    startup,
                    backend=settings.backend,
                    batch_size=settings.batch_size,
                    max_tokens=settings.max_tokens,
                    num_threads=settings.threads,
                    evidence=settings.evidence,
                    rules=settings.rules_file,
                )
            except ModelLoadError as exc:
                # refuse readiness with the reason; never serve made-up labels
                svc.model_error = str(exc)
                log.error("model failed to load: %s", exc)
        if svc.predictor is not None:
            try:
                routing.validate(svc.predictor.taxonomy, CHANNELS, svc.predictor.rules.names)
                autoreply.check_taxonomy(svc.predictor.taxonomy)
            except (RoutingError, AutoReplyError) as exc:
                svc.model_error = f"routing file does not fit the model: {exc}"
                log.error("%s", svc.model_error)
                svc.predictor = None
            else:
                metrics.model_info.labels(svc.predictor.model_version or "unknown").set(1)
        models.start(settings.registry_poll_seconds)  # hot reload: follow the active pointer
        svc.batcher = MicroBatcher(
            lambda: svc.predictor,  # read afresh for every batch (hot reload)
            max_batch_size=settings.batch_max_size,
            max_wait_ms=settings.batch_max_wait_ms,
            queue_size=settings.batch_queue_size,
        ).start()
        workers.update(start_workers(svc))
        yield
        for worker in workers.values():
            worker.stop()
        svc.batcher.stop()
        builder.stop()
        models.stop()
        engine.dispose()

    app = FastAPI(
        title="carelens",
        version="0.1.0",
        description="Triage of customer messages: issue type, sentiment and urgency; "
        "queues with SLAs; review management. Authenticate with an API key "
        "(`Authorization: Bearer KEY` or `X-API-Key: KEY`).",
        lifespan=lifespan,
    )
    errors.install(app)  # database faults: 503 + Retry-After; refused values: 422
    app.router.route_class = errors.ApiRoute  # the routes below: documented errors
    app.state.settings = settings
    app.state.services = svc
    app.state.models = models
    app.state.builder = builder
    app.state.jobs = JobRunner(
        settings.jobs_dir, Registry(settings.registry), lambda _: models.follow(), engine
    )

    # pure ASGI middlewares, the last added outermost: latency of every answer, then the
    # body limit and the key check before anything reads the body
    app.add_middleware(RequestGuard, max_body_bytes=settings.max_body_bytes)
    app.add_middleware(LatencyMiddleware, metrics=metrics)

    @app.get("/healthz", tags=["ops"])
    async def healthz() -> dict[str, str]:
        """The process is up (no key needed). Answered on the event loop, touching
        neither the database nor the thread pool, so it stays fast whatever the model
        and the database are doing."""
        return {"status": "ok"}

    @app.get(
        "/readyz",
        tags=["ops"],
        responses={503: {"model": NotReady, "description": "Not ready, and why."}},
    )
    def readyz() -> dict[str, Any]:
        """Ready when the model is loaded and the database answers (no key needed).
        While a missing model is built (``build_missing``), ``build`` says how far."""
        build = {"build": builder.status()} if builder.stage is not None else {}
        if svc.predictor is None:
            raise HTTPException(503, detail={"ready": False, "reason": svc.model_error, **build})
        try:
            db.ping(engine)
        except Exception as exc:
            raise HTTPException(
                503, detail={"ready": False, "reason": f"database unreachable: {exc}"}
            ) from exc
        background = worker_status(workers)
        return {
            "ready": True,
            "model_version": svc.predictor.model_version,
            "trained": bool(svc.predictor.model.train_config),
            "database": engine.dialect.name,
            "model_reload_error": models.error,
            **build,
            **background,
        }

    @app.get(
        "/metrics",
        tags=["ops"],
        response_class=Response,
        responses={200: {"content": {"text/plain": {"schema": {"type": "string"}}}}},
    )
    def prometheus() -> Response:
        """Prometheus metrics (no key needed; keep the port private)."""
        return Response(metrics.render(), media_type=CONTENT_TYPE)

    for router in ROUTERS:
        app.include_router(router)
    app.mount("/console/static", StaticFiles(directory=STATIC), name="console-static")
    return app
