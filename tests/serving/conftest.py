"""Service fixtures: the app on SQLite and on the local PostgreSQL (a fresh schema per
test), a settable clock, and clients holding keys of each role."""

from __future__ import annotations

import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from datetime import UTC, datetime, timedelta

import pytest
from fastapi.testclient import TestClient

ADMIN_KEY = "clk_test-admin-key-not-secret"


class Clock:
    def __init__(self, now: datetime):
        self.now = now

    def __call__(self) -> datetime:
        return self.now

    def advance(self, **kw) -> None:
        self.now += timedelta(**kw)


@pytest.fixture(params=["sqlite", pytest.param("postgresql", marks=pytest.mark.postgres)])
def db_url(request, tmp_path):
    if request.param == "sqlite":
        return f"sqlite:///{tmp_path / 'carelens.db'}"
    return request.getfixturevalue("pg_url")


@pytest.fixture
def clock() -> Clock:
    return Clock(datetime(2026, 11, 20, 18, 0, tzinfo=UTC))  # a Friday evening


@pytest.fixture
def make_app(tiny_model_dir, tmp_path, clock):
    from serving.app import create_app
    from serving.settings import Settings

    def make(db_url: str, **settings):
        settings.setdefault("bootstrap_admin_key", ADMIN_KEY)
        settings.setdefault("registry", tmp_path / "registry")  # never the real var/registry
        settings.setdefault("jobs_dir", tmp_path / "jobs")
        settings.setdefault("sla_alert_poll_seconds", 0)  # the alert tests run it themselves
        settings.setdefault("secret_key", "test-secret-not-secret")
        return create_app(
            Settings(model_dir=tiny_model_dir, database_url=db_url, **settings), clock=clock
        )

    return make


class Desk:
    """The app under test with one client per role."""

    def __init__(self, test_client: TestClient):
        from serving.client import CarelensClient

        self.http = test_client
        self.app = test_client.app
        self.admin = CarelensClient(http=test_client, api_key=ADMIN_KEY)
        self.service = self.admin.with_key(self.admin.create_key("ingest", "service")["key"])
        self.agent = self.admin.with_key(self.admin.create_key("alice", "agent")["key"])
        self.agent2 = self.admin.with_key(self.admin.create_key("bob", "agent")["key"])

    @property
    def sessions(self):
        return self.app.state.services.sessions

    def count(self, model) -> int:
        from sqlalchemy import func, select

        with self.sessions() as s:
            return s.scalar(select(func.count()).select_from(model))


@pytest.fixture
def desk(make_app, db_url):
    with TestClient(make_app(db_url)) as tc:
        yield Desk(tc)


@contextmanager
def uvicorn_thread(app, **config) -> Iterator[int]:
    """``app`` under uvicorn on a free loopback port, in a thread; yields the port and
    stops the server afterwards. ``log_config=None`` leaves the process's logging as it
    is (records reach caplog)."""
    import uvicorn

    server = uvicorn.Server(
        uvicorn.Config(app, host="127.0.0.1", port=0, log_config=None, **config)
    )
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    deadline = time.monotonic() + 60
    while not server.started:
        assert thread.is_alive() and time.monotonic() < deadline, "uvicorn did not start"
        time.sleep(0.02)
    try:
        yield server.servers[0].sockets[0].getsockname()[1]
    finally:
        server.should_exit = True
        thread.join(15)
