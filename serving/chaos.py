"""``carelens chaos``: the service's reliability promises, measured under faults.

A throwaway service (``uvicorn serving.app:create_app`` in a subprocess on a free
loopback port, started as ``carelens bench api`` starts it) on a throwaway database (a
fresh PostgreSQL database created on the given server and dropped afterwards, or a
SQLite file with ``--sqlite``), serving a tiny random model built from config in a
temporary folder (or ``--model``): the figures are about faults, not labels.

1. **kill -9 during concurrent ingests.** N clients post messages (each with its own
   external id) until half are acknowledged; then the service gets SIGKILL with
   requests in flight. It is restarted on the same database and the store is counted:
   every acknowledged message must be there once (``lost``, ``duplicated``). The
   clients then resend what had no answer, with the same external ids, as a client
   should: afterwards every message sent is stored exactly once.
2. **Database connections terminated under load, then refused** (PostgreSQL): clients
   ingest, read queues and claim while every connection of the service is terminated
   three times, then while the database refuses new connections (``ALLOW_CONNECTIONS
   false``) for a few seconds. Every answer must be a 2xx, a 4xx or a 503 with
   Retry-After (``5xx`` counts the others), ``/readyz`` must turn red during the outage
   and green after it without a restart (``recovery_seconds``: from the database
   accepting connections again until ``/readyz`` answers 200 and an ingest is
   acknowledged again).
3. **Concurrent claims with short leases**: agents claim from the queues, hold a
   ticket for up to twice the lease, then renew (reply), release or walk away. The
   ticket events in the store are replayed: a claim while another agent's lease was
   live is a ``double_held`` lease, a reply or release by an agent that no longer held
   the ticket a ``stale_accepted`` action.

The command prints a table, writes the figures as JSON (``--json``) and exits 1 when
a promise is broken.
"""

from __future__ import annotations

import asyncio
import json
import random
import secrets
import signal
import tempfile
import time
import uuid
from collections import Counter
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from datetime import timedelta
from pathlib import Path
from typing import Annotated, Any

import typer

DEFAULT_PG_URL = "postgresql://postgres@127.0.0.1:5432/test"
# what a tiny random model needs to tokenise the scenario texts
_WORDS = (
    "where is my parcel order refund broken late the it a was not arrived thanks chaos "
    "ingest outage lease claim please help item box wrong"
).split()


class ChaosError(RuntimeError):
    """A scenario could not run (the service did not start, the database is away)."""


# -- the throwaway model, database and service ----------------------------------------------


def build_tiny_model(directory: Path) -> Path:
    """A random BERT encoder (hidden 32, 2 layers) with fresh heads and a small
    vocabulary, saved as a model directory: starts in a second, labels at random."""
    import torch
    from transformers import BertConfig, BertModel

    from model.classifier import ModelConfig
    from model.modeling import CarelensModel
    from model.ngrams import NgramConfig
    from model.taxonomy import Taxonomy
    from model.tokenization import build_wordpiece_tokenizer

    tokenizer = build_wordpiece_tokenizer(
        _WORDS + list("abcdefghijklmnopqrstuvwxyz0123456789-") + ["##s", "##ed", "##ing"]
    )
    torch.manual_seed(0)
    encoder = BertModel(
        BertConfig(
            vocab_size=tokenizer.get_vocab_size(),
            hidden_size=32,
            num_hidden_layers=2,
            num_attention_heads=2,
            intermediate_size=64,
            max_position_embeddings=128,
        ),
        add_pooling_layer=False,
    )
    config = ModelConfig(backbone="tiny-random", max_length=64, ngram=NgramConfig(enabled=False))
    model = CarelensModel.from_parts(encoder, tokenizer, Taxonomy.default(), config)
    model.save_pretrained(directory)
    return directory


def _libpq_url(url: str) -> str:
    return url.replace("postgresql+psycopg://", "postgresql://", 1)


