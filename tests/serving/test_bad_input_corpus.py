"""The bad-input corpus, sent to every write route (POST, PUT, PATCH, DELETE) of the
app, through a real uvicorn server on a loopback port, on SQLite and on PostgreSQL
(CI=true). The routes, their path and query parameters and their body schemas are
read from the app itself, so a new route or field is covered without a change here
(a route without an example body gets one built from its schema).

The corpus: empty and whitespace bodies, 1 MB and 10 MB chunked bodies (no
Content-Length), invalid UTF-8, NUL, JSON 900 and 10,000 levels deep; in every string
field (body values and nested keys, path and query): SQL, template and
path-traversal injections, CRLF header injection, HTML with scripts, NUL, lone
surrogates, right-to-left and mixed scripts with emoji, over-long strings; in every
field: extreme numbers (+-2^63, 2^64,
+-1e308, NaN, +-Infinity); in every date field: years 1 and 9999 (with offsets), dates
that do not exist and integers; on the e-mail route: MIME bombs (parts, depth, decoded
size, headers) and scripts in HTML bodies.

Every answer must be a 2xx, or a 4xx whose JSON ``detail`` says what is wrong: never
a 5xx and never a connection closed without an answer. A refused request leaves the
row count of every table as it was; an accepted one leaves whole records only (every
message with its prediction, ticket and ``created`` event, every campaign run with
its audit rows), and an accepted message reads back as it was sent."""

from __future__ import annotations

import base64
import copy
import itertools
import json
import math
import re
import socket
import threading
import time
import uuid
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import quote

import httpx
import pytest
import yaml
from sqlalchemy import text

from model.predictor import clean_text
from tests.postgres import PG_URL
from tests.serving.factories import ADMIN_KEY, uvicorn_thread

pytestmark = pytest.mark.slow  # about 30 s a database, most of it in the string corpus

WRITE_METHODS = {"POST", "PUT", "PATCH", "DELETE"}
UNIQ = "@UNIQ@"  # replaced by a fresh number in every request (idempotency keys, names)
NOW = "2026-11-20T10:00:00Z"

MESSAGE = {
    "channel": "email",
    "text": "My parcel never arrived and I want a refund",
    "subject": "Order late",
    "external_id": f"corpus-{UNIQ}",
    "customer_id": "C-corpus",
    "customer_name": "Ann Buyer",
    "order_id": "112-1234567-7654321",
    "product_id": "B0CORPUS",
    "marketplace": "amazon.de",
    "rating": 2,
    "received_at": NOW,
}
# A valid body per route: every field set, so every field meets the corpus (a test
# checks that each field of a route's schema appears here). Several bodies for a route
# whose body takes several shapes.
EXAMPLES: dict[tuple[str, str], list[Any]] = {
    ("POST", "/v1/messages"): [
        MESSAGE,
        {"messages": [{**MESSAGE, "external_id": f"corpus-batch-{UNIQ}"}]},
    ],
    ("POST", "/v1/classify"): [
        {"texts": ["the box was crushed"], "ratings": [1], "evidence": True}
    ],
    ("POST", "/v1/tickets/{ticket_id}/reply"): [
        {"text": "It is on its way", "wait_for_customer": False}
    ],
    ("POST", "/v1/tickets/{ticket_id}/resolve"): [{"note": "refunded"}],
    ("POST", "/v1/tickets/{ticket_id}/no-response-needed"): [{"note": "spam"}],
    ("POST", "/v1/tickets/{ticket_id}/labels"): [
        {
            "labels": {
                "issue_type": ["shipping_delivery", "refund_return"],
                "sentiment": "negative",
                "urgency": "high",
            }
        }
    ],
    ("POST", "/v1/reviews/{review_id}/handled"): [{"note": "answered publicly"}],
    ("POST", "/v1/keys"): [{"name": f"corpus-{UNIQ}", "role": "agent"}],
    ("POST", "/v1/models/retrain"): [
        {
            "epochs": 1,
            "promote": False,
            "exclude_flagged": False,
            "from_backbone": False,
            "tolerance": 0.01,
            "min_gain": 0.0,
            "min_judged": 5,
            "confidence": 0.9,
            "max_cell_drop": 0.05,
            "holdout_fraction": 0.2,
            "min_labelled": 2,
            "min_holdout": 1,
            "ticket_weight": 2.0,
            "learning_rate": 0.0001,
            "head_learning_rate": 0.001,
            "ngram_learning_rate": 0.01,
            "public_rows_per_source": 0,
            "threads": 1,
            "seed": 0,
        }
    ],
    ("POST", "/v1/templates"): [
        {
            "name": f"corpus.{UNIQ}",
            "issue_type": "shipping_delivery",
            "lang": "en",
            "title": "Late parcel",
            "body": "Hello {customer_name}, order {order_id} is on its way.",
            "fallbacks": {"customer_name": "there"},
        }
    ],
    ("PUT", "/v1/templates/{template_name}"): [
        {
            "issue_type": "shipping_delivery",
            "lang": "en",
            "title": "Late parcel",
            "body": "Hello {customer_name}, order {order_id} is on its way.",
            "fallbacks": {"customer_name": "there"},
        }
    ],
    ("POST", "/v1/orders"): [
        {
            "orders": [
                {
                    "order_id": f"o-{UNIQ}",
                    "customer_id": "C-corpus",
                    "product_id": "B0CORPUS",
                    "marketplace": "amazon.de",
                    "delivered_at": NOW,
                    "customer_name": "Ann Lee",
                    "product_name": "Green kettle",
                }
            ]
        }
    ],
    ("POST", "/v1/customers/{customer_id}/consent"): [
        {"email": "buyer@example.com", "source": "checkout box", "at": NOW}
    ],
    ("POST", "/v1/customers/{customer_id}/opt-out"): [{"source": "ticket 42"}],
    ("POST", "/v1/campaigns"): [
        {
            "name": "corpus marketing",
            "kind": "marketing",
            "channel": "own_email",
            "audience": {
                "min_messages": 1,
                "min_positive_share": 0.5,
                "no_open_ticket": True,
                "no_negative_days": 30,
            },
            "subject": "Thank you",
            "body": "Hello {customer_name}, thank you.",
            "fallbacks": {"customer_name": "there"},
        },
        {
            "name": "corpus review request",
            "kind": "review_request",
            "channel": "marketplace_messaging",
            "audience": {
                "min_days_after_delivery": 5,
                "max_days_after_delivery": 30,
                "marketplace": "amazon.de",
                "product_ids": ["B0CORPUS"],
            },
            "subject": "How was it?",
            "body": "How was order {order_id}?",
        },
    ],
}
EMAIL = {  # the slots of the raw e-mail that take corpus strings
    "From": "buyer@example.com",
    "Subject": "Where is my parcel",
    "Message-ID": f"<corpus-{UNIQ}@example.com>",
    "text": "My parcel has not arrived yet.",
}
STRING_PARAMS = {  # path and query parameters that name something
    "queue": "escalations",
    "customer_id": "C-corpus",
    "template_name": "corpus.put",
    "version": "v0001",
    "channel": "email",
    "product_id": "B0CORPUS",
    "marketplace": "amazon.de",
    "lang": "zh",
}

