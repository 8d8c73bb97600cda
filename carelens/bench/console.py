"""``carelens bench console``: the console's pages over a large store.

A scratch PostgreSQL schema is migrated and loaded with COPY: ``--tickets`` messages
(100,000 by default) received over the last 240 days (about 3,000 a week: the
shop this is built for, eight months on), 60% e-mail, 30% reviews (one to
five stars) and 10% chat, about 50 products and one customer per 20 messages (5,000 for
100,000), each with its ticket
and labels; 85% of the tickets are closed (answered by one of five agents, then
resolved, with their events), the rest open, claimed or waiting on the customer, spread
over the routing file's queues. The app is created on that schema without a model (the
pages read labels from the store) and each page is requested ``--repeat`` times
in-process through Starlette's TestClient, after one warm-up request, so the time is
the server's own (routing, queries, rendering) plus a negligible client; p50 and p95
per page. The products and team pages show snapshots of their figures
(``serving.snapshots``): they are timed as served, and again with the figures counted
on every request (``counting``). The API's lists (``LISTS``: reviews, a page deep
in them through its cursor, filtered reviews, queues, open tickets) are timed the same
way with the agent key (p50, p95, p99); ``--api-only`` times them alone. The schema is
dropped afterwards.
"""

from __future__ import annotations

import json
import random
import time
import uuid
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Annotated, Any

import numpy as np
import typer

PAGES = (
    "/console",
    "/console/queues/general",
    "/console/queues/escalations",
    "/console/tickets/{open_ticket}",
    "/console/reviews",
    "/console/products",
    "/console/team",
)
AGENTS = ("ana", "ben", "chen", "dee", "eli")
SNAPSHOT_PAGES = ("/console/products", "/console/team")  # figures from serving.snapshots
# the API's lists, read with an agent key: the first page, a page deep in the list (the
# cursor of the last review of the 200th page of 50), filtered pages, a queue
LISTS = (
    "/v1/reviews",
    "/v1/reviews?after={deep_cursor}",
    "/v1/reviews?product_id=B0BENCH007",
    "/v1/reviews?stars=1&stars=2",
    "/v1/reviews?issue_type=shipping_delivery",
    "/v1/queues/general/tickets",
    "/v1/queues/escalations/tickets",
    "/v1/tickets?state=open",
)
ISSUES = ("shipping_delivery", "damaged_defective", "refund_return", "product_quality", "praise")


