"""The OpenAPI schema and the service agree: every error answer has the documented
shape and status, exports are documented with their media types, and what the schema
refuses the service refuses (numbers for times, blank texts, unknown body keys and
query parameters), with the error naming what to fix."""

from __future__ import annotations

import pytest

from serving.errors import Error
from tests.serving.factories import ADMIN_KEY

H = {"X-API-Key": ADMIN_KEY}


def _operations(spec: dict):
    for path, ops in spec["paths"].items():
        for method, op in ops.items():
            yield method.upper(), path, op


def test_every_operation_documents_its_error_answers_with_one_shape(desk):
    spec = desk.app.openapi()
    assert "HTTPValidationError" not in spec["components"]["schemas"]
    for method, path, op in _operations(spec):
        responses = op["responses"]
        expected = {"422"}
        if path.startswith("/v1/"):
            expected |= {"401", "403", "503"}
        if "{" in path:
            expected.add("404")
        if "requestBody" in op:
            expected.add("413")
        assert expected <= set(responses), (method, path, sorted(responses))
        for status, response in responses.items():
            if int(status) >= 400 and not (path == "/readyz" and status == "503"):
                schema = response["content"]["application/json"]["schema"]
                assert schema == {"$ref": "#/components/schemas/Error"}, (method, path, status)
    conflicts = {
        (m, p) for m, p, op in _operations(spec) if "409" in op["responses"] and p.startswith("/v1")
    }
    assert {
        ("POST", "/v1/keys"),
        ("POST", "/v1/tickets/{ticket_id}/reply"),
        ("POST", "/v1/tickets/{ticket_id}/resolve"),
        ("POST", "/v1/templates"),
        ("POST", "/v1/campaigns/{campaign_id}/runs"),
        ("POST", "/v1/models/retrain"),
        ("GET", "/v1/models/{version}"),
    } <= conflicts


def test_error_answers_fit_the_documented_shape(desk):
    spec = desk.app.openapi()["paths"]
    calls = [
        ("post", "/v1/classify", "/v1/classify", {"texts": ["a", "b"], "ratings": [1]}, H),
        ("post", "/v1/classify", "/v1/classify", {"texts": "not a list"}, H),
        ("get", "/v1/tickets/999", "/v1/tickets/{ticket_id}", None, H),
        ("get", "/v1/queues", "/v1/queues", None, {}),
        ("post", "/v1/keys", "/v1/keys", {"name": "alice", "role": "agent"}, H),
    ]
    answers = []
    for method, url, path, body, headers in calls:
        r = desk.http.request(method, url, json=body, headers=headers)
        documented = spec[path][method]["responses"][str(r.status_code)]
        ref = documented["content"]["application/json"]["schema"]["$ref"]
        assert ref == "#/components/schemas/Error", (url, r.status_code, ref)
        Error.model_validate(r.json())  # a sentence or a list of field errors
        answers.append(r)
    assert [r.status_code for r in answers] == [422, 422, 404, 401, 409]
    assert isinstance(answers[0].json()["detail"], str)
    assert isinstance(answers[1].json()["detail"], list)


def test_exports_are_documented_with_their_media_types(desk):
    spec = desk.app.openapi()["paths"]
    labels = spec["/v1/labels/export"]["get"]["responses"]["200"]["content"]
    assert set(labels) == {"application/x-ndjson", "text/csv"}
    runs = spec["/v1/campaigns/{campaign_id}/runs/{run_id}/export"]["get"]["responses"]["200"]
    assert set(runs["content"]) == {"application/json", "text/csv"}
    for fmt, media in (("jsonl", "application/x-ndjson"), ("csv", "text/csv")):
        r = desk.http.get("/v1/labels/export", params={"format": fmt}, headers=H)
        assert r.status_code == 200 and r.headers["content-type"].startswith(media)


