"""The behaviour suite: expectations checked per capability, on the Predictor's labels."""

from __future__ import annotations

import json

import pytest

from model.predictor import Predictor
from training.probes import PROBES_FILE, failures, load_probes, run_probes

LEVELS = ["low", "medium", "high", "critical"]


def test_expectations():
    labels = {"issue_type": ["wrong_item"], "sentiment": ["negative"], "urgency": ["medium"]}
    assert failures({"issue_type": ["wrong_item"], "sentiment": "negative"}, labels, LEVELS) == []
    assert failures({"urgency_min": "medium", "urgency_max": "high"}, labels, LEVELS) == []
    assert failures({"issue_type": ["size_fit"]}, labels, LEVELS) == ["missing issue_type size_fit"]
    assert failures({"not_issue_type": ["wrong_item"]}, labels, LEVELS) == [
        "unwanted issue_type wrong_item"
    ]
    assert failures({"urgency_max": "low"}, labels, LEVELS) == ["urgency medium (want at most low)"]
    assert failures({"urgency": "critical"}, labels, LEVELS) == ["urgency medium (want critical)"]


def test_the_shipped_suite_is_well_formed():
    probes = load_probes(PROBES_FILE)
    assert len(probes) >= 150
    caps = {p["capability"] for p in probes}
    assert {"safety", "harmless_triggers", "negation", "ratings"} <= caps


def test_run_probes_reports_per_capability(tiny_model_dir, tmp_path):
    path = tmp_path / "p.jsonl"
    items = [
        {
            "capability": "safety",
            "text": "The charger caught fire",
            "rating": None,
            "expect": {"issue_type": ["safety_hazard"], "urgency": "critical"},
        },
        {
            "capability": "harmless",
            "text": "The smoke grey colour is lovely",
            "rating": 5,
            "expect": {"urgency_max": "high"},
        },
    ]
    path.write_text("\n".join(json.dumps(x) for x in items))
    result = run_probes(Predictor.load(tiny_model_dir), load_probes(path))
    assert result["probes"] == 2
    assert result["per_capability"]["safety"] == {"passed": 1, "probes": 1, "pass_rate": 1.0}
    bad = tmp_path / "bad.jsonl"
    bad.write_text(json.dumps({"text": "x", "expect": {"mood": "sad"}}))
    with pytest.raises(ValueError, match="unknown expect keys"):
        load_probes(bad)
