"""Input that the database cannot take, and database faults, through HTTP on SQLite and
PostgreSQL: every answer is a 2xx or a 4xx that names the field (a 503 with Retry-After
for a database fault), never a 500, and nothing is stored half."""

from __future__ import annotations

import json
import re
from datetime import timedelta

import pytest
from fastapi.testclient import TestClient
from sqlalchemy import event

from serving.fields import MAX_ROW_ID
from serving.store import ConsentEvent, Message, Order, Ticket
from tests.serving.factories import ADMIN_KEY, Desk

ADMIN = {"X-API-Key": ADMIN_KEY}


def _post_json(desk: Desk, path: str, body, method: str = "POST"):
    """Send ``body`` as JSON with non-ASCII escaped, so lone surrogates reach the
    server as ``\\udXXX`` escapes (as a client in another language would send them)."""
    return desk.http.request(
        method,
        path,
        content=json.dumps(body).encode(),
        headers={**ADMIN, "Content-Type": "application/json"},
    )


def _email(
    *,
    sender: bytes = b"buyer@example.com",
    subject: bytes = b"Where is my parcel",
    message_id: bytes = b"<m-1@example.com>",
    date: bytes = b"Fri, 20 Nov 2026 09:30:00 +0000",
) -> bytes:
    return (
        b"From: "
        + sender
        + b"\nSubject: "
        + subject
        + b"\nMessage-ID: "
        + message_id
        + b"\nDate: "
        + date
        + b"\nContent-Type: text/plain; charset=utf-8\n\nMy parcel has not arrived yet.\n"
    )


def _post_email(desk: Desk, raw: bytes, **params):
    return desk.http.post(
        "/v1/messages/email",
        content=raw,
        params=params,
        headers={**ADMIN, "Content-Type": "message/rfc822"},
    )


def _locs(r) -> list[str]:
    detail = r.json()["detail"]
    if isinstance(detail, str):
        return [detail]
    return [".".join(str(p) for p in e["loc"]) + ": " + e["msg"] for e in detail]


# -- ids -------------------------------------------------------------------------------


def test_ids_out_of_the_column_range_are_refused_on_every_route(desk):
    """Every ``{..._id}`` route: 0, negative and ids beyond the INTEGER column (and
    beyond SQLite's 64 bits) are a 422 about the path; the largest id is a 404."""
    bodies = {
        "/reply": {"text": "hello"},
        "/labels": {"labels": {"sentiment": "neutral"}},
    }
    routes = [
        (path, method.upper())
        for path, ops in desk.app.openapi()["paths"].items()
        for method in ops
        if re.search(r"\{(ticket|review|key|campaign|run)_id\}", path)
    ]
    assert len(routes) >= 14, routes
    for path, method in routes:
        body = next((b for suffix, b in bodies.items() if path.endswith(suffix)), None)
        for bad in (0, -1, 2**31, 2**63, 2**64, 10**30):
            url = re.sub(r"\{\w+_id\}", str(bad), path)
            r = desk.http.request(method, url, json=body, headers=ADMIN)
            assert r.status_code == 422, (method, url, r.status_code, r.text)
            assert any(loc.startswith("path.") for loc in _locs(r)), (method, url, r.text)
        url = re.sub(r"\{\w+_id\}", str(MAX_ROW_ID), path)
        r = desk.http.request(method, url, json=body, headers=ADMIN)
        assert r.status_code in (404, 422), (method, url, r.status_code, r.text)


# -- NUL and lone surrogates -------------------------------------------------------------

IDENTIFIERS = ["external_id", "customer_id", "order_id", "product_id", "marketplace"]


@pytest.mark.parametrize("field", IDENTIFIERS)
@pytest.mark.parametrize("bad", ["a\x00b", "a\ud800b", "\udfff"])
def test_identifiers_with_nul_or_lone_surrogates_are_refused(desk, field, bad):
    r = _post_json(desk, "/v1/messages", {"channel": "email", "text": "hi", field: bad})
    assert r.status_code == 422, r.text
    (problem,) = [p for p in _locs(r) if field in p]
    assert ("NUL" in problem) if "\x00" in bad else ("surrogate" in problem), problem
    r = _post_json(
        desk, "/v1/messages", {"messages": [{"channel": "chat", "text": "ok"}, {field: bad}]}
    )
    assert r.status_code == 422
    assert desk.count(Message) == 0


