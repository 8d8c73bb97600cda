"""The learning loop end to end on the tiny model: ingest, label through the API,
active learning, retrain as a background job, the gate (promotion and refusal), hot
reload with requests in flight, a version that fails to load, rollback."""

from __future__ import annotations

import threading
import time

import pytest
from carelens_client import CarelensError
from fastapi.testclient import TestClient
from sqlalchemy import select

from model.registry import Registry
from serving.store import Prediction
from tests.serving.factories import ADMIN_KEY, Desk
from tests.training.tickets import ticket_texts

# large steps: a tiny random model must learn the pattern in a few epochs
FAST = dict(
    epochs=4,
    learning_rate=1e-3,
    head_learning_rate=1e-2,
    ngram_learning_rate=5e-2,
    tolerance=1.0,
    min_labelled=20,
    min_holdout=10,
    min_judged=10,
)


def _wait_for(cond, timeout: float = 30.0) -> None:
    end = time.monotonic() + timeout
    while not cond():
        if time.monotonic() > end:
            raise AssertionError("timed out")
        time.sleep(0.05)


def _finish(desk: Desk, job: dict) -> dict:
    desk.app.state.jobs.wait(job["id"], timeout=300)
    return desk.admin.job(job["id"])


def test_labeling_next_prefers_doubtful_diverse_unlabelled(desk, clock):
    rows = [
        {"channel": "review", "text": t, "product_id": f"P{i % 3}", "rating": 1 + i % 5}
        for i, (t, *_rest) in enumerate(ticket_texts(12))
    ]
    rows += [
        {"channel": "chat", "text": "快递太慢了，我要退款"},
        {"channel": "chat", "text": "质量差"},
    ]
    stored = desk.service.post_messages(rows)
    picks = desk.agent.labeling_next(n=6)
    assert len(picks) == 6 and len({p["ticket_id"] for p in picks}) == 6
    assert all(
        p["score"] == pytest.approx(p["uncertainty"] + p["disagreement"], abs=1e-3) for p in picks
    )
    # spread: not all from one product, and the Chinese messages get a turn
    assert len({p["product_id"] for p in picks}) >= 3
    assert "zh" in {p["lang"] for p in picks}
    everything = desk.agent.labeling_next(n=200)
    assert len(everything) == len(stored)
    desk.agent.set_labels(picks[0]["ticket_id"], {"sentiment": "negative"})
    after = desk.agent.labeling_next(n=200)
    assert picks[0]["ticket_id"] not in {p["ticket_id"] for p in after}
    assert len(after) == len(stored) - 1
    assert _err_status(desk.agent.labeling_next, n=0) == 422


def _err_status(fn, *args, **kwargs) -> int:
    with pytest.raises(CarelensError) as info:
        fn(*args, **kwargs)
    return info.value.status_code


