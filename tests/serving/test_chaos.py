"""``carelens chaos``: a small run on PostgreSQL (CI=true), the error when PostgreSQL
cannot be reached, the exit status when a promise is broken, and the lease audit
finding what it is there to find."""

from __future__ import annotations

import json
from datetime import UTC, datetime, timedelta

import psycopg
import pytest
from typer.testing import CliRunner

from carelens.cli import app
from serving import chaos, db
from serving.store import Message, Ticket, TicketEvent
from tests.postgres import PG_URL

runner = CliRunner()


def _scratch_databases() -> set[str]:
    with psycopg.connect(PG_URL) as conn:
        rows = conn.execute("SELECT datname FROM pg_database WHERE datname LIKE 'carelens_chaos_%'")
        return {r[0] for r in rows}


@pytest.mark.slow
@pytest.mark.postgres
def test_a_small_run_keeps_every_promise_and_drops_its_database(pg_ready, tmp_path):
    before = _scratch_databases()
    out = tmp_path / "chaos.json"
    r = runner.invoke(
        app,
        [
            "chaos",
            "--json",
            str(out),
            "--pg-url",
            PG_URL,
            "--clients",
            "4",
            "--messages",
            "4",
            "--load-clients",
            "3",
            "--outage-seconds",
            "1",
            "--agents",
            "3",
            "--tickets",
            "6",
            "--claim-seconds",
            "2",
        ],
    )
    assert r.exit_code == 0, r.output
    assert "double-held" in r.output and "kill -9 mid-ingest" in r.output
    report = json.loads(out.read_text())
    assert report["database"] == "postgresql" and report["broken"] == []
    s = report["summary"]
    assert s["acknowledged"] > 0 and s["503"] > 0 and s["recovery_seconds"] is not None
    for key in ("lost", "duplicated", "5xx", "dropped", "double_held_leases"):
        assert s[key] == 0, (key, s)
    leases = report["scenarios"]["claims_with_short_leases"]
    assert leases["claims"] > 0 and leases["audited_claims"] >= leases["claims"]
    assert _scratch_databases() == before


def test_unreachable_postgres_is_a_clear_error(tmp_path):
    r = runner.invoke(app, ["chaos", "--pg-url", "postgresql://postgres@127.0.0.1:9/none"])
    assert r.exit_code == 2, r.output
    assert "PostgreSQL at postgresql://postgres@127.0.0.1:9/none is unreachable" in r.output
    assert "--sqlite" in r.output


def test_a_broken_promise_exits_1(monkeypatch, tmp_path):
    fig = {"requests": 10, "acknowledged": 8, "lost": 1, "duplicated": 0, "5xx": 0}
    report = {"database": "sqlite", "model": "tiny random", "scenarios": {}}
    report["scenarios"]["kill9_during_ingest"] = fig
    report["summary"] = chaos.summary(report["scenarios"])
    report["broken"] = chaos.broken_promises(report)
    monkeypatch.setattr(chaos, "run_chaos", lambda **kw: report)
    r = runner.invoke(app, ["chaos", "--sqlite", "--json", str(tmp_path / "c.json")])
    assert r.exit_code == 1, r.output
    assert "kill9_during_ingest: lost = 1" in r.output


def test_the_lease_audit_finds_double_held_leases_and_stale_actions(tmp_path):
    url = f"sqlite:///{tmp_path / 'audit.db'}"
    db.upgrade(url)
    engine = db.make_engine(url)
    t0 = datetime(2026, 11, 20, 18, 0, tzinfo=UTC)

    def at(seconds: int) -> datetime:
        return t0 + timedelta(seconds=seconds)

    with db.transaction(db.session_factory(engine)) as s:
        ticket = Ticket(
            message=Message(channel="chat", text="t", lang="en", received_at=t0),
            queue="general",
            labels={},
            rule_hits=[],
            base_priority=0.0,
            rank_at=t0,
            sla_hours=24.0,
            sla_due_at=t0,
        )
        s.add(ticket)
        s.flush()
        for kind, key, seconds in [
            ("claimed", 1, 0),
            ("replied", 1, 50),  # renewed to 110
            ("claimed", 2, 100),  # key 1's lease is live: double held
            ("released", 1, 105),  # key 1 no longer holds it: stale
            ("claimed", 3, 400),  # key 2's lease ran out at 160: fine
            ("released", 3, 410),
            ("released", 3, 420),  # released twice: stale
            ("claimed", 1, 430),
        ]:
            s.add(TicketEvent(ticket_id=ticket.id, kind=kind, actor_key_id=key, at=at(seconds)))
    engine.dispose()
    audit = chaos.audit_leases(url, lease_seconds=60)
    assert audit == {
        "claims": 4,
        "renewals": 1,
        "releases": 3,
        "double_held": 1,
        "stale_accepted": 2,
    }