@contextmanager
def scratch_database(pg_url: str | None, workdir: Path) -> Iterator[tuple[str, str | None]]:
    """(database URL, PostgreSQL database name or None): a fresh database on the
    server at ``pg_url``, dropped afterwards whatever happened; a SQLite file in
    ``workdir`` when ``pg_url`` is None. An unreachable server raises ChaosError."""
    if pg_url is None:
        yield f"sqlite:///{workdir / 'chaos.db'}", None
        return
    import psycopg
    from sqlalchemy.engine import make_url

    server = _libpq_url(pg_url)
    name = f"carelens_chaos_{uuid.uuid4().hex[:10]}"
    try:
        with psycopg.connect(server, autocommit=True, connect_timeout=5) as conn:
            conn.execute(f'CREATE DATABASE "{name}"')
    except psycopg.OperationalError as exc:
        reason = str(exc).strip().splitlines()[0] if str(exc).strip() else repr(exc)
        where = make_url(server).render_as_string(hide_password=True)
        raise ChaosError(
            f"PostgreSQL at {where} is unreachable: {reason} (pass --pg-url, or --sqlite)"
        ) from exc
    try:
        yield make_url(server).set(database=name).render_as_string(hide_password=False), name
    finally:
        with psycopg.connect(server, autocommit=True) as conn:
            conn.execute(f'ALTER DATABASE "{name}" ALLOW_CONNECTIONS true')
            conn.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')


class Service:
    """The app in a uvicorn subprocess (``serving.process.ServiceProcess``) on one
    database; ``kill9`` and ``start`` again keep the database and the admin key."""

    def __init__(
        self, model_dir: Path, database_url: str, workdir: Path, lease_seconds: int = 900
    ) -> None:
        self.model_dir, self.database_url, self.workdir = model_dir, database_url, workdir
        self.lease_seconds = lease_seconds
        self.admin_key = "clk_chaos_" + secrets.token_hex(16)
        self.starts = 0
        self.process = None

    @property
    def url(self) -> str:
        return self.process.url

    @property
    def alive(self) -> bool:
        return self.process is not None and self.process.proc.poll() is None

    def start(self) -> float:
        """Start and wait for ``/readyz``; returns the seconds it took."""
        from serving.process import ServiceProcess

        self.starts += 1
        folder = self.workdir / f"service-{self.starts}"
        folder.mkdir(parents=True)
        began = time.monotonic()
        self.process = ServiceProcess(
            self.model_dir,
            folder,
            {
                "CARELENS_DATABASE_URL": self.database_url,
                "CARELENS_BOOTSTRAP_ADMIN_KEY": self.admin_key,
                "CARELENS_LEASE_SECONDS": str(self.lease_seconds),
                "CARELENS_THREADS": "1",
                "CARELENS_REGISTRY": str(folder / "registry"),
                "CARELENS_JOBS_DIR": str(folder / "jobs"),
            },
        )
        try:
            self.process.wait_ready(timeout=180)
        except RuntimeError as exc:
            self.stop()
            log = self.process.log_path.read_text(errors="replace")[-2000:]
            raise ChaosError(f"{exc}\n{log}") from exc
        return time.monotonic() - began

    def kill9(self) -> None:
        self.process.proc.send_signal(signal.SIGKILL)
        self.process.proc.wait()
        self.process.stop()  # closes its log

    def stop(self) -> None:
        if self.process is not None:
            self.process.stop()


# -- counting ------------------------------------------------------------------------------------


@dataclass
class Tally:
    """Answers by status, and requests that got none (connection refused or reset)."""

    answers: Counter = field(default_factory=Counter)
    dropped: int = 0

    def add(self, status: int) -> None:
        self.answers[status] += 1

    @property
    def requests(self) -> int:
        return sum(self.answers.values()) + self.dropped

    @property
    def server_errors(self) -> int:
        return sum(n for status, n in self.answers.items() if status >= 500 and status != 503)

    def figures(self) -> dict[str, Any]:
        return {
            "requests": self.requests,
            "5xx": self.server_errors,
            "503": self.answers[503],
            "dropped": self.dropped,
            "answers": {str(k): v for k, v in sorted(self.answers.items())},
        }


def stored_messages(database_url: str, prefix: str) -> tuple[Counter, Counter, int]:
    """(rows per external id, rows per text, incomplete records) of the messages whose
    external id starts with ``prefix``; incomplete: without prediction or ticket."""
    from sqlalchemy import exists, func, select

    from serving import db
    from serving.store import Message, Prediction, Ticket

    mine = Message.external_id.like(prefix + "%")
    engine = db.make_engine(database_url)
    try:
        with db.session_factory(engine)() as s:
            rows = s.execute(select(Message.external_id, Message.text).where(mine)).all()
            incomplete = s.scalar(
                select(func.count())
                .select_from(Message)
                .where(
                    mine,
                    ~exists().where(Prediction.message_id == Message.id)
                    | ~exists().where(Ticket.message_id == Message.id),
                )
            )
    finally:
        engine.dispose()
    return Counter(r[0] for r in rows), Counter(r[1] for r in rows), int(incomplete or 0)