# Strings that no check treats apart share one value (each route is then sent fewer
# requests; a failure still names the field).
STRINGS = {
    "empty": "",
    "whitespace": " \t\r\n ",
    "injections": "'; DROP TABLE messages; -- x' OR '1'='1' UNION SELECT key_hash FROM "
    "api_keys -- {{7*7}} ${7*7} #{7*7} <%= 7*7 %> {0.__class__} {customer_name!r} "
    "..%2F..%2Fetc%2Fpasswd",
    "traversal": "../../../../etc/passwd",
    "crlf and html": "x\r\nSet-Cookie: injected=1\r\nX-Injected: 1\r\n\r\n"
    "<script>alert(document.cookie)</script><img src=x onerror=alert(1)>",
    "nul": "a\x00b",
    "surrogate": "a\ud800b\udfff",
    "scripts": "\u202etxt.exe \u05e9\u05dc\u05d5\u05dd \u0645\u0631\u062d\u0628\u0627 \u200f! "
    "Straße Ελληνικά русский 中文 日本語 한국어 हिन्दी "
    "\U0001f4e6\U0001f525\U0001f44d\U0001f3fd\U0001f468\u200d\U0001f469\u200d\U0001f467 "
    + "Z\u0334\u0321\u032a\u034ea\u0338l\u0336g\u0337o\u0335"
    * 20,
    "long": "x" * 20_000,
}
NUMBERS = {
    "2^63": 2**63,
    "-2^63": -(2**63),
    "2^64": 2**64,
    "1e308": 1e308,
    "-1e308": -1e308,
    "1e-308": 1e-308,
    "NaN": math.nan,
    "Infinity": math.inf,
    "-Infinity": -math.inf,
    "-0.0": -0.0,
    "-1": -1,
    "10^100": 10**100,
}
DATES = {
    "year 1": "0001-01-01T00:00:00Z",
    "year 1 +14:00": "0001-01-01T00:00:00+14:00",
    "year 9999": "9999-12-31T23:59:59Z",
    "year 9999 -14:00": "9999-12-31T23:59:59-14:00",
    "year 10000": "10000-01-01T00:00:00Z",
    "30 February": "2026-02-30T10:00:00Z",
    "25:61": "2026-11-20T25:61:00Z",
    "date only": "2026-11-20",
    "naive": "2026-11-20T10:00:00",
    "int 0": 0,
    "int -1": -1,
    "int 2^31": 2**31,
    "int 2^63": 2**63,
    "int year 10000": 253_402_300_800,
    "float 1e308": 1e308,
    "NaN": math.nan,
    "text": "yesterday",
}


def _deep(depth: int, kind: str = "list") -> str:
    if kind == "list":
        return "[" * depth + "]" * depth
    return '{"a":' * depth + "1" + "}" * depth


# -- the server -----------------------------------------------------------------------------


