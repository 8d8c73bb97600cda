"""Bounded work per request and no personal data in logs: the body limit while the body
is read (chunked too) and no body read without a key; raw e-mails parsed off the event
loop within part, depth and size limits; /healthz answering while requests wait for
the model; log lines and redacted exports without e-mail addresses, phone numbers,
order ids, street addresses or key material. Some tests run a real uvicorn server on a
loopback port."""

from __future__ import annotations

import asyncio
import base64
import csv
import io
import json
import logging
import socket
import threading
import time
from datetime import timedelta
from types import SimpleNamespace

import httpx
import pytest
from fastapi.testclient import TestClient

from serving.redact import RedactingFilter, install_log_redaction, pseudonym, redact
from tests.serving.factories import ADMIN_KEY, uvicorn_thread

KEY = {"X-API-Key": ADMIN_KEY}
PERSONAL = [
    "jane.doe@example.com",
    "jane.doe%40example.com",
    "+49 151 2345 6789",
    "(555) 123-4567",
    "13812345678",
    "112-1234567-7654321",
    "42 Baker Street",
    "Hauptstraße 5",
    "clk_live-secret-key-value",
]


def _clean(text: str) -> None:
    for value in PERSONAL:
        assert value not in text, (value, text)


# -- the body limit, while reading ---------------------------------------------------------


async def _drive(app, path: str, headers: list[tuple[bytes, bytes]], chunk: int = 1024):
    """Call the ASGI app with a chunked body that never ends (10 MB at most); returns
    the status, the JSON body and how many body messages the app asked for."""
    asked = 0

    async def receive():
        nonlocal asked
        asked += 1
        more = asked < 10_000
        return {"type": "http.request", "body": b"x" * chunk, "more_body": more}

    out = []

    async def send(message):
        out.append(message)

    scope = {
        "type": "http",
        "asgi": {"version": "3.0"},
        "http_version": "1.1",
        "method": "POST",
        "scheme": "http",
        "path": path,
        "raw_path": path.encode(),
        "root_path": "",
        "query_string": b"",
        "headers": [
            (b"host", b"test"),
            (b"transfer-encoding", b"chunked"),
            (b"content-type", b"application/json"),
            *headers,
        ],
        "client": ("127.0.0.1", 1),
        "server": ("127.0.0.1", 80),
        "state": {},
    }
    await app(scope, receive, send)
    start = next(m for m in out if m["type"] == "http.response.start")
    body = b"".join(m.get("body", b"") for m in out if m["type"] == "http.response.body")
    return start["status"], dict(start["headers"]), json.loads(body), asked


def test_chunked_body_over_the_limit_is_refused_as_it_is_read(make_app, tmp_path):
    app = make_app(f"sqlite:///{tmp_path / 'db.sqlite'}", max_body_bytes=4096)
    with TestClient(app) as tc:
        key = [(b"x-api-key", ADMIN_KEY.encode())]
        for path in ("/v1/messages", "/v1/messages/email", "/v1/classify"):
            status, headers, body, asked = tc.portal.call(_drive, app, path, key)
            assert status == 413, (path, body)
            assert "the limit is 4096 (CARELENS_MAX_BODY_BYTES)" in body["detail"]
            assert asked == 5, (path, asked)  # 5 KiB read, not 10 MB
            assert headers[b"connection"] == b"close"
        # no key: refused before a byte of the body is read, with the route's answer
        for path in ("/v1/messages", "/v1/messages/email", "/v1/keys", "/v1/labels/export"):
            status, headers, body, asked = tc.portal.call(_drive, app, path, [])
            assert status == 401 and asked == 0, (path, status, asked)
            assert body["detail"].startswith("no API key: send `Authorization: Bearer KEY`")
            assert headers[b"www-authenticate"] == b"Bearer"
        auth = [(b"authorization", b"Basic dXNlcjpwYXNz")]  # not a bearer key
        assert tc.portal.call(_drive, app, "/v1/messages", auth)[::3] == (401, 0)
        # public routes and unknown paths are not asked for a key
        assert tc.portal.call(_drive, app, "/healthz", [])[0] == 405
        assert tc.portal.call(_drive, app, "/nowhere", [])[0] == 404
        # the answers without a body are unchanged
        r = tc.post("/v1/messages", json={"channel": "chat", "text": "hi"})
        assert r.status_code == 401 and r.json()["detail"].startswith("no API key")
        r = tc.post("/v1/messages", json={"channel": "chat", "text": "hi"}, headers=KEY)
        assert r.status_code == 201
        r = tc.post(
            "/v1/messages", json={"channel": "chat", "text": "hi"}, headers={"X-API-Key": "no"}
        )
        assert r.status_code == 401 and r.json()["detail"] == "unknown or revoked API key"