@pytest.mark.parametrize("value", [1700000000, 1.7e9, "1700000000", "-5"])
def test_numbers_are_not_times(desk, value):
    r = desk.http.post(
        "/v1/messages",
        json={"channel": "chat", "text": "where is my order", "received_at": value},
        headers=H,
    )
    assert r.status_code == 422
    (error,) = r.json()["detail"]
    assert error["loc"] == ["body", "received_at"] and "ISO 8601" in error["msg"]
    r = desk.http.get("/v1/reviews", params={"since": value}, headers=H)
    assert r.status_code == 422 and r.json()["detail"][0]["loc"] == ["query", "since"]
    order = {"order_id": "o-1", "customer_id": "c-1", "delivered_at": value}
    assert desk.http.post("/v1/orders", json={"orders": [order]}, headers=H).status_code == 422
    ok = desk.http.get("/v1/reviews", params={"since": "2026-11-01T00:00:00Z"}, headers=H)
    assert ok.status_code == 200


def test_what_the_service_refuses_the_schema_refuses(desk):
    schemas = desk.app.openapi()["components"]["schemas"]
    texts = schemas["ClassifyRequest"]["properties"]["texts"]["items"]
    assert texts["pattern"] == r"\S"
    assert schemas["MessageIn"]["properties"]["text"]["pattern"] == r"\S"
    ratings = schemas["ClassifyRequest"]["properties"]["ratings"]["anyOf"][0]["items"]["anyOf"][0]
    assert (ratings["minimum"], ratings["maximum"]) == (1, 5)
    assert schemas["LabelsIn"]["properties"]["labels"]["minProperties"] == 1
    assert schemas["KeyIn"]["properties"]["name"]["pattern"] == r"\S"
    r = desk.http.post("/v1/tickets/1/labels", json={"labels": {}}, headers=H)
    assert r.status_code == 422 and "at least one task" in r.json()["detail"]
    for texts in ([""], [" \x00\t"]):
        r = desk.http.post("/v1/classify", json={"texts": texts}, headers=H)
        assert r.status_code == 422 and "texts[0] is empty" in r.json()["detail"]
    r = desk.http.post("/v1/classify", json={"texts": ["ok"], "ratings": [6]}, headers=H)
    assert r.status_code == 422 and r.json()["detail"][0]["loc"] == ["body", "ratings", 0]


def test_a_message_error_names_only_what_is_wrong_with_it(desk):
    r = desk.http.post("/v1/messages", json={"channel": "chat"}, headers=H)
    assert r.status_code == 422
    assert [(e["loc"], e["msg"]) for e in r.json()["detail"]] == [
        (["body", "text"], "Field required")
    ]
    r = desk.http.post(
        "/v1/messages", json={"messages": [{"channel": "fax", "text": "hi"}]}, headers=H
    )
    assert [e["loc"] for e in r.json()["detail"]] == [["body", "messages", 0, "channel"]]


def test_unknown_body_keys_are_refused_by_name(desk):
    schemas = desk.app.openapi()["components"]["schemas"]
    for name in ("MessageIn", "MessageBatch", "ClassifyRequest", "ReplyIn", "KeyIn", "CampaignIn"):
        assert schemas[name]["additionalProperties"] is False, name
    r = desk.http.post(
        "/v1/keys", json={"name": "dave", "role": "agent", "rol": "admin"}, headers=H
    )
    assert r.status_code == 422
    assert [(e["loc"], e["type"]) for e in r.json()["detail"]] == [
        (["body", "rol"], "extra_forbidden")
    ]
    assert "dave" not in {k["name"] for k in desk.admin.list_keys()}  # nothing stored
    r = desk.http.post(
        "/v1/messages", json={"channel": "chat", "text": "hi", "customer": "C1"}, headers=H
    )
    assert r.status_code == 422 and r.json()["detail"][0]["loc"] == ["body", "customer"]


def test_unknown_query_parameters_are_refused_by_name(desk):
    r = desk.http.get("/v1/reviews", params={"limit": 5, "stras": 1}, headers=H)
    assert r.status_code == 422
    (error,) = r.json()["detail"]
    assert error["loc"] == ["query", "stras"] and "stars" in error["msg"]
    # parameters of a shared dependency count as declared; others are refused anywhere
    ok = desk.http.get("/v1/products/insights", params={"window_days": 7}, headers=H)
    assert ok.status_code == 200
    assert desk.http.get("/v1/queues", params={"q": "x"}, headers=H).status_code == 422
    assert desk.http.get("/healthz", params={"verbose": 1}).status_code == 422
    assert desk.http.get("/v1/queues", headers=H).status_code == 200