class RecordingJobs:
    """Stands in for the retraining job runner: an accepted retrain is recorded (its
    options written as the real runner writes them), and no training starts."""

    def __init__(self) -> None:
        self.started: list[dict[str, Any]] = []

    def start_retrain(self, labels_jsonl: str, options: dict[str, Any], actor: str, base=None):
        yaml.safe_dump(options)
        self.started.append(options)
        return {
            "id": f"job-{len(self.started)}",
            "kind": "retrain",
            "status": "running",
            "pid": 1,
            "started_at": "2026-11-20T00:00:00+00:00",
            "finished_at": None,
            "returncode": None,
            "by": actor,
            "options": options,
            "labelled_tickets": labels_jsonl.count("\n"),
        }

    def list(self) -> list[dict[str, Any]]:
        return []

    def get(self, job_id: str) -> dict[str, Any]:
        raise KeyError(job_id)


@dataclass
class Served:
    url: str
    port: int
    app: Any
    http: httpx.Client
    ids: dict[str, Iterator[int]] = field(default_factory=dict)
    counter: Iterator[int] = field(default_factory=itertools.count)

    @property
    def sessions(self):
        return self.app.state.services.sessions

    def counts(self) -> dict[str, int]:
        """Rows per table, in one statement."""
        from serving.store import Base

        tables = sorted(Base.metadata.tables)
        sql = "SELECT " + ", ".join(f"(SELECT count(*) FROM {t})" for t in tables)
        with self.sessions() as s:
            return dict(zip(tables, s.execute(text(sql)).one(), strict=True))

    def broken(self) -> dict[str, int]:
        """Records that are not whole: how many of each kind (all 0 when whole)."""
        checks = {
            "message without prediction": "SELECT count(*) FROM messages m WHERE NOT EXISTS "
            "(SELECT 1 FROM predictions p WHERE p.message_id = m.id)",
            "message without ticket": "SELECT count(*) FROM messages m WHERE NOT EXISTS "
            "(SELECT 1 FROM tickets t WHERE t.message_id = m.id) AND m.thread_ticket_id IS NULL",
            "answer without its event": "SELECT count(*) FROM messages m WHERE "
            "m.thread_ticket_id IS NOT NULL AND NOT EXISTS (SELECT 1 FROM ticket_events e "
            "WHERE e.ticket_id = m.thread_ticket_id AND e.kind = 'customer_replied')",
            "ticket without created event": "SELECT count(*) FROM tickets t WHERE NOT EXISTS "
            "(SELECT 1 FROM ticket_events e WHERE e.ticket_id = t.id AND e.kind = 'created')",
            "claimed ticket without holder or lease": "SELECT count(*) FROM tickets WHERE "
            "state = 'claimed' AND (claimed_by IS NULL OR lease_expires_at IS NULL)",
            "label correction without its event": "SELECT (SELECT count(*) FROM "
            "label_corrections) - (SELECT count(*) FROM ticket_events WHERE kind = "
            "'labels_corrected')",
            "campaign run without its audit rows": "SELECT count(*) FROM campaign_runs r "
            "WHERE r.considered <> (SELECT count(*) FROM campaign_contacts c "
            "WHERE c.run_id = r.id)",
        }
        with self.sessions() as s:
            found = {name: s.execute(text(sql)).scalar_one() for name, sql in checks.items()}
        return {name: n for name, n in found.items() if n}

    def fresh(self, value: Any) -> Any:
        """``value`` with every UNIQ replaced by a new number."""
        n = str(next(self.counter))
        if isinstance(value, str):
            return value.replace(UNIQ, n)
        if isinstance(value, bytes):
            return value.replace(UNIQ.encode(), n.encode())
        if isinstance(value, dict):
            return {k: self.fresh(v) for k, v in value.items()}
        if isinstance(value, list):
            return [self.fresh(v) for v in value]
        return value


def _ingest(http: httpx.Client, messages: list[dict[str, Any]]) -> list[dict[str, Any]]:
    r = http.post("/v1/messages", json={"messages": messages})
    assert r.status_code == 201, r.text
    return r.json()["messages"]