# -- a real server ---------------------------------------------------------------------------


class SlowPredictor:
    """The tiny model, ``delay`` seconds slower per model call."""

    def __init__(self, predictor):
        self._predictor = predictor
        self.delay = 0.0

    def __getattr__(self, name):
        return getattr(self._predictor, name)

    def predict(self, *args, **kwargs):
        time.sleep(self.delay)
        return self._predictor.predict(*args, **kwargs)


@pytest.fixture
def live(tiny_model_dir, tmp_path):
    """The app under uvicorn on a free loopback port, serving a ``SlowPredictor``."""
    from model.predictor import Predictor
    from serving.app import create_app
    from serving.settings import Settings

    predictor = SlowPredictor(Predictor.load(tiny_model_dir))
    settings = Settings(
        model_dir=tiny_model_dir,
        database_url=f"sqlite:///{tmp_path / 'db.sqlite'}",
        bootstrap_admin_key=ADMIN_KEY,
        registry=tmp_path / "registry",
        jobs_dir=tmp_path / "jobs",
        max_body_bytes=64 * 1024,
    )
    with uvicorn_thread(create_app(settings, predictor=predictor)) as port:
        yield SimpleNamespace(url=f"http://127.0.0.1:{port}", port=port, predictor=predictor)


def _send_chunked(port: int, path: str, headers: dict[str, str], total: int = 64 * 2**20):
    """POST a chunked body of ``total`` bytes from a second thread while this one reads
    the answer; returns (status, JSON body, bytes sent, the sender's error)."""
    sock = socket.create_connection(("127.0.0.1", port), timeout=20)
    head = (
        f"POST {path} HTTP/1.1\r\nHost: test\r\nContent-Type: application/json\r\n"
        "Transfer-Encoding: chunked\r\n"
        + "".join(f"{k}: {v}\r\n" for k, v in headers.items())
        + "\r\n"
    )
    sock.sendall(head.encode())
    chunk = 64 * 1024
    piece = f"{chunk:x}\r\n".encode() + b"x" * chunk + b"\r\n"
    state = {"sent": 0, "error": None}

    def pump():
        try:
            while state["sent"] < total:
                sock.sendall(piece)
                state["sent"] += chunk
            sock.sendall(b"0\r\n\r\n")
        except OSError as exc:  # the server closed the connection
            state["error"] = exc

    sender = threading.Thread(target=pump, daemon=True)
    sender.start()
    data = b""
    while b"\r\n\r\n" not in data:
        got = sock.recv(65536)
        assert got, "the server closed the connection without an answer"
        data += got
    head_bytes, _, body = data.partition(b"\r\n\r\n")
    lines = head_bytes.decode("latin-1").split("\r\n")
    fields = {k.lower(): v.strip() for k, _, v in (ln.partition(":") for ln in lines[1:])}
    while len(body) < int(fields["content-length"]):
        got = sock.recv(65536)
        assert got
        body += got
    sender.join(30)
    sock.close()
    assert not sender.is_alive()
    return int(lines[0].split()[1]), json.loads(body), state["sent"], state["error"], fields


def test_real_server_stops_reading_a_chunked_body(live):
    total = 64 * 2**20
    status, body, sent, error, fields = _send_chunked(live.port, "/v1/messages", {}, total)
    assert status == 401 and body["detail"].startswith("no API key"), body
    assert sent < total and error is not None  # the server closed instead of reading on
    assert fields["connection"] == "close"
    status, body, sent, error, _ = _send_chunked(live.port, "/v1/messages", KEY, total)
    assert status == 413 and "CARELENS_MAX_BODY_BYTES" in body["detail"], body
    assert sent < total and error is not None
    assert httpx.get(f"{live.url}/healthz").status_code == 200  # the server is fine


@pytest.mark.slow
def test_healthz_answers_while_requests_wait_for_the_model(live):
    """Sixty ingests wait on a slow model and hold every thread-pool worker; liveness
    must not queue behind them."""
    live.predictor.delay = 1.5

    async def main():
        limits = httpx.Limits(max_connections=100)
        async with httpx.AsyncClient(base_url=live.url, timeout=60, limits=limits) as c:
            posts = [
                asyncio.create_task(
                    c.post(
                        "/v1/messages", json={"channel": "chat", "text": f"late {i}"}, headers=KEY
                    )
                )
                for i in range(60)
            ]
            await asyncio.sleep(0.5)
            took = []
            for _ in range(5):
                start = time.perf_counter()
                r = await c.get("/healthz")
                took.append(time.perf_counter() - start)
                assert r.status_code == 200
                await asyncio.sleep(0.05)
            waiting = sum(not p.done() for p in posts)
            answers = await asyncio.gather(*posts)
        return took, waiting, answers

    took, waiting, answers = asyncio.run(main())
    assert waiting >= 40, waiting  # the probes ran while the pool was full
    assert max(took) < 0.5, took
    assert all(r.status_code == 201 for r in answers)


