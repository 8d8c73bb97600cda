from __future__ import annotations

from carelens_client import CarelensError
from fastapi.testclient import TestClient

from tests.serving.factories import ADMIN_KEY


def test_classify_and_readiness(desk):
    assert desk.http.get("/healthz").json() == {"status": "ok"}
    ready = desk.http.get("/readyz").json()
    assert ready["ready"] is True and ready["trained"] is False
    assert ready["database"] in ("sqlite", "postgresql")
    out = desk.service.classify(["box arrived broken", "退款"])
    preds = out["predictions"]
    assert len(preds) == 2 and set(preds[0]["tasks"]) == {"issue_type", "sentiment", "urgency"}


def test_classify_bad_input(make_app, tmp_path):
    app = make_app(f"sqlite:///{tmp_path / 'db.sqlite'}", max_batch=2, max_text_chars=50)
    with TestClient(app) as tc:
        h = {"X-API-Key": ADMIN_KEY}
        r = tc.post("/v1/classify", json={"texts": ["ok", "  "]}, headers=h)
        assert r.status_code == 422 and "texts[1] is empty" in r.json()["detail"]
        r = tc.post("/v1/classify", json={"texts": ["a", "b", "c"]}, headers=h)
        assert r.status_code == 413 and "limit is 2" in r.json()["detail"]
        r = tc.post("/v1/classify", json={"texts": ["x" * 51]}, headers=h)
        assert r.status_code == 413 and "texts[0]: 51 characters" in r.json()["detail"]
        assert tc.post("/v1/classify", json={"texts": []}, headers=h).status_code == 422


def test_model_that_fails_to_load_refuses_readiness(make_app, tmp_path):
    app = make_app(f"sqlite:///{tmp_path / 'db.sqlite'}")
    app.state.services.settings.model_dir = tmp_path / "missing"
    with TestClient(app) as tc:
        assert tc.get("/healthz").status_code == 200
        r = tc.get("/readyz")
        assert r.status_code == 503 and "model directory not found" in r.json()["detail"]["reason"]
        h = {"X-API-Key": ADMIN_KEY}
        r = tc.post("/v1/classify", json={"texts": ["hi"]}, headers=h)
        assert r.status_code == 503
        r = tc.post("/v1/messages", json={"channel": "chat", "text": "hi"}, headers=h)
        assert r.status_code == 503
        # nothing was stored with made-up labels
        from serving.store import Message

        with app.state.services.sessions() as s:
            assert s.query(Message).count() == 0


def test_client_raises_with_detail(desk):
    try:
        desk.agent.classify(["hi"])
    except CarelensError as exc:
        assert exc.status_code == 403 and "role service" in exc.detail
    else:
        raise AssertionError("an agent key must not classify")


def test_classify_reads_ratings_and_applies_the_rules(make_app, tmp_path):
    from model.predictor import Predictor

    app = make_app(f"sqlite:///{tmp_path / 'db.sqlite'}")
    with TestClient(app) as tc:
        h = {"X-API-Key": ADMIN_KEY}
        texts = ["it is ok i guess", "The charger caught fire!"]
        out = tc.post("/v1/classify", json={"texts": texts, "ratings": [1, None]}, headers=h)
        assert out.status_code == 200
        preds = out.json()["predictions"]
        # the same labels as the Predictor gives through any other door
        local = Predictor.load(app.state.services.settings.model_dir).predict(
            texts, ratings=[1, None]
        )
        for p, q in zip(preds, local, strict=True):
            assert {k: v["labels"] for k, v in p["tasks"].items()} == q.labels
        assert preds[1]["tasks"]["urgency"]["labels"] == ["critical"]
        assert preds[1]["rule_hits"][0]["phrase"] == "caught fire"
        r = tc.post("/v1/classify", json={"texts": texts, "ratings": [1]}, headers=h)
        assert r.status_code == 422 and "one per text" in r.json()["detail"]
        r = tc.post("/v1/classify", json={"texts": texts, "ratings": [9, None]}, headers=h)
        assert r.status_code == 422
        assert [e["loc"] for e in r.json()["detail"]] == [["body", "ratings", 0]]


def test_metrics_in_prometheus_format(desk, clock):
    desk.service.post_message(channel="chat", text="smoke everywhere")
    clock.advance(hours=30)
    text = desk.http.get("/metrics").text
    assert 'carelens_request_seconds_count{method="POST",route="/v1/messages",status="201"}' in text
    assert "carelens_predictions_total{" in text
    assert 'carelens_queue_depth{queue="escalations",state="open"} 1.0' in text
    assert 'carelens_sla_breached_tickets{queue="escalations"} 1.0' in text
    assert "carelens_model_info{version=" in text