@pytest.fixture(
    scope="module", params=["sqlite", pytest.param("postgresql", marks=pytest.mark.postgres)]
)
def served(request, tiny_model_dir, tmp_path_factory):
    """The app under uvicorn on a free loopback port (in a thread of this process, so
    the test can count rows through the app's own engine), with tickets, a review, a
    campaign and a key to point the routes' ids at."""
    import psycopg

    from serving.app import create_app
    from serving.settings import Settings

    tmp = tmp_path_factory.mktemp("corpus")
    schema = None
    if request.param == "sqlite":
        url = f"sqlite:///{tmp / 'corpus.db'}"
    else:
        request.getfixturevalue("pg_ready")
        schema = f"t_{uuid.uuid4().hex[:12]}"
        with psycopg.connect(PG_URL, autocommit=True) as conn:
            conn.execute(f'CREATE SCHEMA "{schema}"')
        url = f"{PG_URL}?options=-csearch_path%3D{schema}"
    settings = Settings(
        model_dir=tiny_model_dir,
        database_url=url,
        bootstrap_admin_key=ADMIN_KEY,
        registry=tmp / "registry",
        jobs_dir=tmp / "jobs",
    )
    app = create_app(settings)
    app.state.jobs = RecordingJobs()
    try:
        with (
            uvicorn_thread(app, access_log=False) as port,
            httpx.Client(
                base_url=f"http://127.0.0.1:{port}", headers={"X-API-Key": ADMIN_KEY}, timeout=60
            ) as http,
        ):
            out = Served(url=f"http://127.0.0.1:{port}", port=port, app=app, http=http)
            tickets = []
            for batch in range(2):
                tickets += _ingest(
                    http,
                    [
                        {"channel": "chat", "text": f"where is my order {batch}-{i}"}
                        for i in range(256)
                    ],
                )
            (review,) = _ingest(
                http, [{"channel": "review", "text": "It broke after a day", "rating": 1}]
            )
            r = http.post("/v1/campaigns", json=EXAMPLES[("POST", "/v1/campaigns")][0])
            assert r.status_code == 201, r.text
            campaign_id = r.json()["id"]
            r = http.post("/v1/keys", json={"name": "corpus-revoked", "role": "agent"})
            key_id = r.json()["id"]
            out.ids = {
                "ticket_id": itertools.cycle([t["ticket_id"] for t in tickets]),
                "review_id": itertools.repeat(review["message_id"]),
                "campaign_id": itertools.repeat(campaign_id),
                "key_id": itertools.repeat(key_id),
            }
            yield out
    finally:
        if schema is not None:
            with psycopg.connect(PG_URL, autocommit=True) as conn:
                conn.execute(f'DROP SCHEMA "{schema}" CASCADE')


# -- the routes -------------------------------------------------------------------------------


@dataclass
class Route:
    method: str
    path: str
    path_params: list[tuple[str, bool]]  # (name, is an integer)
    query_params: list[str]
    content_type: str | None  # None: the route reads no body
    bodies: list[Any]  # JSON bodies (or e-mail slot dicts)

    @property
    def email(self) -> bool:
        return self.content_type == "message/rfc822"

    def __str__(self) -> str:
        return f"{self.method} {self.path}"


def _resolve(spec: dict[str, Any], schema: dict[str, Any]) -> dict[str, Any]:
    while "$ref" in schema:
        schema = spec["components"]["schemas"][schema["$ref"].rsplit("/", 1)[1]]
    return schema


def _alternatives(spec, schema) -> list[dict[str, Any]]:
    schema = _resolve(spec, schema)
    options = schema.get("anyOf") or schema.get("oneOf")
    if not options:
        return [schema]
    return [
        alt
        for option in options
        for alt in _alternatives(spec, option)
        if alt.get("type") != "null"
    ]


def sample(spec: dict[str, Any], schema: dict[str, Any]) -> Any:
    """A plausible value for ``schema`` (every property set): the body of a route
    without an example."""
    schema = _alternatives(spec, schema)[0]
    kind = schema.get("type")
    if "enum" in schema:
        return schema["enum"][0]
    if kind == "object" or "properties" in schema:
        out = {name: sample(spec, sub) for name, sub in schema.get("properties", {}).items()}
        extra = schema.get("additionalProperties")
        if not out and isinstance(extra, dict):
            out["key"] = sample(spec, extra)
        return out
    if kind == "array":
        return [sample(spec, schema.get("items", {}))]
    if kind == "string":
        if schema.get("format") == "date-time":
            return NOW
        return "x" * max(1, schema.get("minLength", 1))
    if kind in ("integer", "number"):
        low = schema.get("minimum", schema.get("exclusiveMinimum", 0))
        high = schema.get("maximum", schema.get("exclusiveMaximum", low + 2))
        value = (low + high) / 2
        return int(value) if kind == "integer" else value
    if kind == "boolean":
        return False
    return "x"


def schema_fields(spec, schema, prefix: str = "") -> set[str]:
    """Every property path of a body schema (``messages[].text``), through every
    alternative."""
    out: set[str] = set()
    for alt in _alternatives(spec, schema):
        for name, sub in alt.get("properties", {}).items():
            out.add(prefix + name)
            out |= schema_fields(spec, sub, prefix + name + ".")
        if alt.get("type") == "array":
            out |= schema_fields(spec, alt.get("items", {}), prefix[:-1] + "[].")
    return out


def body_fields(body: Any, prefix: str = "") -> set[str]:
    out: set[str] = set()
    if isinstance(body, dict):
        for name, value in body.items():
            out.add(prefix + name)
            out |= body_fields(value, prefix + name + ".")
    elif isinstance(body, list):
        for value in body:
            out |= body_fields(value, prefix[:-1] + "[].")
    return out