def _extra(counts: Counter) -> int:
    return sum(n - 1 for n in counts.values() if n > 1)


def _message(run: str, client: int, i: int) -> dict[str, Any]:
    ext = f"chaos-{run}-{client}-{i}"
    return {"channel": "chat", "text": f"where is my parcel {ext}", "external_id": ext}


def _client(url: str, key: str | None, connections: int):
    import httpx

    headers = {"X-API-Key": key} if key else {}
    return httpx.AsyncClient(
        base_url=url,
        headers=headers,
        timeout=30,
        limits=httpx.Limits(max_connections=connections, max_keepalive_connections=connections),
    )


# -- 1. kill -9 during concurrent ingests ---------------------------------------------------------


async def _ingest_until_killed(
    service: Service, run: str, clients: int, per_client: int, kill_after: int, tick
) -> tuple[set[str], set[str], Tally]:
    import httpx

    acked: set[str] = set()
    unanswered: set[str] = set()
    tally = Tally()
    killed = False

    async with _client(service.url, service.admin_key, clients) as http:

        async def client(c: int) -> None:
            nonlocal killed
            for i in range(per_client):
                body = _message(run, c, i)
                try:
                    r = await http.post("/v1/messages", json=body)
                except httpx.HTTPError:
                    tally.dropped += 1
                    unanswered.add(body["external_id"])
                    return  # the service is gone
                tally.add(r.status_code)
                if r.status_code < 300:
                    acked.add(body["external_id"])
                    tick()
                else:
                    unanswered.add(body["external_id"])
                if len(acked) >= kill_after and not killed:
                    killed = True
                    service.kill9()  # the other clients' requests are in flight

        await asyncio.gather(*(client(c) for c in range(clients)))
    if not killed:
        service.kill9()
    return acked, unanswered, tally


async def _resend(service: Service, bodies: list[dict[str, Any]]) -> Tally:
    import httpx

    tally = Tally()
    async with _client(service.url, service.admin_key, 8) as http:
        sem = asyncio.Semaphore(8)

        async def one(body):
            async with sem:
                try:
                    r = await http.post("/v1/messages", json=body)
                except httpx.HTTPError:
                    tally.dropped += 1
                    return
                tally.add(r.status_code)

        await asyncio.gather(*(one(b) for b in bodies))
    return tally


def kill_during_ingest(
    service: Service,
    run: str,
    clients: int = 16,
    per_client: int = 25,
    kill_fraction: float = 0.5,
    tick: Callable[[], None] = lambda: None,
) -> dict[str, Any]:
    """Scenario 1 (see the module's docstring); ``service`` must be running, and is
    running again (restarted) afterwards."""
    kill_after = max(1, int(clients * per_client * kill_fraction))
    acked, unanswered, tally = asyncio.run(
        _ingest_until_killed(service, run, clients, per_client, kill_after, tick)
    )
    restart_seconds = service.start()
    prefix = f"chaos-{run}-"
    ids, texts, incomplete = stored_messages(service.database_url, prefix)
    stored_unanswered = len(unanswered & set(ids))
    lost = len(acked - set(ids))
    duplicated = max(_extra(ids), _extra(texts))
    bodies = [
        _message(run, int(c), int(i))
        for c, i in (ext.removeprefix(prefix).split("-") for ext in sorted(unanswered))
    ]
    retry = asyncio.run(_resend(service, bodies))
    ids_after, texts_after, incomplete_after = stored_messages(service.database_url, prefix)
    return {
        "clients": clients,
        "sent": len(acked) + len(unanswered),
        "acknowledged": len(acked),
        "unanswered": len(unanswered),
        "stored_unanswered": stored_unanswered,
        "lost": lost,
        "duplicated": duplicated,
        "incomplete_records": max(incomplete, incomplete_after),
        "restart_seconds": round(restart_seconds, 2),
        "resent": len(bodies),
        "resent_answers": {str(k): v for k, v in sorted(retry.answers.items())},
        "lost_after_resend": len((acked | unanswered) - set(ids_after)),
        "duplicated_after_resend": max(_extra(ids_after), _extra(texts_after)),
        **{k: v for k, v in tally.figures().items() if k != "requests"},
        "5xx": tally.server_errors + retry.server_errors,
        "requests": tally.requests + retry.requests,
        "dropped_at_kill": tally.dropped,  # connections cut by the kill itself: expected
        "dropped": retry.dropped,
    }


