"""The micro-batcher: results go back to the right caller, concurrent requests share
model calls, a full queue answers 503 with Retry-After, the predictor is read afresh."""

from __future__ import annotations

import threading
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass

import numpy as np
import pytest
from fastapi.testclient import TestClient

from serving.batcher import MicroBatcher, Overloaded, Unavailable
from tests.serving.factories import Desk


@dataclass
class Echo:
    """A stand-in prediction that remembers its text and which model made it."""

    text: str
    model_version: str


class EchoPredictor:
    """Answers each text with itself; records the size of every call. ``gate``, when
    set, holds every call until it is opened (to fill the queue behind it)."""

    def __init__(self, version: str = "v1", gate: threading.Event | None = None) -> None:
        self.version = version
        self.calls: list[int] = []
        self.gate = gate

    def predict(self, texts, evidence=None, ratings=None):
        if self.gate is not None:
            assert self.gate.wait(10)
        if any(not t.strip() for t in texts):
            raise ValueError("texts[0] is empty")
        self.calls.append(len(texts))
        return [Echo(t, self.version) for t in texts]


def test_each_caller_gets_its_own_results_in_order_and_calls_are_shared():
    pred = EchoPredictor()
    b = MicroBatcher(lambda: pred, max_batch_size=16, max_wait_ms=30, queue_size=1000).start()
    try:

        def call(i: int):
            texts = [f"req{i}-{k}" for k in range(1 + i % 3)]
            return texts, b.predict(texts)

        with ThreadPoolExecutor(max_workers=24) as pool:
            results = list(pool.map(call, range(120)))
    finally:
        b.stop()
    for texts, preds in results:
        assert [p.text for p in preds] == texts
    assert sum(pred.calls) == sum(len(t) for t, _ in results)
    assert len(pred.calls) < 120 / 2, pred.calls  # requests were gathered into batches
    assert max(pred.calls) <= 16


def test_real_model_batched_results_match_one_by_one(tiny_predictor):
    texts = [
        "my order never arrived",
        "great product thanks",
        "这个充电器起火了太危险",
        "refund please, the box was broken",
        "rude seller never reply to email",
        "size too small",
    ] * 3
    alone = [tiny_predictor.predict([t], evidence=False)[0] for t in texts]
    b = MicroBatcher(lambda: tiny_predictor, max_batch_size=8, max_wait_ms=50).start()
    try:
        futures = [b.submit([t], evidence=False) for t in texts]
        got = [f.result(10)[0] for f in futures]
    finally:
        b.stop()
    assert b.batches < len(texts)
    for want, have in zip(alone, got, strict=True):
        for task in want.tasks:
            pw, ph = want[task].probabilities, have[task].probabilities
            assert np.allclose(list(pw.values()), list(ph.values()), atol=1e-4)


def test_a_bad_text_fails_only_its_own_request():
    pred = EchoPredictor()
    b = MicroBatcher(lambda: pred, max_batch_size=8, max_wait_ms=50).start()
    try:
        good, bad, other = b.submit(["fine"]), b.submit(["  "]), b.submit(["also fine"])
        assert [p.text for p in good.result(5)] == ["fine"]
        assert [p.text for p in other.result(5)] == ["also fine"]
        with pytest.raises(ValueError, match="empty"):
            bad.result(5)
    finally:
        b.stop()


def test_full_queue_is_refused_at_once_with_a_retry_after():
    gate = threading.Event()
    pred = EchoPredictor(gate=gate)
    b = MicroBatcher(lambda: pred, max_batch_size=2, max_wait_ms=0, queue_size=3).start()
    try:
        first = b.submit(["a"])  # taken by the worker, held at the gate
        deadline = time.monotonic() + 5
        while b.queued and time.monotonic() < deadline:
            time.sleep(0.01)
        waiting = [b.submit(["b", "c"]), b.submit(["d"])]  # 3 texts wait: the queue is full
        started = time.perf_counter()
        with pytest.raises(Overloaded) as info:
            b.submit(["e"])
        assert time.perf_counter() - started < 0.1  # refused at once, not queued
        assert info.value.retry_after >= 1
        assert "CARELENS_BATCH_QUEUE_SIZE=3" in str(info.value)
        gate.set()
        assert [p.text for p in first.result(5)] == ["a"]
        assert [[p.text for p in f.result(5)] for f in waiting] == [["b", "c"], ["d"]]
        assert [p.text for p in b.predict(["e"])] == ["e"]  # room again
    finally:
        gate.set()
        b.stop()


def test_the_predictor_is_read_afresh_for_every_batch():
    current = {"p": EchoPredictor("v1")}
    b = MicroBatcher(lambda: current["p"], max_wait_ms=0).start()
    try:
        assert b.predict(["x"])[0].model_version == "v1"
        current["p"] = EchoPredictor("v2")  # a hot reload swaps the predictor
        assert b.predict(["x"])[0].model_version == "v2"
        current["p"] = None
        with pytest.raises(Unavailable, match="no model"):
            b.predict(["x"])
    finally:
        b.stop()
    with pytest.raises(Unavailable, match="not running"):
        b.submit(["x"])


def test_service_answers_503_with_retry_after_when_the_queue_is_full(make_app, tmp_path):
    app = make_app(
        f"sqlite:///{tmp_path / 'c.db'}",
        batch_queue_size=1,
        batch_max_size=1,
        batch_max_wait_ms=0,
    )
    with TestClient(app) as tc:
        desk = Desk(tc)
        svc = app.state.services
        real = svc.predictor
        gate, entered = threading.Event(), threading.Event()

        class Held:  # the real model behind a gate
            model_version = real.model_version
            taxonomy = real.taxonomy
            model = real.model

            def predict(self, texts, evidence=None, ratings=None):
                entered.set()
                assert gate.wait(10)
                return real.predict(texts, evidence=evidence)

        svc.predictor = Held()
        headers = {"X-API-Key": desk.service.api_key}
        body = {"texts": ["my order never arrived"]}
        with ThreadPoolExecutor(max_workers=2) as pool:
            held = pool.submit(tc.post, "/v1/classify", json=body, headers=headers)
            assert entered.wait(5)  # the worker took it and waits at the gate
            deadline = time.monotonic() + 5
            queued = pool.submit(tc.post, "/v1/classify", json=body, headers=headers)
            while not svc.batcher.queued:
                assert time.monotonic() < deadline
                time.sleep(0.01)
            r = tc.post("/v1/classify", json=body, headers=headers)
            assert r.status_code == 503, r.text
            assert int(r.headers["Retry-After"]) >= 1
            assert "retry later" in r.json()["detail"]
            msg = {"channel": "chat", "text": "where is my package"}
            r = tc.post("/v1/messages", json=msg, headers=headers)
            assert r.status_code == 503 and "Retry-After" in r.headers
            gate.set()
            assert held.result(10).status_code == 200
            assert queued.result(10).status_code == 200
        svc.predictor = real
        r = tc.post("/v1/messages", json=msg, headers=headers)
        assert r.status_code == 201, r.text
        assert r.json()["messages"][0]["model_version"] == real.model_version