def write_routes(app) -> list[Route]:
    """The app's write routes, from its OpenAPI document (built from its routes: every
    route but those left out of the schema)."""
    spec = app.openapi()
    routes = []
    for path, ops in spec["paths"].items():
        for method, op in ops.items():
            method = method.upper()
            if method not in WRITE_METHODS:
                continue
            content = op.get("requestBody", {}).get("content", {})
            content_type = next(iter(content), None)
            if content_type == "message/rfc822":
                bodies: list[Any] = [EMAIL]
            elif (method, path) in EXAMPLES:
                bodies = EXAMPLES[(method, path)]
            elif content_type:
                bodies = [sample(spec, content[content_type]["schema"])]
            else:
                bodies = [{}]
            params = op.get("parameters", [])
            routes.append(
                Route(
                    method=method,
                    path=path,
                    path_params=[
                        (p["name"], _resolve(spec, p["schema"]).get("type") == "integer")
                        for p in params
                        if p["in"] == "path"
                    ],
                    query_params=[p["name"] for p in params if p["in"] == "query"],
                    content_type=content_type,
                    bodies=bodies,
                )
            )
    return routes


# -- sending and judging --------------------------------------------------------------------


def _quote(value: str) -> str:
    return quote(value.encode("utf-8", "surrogatepass"), safe="")


def _email(slots: dict[str, str]) -> bytes:
    def enc(value: str) -> bytes:
        return value.encode("utf-8", "surrogatepass")

    return (
        b"From: "
        + enc(slots["From"])
        + b"\r\nSubject: "
        + enc(slots["Subject"])
        + b"\r\nMessage-ID: "
        + enc(slots["Message-ID"])
        + b"\r\nDate: Fri, 20 Nov 2026 09:30:00 +0000"
        + b"\r\nContent-Type: text/plain; charset=utf-8\r\n\r\n"
        + enc(slots["text"])
        + b"\r\n"
    )


def url_of(served: Served, route: Route, override: dict[str, str] | None = None) -> str:
    override = override or {}
    path = route.path
    for name, is_int in route.path_params:
        if name in override:
            value = _quote(override[name])
        elif is_int:
            value = str(next(served.ids.get(name, itertools.repeat(1))))
        else:
            value = _quote(served.fresh(STRING_PARAMS.get(name, "x")))
        path = path.replace("{" + name + "}", value)
    query = [
        f"{name}={_quote(override[name] if name in override else STRING_PARAMS.get(name, 'x'))}"
        for name in route.query_params
    ]
    return path + ("?" + "&".join(query) if query else "")


def encode(route: Route, body: Any) -> bytes:
    if route.email:
        return _email(body)
    return json.dumps(body).encode()  # non-ASCII escaped: lone surrogates as \udXXX


@dataclass
class Judge:
    served: Served
    problems: list[str] = field(default_factory=list)
    answers: dict[int, int] = field(default_factory=dict)

    def send(
        self, route: Route, case: str, content: bytes, url: str | None = None, check=None
    ) -> httpx.Response | None:
        s = self.served
        before = s.counts()
        headers = {"Content-Type": route.content_type or "application/json"}
        try:
            r = s.http.request(
                route.method, url or url_of(s, route), content=content, headers=headers
            )
        except httpx.HTTPError as exc:
            self.problems.append(f"{route} [{case}]: no answer ({type(exc).__name__}: {exc})")
            return None
        self.judge(route, case, r.status_code, r.headers, r.content, before)
        if check is not None and 200 <= r.status_code < 300:
            problem = check(r)
            if problem:
                self.problems.append(f"{route} [{case}]: {problem}")
        return r

    def judge(self, route, case, status, headers, content, before) -> None:
        where = f"{route} [{case}]"
        self.answers[status] = self.answers.get(status, 0) + 1
        if not (200 <= status < 300 or 400 <= status < 500):
            self.problems.append(f"{where}: {status} {content[:300]!r}")
            return
        if status >= 400:
            try:
                detail = json.loads(content)["detail"]
            except (ValueError, KeyError, TypeError):
                self.problems.append(f"{where}: {status} without a JSON detail: {content[:200]!r}")
                return
            if not detail:
                self.problems.append(f"{where}: {status} with an empty detail")
            after = self.served.counts()
            changed = {t: (before[t], after[t]) for t in before if before[t] != after[t]}
            if changed:
                self.problems.append(f"{where}: refused ({status}) but rows changed: {changed}")
        else:
            if content and "json" in headers.get("content-type", ""):
                try:
                    json.loads(content)
                except ValueError:
                    self.problems.append(f"{where}: {status} with a body that is not JSON")
            broken = self.served.broken()
            if broken:
                self.problems.append(f"{where}: accepted ({status}) but not whole: {broken}")

    def verdict(self) -> None:
        assert not self.problems, f"{len(self.problems)} problems:\n" + "\n".join(
            self.problems[:40]
        )


def _leaves(value: Any, path: tuple = ()) -> Iterator[tuple[tuple, Any]]:
    """(path, value) of every scalar in a JSON value; a free-form object's first key
    counts as a leaf too (path ending in ``("key", name)``)."""
    if isinstance(value, dict):
        for k, v in value.items():
            yield from _leaves(v, (*path, k))
    elif isinstance(value, list):
        for i, v in enumerate(value[:1]):
            yield from _leaves(v, (*path, i))
    else:
        yield path, value