# -- 2. database connections terminated, then refused ---------------------------------------------


def _pg_admin(pg_url: str, sql: str, params: tuple = ()) -> Any:
    import psycopg

    with psycopg.connect(_libpq_url(pg_url), autocommit=True, connect_timeout=5) as conn:
        cur = conn.execute(sql, params)
        row = cur.fetchone() if cur.description else None
        return row[0] if row else None


def terminate_connections(pg_url: str, database: str) -> int:
    return _pg_admin(
        pg_url,
        "SELECT count(pg_terminate_backend(pid)) FROM pg_stat_activity "
        "WHERE datname = %s AND pid <> pg_backend_pid()",
        (database,),
    )


def allow_connections(pg_url: str, database: str, allow: bool) -> None:
    _pg_admin(pg_url, f'ALTER DATABASE "{database}" ALLOW_CONNECTIONS {str(allow).lower()}')


async def _outage(
    service: Service,
    pg_url: str,
    database: str,
    run: str,
    clients: int,
    outage_seconds: float,
    step: Callable[[str], None],
) -> dict[str, Any]:
    import httpx

    tally = Tally()
    acked: set[str] = set()
    stop = asyncio.Event()
    restored_at: list[float] = []
    first_ok_after: list[float] = []
    loop = asyncio.get_running_loop()

    async with (
        _client(service.url, service.admin_key, clients) as http,
        _client(service.url, None, 2) as probe,
    ):
        queue = (await http.get("/v1/queues")).json()[0]["queue"]

        async def client(c: int) -> None:
            i = 0
            while not stop.is_set():
                i += 1
                try:
                    if i % 4 in (0, 1):
                        body = _message(run, c, i)
                        r = await http.post("/v1/messages", json=body)
                        if r.status_code < 300:
                            acked.add(body["external_id"])
                            if restored_at and not first_ok_after:
                                first_ok_after.append(loop.time() - restored_at[0])
                    elif i % 4 == 2:
                        r = await http.get("/v1/queues")
                    else:
                        r = await http.post(f"/v1/queues/{queue}/claim")
                        if r.status_code == 200 and r.json()["ticket"]:
                            tally.add(r.status_code)
                            r = await http.post(f"/v1/tickets/{r.json()['ticket']['id']}/release")
                except httpx.HTTPError:
                    tally.dropped += 1
                    await asyncio.sleep(0.05)
                    continue
                tally.add(r.status_code)
                if r.status_code == 503:
                    await asyncio.sleep(0.05)  # a client honouring Retry-After waits longer

        async def readyz_until(status: int, timeout: float) -> float | None:
            began = loop.time()
            while loop.time() - began < timeout:
                try:
                    if (await probe.get("/readyz")).status_code == status:
                        return loop.time() - began
                except httpx.HTTPError:
                    pass
                await asyncio.sleep(0.05)
            return None

        async def timeline() -> dict[str, Any]:
            out: dict[str, Any] = {"terminated_connections": 0}
            await asyncio.sleep(1.0)
            step("terminating every connection, three times")
            for _ in range(3):
                out["terminated_connections"] += await asyncio.to_thread(
                    terminate_connections, pg_url, database
                )
                await asyncio.sleep(0.3)
            step("database refusing connections")
            await asyncio.to_thread(allow_connections, pg_url, database, False)
            out["terminated_connections"] += await asyncio.to_thread(
                terminate_connections, pg_url, database
            )
            red = await readyz_until(503, timeout=10)
            out["readyz_red"] = red is not None
            out["readyz_red_after_seconds"] = round(red, 3) if red is not None else None
            await asyncio.sleep(outage_seconds)
            step("database accepting connections again")
            await asyncio.to_thread(allow_connections, pg_url, database, True)
            restored_at.append(loop.time())
            green = await readyz_until(200, timeout=30)
            out["readyz_green"] = green is not None
            out["readyz_green_after_seconds"] = round(green, 3) if green is not None else None
            await asyncio.sleep(1.0)
            stop.set()
            return out

        workers = [asyncio.create_task(client(c)) for c in range(clients)]
        try:
            out = await timeline()
        finally:
            stop.set()
            await asyncio.gather(*workers, return_exceptions=True)
    out["first_ingest_after_seconds"] = round(first_ok_after[0], 3) if first_ok_after else None
    # recovered: /readyz green and an ingest acknowledged again
    out["recovery_seconds"] = (
        round(max(out["readyz_green_after_seconds"], first_ok_after[0]), 3)
        if out["readyz_green"] and first_ok_after
        else None
    )
    out["acked"] = acked
    out["tally"] = tally
    return out


