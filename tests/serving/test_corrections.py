"""Agents' labels through HTTP: validated, kept and exported for retraining."""

from __future__ import annotations

from serving.store import LabelCorrection
from tests.serving.factories import error_of


def test_agent_labels_are_validated_kept_and_exported(desk, tmp_path):
    from model.taxonomy import Taxonomy
    from training.data import read_labelled

    t = desk.service.post_message(channel="email", text="I want my money back", rating=None)
    err = error_of(desk.agent.set_labels, t["ticket_id"], {"issue_type": ["teleport"]})
    assert err.status_code == 422 and "unknown label 'teleport'" in err.detail
    err = error_of(desk.agent.set_labels, t["ticket_id"], {"mood": "sad"})
    assert err.status_code == 422 and "unknown task" in err.detail
    err = error_of(desk.agent.set_labels, t["ticket_id"], {"sentiment": ["negative", "neutral"]})
    assert err.status_code == 422 and "exactly one" in err.detail
    assert desk.count(LabelCorrection) == 0
    fixed = desk.agent.set_labels(
        t["ticket_id"], {"issue_type": ["refund_return"], "sentiment": "negative"}
    )
    assert fixed["labels"]["issue_type"] == ["refund_return"]
    desk.agent2.set_labels(t["ticket_id"], {"urgency": "medium"})
    u = desk.service.post_message(channel="chat", text="all good now")
    desk.agent.set_labels(u["ticket_id"], {"issue_type": [], "sentiment": "positive"})
    path = tmp_path / "labels.jsonl"
    path.write_text(desk.agent.export_labels(), encoding="utf-8")
    rows = {r.text: r for r in read_labelled(path, Taxonomy.default())}
    money = rows["I want my money back"]
    assert money.labels == {
        "issue_type": ["refund_return"],
        "sentiment": ["negative"],
        "urgency": ["medium"],
    }
    assert rows["all good now"].labels["issue_type"] == []
    assert "urgency" not in rows["all good now"].labels  # nobody labelled it: not labelled
    csv_path = tmp_path / "labels.csv"
    csv_path.write_text(desk.agent.export_labels("csv"), encoding="utf-8")
    csv_rows = {r.text: r for r in read_labelled(csv_path, Taxonomy.default())}
    assert csv_rows["I want my money back"].labels == money.labels
    assert csv_rows["all good now"].labels["issue_type"] == []  # "-": labelled, no issue
    assert csv_rows["all good now"].labels["urgency"] is None  # empty: not labelled
