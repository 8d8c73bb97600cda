"""Faults against a real service: ``uvicorn`` in a subprocess on a free loopback port
(``serving.chaos.Service``), on a fresh PostgreSQL database (CI=true) or a SQLite file.

- kill -9 while clients ingest concurrently: after a restart on the same database no
  acknowledged message is missing and none is stored twice; resending what had no
  answer, with the same external ids, leaves every message sent stored exactly once.
- Every database connection terminated under load, then the database refusing
  connections for a while: no answer but 2xx, 4xx and 503 with Retry-After, no
  dropped connection, ``/readyz`` red during the outage and green after it, and the
  same process serving again (no restart)."""

from __future__ import annotations

import uuid
from contextlib import contextmanager

import httpx
import pytest
from sqlalchemy import func, select

from serving import chaos, db
from serving.store import Message
from tests.postgres import PG_URL

pytestmark = pytest.mark.slow


@contextmanager
def _service(model_dir, pg_url: str | None, tmp_path):
    """A started ``Service`` on a fresh database (PostgreSQL at ``pg_url``, or SQLite),
    and the database's name (None for SQLite)."""
    with chaos.scratch_database(pg_url, tmp_path) as (url, name):
        svc = chaos.Service(model_dir, url, tmp_path / "service", lease_seconds=5)
        try:
            svc.start()
            yield svc, name
        finally:
            svc.stop()


@pytest.fixture(params=["sqlite", pytest.param("postgresql", marks=pytest.mark.postgres)])
def service(request, tiny_model_dir, tmp_path):
    if request.param == "postgresql":
        request.getfixturevalue("pg_ready")
    pg_url = PG_URL if request.param == "postgresql" else None
    with _service(tiny_model_dir, pg_url, tmp_path) as (svc, _):
        yield svc


@pytest.fixture
def pg_service(pg_ready, tiny_model_dir, tmp_path):
    with _service(tiny_model_dir, PG_URL, tmp_path) as found:
        yield found


def _stored(url: str, prefix: str) -> dict[str, int]:
    engine = db.make_engine(url)
    try:
        with engine.connect() as conn:
            rows = conn.execute(
                select(Message.external_id, func.count())
                .where(Message.external_id.like(prefix + "%"))
                .group_by(Message.external_id)
            ).all()
    finally:
        engine.dispose()
    return dict(rows)


def test_kill_9_during_concurrent_ingests_loses_and_duplicates_nothing(service):
    run = uuid.uuid4().hex[:8]
    fig = chaos.kill_during_ingest(service, run, clients=8, per_client=6, kill_fraction=0.5)
    assert fig["acknowledged"] >= 24 and fig["unanswered"] >= 1, fig  # killed mid-flight
    assert fig["lost"] == 0 and fig["duplicated"] == 0, fig
    assert fig["incomplete_records"] == 0, fig
    assert fig["5xx"] == 0 and fig["dropped"] == 0, fig
    # every message sent is now stored exactly once (counted here, not by the scenario)
    stored = _stored(service.database_url, f"chaos-{run}-")
    assert len(stored) == fig["sent"] and set(stored.values()) == {1}, (fig, stored)
    # the restarted service works
    r = httpx.post(
        f"{service.url}/v1/messages",
        json={"channel": "chat", "text": "after the restart"},
        headers={"X-API-Key": service.admin_key},
        timeout=30,
    )
    assert r.status_code == 201, r.text


@pytest.mark.postgres
def test_database_connections_terminated_under_load(pg_service):
    service, name = pg_service
    pid = service.process.proc.pid
    run = uuid.uuid4().hex[:8]
    fig = chaos.outage_under_load(service, PG_URL, name, run, clients=4, outage_seconds=1.5)
    assert fig["terminated_connections"] >= 1, fig
    assert fig["503"] >= 1, fig  # the fault reached requests
    assert fig["5xx"] == 0 and fig["dropped"] == 0, fig
    assert fig["readyz_red"] and fig["readyz_green"], fig
    assert fig["recovery_seconds"] is not None and fig["recovery_seconds"] < 10, fig
    assert fig["lost"] == 0 and fig["duplicated"] == 0 and fig["incomplete_records"] == 0, fig
    assert not fig["restarted"] and service.process.proc.pid == pid
    assert httpx.get(f"{service.url}/readyz", timeout=10).status_code == 200
    stored = _stored(service.database_url, f"chaos-{run}-")
    assert len(stored) >= fig["acknowledged"] and set(stored.values()) == {1}
