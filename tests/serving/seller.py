"""A small, exact store for the reply-template and campaign tests: a stand-in model
that returns planned labels and probabilities for each text, and helpers to post a
customer's messages through the API."""

from __future__ import annotations

from types import SimpleNamespace

import pytest
from fastapi.testclient import TestClient

from model.predictor import Prediction, TaskPrediction, apply_rules
from model.rules import RuleSet
from model.taxonomy import Taxonomy


class PlannedPredictor:
    """``plan(text, sentiment, issue_type={label: probability})`` before posting the
    text; labels are the issue types with probability >= 0.5. Unplanned texts: no
    issue, neutral, low urgency."""

    model_version = "planned-1"

    def __init__(self) -> None:
        self.taxonomy = Taxonomy.default()
        self.rules = RuleSet.load()
        self.model = SimpleNamespace(train_config=None)
        self.plans: dict[str, tuple[str, dict[str, float]]] = {}

    def plan(self, text: str, sentiment: str = "neutral", **issue_type: float) -> str:
        self.plans[text] = (sentiment, issue_type)
        return text

    def predict(
        self, texts: list[str], evidence: bool | None = None, ratings=None
    ) -> list[Prediction]:
        out = []
        for text in texts:
            sentiment, issues = self.plans.get(text, ("neutral", {}))
            tasks = {}
            for task in self.taxonomy:
                if task.name == "issue_type":
                    probs = {n: issues.get(n, 0.01) for n in task.label_names}
                    labels = [n for n, p in probs.items() if p >= 0.5]
                else:
                    chosen = sentiment if task.name == "sentiment" else "low"
                    probs = {n: 0.9 if n == chosen else 0.05 for n in task.label_names}
                    labels = [chosen]
                tasks[task.name] = TaskPrediction(
                    task=task.name,
                    kind=task.kind,
                    labels=labels,
                    probabilities=probs,
                    confidence=0.9,
                    needs_review=False,
                )
            out.append(Prediction(tasks=tasks, model_version=self.model_version))
            apply_rules(self.rules, text, text, out[-1], False)
        return out


@pytest.fixture
def planned():
    return PlannedPredictor()


@pytest.fixture
def seller(db_url, clock, planned, tiny_model_dir):
    """A ``Desk`` (tests/serving/conftest.py) on an app serving ``planned``."""
    from serving.app import create_app
    from serving.settings import Settings
    from tests.serving.conftest import ADMIN_KEY, Desk

    def make(**settings):
        settings.setdefault("bootstrap_admin_key", ADMIN_KEY)
        app = create_app(
            Settings(model_dir=tiny_model_dir, database_url=db_url, **settings),
            predictor=planned,
            clock=clock,
        )
        return app

    opened: list[TestClient] = []

    def open_desk(**settings) -> Desk:
        tc = TestClient(make(**settings))
        tc.__enter__()
        opened.append(tc)
        return Desk(tc)

    yield open_desk
    for tc in opened:
        tc.__exit__(None, None, None)
