"""The labelled corpus: a deterministic draw, annotation passes into corpus rows with
agreement figures, texts joined from the public data by id, splits, and the public
sources leaving corpus rows out."""

from __future__ import annotations

import csv
import json

import pytest

from model.taxonomy import Taxonomy
from training.corpus import (
    Stratum,
    agreement,
    build_corpus,
    corpus_split,
    draw,
    load_corpus,
    read_pass,
    write_batches,
    write_corpus,
)
from training.data import DataError, with_ratings
from training.pipeline import load_spec
from training.sources import load_source

TAX = Taxonomy.default()
FIELDS = ["category", "asin", "reviewerID", "overall", "summary", "reviewText", "unixReviewTime"]


@pytest.fixture
def public(tmp_path):
    """A public data folder with a small Amazon file (stars 1-5, one duplicated text)."""
    root = tmp_path / "public"
    (root / "amazon_reviews").mkdir(parents=True)
    rows = []
    for i in range(40):
        stars = i % 5 + 1
        rows.append(
            [
                "x",
                f"P{i % 4}",
                f"R{i}",
                str(stars),
                f"title {i}",
                f"review number {i} of {stars} stars",
                "0",
            ]
        )
    rows.append(
        ["x", "P9", "RDUP", "1", "title 3", "review number 3 of 4 stars", "0"]
    )  # same text as R3
    with (root / "amazon_reviews" / "musical_instruments.csv").open("w", newline="") as fh:
        w = csv.writer(fh)
        w.writerow(FIELDS)
        w.writerows(rows)
    return root


PLAN = (
    Stratum("amazon_reviews", 3, {"overall": ("1",)}),
    Stratum("amazon_reviews", 5),
)


def test_the_draw_is_deterministic_stratified_and_once_per_text(public):
    a, b = draw(public, PLAN), draw(public, PLAN)
    assert [r.id for r in a] == [r.id for r in b] and len(a) == 8
    assert all(r.rating == "1" for r in a[:3])
    assert len({r.text for r in a}) == 8 and len({r.id for r in a}) == 8
    assert {r.source for r in a} == {"amazon_reviews"} and a[0].product_id.startswith("P")


def test_a_targeted_stratum_reads_matching_texts_and_leaves_the_plan_as_it_was(public, tmp_path):
    plan = draw(public, PLAN)
    both = draw(public, PLAN + (Stratum("amazon_reviews", 4, match=r"\bOF 2 STARS"),))
    assert [r.id for r in both[: len(plan)]] == [r.id for r in plan]
    extra = both[len(plan) :]
    assert len(extra) == 4 and all("of 2 stars" in r.text for r in extra)
    assert not {r.id for r in extra} & {r.id for r in plan}
    # its batches carry on the numbering, with their own key; the corpus reads both keys
    ann = tmp_path / "ann"
    key = write_batches(plan, ann)
    more = write_batches(extra, ann, ((("amazon_reviews",), 1),), 17, "key_supplement.json")
    assert sorted(more) == [f"17-00{i}" for i in range(1, 5)]
    for name, k in (("batch01", key), ("batch17", more)):
        for side in ("passA", "passB"):
            _tsv(ann / side / f"{name}.tsv", [[s, "-", "neutral", "low"] for s in sorted(k)])
    rows, _ = build_corpus(TAX, ann, public)
    assert len(rows) == len(plan) + 4


def test_supplement_rounds_draw_after_the_plan_and_earlier_rounds(public, monkeypatch):
    import training.corpus as corpus

    one = (Stratum("amazon_reviews", 2, match=r"of 2 stars"),)
    two = (Stratum("amazon_reviews", 3, match=r"of [23] stars"),)
    monkeypatch.setattr(corpus, "PLAN", PLAN)
    monkeypatch.setattr(corpus, "BATCH_GROUPS", ((("amazon_reviews",), 2),))
    monkeypatch.setattr(
        corpus,
        "SUPPLEMENTS",
        (
            (one, ((("amazon_reviews",), 1),), "key_supplement.json"),
            (two, ((("amazon_reviews",), 1),), "key_supplement2.json"),
        ),
    )
    first, second = corpus.draw_supplement(public, 1), corpus.draw_supplement(public, 2)
    everything = draw(public, PLAN + one + two)
    assert [r.id for r in first + second] == [r.id for r in everything[len(draw(public, PLAN)) :]]
    assert len(second) == 3 and not {r.id for r in first} & {r.id for r in second}
    # the batches carry on the numbering: two of the plan, one per earlier round
    assert corpus.supplement_first_batch(1) == 3 and corpus.supplement_first_batch(2) == 4
    with pytest.raises(ValueError, match="1 to 2"):
        corpus.draw_supplement(public, 3)


def _tsv(path, lines):
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text("\n".join("\t".join(x) for x in lines) + "\n", encoding="utf-8")


def _annotate(tmp_path, public, disagree_on=None, adjudicate=True):
    rows = draw(public, PLAN)
    ann = tmp_path / "ann"
    key = write_batches(rows, ann)
    ids = sorted(key)
    a = [[s, "praise", "positive", "low"] for s in ids]
    b = [list(x) for x in a]
    if disagree_on:
        b[0] = [ids[0], "praise|product_quality", "neutral", "low"]
    _tsv(ann / "passA" / "batch01.tsv", a)
    _tsv(ann / "passB" / "batch01.tsv", b)
    if disagree_on and adjudicate:
        _tsv(ann / "adjudicated" / "adj.tsv", [[ids[0], "product_quality", "neutral", "low"]])
    return ann, key, ids


def test_batches_hold_no_source_or_label(public, tmp_path):
    ann, key, _ = _annotate(tmp_path, public)
    lines = [json.loads(x) for x in (ann / "batch01.jsonl").read_text().splitlines()]
    assert all(set(x) <= {"id", "text", "stars"} for x in lines)
    assert json.loads((ann / "key.json").read_text()) == key