def _put(body: Any, path: tuple, value: Any) -> Any:
    out = copy.deepcopy(body)
    target = out
    for step in path[:-1]:
        target = target[step]
    target[path[-1]] = value
    return out


def _routes(served: Served) -> list[Route]:
    routes = write_routes(served.app)
    assert len(routes) >= 20, [str(r) for r in routes]
    return routes


def _is_date(value: Any) -> bool:
    return isinstance(value, str) and re.fullmatch(r"\d{4}-\d\d-\d\dT[\d:]+Z", value) is not None


# -- the tests ------------------------------------------------------------------------------


def test_every_write_route_has_a_body_that_names_each_field(served):
    """The examples name every field of each route's schema, so every field meets the
    corpus: a field added to a route fails here until its example names it. A route
    without an example gets a body built from its schema, naming every field too."""
    spec = served.app.openapi()
    missing = {}
    for route in _routes(served):
        if route.email or not route.content_type:
            continue
        op = spec["paths"][route.path][route.method.lower()]
        schema = op["requestBody"]["content"][route.content_type]["schema"]
        wanted = schema_fields(spec, schema)
        named = set().union(*(body_fields(b) for b in route.bodies))
        if wanted - named:
            missing[str(route)] = sorted(wanted - named)
        built = sample(spec, schema)
        json.dumps(built)
        if alternatives := _alternatives(spec, schema):
            assert body_fields(built) >= schema_fields(spec, alternatives[0]), str(route)
    assert not missing, f"add these fields to EXAMPLES: {missing}"


def test_the_examples_are_accepted(served):
    """The corpus starts from bodies the routes accept (else it only tests refusals)."""
    judge = Judge(served)
    for route in _routes(served):
        for i, body in enumerate(route.bodies):
            r = judge.send(route, f"example {i}", encode(route, served.fresh(body)))
            if r is not None and route.method != "DELETE" and route.content_type:
                assert r.status_code < 300 or r.status_code in (404, 409), (str(route), r.text)
    judge.verdict()


def _inside_first_string(base: bytes, junk: bytes) -> bytes:
    """``junk`` inside the first string value of a JSON body (or e-mail header)."""
    for opening in (b'": "', b": "):
        if opening in base:
            return base.replace(opening, opening + junk, 1)
    return base + junk


