"""``carelens bench api``: the service under load, and the queue's claim-next latency.

Service: starts ``uvicorn serving.app:create_app`` in a subprocess on loopback (its
own SQLite file, a bootstrap admin key), waits for ``/readyz``, and drives it with
httpx from an asyncio client in this process:

- ``classify_rate``: single-text ``POST /v1/classify`` sent at a fixed rate (open loop:
  latency counts from the scheduled send time, so a slow server cannot hide queueing);
- ``messages_rate``: single ``POST /v1/messages`` (classified and stored) at a fixed rate;
- ``classify_concurrent``: N clients sending single texts back to back (closed loop);
- ``classify_batch``: N clients sending ``--batch-texts`` texts per request.

Queue: for each size, a scratch PostgreSQL schema migrated to head, that many open
tickets (plus 10% closed and 1% claimed) bulk-loaded with COPY, ``ANALYZE``, then
``claim_next`` (the service's own function) timed claim by claim, each in its own
committed transaction, with ``EXPLAIN ANALYZE`` of the claim query. The schema is
dropped afterwards.
"""

from __future__ import annotations

import asyncio
import json
import os
import random
import time
import uuid
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Annotated, Any

import numpy as np
import typer

from serving.process import ServiceProcess

FALLBACK_TEXTS = [
    "My order arrived two weeks late and the box was crushed. The charger inside does not "
    "work at all. I want a refund, not a replacement.",
    "Great sound for the price. Setup took five minutes and the strap feels solid.",
    "I was charged twice for the same order. Please fix this or I will dispute it with my bank.",
    "The size chart is wrong, the jacket is two sizes too small. How do I return it?",
    "Wrong colour sent. I ordered black and got blue. The seller has not answered my emails.",
    "收到的耳机有杂音，左边完全没有声音，要求退货退款。",
    "Stopped working after three days. Smells like burning plastic when plugged in.",
    "Thanks, everything was perfect and it arrived early!",
]


def default_texts() -> Path | None:
    """The public Amazon reviews, when the shared data folder is beside the project."""
    root = os.environ.get("CARELENS_DATA")
    candidates = [Path(root)] if root else []
    candidates += [Path.cwd().parent / "shared" / "data", Path.cwd() / "shared" / "data"]
    for c in candidates:
        f = c / "amazon_reviews" / "musical_instruments.csv"
        if f.is_file():
            return f
    return None


def read_texts(path: Path | None, limit: int = 2000) -> list[str]:
    if path is None:
        return list(FALLBACK_TEXTS)
    from model.inputs import read_texts

    return read_texts(path, limit)


def summary(latencies_s: list[float], errors: int, elapsed: float, sent: int) -> dict[str, Any]:
    ms = np.asarray(latencies_s) * 1000
    ok = len(latencies_s)
    return {
        "requests": sent,
        "ok": ok,
        "errors": errors,
        "seconds": round(elapsed, 2),
        "req_per_s": round(ok / elapsed, 2) if elapsed else 0.0,
        "p50_ms": round(float(np.percentile(ms, 50)), 2) if ok else None,
        "p95_ms": round(float(np.percentile(ms, 95)), 2) if ok else None,
        "p99_ms": round(float(np.percentile(ms, 99)), 2) if ok else None,
        "max_ms": round(float(ms.max()), 2) if ok else None,
    }


# -- load generators ----------------------------------------------------------------------
async def fixed_rate(
    client, path: str, bodies, rate: float, duration: float, ok_status: tuple[int, ...]
) -> dict[str, Any]:
    """Open loop: request i is due at start + i / rate, whatever the earlier ones do."""
    n = max(1, int(rate * duration))
    latencies: list[float] = []
    errors = 0
    start = time.perf_counter()

    async def one(i: int) -> None:
        nonlocal errors
        due = start + i / rate
        await asyncio.sleep(max(0.0, due - time.perf_counter()))
        try:
            r = await client.post(path, json=bodies(i))
            if r.status_code in ok_status:
                latencies.append(time.perf_counter() - due)
            else:
                errors += 1
        except Exception:
            errors += 1

    await asyncio.gather(*(one(i) for i in range(n)))
    return {"rate": rate, **summary(latencies, errors, time.perf_counter() - start, n)}