def test_corpus_takes_agreed_labels_and_the_adjudication_where_passes_differ(public, tmp_path):
    ann, key, ids = _annotate(tmp_path, public, disagree_on=True)
    rows, figures = build_corpus(TAX, ann, public)
    by_id = {r["id"]: r for r in rows}
    assert by_id[key[ids[0]]["id"]]["issue_type"] == "product_quality"
    assert by_id[key[ids[0]]["id"]]["sentiment"] == "neutral"
    assert by_id[key[ids[1]]["id"]]["issue_type"] == "praise"
    assert figures["disputed_rows"] == {"amazon_reviews": 1}
    assert figures["agreement"]["amazon_reviews"]["rows"] == len(ids)
    assert figures["agreement"]["en"]["issue_type"]["agreement"] == pytest.approx(
        (len(ids) - 1) / len(ids), abs=1e-3
    )
    # a dispute without an adjudication is refused, or left out with --partial
    ann2, _, _ = _annotate(tmp_path / "2", public, disagree_on=True, adjudicate=False)
    with pytest.raises(ValueError, match="no adjudication"):
        build_corpus(TAX, ann2, public)
    rows2, fig2 = build_corpus(TAX, ann2, public, partial=True)
    assert len(rows2) == len(ids) - 1 and fig2["awaiting_adjudication"] == 1


def test_the_corpus_file_holds_no_texts_and_loads_them_by_id(public, tmp_path):
    ann, _, _ = _annotate(tmp_path, public)
    rows, _ = build_corpus(TAX, ann, public)
    path = tmp_path / "corpus.csv"
    write_corpus(rows, path)
    assert "text" not in path.read_text().splitlines()[0]
    examples = load_corpus(path, TAX, public)
    assert len(examples) == len(rows)
    assert all(ex.text.startswith("title") and ex.meta["rating"] for ex in examples)
    assert {ex.labels["issue_type"][0] for ex in examples} == {"praise"}
    broken = tmp_path / "broken.csv"
    broken.write_text(path.read_text().replace(rows[0]["id"], "NOPE-NOPE"))
    with pytest.raises(DataError, match="no text"):
        load_corpus(broken, TAX, public)


def test_pass_files_are_checked(tmp_path):
    bad = tmp_path / "p.tsv"
    bad.write_text("01-001\tpraise\tpositive\n")
    with pytest.raises(ValueError, match="4 tab-separated"):
        read_pass(bad, TAX)
    bad.write_text("01-001\tpraise\thappy\tlow\n")
    with pytest.raises(ValueError, match="sentiment label 'happy'"):
        read_pass(bad, TAX)


def test_agreement_figures():
    same = {"issue_type": ("praise",), "sentiment": "positive", "urgency": "low"}
    other = {"issue_type": (), "sentiment": "negative", "urgency": "high"}
    pairs = [(same, same), (other, other), (same, other)]
    a = agreement(pairs, TAX)
    assert a["issue_type"]["mean_jaccard"] == pytest.approx(2 / 3, abs=1e-3)
    assert a["sentiment"]["agreement"] == pytest.approx(2 / 3, abs=1e-3)
    assert 0 < a["sentiment"]["kappa"] < 1 and 0 < a["urgency"]["kappa"] < 1


def test_split_is_fixed_by_the_text():
    texts = [f"message {i}" for i in range(2000)]
    splits = [corpus_split(t) for t in texts]
    assert splits == [corpus_split(t) for t in texts]
    assert 0.15 < splits.count("test") / 2000 < 0.25 and 0.06 < splits.count("dev") / 2000 < 0.14


def test_corpus_entry_and_sources_leave_its_rows_out(public, tmp_path, monkeypatch):
    ann, key, ids = _annotate(tmp_path, public)
    rows, _ = build_corpus(TAX, ann, public)
    path = tmp_path / "corpus.csv"
    write_corpus(rows, path)
    name, examples = load_spec({"corpus": str(path), "tasks": ["issue_type"]}, TAX, str(public))
    assert name == "corpus" and {ex.source for ex in examples} == {"corpus/amazon_reviews"}
    assert all(ex.labels["sentiment"] is None and ex.labels["issue_type"] for ex in examples)
    with pytest.raises(DataError, match="unknown keys"):
        load_spec({"corpus": str(path), "weigth": 2}, TAX, str(public))
    # the source drops the corpus's ids, and a repeat of a corpus text under another id
    import training.sources as sources

    monkeypatch.setattr(sources, "REPO_DATA_DIR", tmp_path)
    (tmp_path / "labels").mkdir()
    (tmp_path / "labels" / "corpus.csv").write_text(path.read_text())
    (tmp_path / "labels" / "review_issue_types.csv").write_text("id,text\n")
    all_rows = load_source("amazon_reviews", TAX, public)
    kept = {ex.meta["id"] for ex in all_rows}
    assert not kept & {r["id"] for r in rows}
    drawn_r3 = "P3-R3" in {r["id"] for r in rows}
    assert ("P9-RDUP" in kept) != drawn_r3


def test_ratings_lead_the_text_and_are_hidden_on_a_fraction():
    from model.predictor import rated_text
    from training.data import Example

    rows = [Example(f"text {i}", {}, {"rating": "2.0" if i % 2 else ""}) for i in range(400)]
    shown = with_ratings(rows)
    assert shown[1].text == rated_text("text 1", 2) == "two-star review. text 1"
    assert shown[0].text == "text 0"
    import random

    half = with_ratings(rows, 0.5, random.Random(0))
    n_shown = sum(ex.text.startswith("two-star") for ex in half)
    assert 60 < n_shown < 140
