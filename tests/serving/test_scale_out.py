"""Many processes, one service: migrations run once when several start together, one
retrain at a time across processes, and ``carelens serve --workers`` over PostgreSQL
(no double claims, a worker killed mid-claim, metrics of every worker)."""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import httpx
import pytest
from carelens_client import CarelensClient, CarelensError
from sqlalchemy import inspect

from serving import db
from tests.serving.factories import ADMIN_KEY


def test_several_workers_need_postgresql(tmp_path):
    from typer.testing import CliRunner

    from carelens.cli import app

    url = f"sqlite:///{tmp_path / 'one.db'}"
    r = CliRunner().invoke(app, ["serve", "--workers", "2", "--database-url", url])
    assert r.exit_code == 2 and "need PostgreSQL" in r.output


@pytest.mark.postgres
def test_processes_starting_together_migrate_once(pg_url):
    with ThreadPoolExecutor(4) as pool:  # four services starting on an empty database
        list(pool.map(lambda _: db.upgrade(pg_url), range(4)))
    engine = db.make_engine(pg_url)
    try:
        assert db.current_revision(engine) is not None
        assert "tickets" in inspect(engine).get_table_names()
    finally:
        engine.dispose()


@pytest.mark.postgres
def test_processes_starting_together_create_the_bootstrap_key_once(pg_url):
    from serving.auth import ensure_key
    from serving.store import ApiKey

    db.upgrade(pg_url)
    engines = [db.make_engine(pg_url) for _ in range(2)]
    sessions = [db.session_factory(e) for e in engines]
    errors: list[BaseException] = []

    def second() -> None:  # finds no key yet; its insert waits on the first one's
        try:
            with db.transaction(sessions[1]) as s:
                ensure_key(s, "bootstrap-admin", "admin", ADMIN_KEY)
        except BaseException as exc:  # noqa: BLE001 - the test reports it below
            errors.append(exc)

    try:
        with db.transaction(sessions[0]) as s:
            ensure_key(s, "bootstrap-admin", "admin", ADMIN_KEY)
            other = threading.Thread(target=second)
            other.start()
            time.sleep(1)  # the second process is blocked on the unique index now
        other.join(30)
        assert not other.is_alive() and errors == []
        with sessions[0]() as s:
            assert [k.name for k in s.query(ApiKey)] == ["bootstrap-admin"]
    finally:
        for engine in engines:
            engine.dispose()


@pytest.mark.postgres
def test_a_background_round_runs_in_one_process_at_a_time(pg_url, tmp_path):
    engines = [db.make_engine(pg_url) for _ in range(2)]
    try:
        with db.one_at_a_time(engines[0], "carelens worker outbox") as first:
            with db.one_at_a_time(engines[1], "carelens worker outbox") as second:
                assert (first, second) == (True, False)  # the other process skips
            with db.one_at_a_time(engines[1], "carelens worker signals") as other:
                assert other  # another worker's lock is another lock
        with db.one_at_a_time(engines[1], "carelens worker outbox") as later:
            assert later
    finally:
        for engine in engines:
            engine.dispose()
    sqlite = db.make_engine(f"sqlite:///{tmp_path / 'one.db'}")
    with db.one_at_a_time(sqlite, "x") as a, db.one_at_a_time(sqlite, "x") as b:
        assert a and b  # one process: nothing to share


@pytest.mark.postgres
def test_one_retrain_at_a_time_across_service_processes(pg_url, tmp_path):
    from model.registry import Registry
    from serving.model_versions import JobConflict, JobRunner

    engines = [db.make_engine(pg_url) for _ in range(2)]
    # two services (two hosts: jobs folders of their own) over one database and registry
    first, second = (
        JobRunner(tmp_path / name, Registry(tmp_path / "registry"), engine=engine)
        for name, engine in zip(("a", "b"), engines, strict=True)
    )
    try:
        job = first.start_retrain("", {}, "ana")  # no labels: it fails, after a while
        with pytest.raises(JobConflict, match="another service process"):
            second.start_retrain("", {}, "ben")
        assert not (tmp_path / "b").exists()  # nothing was started there
        assert first.wait(job["id"], timeout=120)["status"] == "failed"
        again = second.start_retrain("", {}, "ben")  # the lock went with the job
        assert second.wait(again["id"], timeout=120)["status"] == "failed"
    finally:
        for engine in engines:
            engine.dispose()


@pytest.fixture
def workers(pg_url, tiny_model_dir, tmp_path):
    """``carelens serve --workers 3`` on a free loopback port over a fresh schema."""

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    env = {
        **os.environ,
        "CARELENS_HOME": str(tmp_path / "home"),
        "CARELENS_REGISTRY": str(tmp_path / "registry"),
        "CARELENS_BOOTSTRAP_ADMIN_KEY": ADMIN_KEY,
        "CARELENS_SLA_ALERT_POLL_SECONDS": "0",
        "CARELENS_SIGNAL_POLL_SECONDS": "0",
        "CARELENS_THREADS": "1",
        "CARELENS_REGISTRY_POLL_SECONDS": "0.5",
    }
    env.pop("PROMETHEUS_MULTIPROC_DIR", None)
    cmd = [sys.executable, "-m", "carelens.cli", "serve", "--workers", "3", "--port", str(port)]
    cmd += ["--model", str(tiny_model_dir), "--database-url", pg_url]
    log = (tmp_path / "serve.log").open("wb")
    proc = subprocess.Popen(cmd, env=env, stdout=log, stderr=subprocess.STDOUT)
    url = f"http://127.0.0.1:{port}"
    deadline = time.monotonic() + 120
    while True:
        if proc.poll() is not None or time.monotonic() > deadline:
            pytest.fail("the service did not start:\n" + (tmp_path / "serve.log").read_text())
        try:
            if httpx.get(url + "/readyz", timeout=2).status_code == 200:
                break
        except httpx.HTTPError:
            pass
        time.sleep(0.3)
    try:
        yield url, proc, tmp_path / "registry"
    finally:
        proc.send_signal(signal.SIGINT)
        try:
            proc.wait(30)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()
        log.close()


