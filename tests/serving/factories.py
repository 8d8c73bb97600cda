"""What the service tests build with: the test admin key, a settable clock, a desk of
clients (one per role), a stand-in model with planned labels, the app under uvicorn in
a thread, and the error a client call raises. The fixtures that use them are in
``conftest.py``."""

from __future__ import annotations

import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from datetime import datetime, timedelta
from types import SimpleNamespace

import pytest
from carelens_client import CarelensError
from fastapi.testclient import TestClient

from model.predictor import Prediction, TaskPrediction, apply_rules
from model.rules import RuleSet
from model.taxonomy import Taxonomy

ADMIN_KEY = "clk_test-admin-key-not-secret"


def error_of(fn, *args, **kwargs) -> CarelensError:
    """The error ``fn(*args, **kwargs)`` raises (the test fails if it does not)."""
    with pytest.raises(CarelensError) as info:
        fn(*args, **kwargs)
    return info.value


class Clock:
    def __init__(self, now: datetime):
        self.now = now

    def __call__(self) -> datetime:
        return self.now

    def advance(self, **kw) -> None:
        self.now += timedelta(**kw)


class Desk:
    """The app under test with one client per role."""

    def __init__(self, test_client: TestClient):
        from carelens_client import CarelensClient

        self.http = test_client
        self.app = test_client.app
        self.admin = CarelensClient(http=test_client, api_key=ADMIN_KEY)
        self.service = self.admin.with_key(self.admin.create_key("ingest", "service")["key"])
        self.agent = self.admin.with_key(self.admin.create_key("alice", "agent")["key"])
        self.agent2 = self.admin.with_key(self.admin.create_key("bob", "agent")["key"])

    @property
    def sessions(self):
        return self.app.state.services.sessions

    def count(self, model) -> int:
        from sqlalchemy import func, select

        with self.sessions() as s:
            return s.scalar(select(func.count()).select_from(model))


class PlannedPredictor:
    """A stand-in for ``model.predictor.Predictor``: planned labels and probabilities per
    text, with the critical rules applied as the real one applies them. Plan a text with
    ``plan(text, sentiment, issue_type=probability, ...)`` (issue types at 0.5 or more
    are its labels) or ``plan_labels(text, {task: labels})`` (confident labels). A text
    with a first line the plan does not know is looked up without it (an e-mail's
    subject); unplanned texts: no issue, neutral, low urgency."""

    def __init__(self, model_version: str = "planned-1") -> None:
        self.model_version = model_version
        self.taxonomy = Taxonomy.default()
        self.rules = RuleSet.load()
        self.model = SimpleNamespace(train_config=None)
        self.plans: dict[str, dict[str, TaskPrediction]] = {}

    def plan(self, text: str, sentiment: str = "neutral", **issue_type: float) -> str:
        tasks = {}
        for task in self.taxonomy:
            if task.name == "issue_type":
                probs = {n: issue_type.get(n, 0.01) for n in task.label_names}
                labels = [n for n, p in probs.items() if p >= 0.5]
            else:
                chosen = sentiment if task.name == "sentiment" else "low"
                probs = {n: 0.9 if n == chosen else 0.05 for n in task.label_names}
                labels = [chosen]
            tasks[task.name] = self._task(task, labels, probs, 0.9)
        self.plans[text] = tasks
        return text

    def plan_labels(self, text: str, labels: dict[str, list[str]]) -> str:
        self.plans[text] = {
            task.name: self._task(
                task,
                list(labels.get(task.name, [])),
                {n: 0.95 if n in labels.get(task.name, []) else 0.02 for n in task.label_names},
                0.95,
            )
            for task in self.taxonomy
        }
        return text

    @staticmethod
    def _task(task, labels, probs, confidence) -> TaskPrediction:
        return TaskPrediction(
            task=task.name,
            kind=task.kind,
            labels=labels,
            probabilities=probs,
            confidence=confidence,
            needs_review=False,
        )

    def predict(
        self, texts: list[str], evidence: bool | None = None, ratings=None
    ) -> list[Prediction]:
        out = []
        for text in texts:
            tasks = self.plans.get(text) or self.plans.get(text.split("\n", 1)[-1])
            if tasks is None:
                self.plan(text)
                tasks = self.plans.pop(text)
            tasks = {name: _copy(t) for name, t in tasks.items()}
            out.append(Prediction(tasks=tasks, model_version=self.model_version))
            apply_rules(self.rules, text, text, out[-1], False)
        return out


def _copy(task: TaskPrediction) -> TaskPrediction:
    """A fresh TaskPrediction: the rules change the one they are given."""
    return TaskPrediction(
        task=task.task,
        kind=task.kind,
        labels=list(task.labels),
        probabilities=dict(task.probabilities),
        confidence=task.confidence,
        needs_review=task.needs_review,
    )


@contextmanager
def uvicorn_thread(app, **config) -> Iterator[int]:
    """``app`` under uvicorn on a free loopback port, in a thread; yields the port and
    stops the server afterwards. ``log_config=None`` leaves the process's logging as it
    is (records reach caplog)."""
    import uvicorn

    server = uvicorn.Server(
        uvicorn.Config(app, host="127.0.0.1", port=0, log_config=None, **config)
    )
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    deadline = time.monotonic() + 60
    while not server.started:
        assert thread.is_alive() and time.monotonic() < deadline, "uvicorn did not start"
        time.sleep(0.02)
    try:
        yield server.servers[0].sockets[0].getsockname()[1]
    finally:
        server.should_exit = True
        thread.join(15)
