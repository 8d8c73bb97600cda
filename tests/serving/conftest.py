"""Service fixtures: the app on SQLite and on the local PostgreSQL (a fresh schema per
test), a settable clock, clients holding keys of each role, and a desk on an app that
serves planned labels (``planned``, ``seller``); what they build is in ``factories.py``."""

from __future__ import annotations

from datetime import UTC, datetime

import pytest
from fastapi.testclient import TestClient

from tests.serving.factories import ADMIN_KEY, Clock, Desk, PlannedPredictor


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


@pytest.fixture
def desk(make_app, db_url):
    with TestClient(make_app(db_url)) as tc:
        yield Desk(tc)


@pytest.fixture
def planned():
    return PlannedPredictor()


@pytest.fixture
def seller(db_url, clock, planned, tiny_model_dir):
    """Opens ``Desk``s on apps serving ``planned`` (settings as keyword arguments)."""
    from serving.app import create_app
    from serving.settings import Settings

    def make(**settings):
        settings.setdefault("bootstrap_admin_key", ADMIN_KEY)
        app = create_app(
            Settings(model_dir=tiny_model_dir, database_url=db_url, **settings),
            predictor=planned,
            clock=clock,
        )
        return app

    opened: list[TestClient] = []

    def open_desk(**settings) -> Desk:
        tc = TestClient(make(**settings))
        tc.__enter__()
        opened.append(tc)
        return Desk(tc)

    yield open_desk
    for tc in opened:
        tc.__exit__(None, None, None)