def load_store(conn, n: int, now: datetime, queues: list[str], agent_ids: dict[str, int], seed=0):
    """``n`` messages with their tickets and events (see the module docstring)."""
    from carelens.bench.api import copy_rows

    rng = random.Random(seed)
    naive = now.replace(tzinfo=None)
    customers = max(1, n // 20)
    messages, tickets, events = [], [], []
    open_ids = []
    for i in range(1, n + 1):
        channel = rng.choices(("email", "review", "chat"), (0.6, 0.3, 0.1))[0]
        received = naive - timedelta(minutes=rng.uniform(0, 240 * 24 * 60))
        rating = rng.choices((1, 2, 3, 4, 5), (0.12, 0.08, 0.1, 0.2, 0.5))[0]
        rating = rating if channel == "review" else None
        sentiment = (
            ("negative" if rating <= 2 else "neutral" if rating == 3 else "positive")
            if rating
            else rng.choice(("negative", "neutral", "positive"))
        )
        issue = "praise" if sentiment == "positive" else rng.choice(ISSUES[:-1])
        urgency = rng.choices(("low", "medium", "high", "critical"), (0.5, 0.3, 0.17, 0.03))[0]
        labels = {"issue_type": [issue], "sentiment": [sentiment], "urgency": [urgency]}
        messages.append(
            (
                i,
                channel,
                f"bench {channel} {i}: {issue} {sentiment}",
                "en",
                f"C{rng.randrange(customers):07d}",
                f"B0BENCH{rng.randrange(50):03d}",
                rating,
                received,
                received,
                # an unhandled negative review (Message.update_attention)
                channel == "review" and sentiment == "negative",
            )
        )
        age_h = (naive - received).total_seconds() / 3600
        sla = 72.0 if channel == "review" else 4.0 if channel == "chat" else 24.0
        due = received + timedelta(hours=sla)
        queue = "escalations" if urgency == "critical" else rng.choice(queues)
        agent = rng.choice(AGENTS)
        closed = age_h > 24 and rng.random() < 0.95 or rng.random() < 0.3
        first = resolved = by = key = lease = None
        if closed:
            first = received + timedelta(hours=rng.uniform(0.2, min(age_h, 30)))
            resolved = min(first + timedelta(hours=rng.uniform(0, 6)), naive)
            state = "resolved"
            events += [
                (i, "replied", agent, agent_ids[agent], first),
                (i, "resolved", agent, agent_ids[agent], resolved),
            ]
        else:
            state = rng.choices(("open", "claimed", "waiting_on_customer"), (0.8, 0.1, 0.1))[0]
            if state == "claimed":
                by, key, lease = agent, agent_ids[agent], naive + timedelta(minutes=10)
            if state == "waiting_on_customer":
                first = received + timedelta(hours=1)
            if state == "open":
                open_ids.append(i)
        tickets.append(
            (
                i,
                i,
                queue,
                state,
                json.dumps(labels),
                "[]",
                0.0,
                due,
                sla,
                due,
                first,
                resolved,
                by,
                key,
                lease,
                received,
                received,
            )
        )
    with conn.cursor() as cur:
        copy_rows(
            cur,
            "messages",
            [
                "id",
                "channel",
                "text",
                "lang",
                "customer_id",
                "product_id",
                "rating",
                "received_at",
                "created_at",
                "needs_attention",
            ],
            messages,
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
                "first_response_at",
                "resolved_at",
                "claimed_by",
                "claimed_by_key_id",
                "lease_expires_at",
                "created_at",
                "updated_at",
            ],
            tickets,
        )
        copy_rows(
            cur, "ticket_events", ["ticket_id", "kind", "actor", "actor_key_id", "at"], events
        )
        for table in ("messages", "tickets"):  # their ids were given
            cur.execute(f"SELECT setval(pg_get_serial_sequence('{table}', 'id'), {n})")  # noqa: S608
        for table in ("messages", "tickets", "ticket_events"):
            cur.execute(f"ANALYZE {table}")
    conn.commit()
    return {"messages": n, "events": len(events), "open": len(open_ids), "open_ticket": open_ids[0]}


def sign_in(http, key: str) -> None:
    r = http.post("/console/login", data={"key": key}, follow_redirects=False)
    if r.status_code != 303:
        raise RuntimeError(f"sign-in failed: {r.status_code}")


def time_page(http, path: str, repeat: int, headers=None) -> dict[str, float]:
    """p50, p95 and p99 of ``repeat`` requests after one warm-up request."""
    times = []
    for k in range(repeat + 1):
        t1 = time.perf_counter()
        r = http.get(path, headers=headers)
        elapsed = time.perf_counter() - t1
        if r.status_code != 200:
            raise RuntimeError(f"{path}: HTTP {r.status_code}")
        if k:
            times.append(elapsed * 1000)
    return {f"p{q}_ms": round(float(np.percentile(times, q)), 1) for q in (50, 95, 99)}


def deep_cursor(http, headers, pages: int = 200) -> str:
    """The cursor of the last review of page ``pages`` (50 a page), walked to."""
    after = None
    for _ in range(pages):
        params = {"limit": 50, **({"after": after} if after else {})}
        rows = http.get("/v1/reviews", params=params, headers=headers).json()
        if not rows:
            break
        after = rows[-1]["cursor"]
    return after or ""