def outage_under_load(
    service: Service,
    pg_url: str,
    database: str,
    run: str,
    clients: int = 8,
    outage_seconds: float = 2.0,
    step: Callable[[str], None] = lambda _: None,
) -> dict[str, Any]:
    """Scenario 2 (see the module's docstring), PostgreSQL only."""
    pid = service.process.proc.pid
    out = asyncio.run(_outage(service, pg_url, database, run, clients, outage_seconds, step))
    acked, tally = out.pop("acked"), out.pop("tally")
    ids, texts, incomplete = stored_messages(service.database_url, f"chaos-{run}-")
    return {
        "clients": clients,
        "outage_seconds": outage_seconds,
        **out,
        "restarted": not service.alive or service.process.proc.pid != pid,
        "acknowledged": len(acked),
        "lost": len(acked - set(ids)),
        "duplicated": max(_extra(ids), _extra(texts)),
        "incomplete_records": incomplete,
        **tally.figures(),
    }


# -- 3. concurrent claims with short leases -------------------------------------------------------


def audit_leases(database_url: str, lease_seconds: int) -> dict[str, int]:
    """Replay every ticket event of the store (in id order: on one ticket, the order of
    their transactions, which the ticket's row lock serialises): claims while another
    key's lease was live, and replies or releases by a key that held no live lease
    while another did (or, for a release, held none at all)."""
    from sqlalchemy import select

    from serving import db
    from serving.store import TicketEvent

    lease = timedelta(seconds=lease_seconds)
    engine = db.make_engine(database_url)
    try:
        with db.session_factory(engine)() as s:
            events = s.execute(
                select(
                    TicketEvent.ticket_id,
                    TicketEvent.kind,
                    TicketEvent.actor_key_id,
                    TicketEvent.at,
                ).order_by(TicketEvent.id)
            ).all()
    finally:
        engine.dispose()
    holder: dict[int, tuple[int | None, Any]] = {}
    out = {"claims": 0, "renewals": 0, "releases": 0, "double_held": 0, "stale_accepted": 0}
    for ticket, kind, key, at in events:
        current, until = holder.get(ticket, (None, None))
        live = current is not None and until > at
        if kind == "claimed":
            out["claims"] += 1
            if live and current != key:
                out["double_held"] += 1
            holder[ticket] = (key, at + lease)
        elif kind == "replied":
            out["renewals"] += 1
            if live and current != key:
                out["stale_accepted"] += 1
            holder[ticket] = (key, at + lease)
        elif kind == "released":
            out["releases"] += 1
            if not live or current != key:
                out["stale_accepted"] += 1
            holder[ticket] = (None, None)
    return out


