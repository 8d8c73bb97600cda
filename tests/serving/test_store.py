"""Store, migrations, routing config, inbound parsing: the parts under the routes."""

from __future__ import annotations

from datetime import UTC, datetime

import pytest
from carelens_client.vocabulary import CHANNELS

from model.taxonomy import Taxonomy
from serving import db
from serving.inbound import detect_language, find_order_id, strip_quotes_and_signature
from serving.routing import RoutingConfig, RoutingError, deadline
from serving.store import Base


def test_migrations_build_exactly_the_models(db_url):
    from alembic.autogenerate import compare_metadata
    from alembic.runtime.migration import MigrationContext

    db.upgrade(db_url)
    db.upgrade(db_url)  # idempotent
    engine = db.make_engine(db_url)
    try:
        assert db.current_revision(engine) == "0010"
        with engine.connect() as conn:
            diff = compare_metadata(MigrationContext.configure(conn), Base.metadata)
        assert diff == []
    finally:
        engine.dispose()


def test_the_routing_file_answers_once_per_message():
    from datetime import UTC, datetime

    cfg = RoutingConfig.load()
    labels = {"issue_type": ["refund_return"], "sentiment": ["negative"], "urgency": ["high"]}
    received = datetime(2026, 11, 20, 18, 0, tzinfo=UTC)
    facts = {"channel": "email", "needs_review": False, "rule": [], "stars": None}
    d = cfg.decide(labels, facts, received, "amazon.com", earlier_contacts=1)
    assert (d.queue, d.sla_hours, d.points) == ("returns", 24, 24 + 6 + 6)
    assert d.sla_due_at == deadline(received, 24) and not d.no_response_needed
    assert (d.sla_due_at - d.rank_at).total_seconds() == d.points * 3600
    assert cfg.decide(labels, facts, received, sla_hours=2).sla_hours == 2


def test_default_routing_file_fits_the_default_taxonomy():
    cfg = RoutingConfig.load()
    cfg.validate(Taxonomy.default(), CHANNELS)
    assert cfg.sla_hours("email", "amazon.com") == 24
    assert cfg.sla_hours("chat", None) == 4 and cfg.sla_hours("review", None) == 72
    labels = {"issue_type": ["refund_return"], "sentiment": ["negative"], "urgency": ["high"]}
    assert cfg.route(labels, {"channel": "email", "needs_review": False}) == "returns"
    assert cfg.route(labels, {"channel": "review", "needs_review": True}) == "reviews"
    assert cfg.route(labels, {"channel": "chat", "needs_review": True}) == "triage"
    assert cfg.points(labels, earlier_contacts=9) == 24 + 6 + 6 * 4
    # a review the model calls positive needs no answer only with three to five stars
    happy = {"issue_type": ["praise"], "sentiment": ["positive"], "urgency": ["low"]}
    facts = {"channel": "review", "needs_review": False}
    assert cfg.no_response_needed(happy, {**facts, "stars": 4})
    assert not cfg.no_response_needed(happy, {**facts, "stars": 2})
    assert not cfg.no_response_needed(happy, {**facts, "stars": None})


def _cfg(**patch):
    base = {
        "queues": {"a": "", "b": ""},
        "default_queue": "a",
        "routes": [{"when": {"issue_type": ["refund_return"]}, "queue": "b"}],
    }
    base.update(patch)
    return RoutingConfig.from_dict(base, source="routing.yaml")


@pytest.mark.parametrize(
    "patch,needle",
    [
        ({"default_queue": "zzz"}, "default_queue 'zzz'"),
        ({"routes": [{"when": {"issue_type": ["x"]}, "queue": "nope"}]}, "unknown queue 'nope'"),
        ({"routes": [{"when": {"issue_type": ["teleport"]}, "queue": "b"}]}, "teleport"),
        ({"routes": [{"when": {"mood": ["sad"]}, "queue": "b"}]}, "unknown task 'mood'"),
        ({"routes": [{"when": {"channel": ["fax"]}, "queue": "b"}]}, "unknown channel 'fax'"),
        ({"rules": [{"name": "r", "patterns": {"en": ["x"]}}]}, "the rules file"),
        ({"routes": [{"when": {"rule": ["nope"]}, "queue": "b"}]}, "unknown rule 'nope'"),
        ({"sla": {"default_hours": -1}}, "hours must be positive"),
        ({"routes": [{"when": {"stars": [0, 1]}, "queue": "b"}]}, "ratings 1 to 5"),
        ({"no_response_needed": [{"when": {"stars": ["5"]}}]}, "ratings 1 to 5"),
    ],
)
def test_bad_routing_files_are_refused_with_the_reason(patch, needle):
    with pytest.raises(RoutingError) as info:
        _cfg(**patch).validate(Taxonomy.default(), CHANNELS, ["safety"])
    assert needle in str(info.value) and "routing.yaml" in str(info.value)


def test_a_bad_routing_file_stops_the_app(tmp_path, tiny_model_dir):
    from serving.app import create_app
    from serving.settings import Settings

    bad = tmp_path / "routing.yaml"
    bad.write_text("queues: {a: x}\ndefault_queue: b\n")
    with pytest.raises(RoutingError, match="default_queue 'b'"):
        create_app(Settings(model_dir=tiny_model_dir, routing_file=bad, database_url="sqlite://"))


def test_deadline_is_calendar_hours():
    friday = datetime(2026, 11, 20, 18, 0, tzinfo=UTC)
    assert deadline(friday, 24) == datetime(2026, 11, 21, 18, 0, tzinfo=UTC)
    assert deadline(friday, 72) == datetime(2026, 11, 23, 18, 0, tzinfo=UTC)


def test_language_order_ids_and_quotes():
    assert detect_language("The box was crushed") == "en"
    assert detect_language("快递太慢了") == "zh"
    assert detect_language("iPhone 充电器坏了") == "zh"
    assert detect_language("12345 !!!") == "und"
    assert find_order_id("Re: order 112-1234567-7654321") == "112-1234567-7654321"
    assert find_order_id("订单号：A12345678") == "A12345678"
    assert find_order_id("no order here") is None
    text = "Thanks!\n\n在 2026年11月20日，卖家 写道：\n> 已发货"
    assert strip_quotes_and_signature(text) == "Thanks!"


def test_critical_and_high_urgency_shorten_any_channels_deadline():
    cfg = RoutingConfig.load()
    received = datetime(2026, 11, 20, 18, 0, tzinfo=UTC)
    facts = {"channel": "review", "needs_review": False, "rule": ["safety"], "stars": 1}

    def hours(urgency, channel="review"):
        labels = {"issue_type": ["safety_hazard"], "sentiment": ["negative"], "urgency": [urgency]}
        return cfg.decide(labels, {**facts, "channel": channel}, received).sla_hours

    assert (hours("low"), hours("medium"), hours("high"), hours("critical")) == (72, 72, 24, 4)
    assert hours("critical", "chat") == 4 and hours("high", "chat") == 4
    with pytest.raises(RoutingError, match="urgency_hours"):
        RoutingConfig.from_dict(
            {"queues": {"g": ""}, "default_queue": "g", "sla": {"urgency_hours": {"high": 0}}}
        )