async def closed_loop(client, path: str, bodies, clients: int, duration: float) -> dict[str, Any]:
    """``clients`` callers, each sending its next request when the last one returned."""
    latencies: list[float] = []
    errors = sent = 0
    start = time.perf_counter()
    stop_at = start + duration
    counter = iter(range(10**9))

    async def caller() -> None:
        nonlocal errors, sent
        while time.perf_counter() < stop_at:
            i = next(counter)
            sent += 1
            t0 = time.perf_counter()
            try:
                r = await client.post(path, json=bodies(i))
                if r.status_code == 200:
                    latencies.append(time.perf_counter() - t0)
                else:
                    errors += 1
            except Exception:
                errors += 1

    await asyncio.gather(*(caller() for _ in range(clients)))
    return {"clients": clients, **summary(latencies, errors, time.perf_counter() - start, sent)}


async def drive(
    url: str,
    key: str,
    texts: list[str],
    rate: float,
    messages_rate: float,
    duration: float,
    clients: int,
    batch_texts: int,
    evidence: bool | None,
    log,
) -> dict[str, Any]:
    import httpx

    limits = httpx.Limits(max_connections=max(clients, 64) * 2, max_keepalive_connections=64)
    extra = {} if evidence is None else {"evidence": evidence}
    run_id = uuid.uuid4().hex[:8]

    def single(i: int) -> dict[str, Any]:
        return {"texts": [texts[i % len(texts)]], **extra}

    def batch(i: int) -> dict[str, Any]:
        k = (i * batch_texts) % len(texts)
        chunk = (texts * 2)[k : k + batch_texts]
        return {"texts": chunk, **extra}

    def message(i: int) -> dict[str, Any]:
        return {
            "channel": "review",
            "text": texts[i % len(texts)],
            "external_id": f"bench-{run_id}-{i}",
            "customer_id": f"c{i % 500}",
            "product_id": f"B00{i % 50:04d}",
        }

    out: dict[str, Any] = {}
    async with httpx.AsyncClient(
        base_url=url, headers={"X-API-Key": key}, timeout=60, limits=limits
    ) as client:
        for i in range(5):  # warm-up
            await client.post("/v1/classify", json=single(i))
        log(f"classify at {rate}/s for {duration:.0f} s")
        out["classify_rate"] = await fixed_rate(
            client, "/v1/classify", single, rate, duration, (200,)
        )
        if messages_rate > 0:
            log(f"messages at {messages_rate}/s for {duration:.0f} s")
            out["messages_rate"] = await fixed_rate(
                client, "/v1/messages", message, messages_rate, duration, (200, 201)
            )
        log(f"classify, {clients} concurrent clients, {duration:.0f} s")
        out["classify_concurrent"] = await closed_loop(
            client, "/v1/classify", single, clients, duration
        )
        log(f"classify batches of {batch_texts}, {clients} concurrent clients, {duration:.0f} s")
        res = await closed_loop(client, "/v1/classify", batch, clients, duration)
        res["batch_texts"] = batch_texts
        res["texts_per_s"] = round(res["req_per_s"] * batch_texts, 1)
        out["classify_batch"] = res
    return out


def bench_service(
    model_dir: Path,
    texts: list[str],
    workdir: Path,
    backend: str | None,
    rate: float,
    messages_rate: float,
    duration: float,
    clients: int,
    batch_texts: int,
    evidence: bool | None,
    env: dict[str, str] | None = None,
    log=lambda _: None,
) -> dict[str, Any]:
    env = dict(env or {})
    if backend:
        env["CARELENS_BACKEND"] = backend
    svc = ServiceProcess(model_dir, workdir, env)
    try:
        log(f"starting the service on {svc.url}")
        ready = svc.wait_ready()
        key = svc.create_key("service")
        results = asyncio.run(
            drive(
                svc.url,
                key,
                texts,
                rate,
                messages_rate,
                duration,
                clients,
                batch_texts,
                evidence,
                log,
            )
        )
    finally:
        svc.stop()
    return {"ready": ready, "settings": env, **results}