def test_free_text_keeps_the_message_and_cleans_nul_and_lone_surrogates(desk):
    r = _post_json(
        desk,
        "/v1/messages",
        {"channel": "email", "text": "refund\x00 please \ud800!", "subject": "sub\x00ject \udc80"},
    )
    assert r.status_code == 201, r.text
    with desk.sessions() as s:
        m = s.query(Message).one()
        assert (m.text, m.subject) == ("refund  please \ufffd!", "sub ject \ufffd")
    r = _post_json(desk, "/v1/classify", {"texts": ["broken \ud800 item", "nul\x00here"]})
    assert r.status_code == 200, r.text
    assert len(r.json()["predictions"]) == 2
    ticket_id = desk.service.post_message(channel="chat", text="where is it")["ticket_id"]
    r = _post_json(desk, f"/v1/tickets/{ticket_id}/reply", {"text": "on its way\x00 \ud800"})
    assert r.status_code == 200, r.text
    r = _post_json(desk, f"/v1/tickets/{ticket_id}/resolve", {"note": "done\x00"})
    assert r.status_code == 200, r.text
    r = _post_json(
        desk, "/v1/customers/c1/consent", {"source": "checkout\x00 box", "email": "a@b.c"}
    )
    assert r.status_code == 201 and r.json()["events"][0]["source"] == "checkout  box"


def test_identifiers_in_paths_queries_and_other_bodies_are_checked(desk):
    for path, needle in [
        ("/v1/customers/a%00b", "customer_id"),
        ("/v1/products/a%00b/insights", "product_id"),
        ("/v1/reviews?product_id=a%00b", "product_id"),
    ]:
        r = desk.http.get(path, headers=ADMIN)
        assert r.status_code == 422 and needle in " ".join(_locs(r)), (path, r.text)
    for path, body, needle in [
        ("/v1/orders", {"orders": [{"order_id": "o\x00", "customer_id": "c"}]}, "order_id"),
        ("/v1/orders", {"orders": [{"order_id": "o", "customer_id": "c\ud800"}]}, "customer_id"),
        ("/v1/customers/a%00b/consent", {"source": "x"}, "customer_id"),
        ("/v1/customers/c/consent", {"source": "x", "email": "a\x00@b.c"}, "email"),
        ("/v1/keys", {"name": "bob\x00", "role": "agent"}, "name"),
        (
            "/v1/campaigns",
            {"name": "n\x00", "kind": "marketing", "channel": "own_email", "body": "hi"},
            "name",
        ),
    ]:
        r = _post_json(desk, path, body)
        assert r.status_code == 422 and needle in " ".join(_locs(r)), (path, r.text)
    for method in ("PUT", "DELETE"):
        body = {"issue_type": "other", "lang": "en", "title": "t", "body": "b"}
        r = _post_json(desk, "/v1/templates/a%00b", body, method=method)
        assert r.status_code == 422 and "template_name" in " ".join(_locs(r)), r.text
    assert desk.count(Order) == 0 and desk.count(ConsentEvent) == 0


def test_email_headers_with_nul_are_refused_or_cleaned(desk):
    r = _post_email(desk, _email(sender=b"a\x00b@example.com"))
    assert r.status_code == 422 and "From" in r.json()["detail"] and "NUL" in r.json()["detail"]
    r = _post_email(desk, _email(message_id=b"<m\x00@example.com>"))
    assert r.status_code == 422 and "Message-ID" in r.json()["detail"]
    r = _post_email(desk, _email(), customer_id="c\x00")
    assert r.status_code == 422 and "customer_id" in " ".join(_locs(r))
    assert desk.count(Message) == 0
    # a sender that cannot be stored does not matter when the customer id is given
    r = _post_email(
        desk, _email(sender=b"a\x00b@example.com", subject=b"late\x00 parcel"), customer_id="C7"
    )
    assert r.status_code == 201, r.text
    with desk.sessions() as s:
        m = s.query(Message).one()
        assert (m.customer_id, m.subject) == ("C7", "late  parcel")


