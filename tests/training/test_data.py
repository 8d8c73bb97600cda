from __future__ import annotations

import json

import pytest
import torch

from model.taxonomy import Taxonomy
from training.data import (
    DataError,
    Example,
    hash_split,
    read_labelled,
    split_bucket,
    targets,
    write_jsonl,
)

TAX = Taxonomy.default()


def test_csv_format_missing_vs_empty_vs_labels(tmp_path):
    f = tmp_path / "d.csv"
    f.write_text(
        "id,text,source,issue_type,sentiment,urgency\n"
        "1,Box broken and late,amazon,damaged_defective|shipping_delivery,negative,high\n"
        "2,ok,amazon,-,neutral,\n"
        '3,"love it, thanks",amazon,,positive,low\n',
        encoding="utf-8",
    )
    a, b, c = read_labelled(f, TAX)
    assert a.labels == {
        "issue_type": ["damaged_defective", "shipping_delivery"],
        "sentiment": ["negative"],
        "urgency": ["high"],
    }
    assert b.labels["issue_type"] == [] and b.labels["urgency"] is None  # labelled-empty vs missing
    assert c.labels["issue_type"] is None and c.meta == {"id": "3", "source": "amazon"}
    t = targets([a, b, c], TAX)
    assert (
        t["issue_type"][0].sum() == 2
        and t["issue_type"][1].sum() == 0
        and (t["issue_type"][2] == -1).all()
    )
    assert t["urgency"].tolist() == [2, -100, 0]


def test_jsonl_lists(tmp_path):
    f = tmp_path / "d.jsonl"
    rows = [
        {"text": "x", "issue_type": [], "sentiment": "neutral"},
        {"text": "y", "issue_type": ["praise"]},
    ]
    f.write_text("\n".join(json.dumps(r) for r in rows), encoding="utf-8")
    x, y = read_labelled(f, TAX, source="mine")
    assert x.labels["issue_type"] == [] and y.labels["issue_type"] == ["praise"]
    assert x.source == "mine"


def test_written_jsonl_reads_back_the_same(tmp_path):
    # what `carelens data export` writes: labels, labelled-empty, missing and meta survive
    rows = [
        Example(
            "Box broken and late",
            {"issue_type": ["damaged_defective", "shipping_delivery"], "urgency": ["high"]},
            {"id": "a1", "source": "amazon_reviews", "rating": "1", "product_id": "B0X"},
        ),
        Example("ok", {"issue_type": [], "sentiment": ["neutral"], "urgency": None}, {"id": "2"}),
        Example("物流太慢了", {"sentiment": ["negative"]}, {"lang": "zh"}),
    ]
    write_jsonl(rows, tmp_path / "out.jsonl", TAX)
    back = read_labelled(tmp_path / "out.jsonl", TAX)
    assert [(e.text, e.meta) for e in back] == [(e.text, e.meta) for e in rows]
    assert [{k: v for k, v in e.labels.items() if v is not None} for e in back] == [
        {k: v for k, v in e.labels.items() if v is not None} for e in rows
    ]
    assert back[1].labels["issue_type"] == [] and back[1].labels.get("urgency") is None


@pytest.mark.parametrize(
    ("content", "message"),
    [
        (
            "text,sentiment\nfine,positive\nbad,angry\n",
            r"d.csv:3: sentiment value 'angry' is not in the taxonomy",
        ),
        ("text,issue_type\nfine,praise|lost_parcel\n", r"d.csv:2: issue_type value 'lost_parcel'"),
        ("text,sentiment\n,positive\n", r"d.csv:2: 'text' is missing or empty"),
    ],
)
def test_bad_rows_are_refused_with_line_and_value(tmp_path, content, message):
    f = tmp_path / "d.csv"
    f.write_text(content, encoding="utf-8")
    with pytest.raises(DataError, match=message):
        read_labelled(f, TAX)


def test_invalid_utf8_and_missing_file(tmp_path):
    f = tmp_path / "d.jsonl"
    f.write_bytes(b'{"text": "ok"}\n{"text": "\xff"}\n')
    with pytest.raises(DataError, match="d.jsonl:2: invalid UTF-8"):
        read_labelled(f, TAX)
    with pytest.raises(DataError, match="not found"):
        read_labelled(tmp_path / "none.csv", TAX)


def test_hash_split_is_deterministic_and_keeps_duplicates_together():
    texts = [f"message number {i}" for i in range(2000)]
    exs = [Example(text=t) for t in texts]
    tr1, va1 = hash_split(exs, 0.1)
    tr2, va2 = hash_split(list(reversed(exs)), 0.1)
    assert {e.text for e in va1} == {e.text for e in va2}
    assert 150 < len(va1) < 250
    assert split_bucket("Great product!!") == split_bucket(
        "  great PRODUCT "
    )  # normalised duplicates


def test_targets_dtypes():
    t = targets([Example(text="a", labels={"sentiment": ["positive"]})], TAX)
    assert t["sentiment"].dtype == torch.long and t["issue_type"].dtype == torch.float32


def test_mapping_source_names_match_their_files():
    from training.sources import SourceMapping, available_sources

    for name, path in available_sources().items():
        assert SourceMapping.load(path).source == name
