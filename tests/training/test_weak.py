"""Weak labels from phrase rules, and the hand-labelled reviews that measure them."""

from __future__ import annotations

import csv

import pytest
from typer.testing import CliRunner

from carelens.cli import app
from model.taxonomy import Taxonomy
from training.data import read_labelled
from training.sources import REPO_DATA_DIR, SourceError, load_source
from training.weak import WeakRuleError, WeakRules

HAND = REPO_DATA_DIR / "labels" / "review_issue_types.csv"


@pytest.fixture(scope="module")
def rules() -> WeakRules:
    return WeakRules.load("review_issue_types")


def test_rules_label_english_and_chinese(rules):
    assert rules.labels("Stopped working after a week, want a refund.", "en", "negative") == [
        "damaged_defective",
        "refund_return",
    ]
    assert "wrong_item" in rules.labels("商家发错货了，颜色不对", "zh", "negative")
    assert "safety_hazard" in rules.labels("The adapter caught fire on my desk", "en", "negative")


def test_whole_words_only(rules):
    # "sparkly" is not "sparked": a word boundary at both ends of every pattern
    assert "safety_hazard" not in rules.labels("Bright and sparkly tone", "en", "positive")
    assert rules.labels("Bright and sparkly tone", "en", "positive") == ["praise"]


def test_praise_never_on_negative_and_fallbacks(rules):
    assert rules.labels("Great look, but junk.", "en", "negative") == ["product_quality"]
    assert rules.labels("meh", "en", "negative") == ["product_quality"]  # no reason given
    assert rules.labels("meh", "en", "positive") == ["praise"]
    assert rules.labels("meh", "en", "neutral") is None  # neutral, nothing matched: unlabelled


def test_rule_labels_must_be_in_the_taxonomy(tmp_path):
    bad = tmp_path / "bad.yaml"
    bad.write_text("labels:\n  lost_parcel:\n    en: [lost]\n", encoding="utf-8")
    with pytest.raises(WeakRuleError, match="'lost_parcel' is not in the taxonomy"):
        WeakRules.load(bad).check(Taxonomy.default()["issue_type"])
    with pytest.raises(WeakRuleError, match="does not exist"):
        WeakRules.load("no_such_rules")


def test_hand_labels_are_valid_and_excluded_from_their_source(tmp_path):
    tax = Taxonomy.default()
    hand = read_labelled(HAND, tax)
    assert len(hand) == 300
    assert {ex.meta["lang"] for ex in hand} == {"en", "zh"}
    assert all(ex.labels["issue_type"] is not None for ex in hand)
    # a source file holding one hand-labelled review and one other: only the other is loaded
    with HAND.open(encoding="utf-8") as fh:
        first = next(csv.DictReader(fh))
    data = tmp_path / "data"
    data.mkdir()
    with (data / "reviews.csv").open("w", encoding="utf-8", newline="") as fh:
        w = csv.writer(fh)
        w.writerow(["rid", "text", "stars"])
        w.writerow([first["id"], first["text"], "1"])
        w.writerow(["new-1", "The strap broke on day two. Sending it back.", "1"])
    mapping = tmp_path / "m.yaml"
    mapping.write_text(
        "source: t\npath: reviews.csv\nlang: en\ntext: '{text}'\nid: rid\n"
        "tasks:\n  sentiment:\n    - column: stars\n      map: {'1': negative}\n"
        "  issue_type:\n    - weak: review_issue_types\n"
        "exclude: [labels/review_issue_types.csv]\n",
        encoding="utf-8",
    )
    rows = load_source("t", tax, data_root=data, mapping_file=mapping)
    assert [r.meta["id"] for r in rows] == ["new-1"]
    assert rows[0].labels["issue_type"] == ["damaged_defective", "refund_return"]
    mapping.write_text(
        mapping.read_text(encoding="utf-8").replace("review_issue_types.csv", "nope.csv"),
        encoding="utf-8",
    )
    with pytest.raises(SourceError, match="exclude file .*nope.csv is missing"):
        load_source("t", tax, data_root=data, mapping_file=mapping)


def test_weak_check_command_scores_the_rules():
    result = CliRunner().invoke(app, ["data", "weak-check", str(HAND)])
    assert result.exit_code == 0, result.output
    assert result.output.startswith("300 rows")
    line = next(x for x in result.output.splitlines() if x.startswith("praise"))
    support = int(line.split()[1])
    assert support == sum(
        "praise" in (ex.labels["issue_type"] or [])
        for ex in read_labelled(HAND, Taxonomy.default())
    )