def test_campaign_audiences_are_bounded(desk):
    """Days, counts and identifiers in an audience: what date arithmetic and the store
    can take (before, a run with a huge window overflowed)."""
    cases = [
        ("review_request", {"max_days_after_delivery": 10**12}, "max_days_after_delivery"),
        ("review_request", {"marketplace": "amazon\x00.de"}, "marketplace"),
        ("review_request", {"product_ids": ["ok", "p" * 101]}, "product_ids[1]"),
        ("marketing", {"min_messages": 10**20}, "min_messages"),
        ("marketing", {"no_negative_days": 10**12}, "no_negative_days"),
    ]
    for kind, audience, needle in cases:
        body = {"name": "n", "kind": kind, "channel": "own_email", "audience": audience}
        r = _post_json(desk, "/v1/campaigns", {**body, "subject": "s", "body": "b"})
        assert r.status_code == 422 and needle in r.json()["detail"], (audience, r.text)


# -- times --------------------------------------------------------------------------------


def test_times_outside_the_window_are_refused(desk, clock):
    for when in ["9999-12-31T23:59:59Z", "0001-01-01T00:00:00+01:00", "1969-12-31T23:59:59Z"]:
        r = _post_json(desk, "/v1/messages", {"channel": "chat", "text": "hi", "received_at": when})
        assert r.status_code == 422, (when, r.text)
        assert any("received_at" in p and "1970" in p for p in _locs(r)), r.text
    future = (clock.now + timedelta(days=2)).isoformat()
    r = _post_json(
        desk,
        "/v1/messages",
        {
            "messages": [
                {"channel": "chat", "text": "hi"},
                {"channel": "chat", "text": "hi", "received_at": future},
            ]
        },
    )
    assert r.status_code == 422 and "messages[1].received_at" in r.json()["detail"], r.text
    assert desk.count(Message) == 0
    soon = (clock.now + timedelta(hours=2)).isoformat()
    r = _post_json(desk, "/v1/messages", {"channel": "chat", "text": "hi", "received_at": soon})
    assert r.status_code == 201, r.text
    for path in [
        "/v1/stats/kpis?until=0001-01-01T00:00:00Z",
        "/v1/stats/agents?since=9999-12-31T00:00:00Z",
        "/v1/reviews?since=0001-01-01T00:00:00Z",
        "/v1/products/insights?until=0001-01-02T00:00:00Z",
    ]:
        r = desk.http.get(path, headers=ADMIN)
        assert r.status_code == 422, (path, r.text)
    r = _post_json(
        desk,
        "/v1/orders",
        {
            "orders": [
                {"order_id": "o1", "customer_id": "c", "delivered_at": "9999-12-31T00:00:00Z"}
            ]
        },
    )
    assert r.status_code == 422 and desk.count(Order) == 0


def test_email_date_out_of_range_counts_as_received_now(desk, clock):
    for i, date in enumerate(
        [
            b"Fri, 31 Dec 9999 23:00:00 +0000",
            b"Wed, 31 Dec 1969 10:00:00 +0000",
            b"Tue, 1 Dec 2099 10:00:00 +0000",
        ]
    ):
        r = _post_email(desk, _email(date=date, message_id=f"<d{i}@example.com>".encode()))
        assert r.status_code == 201, (date, r.text)
        ticket = desk.agent.ticket(r.json()["messages"][0]["ticket_id"])
        assert ticket["message"]["received_at"].startswith(clock.now.isoformat()[:19]), date


# -- lengths ------------------------------------------------------------------------------