# -- the queue ------------------------------------------------------------------------------
QUEUES = ("general", "billing", "logistics", "quality", "vip")


def copy_rows(cur, table: str, columns: list[str], rows) -> None:
    with cur.copy(f"COPY {table} ({', '.join(columns)}) FROM STDIN") as copy:
        for row in rows:
            copy.write_row(row)


def load_tickets(conn, n_open: int, now: datetime, seed: int = 0) -> dict[str, int]:
    """``n_open`` open tickets spread over 5 queues (40% in ``general``), plus 10%
    closed and 1% claimed ones, with their messages, via COPY."""
    rng = random.Random(seed)
    n_closed, n_claimed = n_open // 10, n_open // 100
    total = n_open + n_closed + n_claimed
    weights = [0.4, 0.15, 0.15, 0.15, 0.15]
    naive_now = now.replace(tzinfo=None)
    with conn.cursor() as cur:
        copy_rows(
            cur,
            "messages",
            ["id", "channel", "text", "lang", "received_at", "created_at"],
            (
                (i, "email", f"bench message {i}", "en", naive_now, naive_now)
                for i in range(1, total + 1)
            ),
        )

        def tickets():
            for i in range(1, total + 1):
                if i <= n_open:
                    state, by, lease = "open", None, None
                elif i <= n_open + n_closed:
                    state, by, lease = "resolved", None, None
                else:
                    state, by = "claimed", "agent"
                    lease = naive_now + timedelta(minutes=rng.choice([-5, 10]))
                rank = naive_now + timedelta(hours=rng.uniform(-48, 72))
                yield (
                    i,
                    i,
                    rng.choices(QUEUES, weights)[0],
                    state,
                    '{"issue_type": ["other"]}',
                    "[]",
                    0.0,
                    rank,
                    24.0,
                    rank,
                    by,
                    lease,
                    naive_now,
                    naive_now,
                )

        copy_rows(
            cur,
            "tickets",
            [
                "id",
                "message_id",
                "queue",
                "state",
                "labels",
                "rule_hits",
                "base_priority",
                "rank_at",
                "sla_hours",
                "sla_due_at",
                "claimed_by",
                "lease_expires_at",
                "created_at",
                "updated_at",
            ],
            tickets(),
        )
        for table in ("messages", "tickets"):
            cur.execute(
                f"SELECT setval(pg_get_serial_sequence('{table}', 'id'), {total})"  # noqa: S608
            )
        cur.execute("ANALYZE messages")
        cur.execute("ANALYZE tickets")
    conn.commit()
    return {"open": n_open, "closed": n_closed, "claimed": n_claimed}