async def _agents(
    service: Service, run: str, agents: int, tickets: int, seconds: float, seed: int, tick
) -> tuple[int, Tally, Counter]:
    import httpx

    tally, acts = Tally(), Counter()
    async with _client(service.url, service.admin_key, agents + 1) as admin:
        bodies = [_message(run, 0, i) for i in range(tickets)]
        r = await admin.post("/v1/messages", json={"messages": bodies})
        if r.status_code != 201:
            raise ChaosError(f"could not seed {tickets} tickets: {r.status_code} {r.text[:300]}")
        seeded = [m for m in r.json()["messages"] if m["state"] == "open"]
        queues = sorted({m["queue"] for m in seeded})
        keys = []
        for a in range(agents):
            r = await admin.post("/v1/keys", json={"name": f"chaos-{run}-{a}", "role": "agent"})
            if r.status_code != 201:
                raise ChaosError(f"could not create an agent key: {r.status_code} {r.text[:300]}")
            keys.append(r.json()["key"])
    lease = service.lease_seconds
    loop = asyncio.get_running_loop()
    end = loop.time() + seconds

    async def agent(a: int) -> None:
        rng = random.Random(seed * 1000 + a)
        async with _client(service.url, keys[a], 2) as http:
            while loop.time() < end:
                try:
                    r = await http.post(f"/v1/queues/{rng.choice(queues)}/claim")
                    tally.add(r.status_code)
                    ticket = r.json().get("ticket") if r.status_code == 200 else None
                    if not ticket:
                        acts["empty claims"] += 1
                        await asyncio.sleep(0.02)
                        continue
                    acts["claims"] += 1
                    tick()
                    await asyncio.sleep(rng.uniform(0, 2 * lease))  # may outlive the lease
                    action = rng.random()
                    if action < 0.4:
                        kind = "renewals"
                        r = await http.post(
                            f"/v1/tickets/{ticket['id']}/reply", json={"text": "still on it"}
                        )
                    elif action < 0.75:
                        kind = "releases"
                        r = await http.post(f"/v1/tickets/{ticket['id']}/release")
                    else:
                        acts["walked away"] += 1  # the lease runs out
                        continue
                except httpx.HTTPError:
                    tally.dropped += 1
                    continue
                tally.add(r.status_code)
                acts[kind if r.status_code == 200 else "stale refused"] += 1

    await asyncio.gather(*(agent(a) for a in range(agents)))
    return len(seeded), tally, acts


def claims_with_short_leases(
    service: Service,
    run: str,
    agents: int = 6,
    tickets: int = 24,
    seconds: float = 6.0,
    seed: int = 0,
    tick: Callable[[], None] = lambda: None,
) -> dict[str, Any]:
    """Scenario 3 (see the module's docstring). The audit replays every ticket's events
    (the claims of the other scenarios too)."""
    seeded, tally, acts = asyncio.run(_agents(service, run, agents, tickets, seconds, seed, tick))
    audit = audit_leases(service.database_url, service.lease_seconds)
    return {
        "agents": agents,
        "tickets": seeded,
        "lease_seconds": service.lease_seconds,
        "seconds": seconds,
        **{
            name.replace(" ", "_"): acts[name]
            for name in (
                "claims",
                "empty claims",
                "renewals",
                "releases",
                "walked away",
                "stale refused",
            )
        },
        "audited_claims": audit["claims"],
        "double_held": audit["double_held"],
        "stale_accepted": audit["stale_accepted"],
        **tally.figures(),
    }


# -- all of it -----------------------------------------------------------------------------------

SCENARIOS = {
    "kill9_during_ingest": "kill -9 during concurrent ingests",
    "db_connections_terminated": "DB connections terminated, then refused",
    "claims_with_short_leases": "concurrent claims, short leases",
}


def broken_promises(report: dict[str, Any]) -> list[str]:
    """What the figures say went wrong (empty: every promise kept)."""
    problems = []
    for name, fig in report["scenarios"].items():
        if fig.get("skipped"):
            continue
        for key in (
            "lost",
            "duplicated",
            "lost_after_resend",
            "duplicated_after_resend",
            "incomplete_records",
            "5xx",
            "dropped",
            "double_held",
            "stale_accepted",
        ):
            if fig.get(key):
                problems.append(f"{name}: {key} = {fig[key]}")
        if name == "db_connections_terminated":
            for key in ("readyz_red", "readyz_green"):
                if not fig.get(key):
                    problems.append(f"{name}: {key} never seen")
            if fig.get("restarted"):
                problems.append(f"{name}: the service had to restart")
    return problems


def summary(scenarios: dict[str, dict[str, Any]]) -> dict[str, Any]:
    figs = [f for f in scenarios.values() if not f.get("skipped")]

    def total(key: str) -> int:
        return sum(f.get(key) or 0 for f in figs)

    outage = scenarios.get("db_connections_terminated", {})
    return {
        "acknowledged": total("acknowledged"),
        "lost": total("lost") + total("lost_after_resend"),
        "duplicated": total("duplicated") + total("duplicated_after_resend"),
        "5xx": total("5xx"),
        "503": total("503"),
        "dropped": total("dropped"),
        "recovery_seconds": outage.get("recovery_seconds"),
        "restart_seconds": scenarios.get("kill9_during_ingest", {}).get("restart_seconds"),
        "double_held_leases": total("double_held"),
        "stale_actions_accepted": total("stale_accepted"),
    }