def test_access_log_carries_no_personal_data(live, caplog):
    caplog.set_level(logging.INFO)
    for path in (
        "/v1/customers/jane.doe@example.com",
        "/v1/customers/jane.doe%40example.com",
        "/v1/customers/112-1234567-7654321?x=13812345678",
    ):
        # 422 for the unknown query parameter: the access log is written all the same
        assert httpx.get(live.url + path, headers=KEY).status_code in (200, 404, 422)
    access = [r for r in caplog.records if r.name == "uvicorn.access"]
    assert len(access) == 3
    text = "\n".join(r.getMessage() for r in access)
    _clean(text)
    assert "<email>" in text and "<order-id>" in text and "<phone>" in text


def test_classify_builds_its_answer_off_the_event_loop(make_app, tmp_path, monkeypatch):
    from model.predictor import Prediction

    on_loop = []
    to_dict = Prediction.to_dict

    def watched(self):
        try:
            asyncio.get_running_loop()
            on_loop.append(True)
        except RuntimeError:
            on_loop.append(False)
        return to_dict(self)

    monkeypatch.setattr(Prediction, "to_dict", watched)
    with TestClient(make_app(f"sqlite:///{tmp_path / 'db.sqlite'}")) as tc:
        r = tc.post(
            "/v1/classify",
            json={"texts": ["where is my order", "great product thanks"]},
            headers=KEY,
        )
    assert r.status_code == 200 and len(r.json()["predictions"]) == 2
    assert r.json()["model_version"] == r.json()["predictions"][0]["model_version"]
    assert on_loop == [False, False]


def test_free_text_is_cleaned_like_the_model_cleans():
    """Request bodies are validated on the event loop, so the service cleans free text
    with two regex scans instead of the model's loop over characters: the result must be
    the same, character for character (its speed is not a test's business)."""
    import random
    import unicodedata

    from model.predictor import clean_text
    from serving import fields

    everywhere = fields._control_characters(tuple(range(17)))
    assert everywhere.pattern == fields._CONTROL.pattern  # planes 0, 1 and 14 hold them all
    rng = random.Random(0)
    for _ in range(200):
        text = "".join(
            chr(
                rng.choice(
                    [
                        rng.randrange(0, 0x300),
                        rng.randrange(0x2000, 0x2070),
                        rng.randrange(0xD800, 0xE000),
                        rng.randrange(0xE0000, 0xE0080),
                        rng.randrange(0, 0x110000),
                    ]
                )
            )
            for _ in range(100)
        )
        assert fields._clean_free_text(text) == clean_text(text), text
    assert unicodedata.category("\u200b") == "Cf"
    text = "my order never arrived \x00 and \u200b the box \ud800 was broken, 我要退款\n" * 200
    assert fields._clean_free_text(text) == clean_text(text)


# -- raw e-mails: off the event loop, within limits ------------------------------------------


def _part_bomb(parts: int) -> bytes:
    one = b"--b\r\nContent-Type: text/plain\r\n\r\nx\r\n"
    return (
        b"From: a@example.com\r\nSubject: s\r\nMessage-ID: <bomb@x>\r\n"
        b"Content-Type: multipart/mixed; boundary=b\r\n\r\n" + one * parts + b"--b--\r\n"
    )


def _nested(depth: int) -> bytes:
    inner = b"Content-Type: text/plain\r\n\r\nwhere is my order\r\n"
    for i in range(depth):
        inner = (
            b'Content-Type: multipart/mixed; boundary="b%d"\r\n\r\n--b%d\r\n' % (i, i)
            + inner
            + b"\r\n--b%d--\r\n" % i
        )
    return b"From: a@example.com\r\nSubject: s\r\n" + inner