def test_lengths_are_checked_against_the_columns(desk):
    limit = {c: getattr(Message, c).type.length for c in ["external_id", "customer_id"]}
    r = _post_email(desk, _email(message_id=b"<" + b"m" * limit["external_id"] + b">"))
    assert r.status_code == 422, r.text
    assert "Message-ID" in r.json()["detail"] and f"limit is {limit['external_id']}" in r.text
    r = _post_email(desk, _email(sender=b"x" * limit["customer_id"] + b"@example.com"))
    assert r.status_code == 422, r.text
    assert "From" in r.json()["detail"] and f"limit is {limit['customer_id']}" in r.text
    for name in ["customer_id", "product_id", "marketplace"]:
        n = getattr(Message, name).type.length
        r = _post_email(desk, _email(), **{name: "x" * (n + 1)})
        assert r.status_code == 422, (name, r.text)
        assert f"at most {n} characters" in " ".join(_locs(r)), r.text
        r = _post_email(
            desk, _email(message_id=f"<{name}@example.com>".encode()), **{name: "x" * n}
        )
        assert r.status_code == 201, (name, r.text)
    n = Message.product_id.type.length
    for path in [f"/v1/reviews?product_id={'p' * (n + 1)}", f"/v1/customers/{'c' * 201}"]:
        r = desk.http.get(path, headers=ADMIN)
        assert r.status_code == 422 and "at most" in r.text, (path, r.text)
    assert desk.count(Message) == 3


# -- database faults ------------------------------------------------------------------------


class Faults:
    """Makes chosen statements of the app's engine fail as a lost connection does:
    ``arm(match, times)`` fails the next ``times`` statements whose SQL contains
    ``match`` (``"COMMIT"``: the next commits). On PostgreSQL the connection's server
    process is really terminated (``pg_terminate_backend`` from a second connection);
    on SQLite the driver's OperationalError is raised."""

    def __init__(self, engine, admin_url: str | None = None):
        self.engine, self.admin_url = engine, admin_url
        self.match, self.left, self.fired = "", 0, 0
        event.listen(engine, "before_cursor_execute", self._before)
        event.listen(engine, "commit", self._commit)

    def arm(self, match: str, times: int = 1) -> None:
        self.match, self.left = match, times

    def _before(self, conn, cursor, statement, parameters, context, executemany):
        if self.left > 0 and self.match in statement:
            self._fail(conn, wrapped=False)

    def _commit(self, conn):
        if self.left > 0 and self.match == "COMMIT":
            self._fail(conn, wrapped=True)

    def _fail(self, conn, wrapped: bool) -> None:
        self.left -= 1
        self.fired += 1
        if self.admin_url is None:
            import sqlite3

            from sqlalchemy.exc import OperationalError

            error = sqlite3.OperationalError("disk I/O error")
            # a commit event's exception is not wrapped by SQLAlchemy: wrap it as the
            # failed COMMIT itself would be
            raise OperationalError("COMMIT", None, error) if wrapped else error
        import psycopg

        pid = conn.connection.dbapi_connection.info.backend_pid
        with psycopg.connect(self.admin_url, autocommit=True) as admin:
            admin.execute("SELECT pg_terminate_backend(%s)", (pid,))

    def close(self) -> None:
        event.remove(self.engine, "before_cursor_execute", self._before)
        event.remove(self.engine, "commit", self._commit)


@pytest.fixture
def faulty(desk, db_url):
    from tests.postgres import PG_URL

    faults = Faults(desk.app.state.services.engine, None if db_url.startswith("sqlite") else PG_URL)
    yield faults
    faults.close()


def _assert_503(r, caplog, secret: str) -> None:
    assert r.status_code == 503, r.text
    assert r.headers["Retry-After"].isdigit()
    assert r.headers["content-type"] == "application/json"
    body = r.json()["detail"]
    assert "retry" in body
    for leak in (secret, "SELECT", "INSERT", "UPDATE", "terminating", "disk I/O"):
        assert leak not in body
    assert secret not in caplog.text