def test_bodies_of_every_shape(served):
    judge = Judge(served)
    for route in _routes(served):
        base = encode(route, served.fresh(route.bodies[0]))
        raw = {
            "empty": b"",
            "whitespace": b" \r\n\t ",
            "null": b"null",
            "list": b"[]",
            "number": b"1e999",
            "string": b'"x"',
            "NaN": b"NaN",
            "half": base[: len(base) // 2],
            "invalid utf-8": _inside_first_string(base, b"\xff\xfe\xc0\xaf"),
            "overlong utf-8": b'{"text": "\xc0\xaf\xed\xa0\x80"}',
            "raw NUL": _inside_first_string(base, b"\x00"),
            "utf-16": base.decode("utf-8").encode("utf-16"),
            "deep list 10000": _deep(10_000).encode(),
            "deep object 10000": _deep(10_000, "object").encode(),
            "deep list 900": _deep(900).encode(),
            "duplicate keys": b'{"a": 1, "a": 2}' if not route.email else base + base,
        }
        if not route.email and isinstance(route.bodies[0], dict) and route.bodies[0]:
            first = next(iter(route.bodies[0]))
            for depth in (900, 10_000):
                raw[f"field {depth} deep"] = (
                    json.dumps({**served.fresh(route.bodies[0]), first: None})
                    .replace("null", _deep(depth), 1)
                    .encode()
                )
        for case, content in raw.items():
            judge.send(route, case, content)
    judge.verdict()


def _send_chunked(
    port: int, route: Route, url: str, chunks: Iterator[bytes], key: str = ADMIN_KEY
) -> tuple[int, dict[str, str], bytes] | str:
    """Send a chunked body (no Content-Length) from a second thread while this one
    reads the answer (the server may answer before the body ends); returns (status,
    headers, body) or why no answer came."""
    sock = socket.create_connection(("127.0.0.1", port), timeout=30)
    head = (
        f"{route.method} {url} HTTP/1.1\r\nHost: corpus\r\nX-API-Key: {key}\r\n"
        f"Content-Type: {route.content_type or 'application/json'}\r\n"
        "Transfer-Encoding: chunked\r\nConnection: close\r\n\r\n"
    )

    def pump() -> None:
        try:
            sock.sendall(head.encode())
            for chunk in chunks:
                sock.sendall(f"{len(chunk):x}\r\n".encode() + chunk + b"\r\n")
            sock.sendall(b"0\r\n\r\n")
        except OSError:
            pass  # the server answered and closed before the end: allowed

    sender = threading.Thread(target=pump, daemon=True)
    sender.start()
    data = b""
    try:
        while True:
            got = sock.recv(1 << 16)
            if not got:
                break
            data += got
    except OSError as exc:
        if not data:
            return f"no answer ({exc})"
    finally:
        sender.join(30)
        sock.close()
    head_bytes, sep, body = data.partition(b"\r\n\r\n")
    if not sep:
        return f"no answer (got {data[:100]!r})"
    lines = head_bytes.decode("latin-1").split("\r\n")
    fields = {k.strip().lower(): v.strip() for k, _, v in (ln.partition(":") for ln in lines[1:])}
    if fields.get("transfer-encoding") == "chunked":
        decoded, rest = b"", body
        while rest:
            size, _, rest = rest.partition(b"\r\n")
            n = int(size, 16)
            if n == 0:
                break
            decoded, rest = decoded + rest[:n], rest[n + 2 :]
        body = decoded
    return int(lines[0].split()[1]), fields, body


def test_large_chunked_bodies(served):
    """1 MB (whitespace before a valid body, and a 1 MB string in its first string
    field) and 10 MB, sent chunked: answered, never dropped; over the body limit
    refused with a 413 as it is read."""
    judge = Judge(served)
    limit = served.app.state.settings.max_body_bytes
    for route in _routes(served):
        body = served.fresh(route.bodies[0])
        base = encode(route, body)
        big_field = base
        strings = [p for p, v in _leaves(body) if isinstance(v, str)]
        if strings:
            big_field = encode(route, _put(body, strings[0], "x" * 2**20))
        cases = {
            "1 MB of whitespace first": (b" " * 2**20 if not route.email else b"") + base,
            "1 MB string": big_field,
            "10 MB": b" " * (10 * 2**20) + base,
        }
        if route.email:
            cases["1 MB of whitespace first"] = base.replace(
                b"\r\n\r\n", b"\r\n\r\n" + b" " * 2**20, 1
            )
        for case, content in cases.items():
            before = served.counts()
            step = 1 << 16
            answer = _send_chunked(
                served.port,
                route,
                url_of(served, route),
                (content[i : i + step] for i in range(0, len(content), step)),
            )
            if isinstance(answer, str):
                judge.problems.append(f"{route} [{case}]: {answer}")
                continue
            status, headers, content_back = answer
            judge.judge(route, case, status, headers, content_back, before)
            if len(content) > limit and route.content_type and status != 413:
                judge.problems.append(f"{route} [{case}]: {status}, not 413, past the limit")
    judge.verdict()


def _message_reads_back(served: Served, sent: dict[str, Any]):
    """An accepted message is stored as sent: identifiers verbatim, free text cleaned
    the way the model reads it."""

    def check(r: httpx.Response) -> str | None:
        stored = r.json()["messages"][0]
        if not stored["created"]:
            return None
        ticket = served.http.get(f"/v1/tickets/{stored['ticket_id']}").json()
        # a customer's answer joins the ticket it answers (same customer and order)
        msg = next(
            m for m in [ticket["message"], *ticket["answers"]] if m["id"] == stored["message_id"]
        )
        for name in ("external_id", "customer_id", "order_id", "product_id", "marketplace"):
            if name in sent and msg[name] != sent[name]:
                return f"{name} stored as {msg[name]!r}, sent {sent[name]!r}"
        if msg["text"] != clean_text(sent["text"]):
            return f"text stored as {msg['text'][:80]!r}"
        subject = clean_text(sent.get("subject") or "").strip() or None
        if msg["subject"] != subject:
            return f"subject stored as {msg['subject']!r}, sent {sent.get('subject')!r}"
        return None

    return check


def _objects(value: Any, path: tuple = ()) -> Iterator[tuple]:
    """Paths of the objects nested in a JSON body (not the body itself)."""
    if isinstance(value, dict):
        if path and value:
            yield path
        for k, v in value.items():
            yield from _objects(v, (*path, k))
    elif isinstance(value, list) and value:
        yield from _objects(value[0], (*path, 0))


def _rename_first_key(body: Any, path: tuple, key: str) -> Any:
    out = copy.deepcopy(body)
    target = out
    for step in path:
        target = target[step]
    first = next(iter(target))
    target[key] = target.pop(first)
    return out


def test_strings_in_every_field(served):
    """Every corpus string in every string field of every body (values, and the first
    key of each nested object), every string path parameter and query parameter."""
    judge = Judge(served)
    for route in _routes(served):
        params = [n for n, is_int in route.path_params if not is_int] + route.query_params
        for name, value in STRINGS.items():
            for param in params:
                if not value.strip("/"):
                    continue  # an empty path segment names another route
                judge.send(
                    route,
                    f"{param}={name}",
                    encode(route, served.fresh(route.bodies[0])),
                    # longer URLs are the HTTP server's to refuse (h11: 16 KiB of head)
                    url=url_of(served, route, {param: value[:1000]}),
                )
            for i, base in enumerate(route.bodies):
                for path, old in _leaves(base):
                    if not isinstance(old, str):
                        continue
                    body = _put(served.fresh(base), path, value)
                    check = None
                    if route.path == "/v1/messages" and i == 0:
                        check = _message_reads_back(served, body)
                    where = ".".join(map(str, path))
                    judge.send(route, f"{where}={name}", encode(route, body), check=check)
                if route.email:
                    continue
                for path in _objects(base):
                    body = _rename_first_key(served.fresh(base), path, value)
                    where = ".".join(map(str, path))
                    judge.send(route, f"{where} key={name}", encode(route, body))
    judge.verdict()


def test_extreme_numbers_in_every_field(served):
    judge = Judge(served)
    for route in _routes(served):
        if route.email:
            continue
        for i, base in enumerate(route.bodies):
            for path, old in _leaves(base):
                names = NUMBERS if not isinstance(old, str) else {"2^63": 2**63, "NaN": math.nan}
                for name, value in names.items():
                    body = _put(served.fresh(base), path, value)
                    where = ".".join(map(str, path))
                    judge.send(route, f"body {i}: {where}={name}", encode(route, body))
    judge.verdict()


def test_extreme_dates_in_every_date_field(served):
    judge = Judge(served)
    dated = 0
    for route in _routes(served):
        if route.email:
            continue
        for i, base in enumerate(route.bodies):
            for path, old in _leaves(base):
                if not _is_date(old):
                    continue
                dated += 1
                for name, value in DATES.items():
                    body = _put(served.fresh(base), path, value)
                    where = ".".join(map(str, path))
                    judge.send(route, f"body {i}: {where}={name}", encode(route, body))
    assert dated >= 4  # received_at (single and batch), delivered_at, consent's at
    judge.verdict()


def _parts(n: int) -> bytes:
    one = b"--b\r\nContent-Type: text/plain\r\n\r\nx\r\n"
    return (
        b"From: a@example.com\r\nSubject: s\r\nMessage-ID: <bomb-@UNIQ@@x>\r\n"
        b"Content-Type: multipart/mixed; boundary=b\r\n\r\n" + one * n + b"--b--\r\n"
    )


def _nested(depth: int) -> bytes:
    inner = b"Content-Type: text/plain\r\n\r\nwhere is my order\r\n"
    for i in range(depth):
        inner = (
            b'Content-Type: multipart/mixed; boundary="b%d"\r\n\r\n--b%d\r\n' % (i, i)
            + inner
            + b"\r\n--b%d--\r\n" % i
        )
    return b"From: a@example.com\r\nMessage-ID: <nest-@UNIQ@@x>\r\n" + inner


def _single(content_type: bytes, body: bytes, encoding: bytes | None = None) -> bytes:
    cte = b"Content-Transfer-Encoding: " + encoding + b"\r\n" if encoding else b""
    return (
        b"From: a@example.com\r\nSubject: s\r\nMessage-ID: <one-@UNIQ@@x>\r\n"
        b"Content-Type: " + content_type + b"\r\n" + cte + b"\r\n" + body
    )


def test_mime_bombs_and_html_on_the_email_route(served):
    (route,) = [r for r in _routes(served) if r.email]
    script = b"<html><body><p>Where is my parcel?</p><script>alert('x')</script></body></html>"
    bombs = {
        "30,000 parts": _parts(30_000),
        "nested 12": _nested(12),
        "nested 500": _nested(500),
        "decoded 20 MB of zeros": _single(
            b"application/octet-stream",
            base64.encodebytes(b"\0" * (3 * 2**20)),
            b"base64",
        ),
        "10,000 headers": b"X-H: 1\r\n" * 10_000 + _single(b"text/plain", b"hi"),
        "1 MB header line": b"X-Long: " + b"a" * 2**20 + b"\r\n" + _single(b"text/plain", b"hi"),
        "encoded-word bomb": b"Subject: "
        + b"=?utf-8?b?"
        + b"QUFB" * 100_000
        + b"?=\r\n"
        + _single(b"text/plain", b"hi"),
        "unknown charset": _single(b"text/plain; charset=x-klingon", b"qapla\xff"),
        "broken base64": _single(b"text/plain", b"!!!not base64===\r\n", b"base64"),
        "broken quoted-printable": _single(b"text/plain", b"=ZZ=\r\n=", b"quoted-printable"),
        "no boundary": _single(b"multipart/mixed", b"--x\r\nhi\r\n"),
        "HTML with scripts": _single(b"text/html; charset=utf-8", script),
        "only headers": b"From: a@example.com\r\n\r\n",
        "no headers": b"\r\n\r\njust a body",
        "binary": bytes(range(256)) * 64,
    }
    judge = Judge(served)
    for case, raw in bombs.items():
        started = time.perf_counter()
        r = judge.send(route, case, served.fresh(raw))
        took = time.perf_counter() - started
        assert took < 10, (case, took)
        if case == "HTML with scripts" and r is not None and r.status_code == 201:
            ticket_id = r.json()["messages"][0]["ticket_id"]
            stored = served.http.get(f"/v1/tickets/{ticket_id}").json()["message"]["text"]
            assert "Where is my parcel?" in stored and "<script" not in stored, stored
    judge.verdict()
