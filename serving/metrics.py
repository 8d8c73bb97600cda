"""Prometheus metrics (one registry per app, so several apps in one process — tests —
do not collide): request latency, predictions per label, model version, and queue
depths / SLA breaches read from the store at scrape time.

Several worker processes (``carelens serve --workers``) use prometheus_client's
multiprocess mode: ``PROMETHEUS_MULTIPROC_DIR`` is set before the workers start, each
writes its samples there, and a scrape of any worker adds them up (the model version
is listed per live worker, with its ``pid``)."""

from __future__ import annotations

import os
import tempfile
import time
from collections.abc import Callable, Iterable
from datetime import datetime
from pathlib import Path

from prometheus_client import (
    CollectorRegistry,
    Counter,
    Gauge,
    Histogram,
    generate_latest,
    multiprocess,
)
from prometheus_client.core import GaugeMetricFamily
from prometheus_client.registry import Collector
from sqlalchemy import func, select
from sqlalchemy.orm import Session, sessionmaker
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from serving.store import CLOSED_STATES, Ticket

CONTENT_TYPE = "text/plain; version=0.0.4; charset=utf-8"


class QueueCollector(Collector):
    def __init__(self, sessions: sessionmaker[Session], clock: Callable[[], datetime]):
        self.sessions = sessions
        self.clock = clock

    def collect(self) -> Iterable[GaugeMetricFamily]:
        depth = GaugeMetricFamily(
            "carelens_queue_depth",
            "Tickets not closed, per queue and state",
            labels=["queue", "state"],
        )
        breached = GaugeMetricFamily(
            "carelens_sla_breached_tickets",
            "Open tickets past their first-response deadline with no response",
            labels=["queue"],
        )
        now = self.clock()
        try:
            with self.sessions() as s:
                for queue, state, n in s.execute(
                    select(Ticket.queue, Ticket.state, func.count())
                    .where(Ticket.state.not_in(CLOSED_STATES))
                    .group_by(Ticket.queue, Ticket.state)
                ):
                    depth.add_metric([queue, state], n)
                for queue, n in s.execute(
                    select(Ticket.queue, func.count())
                    .where(
                        Ticket.state.not_in(CLOSED_STATES),
                        Ticket.first_response_at.is_(None),
                        Ticket.sla_due_at < now,
                    )
                    .group_by(Ticket.queue)
                ):
                    breached.add_metric([queue], n)
        except Exception:  # the DB being down must not break the scrape
            pass
        yield depth
        yield breached


class Metrics:
    def __init__(self) -> None:
        self.registry = CollectorRegistry()
        self.latency = Histogram(
            "carelens_request_seconds",
            "HTTP request latency",
            ["method", "route", "status"],
            registry=self.registry,
            buckets=(0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30),
        )
        self.predictions = Counter(
            "carelens_predictions_total",
            "Labels predicted, per task and label",
            ["task", "label"],
            registry=self.registry,
        )
        self.model_info = Gauge(
            "carelens_model_info",
            "The model version served",
            ["version"],
            registry=self.registry,
            multiprocess_mode="liveall",
        )
        self.stores: list[Collector] = []

    def watch_store(self, sessions: sessionmaker[Session], clock: Callable[[], datetime]) -> None:
        self.stores.append(QueueCollector(sessions, clock))
        self.registry.register(self.stores[-1])

    def count_predictions(self, predictions) -> None:
        for p in predictions:
            for name, tp in p.tasks.items():
                for label in tp.labels:
                    self.predictions.labels(name, label).inc()

    def render(self) -> bytes:
        if not os.environ.get(MULTIPROC_ENV):
            return generate_latest(self.registry)
        registry = CollectorRegistry()  # every worker's samples, and the store's figures once
        multiprocess.MultiProcessCollector(registry)
        for collector in self.stores:
            registry.register(collector)
        return generate_latest(registry)


MULTIPROC_ENV = "PROMETHEUS_MULTIPROC_DIR"


def multiprocess_metrics_dir() -> Path:
    """A fresh folder for the workers' samples, named in ``PROMETHEUS_MULTIPROC_DIR``
    (to set before the workers start; the folder of an earlier run is not reused)."""
    path = Path(tempfile.mkdtemp(prefix="carelens-metrics-"))
    os.environ[MULTIPROC_ENV] = str(path)
    return path


class LatencyMiddleware:
    """Observes every HTTP request's latency by method, route template and status (an
    ASGI middleware: no extra task per request, and what the app reads from
    ``receive`` reaches it unwrapped, exceptions included)."""

    def __init__(self, app: ASGIApp, metrics: Metrics) -> None:
        self.app = app
        self.metrics = metrics

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        start = time.perf_counter()
        status = 500

        async def watch(message: Message) -> None:
            nonlocal status
            if message["type"] == "http.response.start":
                status = message["status"]
            await send(message)

        try:
            await self.app(scope, receive, watch)
        finally:
            route = scope.get("route")
            self.metrics.latency.labels(
                scope["method"], getattr(route, "path", "unmatched"), str(status)
            ).observe(time.perf_counter() - start)