def bench_console(
    pg_url: str, n: int, repeat: int, log=lambda _: None, api_only: bool = False
) -> dict[str, Any]:
    import psycopg
    from fastapi.testclient import TestClient

    from serving import db
    from serving.app import create_app
    from serving.auth import create_key
    from serving.routing import RoutingConfig
    from serving.settings import Settings

    now = datetime.now(UTC)
    schema = f"bench_{uuid.uuid4().hex[:10]}"
    with psycopg.connect(pg_url, autocommit=True) as conn:
        conn.execute(f'CREATE SCHEMA "{schema}"')
    sep = "&" if "?" in pg_url else "?"
    url = f"{pg_url}{sep}options=-csearch_path%3D{schema}"
    try:
        log(f"migrating a scratch schema {schema}")
        db.upgrade(url, "head")
        engine = db.make_engine(url)
        with db.session_factory(engine)() as s:
            agent_ids = {a: create_key(s, a, "agent")[0].id for a in AGENTS}
            _, key = create_key(s, "bench-lead", "agent")
            s.commit()
        engine.dispose()
        settings = Settings(
            database_url=url,
            model_dir=Path("/nonexistent/carelens-bench-model"),
            sla_alert_poll_seconds=0,
            signal_poll_seconds=0,
            outbox_poll_seconds=0,
        )
        queues = [q for q in RoutingConfig.load(settings.routing_file).queues if q != "escalations"]
        t0 = time.perf_counter()
        with psycopg.connect(pg_url, options=f"-csearch_path={schema}") as conn:
            counts = load_store(conn, n, now, queues, agent_ids)
        log(f"loaded {n:,} messages in {time.perf_counter() - t0:.0f} s; timing the pages")
        out: dict[str, Any] = {"store": counts, "repeat": repeat, "pages": {}}
        with TestClient(create_app(settings)) as http:
            sign_in(http, key)
            if not api_only:
                for template in PAGES:
                    path = template.format(open_ticket=counts["open_ticket"])
                    name = template.replace("{open_ticket}", "{id}")
                    out["pages"][name] = time_page(http, path, repeat)
                    log(f"{name}: p50 {out['pages'][name]['p50_ms']} ms")
            headers = {"X-API-Key": key}
            cursor = deep_cursor(http, headers)
            out["lists"] = {}
            for template in LISTS:
                path = template.format(deep_cursor=cursor)
                name = template.replace("{deep_cursor}", "CURSOR")
                out["lists"][name] = time_page(http, path, repeat, headers)
                log(f"{name}: p99 {out['lists'][name]['p99_ms']} ms")
        if api_only:
            return out
        # the pages whose figures are snapshots, counted on every request
        out["counting"] = {}
        counting = settings.model_copy(update={"console_figures_seconds": 0})
        with TestClient(create_app(counting)) as http:
            sign_in(http, key)
            for path in SNAPSHOT_PAGES:
                out["counting"][path] = time_page(http, path, repeat)
                log(f"{path}, counting its figures: p50 {out['counting'][path]['p50_ms']} ms")
        return out
    finally:
        with psycopg.connect(pg_url, autocommit=True) as conn:
            conn.execute(f'DROP SCHEMA "{schema}" CASCADE')


def bench_console_cmd(
    tickets: Annotated[
        int, typer.Option(min=100, help="Messages (each with its ticket).")
    ] = 100_000,
    repeat: Annotated[int, typer.Option(min=1, help="Requests timed per page.")] = 20,
    pg_url: Annotated[
        str, typer.Option(help="PostgreSQL server (a scratch schema is made and dropped).")
    ] = "postgresql://postgres@127.0.0.1:5432/test",
    json_out: Annotated[
        Path | None, typer.Option("--json", help="Write the figures to this JSON file.")
    ] = None,
    api_only: Annotated[
        bool, typer.Option("--api-only", help="Time the API's lists only, not the pages.")
    ] = False,
) -> None:
    """Time every console page and the API's lists with a large store in PostgreSQL
    (server time, p50/p95/p99)."""
    import os

    def log(message: str) -> None:
        typer.secho(message, err=True, dim=True)

    result = {
        "command": f"carelens bench console --tickets {tickets} --repeat {repeat}"
        + (" --api-only" if api_only else ""),
        "date": datetime.now(UTC).strftime("%Y-%m-%d"),
        "cpus": os.cpu_count(),
        **bench_console(pg_url, tickets, repeat, log, api_only),
    }
    text = json.dumps(result, indent=2)
    if json_out:
        json_out.parent.mkdir(parents=True, exist_ok=True)
        json_out.write_text(text + "\n", encoding="utf-8")
    typer.echo(text)
