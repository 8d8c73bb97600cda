from __future__ import annotations

from fastapi.testclient import TestClient

from serving.app import create_app
from serving.settings import Settings


def _client(model_dir, **kw):
    return TestClient(create_app(Settings(model_dir=model_dir, **kw)))


def test_classify_and_readiness(tiny_model_dir):
    with _client(tiny_model_dir) as client:
        assert client.get("/healthz").json() == {"status": "ok"}
        ready = client.get("/readyz").json()
        assert ready["ready"] is True and ready["trained"] is False
        r = client.post("/v1/classify", json={"texts": ["box arrived broken", "退款"]})
        assert r.status_code == 200, r.text
        preds = r.json()["predictions"]
        assert len(preds) == 2 and set(preds[0]["tasks"]) == {"issue_type", "sentiment", "urgency"}


def test_bad_input(tiny_model_dir):
    with _client(tiny_model_dir, max_batch=2, max_text_chars=50) as client:
        r = client.post("/v1/classify", json={"texts": ["ok", "  "]})
        assert r.status_code == 422 and "texts[1] is empty" in r.json()["detail"]
        r = client.post("/v1/classify", json={"texts": ["a", "b", "c"]})
        assert r.status_code == 413 and "limit is 2" in r.json()["detail"]
        r = client.post("/v1/classify", json={"texts": ["x" * 51]})
        assert r.status_code == 413 and "texts[0]: 51 characters" in r.json()["detail"]
        assert client.post("/v1/classify", json={"texts": []}).status_code == 422


def test_model_that_fails_to_load_refuses_readiness(tmp_path):
    with _client(tmp_path / "missing") as client:
        assert client.get("/healthz").status_code == 200
        r = client.get("/readyz")
        assert r.status_code == 503 and "model directory not found" in r.json()["detail"]["reason"]
        assert client.post("/v1/classify", json={"texts": ["hi"]}).status_code == 503