@pytest.mark.slow
def test_learning_loop_end_to_end(make_app, tmp_path, clock):
    db = f"sqlite:///{tmp_path / 'loop.db'}"
    app = make_app(db, registry_poll_seconds=0.2)
    reg = Registry(tmp_path / "registry")
    with TestClient(app) as tc:
        desk = Desk(tc)
        models = desk.admin.models()
        assert models["active"] is None and models["serving"] == "model"  # the tiny dir
        assert _err_status(desk.admin.retrain) == 409  # nothing labelled yet
        # an unknown setting is refused, naming it, not silently ignored
        r = tc.post("/v1/models/retrain", json={"epocs": 2}, headers={"X-API-Key": ADMIN_KEY})
        assert r.status_code == 422 and "epocs" in r.text
        # the bounds are RetrainConfig's, as `carelens retrain --config` reads them
        r = tc.post("/v1/models/retrain", json={"epochs": 0}, headers={"X-API-Key": ADMIN_KEY})
        assert r.status_code == 422 and "epochs" in r.text

        # ingest 60 messages, agents label them (one minute apart)
        texts = ticket_texts(60, seed=1)
        stored = desk.service.post_messages(
            [
                {"channel": "email", "text": t, "customer_id": f"c{i}"}
                for i, (t, *_r) in enumerate(texts)
            ]
        )
        for (_, issue, sentiment, urgency), s in zip(texts, stored, strict=True):
            clock.advance(minutes=1)
            desk.agent.set_labels(
                s["ticket_id"],
                {"issue_type": issue, "sentiment": sentiment, "urgency": urgency},
            )
        assert desk.agent.labeling_next() == []  # everything is labelled

        # retrain as a job: the empty registry imports the served model as v0001
        job = desk.admin.retrain(**FAST)
        assert job["status"] == "running" and job["labelled_tickets"] == 60
        assert _err_status(desk.admin.retrain, **FAST) == 409  # one job at a time
        done = _finish(desk, job)
        assert done["status"] == "succeeded", done["log_tail"]
        result = done["result"]
        assert result["decision"] == "promoted", result["reason"]
        assert result["version"] == "v0002" and result["parent"] == "v0001"
        cand, act = result["metrics"]["candidate"], result["metrics"]["active"]
        assert cand["new_tickets"]["mean"] > act["new_tickets"]["mean"]
        assert {"frozen", "new_tickets"} <= set(cand)
        assert done["progress"]["stage"] == "done"
        assert "audit" in result and result["audit"]["method"].startswith("cleanlab")
        # the job's end makes the service follow the pointer: v0002 serves now
        _wait_for(lambda: desk.admin.models()["serving"] == "v0002")
        assert tc.get("/readyz").json()["model_version"] == "v0002"
        assert desk.service.classify(["refund please"])["model_version"] == "v0002"
        listed = {v["version"]: v for v in desk.admin.models()["versions"]}
        assert listed["v0002"]["active"] and listed["v0002"]["decision"] == "promoted"
        assert listed["v0002"]["new_tickets_mean"] == cand["new_tickets"]["mean"]
        assert listed["v0002"]["frozen_mean"] == cand["frozen"]["mean"]
        assert listed["v0001"]["new_tickets_mean"] is None  # imported, never scored
        lead = TestClient(app)  # the console shows each version's figures
        lead.post("/console/login", data={"key": ADMIN_KEY})
        shown = f"{cand['new_tickets']['mean']:.3f}"
        assert shown in lead.get("/console/admin").text
        record = desk.admin.model("v0002")
        assert record["gate"]["candidate"] and record["gate"]["active"]
        assert record["data_summary"]["tickets"]["rows"] == 60

        # a gate it cannot pass: kept as v0003 with the reason, not served
        done = _finish(desk, desk.admin.retrain(**{**FAST, "min_gain": 1.0}))
        assert done["status"] == "succeeded", done["log_tail"]
        assert done["result"]["decision"] == "rejected"
        assert "not significantly better on the newest labelled tickets" in done["result"]["reason"]
        assert reg.active() == "v0002" and desk.admin.models()["serving"] == "v0002"
        assert desk.admin.model("v0003")["status"] == "rejected"
        assert [j["id"] for j in desk.admin.jobs()][0] == done["id"]

        # hot reload with requests in flight: none fails
        errors: list[str] = []
        seen: set[str] = set()
        stop = threading.Event()

        def traffic(kind: str) -> None:
            i = 0
            while not stop.is_set():
                i += 1
                try:
                    if kind == "classify":
                        seen.add(desk.service.classify(["the box arrived broken"])["model_version"])
                    else:
                        out = desk.service.post_message(channel="chat", text=f"refund please {i}")
                        seen.add(out["model_version"])
                except Exception as exc:
                    errors.append(repr(exc))

        threads = [
            threading.Thread(target=traffic, args=(k,)) for k in ("classify", "store", "classify")
        ]
        for t in threads:
            t.start()
        try:
            time.sleep(0.3)
            assert desk.admin.promote_model("v0003")["serving"] == "v0003"  # API: load, then switch
            time.sleep(0.3)
            reg.promote("v0001", actor="cli")  # the CLI's way: the poll picks it up
            _wait_for(lambda: desk.admin.models()["serving"] == "v0001")
            time.sleep(0.3)
            assert desk.admin.rollback_model()["serving"] == "v0003"
            time.sleep(0.3)
        finally:
            stop.set()
            for t in threads:
                t.join()
        assert errors == []
        assert {"v0002", "v0003", "v0001"} <= seen
        with desk.sessions() as s:
            versions = set(s.scalars(select(Prediction.model_version)))
        assert {"model", "v0001", "v0003"} <= versions  # each prediction keeps its model

        # a version that fails to load: refused through the API, reported when the
        # pointer is moved by hand, and the old model keeps serving
        (reg.path_of("v0002") / "heads.safetensors").write_bytes(b"not safetensors")
        with pytest.raises(CarelensError) as info:
            desk.admin.promote_model("v0002")
        assert info.value.status_code == 409 and "still serving v0003" in info.value.detail
        assert reg.active() == "v0003"
        reg.promote("v0002", actor="cli")
        _wait_for(lambda: desk.admin.models()["error"] is not None)
        assert "v0002 failed to load" in desk.admin.models()["error"]
        ready = tc.get("/readyz").json()
        assert ready["model_version"] == "v0003" and "v0002" in ready["model_reload_error"]
        assert desk.service.classify(["hello"])["model_version"] == "v0003"

        # roll back to a loadable version: served, the error clears
        assert desk.admin.rollback_model()["serving"] == "v0003"
        assert reg.active() == "v0003" and desk.admin.models()["error"] is None
        assert _err_status(desk.admin.model, "v0099") == 404
        assert _err_status(desk.admin.job, "nope") == 404


def test_carelens_retrain_reads_the_store(desk, tmp_path, tiny_model_dir):
    """`carelens retrain` without --labels: serving's exporter writes what training reads."""
    from model.taxonomy import Taxonomy
    from serving.corrections import export_labels_file
    from training.retrain import read_tickets

    stored = desk.service.post_messages(
        [{"channel": "chat", "text": "refund please"}, {"channel": "email", "text": "great thanks"}]
    )
    desk.agent.set_labels(stored[0]["ticket_id"], {"issue_type": ["refund_return"]})
    desk.agent.set_labels(stored[1]["ticket_id"], {"sentiment": "positive", "issue_type": []})
    url = desk.app.state.services.settings.database_url
    out = tmp_path / "labels.jsonl"
    assert export_labels_file(url, tiny_model_dir / "taxonomy.yaml", out) == 2
    rows = read_tickets(out, Taxonomy.load(tiny_model_dir / "taxonomy.yaml"))
    assert [r.labels for r in rows] == [
        {"issue_type": ["refund_return"]},
        {"issue_type": [], "sentiment": ["positive"]},
    ]
    assert all(r.meta["labelled_by"] == "alice" and r.meta["labelled_at"] for r in rows)


def test_a_new_version_without_an_onnx_export_is_served_with_torch(make_app, tmp_path):
    """A retrained version has no ONNX export yet: with CARELENS_BACKEND=onnx-int8 the
    switch still happens, on torch, and the reason is reported instead of refusing it."""
    app = make_app(f"sqlite:///{tmp_path / 'onnx.db'}", backend="onnx-int8")
    models = app.state.models
    pred = models.load(app.state.settings.model_dir)  # the tiny model: never exported
    assert pred.backend == "torch"
    models.swap(pred, "test")
    assert app.state.services.predictor is pred
    assert "serving it with the torch backend" in models.error
    assert "carelens export" in models.error