def test_email_limits_refuse_bombs_quickly_and_parse_off_the_loop(make_app, tmp_path, monkeypatch):
    from serving.routes import messages

    on_loop = []
    parse = messages.parse_email

    def watched(*args, **kwargs):
        try:
            asyncio.get_running_loop()
            on_loop.append(True)
        except RuntimeError:
            on_loop.append(False)
        return parse(*args, **kwargs)

    monkeypatch.setattr(messages, "parse_email", watched)
    app = make_app(f"sqlite:///{tmp_path / 'db.sqlite'}", email_max_decoded_bytes=2048)
    with TestClient(app) as tc:

        def post(raw: bytes):
            return tc.post(
                "/v1/messages/email",
                content=raw,
                headers={**KEY, "Content-Type": "message/rfc822"},
            )

        start = time.perf_counter()
        r = post(_part_bomb(30_000))  # the standard parser needs ~15 s for this
        assert time.perf_counter() - start < 3
        assert r.status_code == 413, r.text
        assert r.json()["detail"] == (
            "email: up to 30001 MIME parts, the limit is 100 (CARELENS_EMAIL_MAX_PARTS)"
        )
        r = post(_nested(12))
        assert r.status_code == 413
        assert r.json()["detail"] == (
            "email: MIME parts nested deeper than 10 levels, the limit is 10 "
            "(CARELENS_EMAIL_MAX_DEPTH)"
        )

        def with_attachment(size: int) -> bytes:
            return (
                b"From: a@example.com\r\nContent-Type: multipart/mixed; boundary=q\r\n\r\n"
                b"--q\r\nContent-Type: text/plain\r\n\r\nthe box was empty\r\n"
                b"--q\r\nContent-Type: application/octet-stream\r\n"
                b"Content-Transfer-Encoding: base64\r\n\r\n"
                + base64.encodebytes(b"\0" * size)
                + b"--q--\r\n"
            )

        r = post(with_attachment(3000))
        assert r.status_code == 413
        assert r.json()["detail"] == (
            "email: the parts decode to more than 2048 bytes, the limit is 2048 "
            "(CARELENS_EMAIL_MAX_DECODED_BYTES)"
        )
        # within the limits: stored as before
        assert post(_part_bomb(50)).status_code == 201
        assert post(_nested(5)).status_code == 201
        assert post(with_attachment(1000)).status_code == 201
    assert on_loop and not any(on_loop)


# -- logs ----------------------------------------------------------------------------------


def test_redact_masks_personal_data_and_keys_and_keeps_the_rest():
    text = (
        "GET /v1/customers/jane.doe@example.com and jane.doe%40example.com; call "
        "+49 151 2345 6789, (555) 123-4567 or 13812345678; order 112-1234567-7654321; "
        "ship to 42 Baker Street, Hauptstraße 5 and 上海市中山路88号; "
        "Authorization: Bearer clk_live-secret-key-value, hash " + "ab" * 32 + ", "
        "postgresql://postgres:hunter2@db:5432/x"
    )
    masked = redact(text)
    _clean(masked)
    assert "hunter2" not in masked and "ab" * 32 not in masked and "中山路88号" not in masked
    for placeholder in ("<email>", "<phone>", "<order-id>", "<address>", "<hash>"):
        assert placeholder in masked
    keep = (
        "2026-11-20 18:00:00 ticket 12 took 3.4 s from 192.168.100.200:8000, "
        "id 2147483648, version v0001, 413 Request Entity Too Large, +0000"
    )
    assert redact(keep) == keep
    assert redact(masked) == masked
    assert pseudonym("jane.doe@example.com", "customer") == pseudonym(
        "jane.doe@example.com", "customer"
    )
    assert pseudonym("jane.doe@example.com", "customer").startswith("customer-")


def test_log_records_are_redacted_in_message_arguments_and_tracebacks(caplog):
    from uvicorn.logging import AccessFormatter

    install_log_redaction()
    caplog.set_level(logging.INFO)
    log = logging.getLogger("serving.some.module")  # a child logger: reaches root handlers
    log.warning("customer %s wrote from %s", "jane.doe@example.com", "+49 151 2345 6789")
    try:
        raise ValueError("bad row: ('112-1234567-7654321', '42 Baker Street')")
    except ValueError:
        log.exception("store failed for %s", "13812345678")
    logging.getLogger("uvicorn.access").info(
        '%s - "%s %s HTTP/%s" %d',
        "127.0.0.1:5000",
        "GET",
        "/v1/customers/jane.doe@example.com",
        "1.1",
        200,
    )
    _clean(caplog.text)
    assert "<email>" in caplog.text and "<order-id>" in caplog.text
    access = caplog.records[-1]
    line = AccessFormatter("%(client_addr)s %(request_line)s %(status_code)s").format(access)
    assert line.startswith("127.0.0.1:5000 GET /v1/customers/<email> HTTP/1.1 200")
    record = logging.LogRecord("x", logging.INFO, __file__, 1, "key %s", ("clk_abcdefgh",), None)
    assert RedactingFilter().filter(record) and record.getMessage() == "key <api-key>"


