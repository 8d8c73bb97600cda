"""Rule recall on the corpus, whole and per split."""

from __future__ import annotations

from model.rules import RuleSet
from training.corpus import corpus_split
from training.data import Example
from training.rule_check import recall, recall_by_split


def _rows() -> list[Example]:
    rows = []
    for i in range(60):
        text = f"The charger caught fire, order {i}" if i % 3 else f"It got very hot, order {i}"
        rows.append(
            Example(text=text, labels={"issue_type": ["safety_hazard"], "urgency": ["critical"]})
        )
    rows.append(
        Example(
            text="Late parcel", labels={"issue_type": ["shipping_delivery"], "urgency": ["medium"]}
        )
    )
    return rows


def test_recall_per_split_adds_up_to_the_whole_and_follows_the_text_hash():
    rules, rows = RuleSet.load(), _rows()
    whole = recall(rules, rows)
    parts = recall_by_split(rules, rows)
    assert set(parts) == {"train", "dev", "test"}
    for measure in ("safety", "any_critical"):
        assert sum(p[measure]["rows"] for p in parts.values()) == whole[measure]["rows"] == 60
        assert sum(p[measure]["caught"] for p in parts.values()) == whole[measure]["caught"] == 40
    in_test = [e for e in rows[:60] if corpus_split(e.text) == "test"]
    assert parts["test"]["safety"]["rows"] == len(in_test)