def test_a_lost_connection_during_ingest_is_retried_once(desk, faulty, caplog):
    caplog.set_level("INFO")
    secret = "my card number is 4111"
    faulty.arm("INSERT INTO messages")
    r = desk.http.post("/v1/messages", json={"channel": "chat", "text": secret}, headers=ADMIN)
    assert r.status_code == 201 and faulty.fired == 1, r.text
    faulty.arm("INSERT INTO messages", times=2)  # the retry fails too: 503, nothing stored
    r = desk.http.post("/v1/messages", json={"channel": "chat", "text": secret}, headers=ADMIN)
    _assert_503(r, caplog, secret)
    # a lost COMMIT without an external id may or may not have stored: not retried
    faulty.arm("COMMIT")
    r = desk.http.post("/v1/messages", json={"channel": "chat", "text": secret}, headers=ADMIN)
    _assert_503(r, caplog, secret)
    assert desk.count(Message) == 1 and desk.count(Ticket) == 1
    # keyed by external id: a fault at any point is retried, and never stores twice
    for i, match in enumerate(("INSERT INTO tickets", "messages.external_id IN", "COMMIT")):
        body = {"channel": "chat", "text": secret, "external_id": f"chat-{i}"}
        faulty.fired = 0
        faulty.arm(match)
        r = desk.http.post("/v1/messages", json=body, headers=ADMIN)
        assert r.status_code in (200, 201) and faulty.fired == 1, (match, r.text)
        r = desk.http.post("/v1/messages", json=body, headers=ADMIN)
        assert r.status_code == 200 and not r.json()["messages"][0]["created"]
    assert desk.count(Message) == 4
    assert secret not in caplog.text


def test_database_faults_are_503_with_retry_after_and_the_next_request_works(desk, faulty, caplog):
    caplog.set_level("INFO")
    secret = "call me on +44 7700 900123"
    ticket_id = desk.service.post_message(channel="chat", text="where is it")["ticket_id"]
    # a read is run again
    faulty.arm("FROM tickets")
    assert desk.agent.ticket(ticket_id)["id"] == ticket_id and faulty.fired == 1
    # a write that may not be repeated is a 503; nothing changed; the next try works
    faulty.arm("UPDATE tickets")
    r = desk.http.post(f"/v1/tickets/{ticket_id}/reply", json={"text": secret}, headers=ADMIN)
    _assert_503(r, caplog, secret)
    assert desk.agent.ticket(ticket_id)["first_response_at"] is None
    r = desk.http.post(f"/v1/tickets/{ticket_id}/reply", json={"text": secret}, headers=ADMIN)
    assert r.status_code == 200 and r.json()["first_response_at"], r.text
    # the key check before any route is a read: run again
    faulty.arm("FROM api_keys")
    assert desk.agent.ticket(ticket_id)["id"] == ticket_id
    # a read that fails twice is a 503
    faulty.arm("FROM tickets", times=2)
    r = desk.http.get(f"/v1/tickets/{ticket_id}", headers=ADMIN)
    _assert_503(r, caplog, secret)
    assert desk.http.get(f"/v1/tickets/{ticket_id}", headers=ADMIN).status_code == 200


@pytest.mark.postgres
def test_postgres_connections_terminated_between_requests(make_app, pg_url):
    """Every connection of the service killed between requests (a database restart or
    failover): the pool's pre-ping replaces them, and no request fails."""
    import uuid

    import psycopg

    from tests.postgres import PG_URL

    name = f"carelens-test-{uuid.uuid4().hex[:8]}"
    app = make_app(f"{pg_url}&application_name={name}")
    with TestClient(app) as tc:
        desk = Desk(tc)
        for i in range(3):
            with psycopg.connect(PG_URL, autocommit=True) as admin:
                killed = admin.execute(
                    "SELECT count(pg_terminate_backend(pid)) FROM pg_stat_activity "
                    "WHERE application_name = %s",
                    (name,),
                ).fetchone()[0]
            assert killed >= 1
            out = desk.service.post_message(channel="chat", text=f"parcel {i} is late")
            assert desk.agent.ticket(out["ticket_id"])["id"] == out["ticket_id"]
        assert desk.count(Message) == 3