def test_uvicorn_log_config_redacts_on_every_handler():
    import logging.config

    from serving.redact import uvicorn_log_config

    config = uvicorn_log_config()
    assert config["filters"]["redact"] == {"()": "serving.redact.RedactingFilter"}
    assert config["handlers"] and all("redact" in h["filters"] for h in config["handlers"].values())
    configurator = logging.config.DictConfigurator(config)
    assert isinstance(
        configurator.configure_filter(dict(config["filters"]["redact"])), RedactingFilter
    )


def test_database_errors_name_no_bound_parameters(tmp_path):
    from sqlalchemy import exc, text

    from serving import db

    engine = db.make_engine(f"sqlite:///{tmp_path / 'x.db'}")
    with pytest.raises(exc.OperationalError) as info, engine.connect() as conn:
        conn.execute(text("SELECT * FROM nowhere WHERE a = :a"), {"a": "jane.doe@example.com"})
    assert "jane.doe" not in str(info.value)
    engine.dispose()


# -- redacted exports ------------------------------------------------------------------------

PII_TEXT = (
    "I am jane.doe@example.com, call me on +49 151 2345 6789 about order "
    "112-1234567-7654321, I live at 42 Baker Street"
)


def test_labels_export_redacted(desk):
    t = desk.service.post_message(
        channel="email", text=PII_TEXT, customer_id="jane.doe@example.com"
    )
    desk.agent.set_labels(t["ticket_id"], {"sentiment": "negative"})
    plain = desk.agent.export_labels()
    assert "jane.doe@example.com" in plain and "112-1234567-7654321" in plain
    for fmt in ("jsonl", "csv"):
        body = desk.agent.export_labels(fmt, redact=True)
        _clean(body)
    row = json.loads(desk.agent.export_labels(redact=True).splitlines()[0])
    assert row["customer_id"] == pseudonym("jane.doe@example.com", "customer")
    assert "<email>" in row["text"] and "<order-id>" in row["text"]
    assert row["sentiment"] == ["negative"]


def test_campaign_run_export_redacted(seller, planned, clock):  # noqa: F811
    desk = seller()
    customer = "A1B2C3D4E5"
    desk.service.record_consent(customer, source="shop sign-up", email="jane.doe@example.com")
    for i in range(3):
        text = planned.plan(f"lovely kettle #{i}", "positive", praise=0.9)
        desk.service.post_message(
            channel="review",
            text=text,
            customer_id=customer,
            rating=5,
            received_at=clock.now - timedelta(days=20 - i),
        )
    campaign = desk.admin.create_campaign(
        "colours",
        "marketing",
        "own_email",
        subject="News for {customer_id}",
        body="Hi {customer_id} ({email}), our kettle now comes in green.",
    )
    run = desk.admin.run_campaign(campaign["id"])
    assert run["included"] == 1
    plain = desk.admin.export_campaign_run(campaign["id"], run["id"])
    assert "jane.doe@example.com" in plain and customer in plain
    exported = json.loads(desk.admin.export_campaign_run(campaign["id"], run["id"], redact=True))
    _clean(json.dumps(exported, ensure_ascii=False))
    (message,) = exported["messages"]
    alias = pseudonym(customer, "customer")
    assert message["customer_id"] == alias and message["email"] == "<email>"
    assert message["subject"] == f"News for {alias}"
    assert message["body"] == (
        f"Hi {alias} (<email>), our kettle now comes in green.\n\n"
        "To stop receiving these e-mails: <unsubscribe-link>"
    )
    assert message["unsubscribe_url"] == "<unsubscribe-link>"
    rows = list(
        csv.DictReader(
            io.StringIO(desk.admin.export_campaign_run(campaign["id"], run["id"], "csv", True))
        )
    )
    assert [(r["customer_id"], r["email"], r["unsubscribe_url"]) for r in rows] == [
        (alias, "<email>", "<unsubscribe-link>")
    ]


def test_redacted_campaign_message_masks_order_ids_not_words():
    from serving.campaigns import redact_message

    message = {
        "channel": "marketplace_messaging",
        "customer_id": "fan",
        "email": None,
        "order_id": "112-1234567-7654321",
        "subject": None,
        "body": "Dear fan, a fantastic order 112-1234567-7654321: call (555) 123-4567.",
    }
    out = redact_message(message)
    alias = pseudonym("fan", "customer")
    assert out["order_id"] == "<order-id>" and out["customer_id"] == alias
    assert out["body"] == f"Dear {alias}, a fantastic order <order-id>: call <phone>."
    assert message["customer_id"] == "fan"  # the original is left as it was
