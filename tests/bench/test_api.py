"""`carelens bench api`: the queue phase on PostgreSQL (small sizes) and the service
phase against a real uvicorn subprocess on the tiny model."""

from __future__ import annotations

import json

import psycopg
import pytest
from typer.testing import CliRunner

from carelens.cli import app
from tests.postgres import PG_URL

runner = CliRunner()


@pytest.mark.postgres
def test_queue_bench_claims_through_the_claim_index_and_drops_its_schema(pg_ready, tmp_path):
    def schemas() -> set[str]:
        with psycopg.connect(PG_URL) as conn:
            rows = conn.execute("SELECT nspname FROM pg_namespace WHERE nspname LIKE 'bench_%'")
            return {r[0] for r in rows}

    before = schemas()
    out = tmp_path / "q.json"
    r = runner.invoke(
        app,
        [
            "bench",
            "api",
            "--no-service",
            "--queue-sizes",
            "300,1000",
            "--claims",
            "20",
            "--pg-url",
            PG_URL,
            "--json",
            str(out),
        ],
    )
    assert r.exit_code == 0, r.output
    sizes = json.loads(out.read_text())["queue"]["sizes"]
    assert set(sizes) == {"300", "1000"}
    for fig in sizes.values():
        assert fig["ok"] == 20 and fig["p99_ms"] > 0
    plan = "\n".join(sizes["1000"]["explain_analyze"])
    assert "ix_tickets_claimable" in plan or "Seq Scan" in plan  # tiny tables may seq-scan
    assert schemas() == before


@pytest.mark.slow
def test_service_bench_drives_a_real_server(tiny_model_dir, tmp_path):
    data = tmp_path / "texts.txt"
    data.write_text("my order never arrived\ngreat product thanks\n退款。质量差\n")
    out = tmp_path / "api.json"
    r = runner.invoke(
        app,
        [
            "bench",
            "api",
            "--no-queue",
            "-m",
            str(tiny_model_dir),
            "-d",
            str(data),
            "--duration",
            "1",
            "--rate",
            "10",
            "--messages-rate",
            "5",
            "--clients",
            "2",
            "--batch-texts",
            "4",
            "--json",
            str(out),
        ],
    )
    assert r.exit_code == 0, r.output
    svc = json.loads(out.read_text())["service"]
    for phase in ("classify_rate", "messages_rate", "classify_concurrent", "classify_batch"):
        assert svc[phase]["errors"] == 0, (phase, svc[phase])
        assert svc[phase]["ok"] > 0 and svc[phase]["p99_ms"] > 0
    assert svc["classify_batch"]["texts_per_s"] > 0