def run_chaos(
    *,
    pg_url: str | None,
    model: Path | None,
    clients: int,
    messages: int,
    kill_fraction: float,
    load_clients: int,
    outage_seconds: float,
    agents: int,
    tickets: int,
    lease_seconds: int,
    claim_seconds: float,
    seed: int,
    progress=None,
) -> dict[str, Any]:
    """Every scenario on one throwaway service and database; the report (figures per
    scenario, a summary, what was broken)."""
    from rich.progress import Progress

    progress = progress or Progress(disable=True)
    run = uuid.uuid4().hex[:8]
    report: dict[str, Any] = {
        "database": "postgresql" if pg_url else "sqlite",
        "run": run,
        "scenarios": {},
    }
    with tempfile.TemporaryDirectory(prefix="carelens-chaos-") as tmp:
        work = Path(tmp)
        setup = progress.add_task("throwaway model, database and service", total=3)
        if model is None:
            model_dir = build_tiny_model(work / "model")
            report["model"] = "tiny random"
        else:
            model_dir = model.resolve()
            report["model"] = str(model_dir)
        progress.advance(setup)
        with scratch_database(pg_url, work) as (database_url, database):
            progress.advance(setup)
            service = Service(model_dir, database_url, work, lease_seconds=lease_seconds)
            try:
                report["start_seconds"] = round(service.start(), 2)
                progress.advance(setup)
                task = progress.add_task(SCENARIOS["kill9_during_ingest"], total=clients * messages)
                report["scenarios"]["kill9_during_ingest"] = kill_during_ingest(
                    service,
                    f"{run}k",
                    clients,
                    messages,
                    kill_fraction,
                    tick=lambda: progress.advance(task),
                )
                progress.update(task, completed=clients * messages)
                name = "db_connections_terminated"
                if database is None:
                    report["scenarios"][name] = {
                        "skipped": "needs PostgreSQL (connections to terminate and refuse)"
                    }
                else:
                    task = progress.add_task(SCENARIOS[name], total=4)
                    report["scenarios"][name] = outage_under_load(
                        service,
                        pg_url,
                        database,
                        f"{run}o",
                        load_clients,
                        outage_seconds,
                        step=lambda text: progress.update(
                            task, advance=1, description=f"{SCENARIOS[name]}: {text}"
                        ),
                    )
                    progress.update(task, completed=4, description=SCENARIOS[name])
                task = progress.add_task(SCENARIOS["claims_with_short_leases"], total=None)
                report["scenarios"]["claims_with_short_leases"] = claims_with_short_leases(
                    service,
                    f"{run}l",
                    agents,
                    tickets,
                    claim_seconds,
                    seed,
                    tick=lambda: progress.advance(task),
                )
                progress.update(task, total=1, completed=1)
            finally:
                service.stop()
    report["summary"] = summary(report["scenarios"])
    report["broken"] = broken_promises(report)
    return report


SHORT = {
    "kill9_during_ingest": "kill -9 mid-ingest",
    "db_connections_terminated": "DB connections cut",
    "claims_with_short_leases": "short leases",
}


def report_table(report: dict[str, Any]):
    from rich.table import Table

    table = Table(
        title=f"carelens chaos: {report['database']}, {report['model']} model",
        title_justify="left",
        caption="acked: acknowledged ingests (short leases: claims granted); recovery s: "
        "restart until ready (kill -9), connections allowed again until /readyz is green "
        "and an ingest is acknowledged (DB connections)",
        caption_justify="left",
    )
    columns = ["scenario", "requests", "acked", "lost", "dup", "5xx", "503", "dropped"]
    for column in [*columns, "recovery s", "double-held"]:
        table.add_column(column, justify="left" if column == "scenario" else "right")

    def cell(value: Any) -> str:
        return "" if value is None else str(value)

    for name, fig in report["scenarios"].items():
        if fig.get("skipped"):
            table.add_row(SHORT[name], "skipped", *[""] * 8)
            continue
        table.add_row(
            SHORT[name],
            cell(fig.get("requests")),
            cell(fig.get("acknowledged", fig.get("claims"))),
            cell(fig.get("lost", 0) + fig.get("lost_after_resend", 0)),
            cell(fig.get("duplicated", 0) + fig.get("duplicated_after_resend", 0)),
            cell(fig.get("5xx")),
            cell(fig.get("503")),
            cell(fig.get("dropped")),
            cell(fig.get("recovery_seconds", fig.get("restart_seconds"))),
            cell(fig.get("double_held")),
        )
    s = report["summary"]
    table.add_section()
    table.add_row(
        "all",
        "",
        cell(s["acknowledged"]),
        cell(s["lost"]),
        cell(s["duplicated"]),
        cell(s["5xx"]),
        cell(s["503"]),
        cell(s["dropped"]),
        cell(s["recovery_seconds"]),
        cell(s["double_held_leases"]),
        style="bold",
    )
    return table


