"""The OpenAPI schema says what the service does. Schemathesis generates requests for
every operation of the app's own schema, ones the schema allows and ones it refuses,
sends them in process (no network) with the key of each role, and checks every
answer: never a server error, and a status code, a content type and a body that the
schema documents for the operation.

Bounded so the file runs in about three minutes on two cores: ``CARELENS_FUZZ_EXAMPLES``
cases of each kind (allowed, refused) per operation and role (default 40). Against
PostgreSQL under ``CI=true``, SQLite otherwise. Each role's figures (operations,
cases, operations with a failure) are printed with the run."""

from __future__ import annotations

import os

import pytest
import schemathesis
from hypothesis import HealthCheck, Phase, given, settings
from schemathesis import GenerationMode
from schemathesis.checks import (
    content_type_conformance,
    not_a_server_error,
    response_schema_conformance,
    status_code_conformance,
)
from schemathesis.errors import FailureGroup
from sqlalchemy.engine import make_url

from serving import db
from serving.auth import create_key

pytestmark = pytest.mark.slow

ROLES = ("service", "agent", "admin")
EXAMPLES = int(os.environ.get("CARELENS_FUZZ_EXAMPLES", "40"))
CHECKS = [
    not_a_server_error,
    status_code_conformance,
    content_type_conformance,
    response_schema_conformance,
]
# raw e-mails (POST /v1/messages/email) go as the bytes generated for the binary body
schemathesis.serializer.alias("message/rfc822", "application/octet-stream")
SETTINGS = settings(
    max_examples=EXAMPLES,
    deadline=None,
    derandomize=True,  # the same cases every run
    database=None,
    phases=[Phase.explicit, Phase.generate],  # report the first failing case, unshrunk
    suppress_health_check=list(HealthCheck),
)


@pytest.fixture
def db_url(request, tmp_path):
    """PostgreSQL under CI=true (where it must answer), SQLite otherwise."""
    if os.environ.get("CI") == "true":
        return request.getfixturevalue("pg_url")
    return f"sqlite:///{tmp_path / 'fuzz.db'}"


def _seed(app) -> None:
    """A little data for generated ids to find: tickets (one claimed), a review."""
    from fastapi.testclient import TestClient

    with db.transaction(app.state.services.sessions) as s:
        _, service = create_key(s, "seed-service", "service")
        _, agent = create_key(s, "seed-agent", "agent")
    with TestClient(app) as http:
        for i, channel in enumerate(("email", "chat", "review", "social")):
            r = http.post(
                "/v1/messages",
                headers={"X-API-Key": service},
                json={
                    "channel": channel,
                    "text": f"order {i} arrived broken, I want a refund",
                    "customer_id": "C1",
                    "product_id": "B0PRODUCT",
                    "rating": 1 if channel == "review" else None,
                },
            )
            assert r.status_code == 201, r.text
        queue = http.get("/v1/tickets/1", headers={"X-API-Key": agent}).json()["queue"]
        assert http.post(f"/v1/queues/{queue}/claim", headers={"X-API-Key": agent}).is_success


def _fuzz(operation, key: str, figures: dict) -> str | None:
    """Run the operation's cases; the first failure's report, or None."""
    cases = operation.as_strategy(GenerationMode.POSITIVE) | operation.as_strategy(
        GenerationMode.NEGATIVE
    )

    @SETTINGS
    @given(case=cases)
    def run(case) -> None:
        figures["cases"] += 1
        case.call_and_validate(headers={"X-API-Key": key}, checks=CHECKS)

    try:
        run()
    except (FailureGroup, Exception) as exc:  # a check failed (or several): report, go on
        return f"{operation.label}: {exc}"
    return None


@pytest.mark.parametrize("role", ROLES)
def test_every_answer_is_documented(make_app, db_url, role, capsys):
    app = make_app(db_url)
    db.upgrade(db_url)
    with db.transaction(app.state.services.sessions) as s:
        _, key = create_key(s, f"fuzz-{role}", role)
    _seed(app)
    schema = schemathesis.openapi.from_asgi("/openapi.json", app)  # runs the app's lifespan
    figures = {"operations": 0, "cases": 0}
    failures = []
    try:
        for result in schema.get_all_operations():
            operation = result.ok()
            figures["operations"] += 1
            failure = _fuzz(operation, key, figures)
            if failure:
                failures.append(failure)
    finally:
        schemathesis.python.asgi.shutdown_lifespans()
    line = (
        f"schemathesis, {role} key, {make_url(db.normalise_url(db_url)).get_backend_name()}: "
        f"{figures['operations']} operations, {figures['cases']} cases, "
        f"{len(failures)} operations failed"
    )
    with capsys.disabled():
        print(f"\n{line}")
    assert not failures, line + "\n\n" + "\n\n".join(failures)