def _children(parent: int) -> list[int]:
    """The pids of ``parent``'s uvicorn worker processes (multiprocessing spawns them)."""
    out = []
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            fields = stat.read_text().rsplit(")", 1)[1].split()
            cmdline = (stat.parent / "cmdline").read_bytes()
        except OSError:
            continue
        if int(fields[1]) == parent and b"spawn_main" in cmdline:
            out.append(int(stat.parent.name))
    return sorted(out)


@pytest.mark.postgres
def test_workers_share_the_queues_with_no_double_claims_even_when_one_is_killed(
    workers, tiny_model_dir
):

    url, proc, registry = workers
    # one worker may answer /readyz while the supervisor is still starting the others
    deadline = time.monotonic() + 60
    while len(pids := _children(proc.pid)) < 3:
        if time.monotonic() > deadline:  # the whole log: pytest shortens an assert's
            pytest.fail(f"workers {pids}:\n" + (registry.parent / "serve.log").read_text())
        time.sleep(0.2)
    assert len(pids) == 3, pids

    def client(key: str) -> CarelensClient:
        # a new connection per request: the kernel hands each to any worker
        http = httpx.Client(
            base_url=url, timeout=30, limits=httpx.Limits(max_keepalive_connections=0)
        )
        return CarelensClient(api_key=key, http=http)

    admin = client(ADMIN_KEY)
    service = client(admin.create_key("shop", "service")["key"])
    posted = service.post_messages(
        [
            {
                "channel": "email",
                "text": f"Where is my parcel {i}? It is late.",
                "customer_id": f"c{i}",
            }
            for i in range(60)
        ]
    )
    tickets = {p["ticket_id"] for p in posted}
    queues = [q["queue"] for q in admin.queues()]
    agents = [client(admin.create_key(f"agent-{i}", "agent")["key"]) for i in range(6)]
    seen: list[tuple[str, int]] = []
    failed: list[str] = []
    lock = threading.Lock()

    def work(agent: CarelensClient, name: str) -> None:
        empty = set()
        while len(empty) < len(queues):
            for q in queues:
                try:
                    got = agent.claim(q)
                except (httpx.HTTPError, CarelensError) as exc:  # the killed worker's answers
                    with lock:
                        failed.append(repr(exc))
                    continue
                if got is None:
                    empty.add(q)
                else:
                    empty.discard(q)
                    with lock:
                        seen.append((name, got["id"]))

    threads = [threading.Thread(target=work, args=(a, f"agent-{i}")) for i, a in enumerate(agents)]
    for t in threads:
        t.start()
    while len(seen) < 10:  # mid-claim: kill one worker outright
        time.sleep(0.01)
    os.kill(pids[0], signal.SIGKILL)
    for t in threads:
        t.join(120)
    claimed = [tid for _, tid in seen]
    assert len(claimed) == len(set(claimed)), "a ticket was claimed twice"
    states = {tid: admin.ticket(tid) for tid in tickets}
    # every ticket is claimed once: the answers the clients saw, and any claim whose
    # answer the killed worker took with it (held under one agent's lease)
    assert all(t["state"] == "claimed" for t in states.values())
    lost = tickets - set(claimed)
    assert len(lost) <= len(failed)
    assert all(states[tid]["claimed_by"] == name for name, tid in seen)

    # the service goes on: the supervisor started a new worker in place of the killed one
    deadline = time.monotonic() + 60
    while len(_children(proc.pid)) < 3 or pids[0] in _children(proc.pid):
        assert time.monotonic() < deadline, _children(proc.pid)
        time.sleep(0.2)
    assert service.classify(["still there?"])["model_version"]

    # a promotion through one worker reaches every worker (each follows the registry)
    from model.registry import Registry

    version = Registry(registry).import_model(tiny_model_dir, activate=False).name
    admin.promote_model(version)
    deadline = time.monotonic() + 60
    while {admin.readyz()["model_version"] for _ in range(12)} != {version}:
        assert time.monotonic() < deadline, "a worker did not follow the promotion"
        time.sleep(0.3)

    # /metrics of any worker adds every worker's requests up
    text = admin.metrics()
    total = sum(
        float(line.rsplit(" ", 1)[1])
        for line in text.splitlines()
        if line.startswith("carelens_request_seconds_count{")
        and 'route="/v1/queues/{queue}/claim"' in line
        and 'status="200"' in line
    )
    assert total >= len(seen)
    assert text.count("carelens_model_info{") >= 2  # per live worker, with its pid