# -- the command ------------------------------------------------------------------------------------


def chaos_cmd(
    json_out: Annotated[
        Path | None, typer.Option("--json", help="Write the figures to this JSON file.")
    ] = None,
    pg_url: Annotated[
        str,
        typer.Option(
            help="PostgreSQL server: a fresh database is created on it and dropped afterwards."
        ),
    ] = DEFAULT_PG_URL,
    sqlite: Annotated[
        bool,
        typer.Option(
            "--sqlite", help="Use a SQLite file instead (the connection scenario is skipped)."
        ),
    ] = False,
    model: Annotated[
        Path | None,
        typer.Option(
            "--model", "-m", help="Model directory (default: a tiny random model, built now)."
        ),
    ] = None,
    clients: Annotated[int, typer.Option(min=1, help="kill -9: concurrent clients.")] = 16,
    messages: Annotated[int, typer.Option(min=2, help="kill -9: messages per client.")] = 25,
    kill_at: Annotated[
        float,
        typer.Option(min=0.05, max=0.95, help="kill -9: share of messages acknowledged first."),
    ] = 0.5,
    load_clients: Annotated[
        int, typer.Option(min=1, help="Connection scenario: concurrent clients.")
    ] = 8,
    outage_seconds: Annotated[
        float, typer.Option(min=0.5, help="Connection scenario: how long connections are refused.")
    ] = 2.0,
    agents: Annotated[int, typer.Option(min=2, help="Claims: concurrent agents.")] = 6,
    tickets: Annotated[int, typer.Option(min=1, max=256, help="Claims: tickets to share.")] = 24,
    lease_seconds: Annotated[int, typer.Option(min=1, help="Claims: the lease.")] = 1,
    claim_seconds: Annotated[
        float, typer.Option(min=1, help="Claims: how long agents work.")
    ] = 6.0,
    seed: Annotated[int, typer.Option(help="Seed of the agents' choices.")] = 0,
) -> None:
    """Fault scenarios against a throwaway service and database: kill -9 during
    concurrent ingests, database connections terminated then refused under load,
    concurrent claims with short leases. Prints acknowledged, lost, duplicated, 5xx,
    503, recovery seconds and double-held leases; exits 1 when a promise is broken."""
    from rich.console import Console
    from rich.progress import BarColumn, Progress, SpinnerColumn, TextColumn, TimeElapsedColumn

    err = Console(stderr=True)
    progress = Progress(
        SpinnerColumn(),
        TextColumn("{task.description}"),
        BarColumn(),
        TextColumn("{task.completed:.0f}"),
        TimeElapsedColumn(),
        console=err,
    )
    try:
        with progress:
            report = run_chaos(
                pg_url=None if sqlite else pg_url,
                model=model,
                clients=clients,
                messages=messages,
                kill_fraction=kill_at,
                load_clients=load_clients,
                outage_seconds=outage_seconds,
                agents=agents,
                tickets=tickets,
                lease_seconds=lease_seconds,
                claim_seconds=claim_seconds,
                seed=seed,
                progress=progress,
            )
    except ChaosError as exc:
        err.print(f"[red]error:[/red] {exc}", highlight=False)
        raise typer.Exit(2) from exc
    out = Console()
    Console(width=max(out.width, 110)).print(report_table(report))
    if json_out is not None:
        json_out.parent.mkdir(parents=True, exist_ok=True)
        json_out.write_text(json.dumps(report, indent=2) + "\n", encoding="utf-8")
        typer.echo(f"figures: {json_out}")
    if report["broken"]:
        err.print("[red]broken promises:[/red]\n  " + "\n  ".join(report["broken"]))
        raise typer.Exit(1)