def bench_queue(pg_url: str, sizes: list[int], claims: int, log=lambda _: None) -> dict[str, Any]:
    import psycopg
    from sqlalchemy.dialects import postgresql

    from serving import db
    from serving.tickets import _claim_statement, claim_next

    now = datetime.now(UTC)
    out: dict[str, Any] = {"pg_url": pg_url.split("@")[-1], "claims_per_size": claims, "sizes": {}}
    for n in sizes:
        schema = f"bench_{uuid.uuid4().hex[:10]}"
        with psycopg.connect(pg_url, autocommit=True) as conn:
            conn.execute(f'CREATE SCHEMA "{schema}"')
        sep = "&" if "?" in pg_url else "?"
        url = f"{pg_url}{sep}options=-csearch_path%3D{schema}"
        engine = None
        try:
            log(f"queue {n:,}: migrating a scratch schema {schema}")
            db.upgrade(url, "head")
            t0 = time.perf_counter()
            with psycopg.connect(pg_url, options=f"-csearch_path={schema}") as conn:
                counts = load_tickets(conn, n, now)
            load_s = time.perf_counter() - t0
            log(f"queue {n:,}: loaded in {load_s:.0f} s; timing {claims} claims")
            engine = db.make_engine(url)
            sessions = db.session_factory(engine)
            # the claim statement's plan, as the service sends it (rolled back)
            compiled = _claim_statement().compile(dialect=postgresql.psycopg.dialect())
            naive_now = now.replace(tzinfo=None)
            params = {
                **compiled.params,
                "claim_queue": "general",
                "claim_actor": "bench",
                "claim_now": naive_now,
                "claim_until": naive_now + timedelta(seconds=900),
            }
            with engine.connect() as c:
                rows = c.exec_driver_sql("EXPLAIN (ANALYZE, BUFFERS) " + str(compiled), params)
                plan = [r[0] for r in rows]
                c.rollback()
            lat, in_tx, commit = [], [], []
            for i in range(claims):
                with sessions() as s:
                    t1 = time.perf_counter()
                    s.begin()
                    ticket = claim_next(s, QUEUES[i % len(QUEUES)], "bench", now, 900, True)
                    t2 = time.perf_counter()
                    s.commit()
                    t3 = time.perf_counter()
                if ticket is None:
                    raise RuntimeError("claim_next found nothing: the load went wrong")
                lat.append(t3 - t1)
                in_tx.append(t2 - t1)
                commit.append(t3 - t2)

            def p(values: list[float], q: float) -> float:
                return round(float(np.percentile(np.asarray(values) * 1000, q)), 2)

            out["sizes"][str(n)] = {
                **counts,
                "load_seconds": round(load_s, 1),
                **{k: v for k, v in summary(lat, 0, sum(lat), claims).items() if k != "req_per_s"},
                "before_commit": {"p50_ms": p(in_tx, 50), "p99_ms": p(in_tx, 99)},
                "commit": {"p50_ms": p(commit, 50), "p99_ms": p(commit, 99)},
                "explain_analyze": plan,
            }
        finally:
            if engine is not None:
                engine.dispose()
            with psycopg.connect(pg_url, autocommit=True) as conn:
                conn.execute(f'DROP SCHEMA "{schema}" CASCADE')
    return out


