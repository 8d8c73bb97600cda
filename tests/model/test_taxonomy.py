from __future__ import annotations

import pytest

from model.taxonomy import Taxonomy, TaxonomyError


def test_default_taxonomy_follows_the_spec():
    tax = Taxonomy.default()
    assert tax.task_names == ["issue_type", "sentiment", "urgency"]
    assert [t.kind for t in tax] == ["multilabel", "multiclass", "ordinal"]
    assert len(tax["issue_type"].labels) == 13
    assert tax["sentiment"].label_names == ["negative", "neutral", "positive"]
    assert tax["urgency"].label_names == ["low", "medium", "high", "critical"]  # lowest first
    safety = tax["issue_type"].labels[tax["issue_type"].label2id["safety_hazard"]]
    assert safety.zh == "安全隐患" and safety.en and "fire" in safety.definition
    assert all(lab.zh and lab.en and lab.definition for t in tax for lab in t.labels)


def test_roundtrip_yaml_and_json(tmp_path):
    tax = Taxonomy.default()
    for name in ("t.yaml", "t.json"):
        tax.save(tmp_path / name)
        assert Taxonomy.load(tmp_path / name) == tax


def test_custom_taxonomy_any_tasks():
    tax = Taxonomy.from_dict(
        {
            "tasks": [
                {"name": "intent", "kind": "multiclass", "labels": ["a", "b", "c"]},
                {"name": "stars", "kind": "ordinal", "labels": ["1", "2", "3", "4", "5"]},
            ]
        }
    )
    assert tax["intent"].id2label == {0: "a", 1: "b", 2: "c"}
    assert tax["stars"].num_labels == 5


@pytest.mark.parametrize(
    ("data", "message"),
    [
        ({"tasks": []}, "non-empty"),
        (
            {"tasks": [{"name": "x", "kind": "regression", "labels": ["a"]}]},
            "'kind' must be one of",
        ),
        ({"tasks": [{"name": "x", "kind": "multiclass", "labels": ["a"]}]}, "at least 2 labels"),
        (
            {"tasks": [{"name": "x", "kind": "multilabel", "labels": ["a", "a"]}]},
            "duplicate labels ['a']",
        ),
        ({"tasks": [{"name": "x", "kind": "multilabel", "labels": ["a|b"]}]}, "reserved"),
        ({"tasks": [{"name": "bad name", "kind": "multilabel", "labels": ["a"]}]}, "identifier"),
        (
            {
                "tasks": [
                    {"name": "x", "kind": "multilabel", "labels": ["a"]},
                    {"name": "x", "kind": "multilabel", "labels": ["b"]},
                ]
            },
            "appears twice",
        ),
    ],
)
def test_invalid_taxonomies_say_what_is_wrong(data, message):
    with pytest.raises(
        TaxonomyError, match=message.replace("[", r"\[").replace("]", r"\]").replace("|", r"\|")
    ):
        Taxonomy.from_dict(data)


def test_validate_labels_names_the_value():
    tax = Taxonomy.default()
    tax.validate_labels("issue_type", ["praise", "size_fit"])
    tax.validate_labels("issue_type", [])  # labelled, no issue
    with pytest.raises(TaxonomyError, match="'lost_parcel' is not in task 'issue_type'"):
        tax.validate_labels("issue_type", ["lost_parcel"])
    with pytest.raises(TaxonomyError, match="exactly one label"):
        tax.validate_labels("sentiment", ["negative", "positive"])


def test_missing_file_is_a_clear_error(tmp_path):
    with pytest.raises(TaxonomyError, match="not found"):
        Taxonomy.load(tmp_path / "nope.yaml")
    (tmp_path / "bad.yaml").write_text("tasks: [unclosed", encoding="utf-8")
    with pytest.raises(TaxonomyError, match="not valid YAML"):
        Taxonomy.load(tmp_path / "bad.yaml")