# -- the command ------------------------------------------------------------------------------
def bench_api(
    model: Annotated[
        Path | None,
        typer.Option("--model", "-m", help="Model directory (default: $CARELENS_MODEL_DIR)."),
    ] = None,
    backend: Annotated[
        str | None,
        typer.Option(help="torch, onnx or onnx-int8 (default: $CARELENS_BACKEND or torch)."),
    ] = None,
    data: Annotated[
        Path | None,
        typer.Option(
            "--data", "-d", help="Texts (CSV/JSONL/text; default: the public Amazon reviews)."
        ),
    ] = None,
    rate: Annotated[float, typer.Option(help="Fixed rate of single classify requests/s.")] = 50.0,
    messages_rate: Annotated[
        float, typer.Option(help="Fixed rate of single POST /v1/messages/s (0: skip).")
    ] = 10.0,
    duration: Annotated[float, typer.Option(min=1, help="Seconds per phase.")] = 20.0,
    clients: Annotated[int, typer.Option(min=1, help="Concurrent clients (closed loop).")] = 8,
    batch_texts: Annotated[int, typer.Option(min=1, help="Texts per batch request.")] = 32,
    evidence: Annotated[
        bool | None,
        typer.Option(help="Ask for evidence spans (default: the service setting, on)."),
    ] = None,
    service: Annotated[bool, typer.Option(help="Run the service phases.")] = True,
    queue: Annotated[bool, typer.Option(help="Run the PostgreSQL claim-next phase.")] = True,
    queue_sizes: Annotated[
        str, typer.Option(help="Open tickets per run, comma-separated.")
    ] = "10000,100000,1000000",
    claims: Annotated[int, typer.Option(min=1, help="Claims timed per size.")] = 300,
    pg_url: Annotated[
        str, typer.Option(help="PostgreSQL server (a scratch schema is made and dropped).")
    ] = "postgresql://postgres@127.0.0.1:5432/test",
    json_out: Annotated[
        Path | None, typer.Option("--json", help="Write the figures to this JSON file.")
    ] = None,
) -> None:
    """Drive the service on loopback (fixed rate and concurrent clients, single texts
    and batches) and time claim-next with 10k/100k/1M open tickets in PostgreSQL."""
    import tempfile

    from model.paths import default_model_dir

    def log(message: str) -> None:
        typer.secho(message, err=True, dim=True)

    report: dict[str, Any] = {"load_average_before": os.getloadavg()}
    if service:
        model_dir = (model or default_model_dir()).resolve()
        if not (model_dir / "model_config.json").is_file():
            typer.secho(f"error: no model at {model_dir} (pass --model)", err=True, fg="red")
            raise typer.Exit(2)
        path = data or default_texts()
        texts = read_texts(path)
        report["texts"] = {"source": str(path) if path else "built-in", "n": len(texts)}
        with tempfile.TemporaryDirectory(prefix="carelens-bench-") as tmp:
            try:
                report["service"] = bench_service(
                    model_dir,
                    texts,
                    Path(tmp),
                    backend,
                    rate,
                    messages_rate,
                    duration,
                    clients,
                    batch_texts,
                    evidence,
                    log=log,
                )
            except RuntimeError as exc:
                log_file = Path(tmp) / "service.log"
                tail = log_file.read_text(errors="replace")[-2000:] if log_file.is_file() else ""
                typer.secho(f"error: {exc}\n{tail}", err=True, fg="red")
                raise typer.Exit(1) from exc
        svc = report["service"]
        typer.echo(f"service: backend {backend or os.environ.get('CARELENS_BACKEND', 'torch')}")
        for name in ("classify_rate", "messages_rate", "classify_concurrent", "classify_batch"):
            if name in svc:
                r = svc[name]
                extra = f"  texts/s {r['texts_per_s']}" if "texts_per_s" in r else ""
                typer.echo(
                    f"  {name:20s} {r['req_per_s']:7.1f} req/s  p50 {r['p50_ms']} ms  "
                    f"p95 {r['p95_ms']} ms  p99 {r['p99_ms']} ms  errors {r['errors']}/"
                    f"{r['requests']}{extra}"
                )
    if queue:
        sizes = [int(x) for x in queue_sizes.split(",") if x.strip()]
        import psycopg

        try:
            report["queue"] = bench_queue(pg_url, sizes, claims, log=log)
        except psycopg.OperationalError as exc:
            msg = str(exc).strip().splitlines()[0] if str(exc).strip() else repr(exc)
            typer.secho(
                f"error: PostgreSQL at {pg_url.split('@')[-1]}: {msg} (pass --pg-url, or "
                "--no-queue)",
                err=True,
                fg="red",
            )
            raise typer.Exit(2) from exc
        typer.echo("queue: claim-next on PostgreSQL (one committed transaction per claim)")
        for n, r in report["queue"]["sizes"].items():
            typer.echo(
                f"  {int(n):>9,} open  p50 {r['p50_ms']} ms  p95 {r['p95_ms']} ms  "
                f"p99 {r['p99_ms']} ms  (claim before commit p99 {r['before_commit']['p99_ms']} ms, "
                f"commit p99 {r['commit']['p99_ms']} ms; loaded in {r['load_seconds']} s)"
            )
            plan = r["explain_analyze"]
            scan = [line.strip() for line in plan if "ix_tickets_claimable" in line]
            plan_time = [line for line in plan if "Execution Time" in line]
            typer.echo(f"    plan: {(scan or plan)[0].strip()} ... {plan_time}")
    report["load_average_after"] = os.getloadavg()
    typer.echo(
        f"load average before/after: {report['load_average_before']} / "
        f"{report['load_average_after']}"
    )
    if json_out is not None:
        json_out.parent.mkdir(parents=True, exist_ok=True)
        json_out.write_text(json.dumps(report, indent=2, default=str) + "\n", encoding="utf-8")
        typer.echo(f"figures: {json_out}")
