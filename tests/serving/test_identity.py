"""Identity is the API key's id, not its name: names are unique among the active keys
of a role, claims belong to a key id, and every record of who did what carries it."""

from __future__ import annotations

from datetime import UTC, datetime

import pytest
from carelens_client import CarelensError
from sqlalchemy import text
from typer.testing import CliRunner

from serving import db
from serving.store import Ticket
from serving.tickets import Conflict, claim_next, close, release, reply


def _err(fn, *args, **kwargs) -> CarelensError:
    with pytest.raises(CarelensError) as info:
        fn(*args, **kwargs)
    return info.value


def _key_id(desk, name: str, role: str) -> int:
    (row,) = [
        k
        for k in desk.admin.list_keys()
        if k["name"] == name and k["role"] == role and not k["revoked_at"]
    ]
    return row["id"]


def test_a_key_name_is_unique_among_the_active_keys_of_a_role(desk):
    err = _err(desk.admin.create_key, "alice", "agent")  # the desk made an agent "alice"
    assert err.status_code == 409
    assert "an active agent key is already named 'alice'" in err.detail
    assert _err(desk.admin.create_key, "  alice ", "agent").status_code == 409  # names are trimmed
    # another role may use the name; a revoked key's name is free again
    assert desk.admin.create_key("alice", "service")["role"] == "service"
    desk.admin.revoke_key(_key_id(desk, "alice", "agent"))
    assert desk.admin.create_key("alice", "agent")["name"] == "alice"


def test_keys_create_on_the_command_line_refuses_a_taken_name(tmp_path):
    from serving.cli import app

    url = f"sqlite:///{tmp_path / 'keys.db'}"
    runner = CliRunner()
    args = ["keys", "create", "--role", "agent", "--name", "alice", "--database-url", url]
    assert runner.invoke(app, args).exit_code == 0
    again = runner.invoke(app, args)
    assert again.exit_code != 0
    assert "already named 'alice'" in again.output


def test_claims_belong_to_a_key_id_whatever_the_names(db_url):
    """Two callers with the same name and different key ids cannot act on each other's
    claim (an admin still may); the one that claimed can."""
    db.upgrade(db_url)
    engine = db.make_engine(db_url)
    sessions = db.session_factory(engine)
    now = datetime(2026, 11, 20, 18, 0, tzinfo=UTC)
    try:
        with db.transaction(sessions) as s:
            s.execute(
                text(
                    "INSERT INTO messages (channel, text, lang, received_at, created_at) "
                    "VALUES ('chat', 'hi', 'en', :now, :now)"
                ),
                {"now": now.replace(tzinfo=None)},
            )
            s.add(
                Ticket(
                    message_id=1,
                    queue="q",
                    labels={},
                    base_priority=0,
                    rank_at=now,
                    sla_hours=24,
                    sla_due_at=now,
                    created_at=now,
                    updated_at=now,
                )
            )
        with db.transaction(sessions) as s:
            ticket = claim_next(
                s, "q", "alice", now, 900, skip_locked=db.is_postgres(engine), actor_key_id=1
            )
            assert (ticket.claimed_by, ticket.claimed_by_key_id) == ("alice", 1)
        with db.transaction(sessions) as s:
            ticket = s.get(Ticket, ticket.id)
            for act in (
                lambda: reply(s, ticket, "alice", now, "hello", False, False, 900, 2),
                lambda: release(s, ticket, "alice", now, False, 2),
                lambda: close(s, ticket, "alice", now, "resolved", None, False, 2),
            ):
                with pytest.raises(Conflict, match=r"claimed by alice \(key 1\)"):
                    act()
            reply(s, ticket, "alice", now, "hello", False, False, 900, 1)  # the holder may
            assert ticket.claimed_by_key_id == 1
            release(s, ticket, "root", now, True, 3)  # an admin may
            assert ticket.claimed_by_key_id is None
    finally:
        engine.dispose()


def test_two_agents_cannot_act_on_each_others_claims(desk):
    ticket_id = desk.service.post_message(channel="chat", text="my order never arrived")[
        "ticket_id"
    ]
    queue = desk.agent.ticket(ticket_id)["queue"]
    claimed = desk.agent.claim(queue)
    alice = _key_id(desk, "alice", "agent")
    assert (claimed["claimed_by"], claimed["claimed_by_key_id"]) == ("alice", alice)
    for act in (desk.agent2.release, desk.agent2.resolve):
        err = _err(act, ticket_id)
        assert err.status_code == 409 and f"claimed by alice (key {alice})" in err.detail
    assert _err(desk.agent2.reply, ticket_id, "bob here").status_code == 409
    assert desk.agent.reply(ticket_id, "on it")["claimed_by_key_id"] == alice


def test_history_labels_reviews_and_campaign_runs_carry_the_key_id(desk):
    alice, admin = _key_id(desk, "alice", "agent"), _key_id(desk, "bootstrap-admin", "admin")
    posted = desk.service.post_message(
        channel="review", text="broken on arrival", rating=1, customer_id="C1"
    )
    ticket_id = posted["ticket_id"]
    queue = desk.agent.ticket(ticket_id)["queue"]
    assert desk.agent.claim(queue)["id"] == ticket_id
    desk.agent.reply(ticket_id, "sorry, a new one is on its way")
    desk.agent.set_labels(ticket_id, {"sentiment": "negative"})
    handled = desk.agent.mark_review_handled(posted["message_id"])
    assert handled["handled_by_key_id"] == alice
    desk.agent.opt_out("C1", source="asked in a ticket")
    timeline = desk.agent.customer("C1")["timeline"]
    acted = [e for e in timeline if e["detail"].get("actor") == "alice"]
    assert {e["kind"] for e in acted} >= {
        "ticket_claimed",
        "ticket_replied",
        "label_correction",
        "opt_out",
    }
    assert all(e["detail"]["actor_key_id"] == alice for e in acted)
    (row,) = desk.agent.agent_stats()["agents"]
    assert (row["agent"], row["key_id"]) == ("alice", alice)

    campaign = desk.admin.create_campaign(
        "thanks", "review_request", "own_email", subject="How was it?", body="Review {order_id}?"
    )
    assert campaign["created_by_key_id"] == admin
    run = desk.admin.run_campaign(campaign["id"])
    assert (run["actor"], run["actor_key_id"]) == ("bootstrap-admin", admin)
    assert desk.admin.campaign_runs(campaign["id"])[0]["actor_key_id"] == admin


def test_migration_keeps_duplicate_names_and_attributes_only_unambiguous_ones(db_url):
    """Keys that shared a name before key ids were kept: the oldest active key keeps the
    name, the others get ``<name> (key <id>)``; history rows get the key id only where
    the name belonged to one key."""
    db.upgrade(db_url, "0003")
    engine = db.make_engine(db_url)
    now = datetime(2026, 11, 20, 18, 0)
    try:
        with engine.begin() as conn:
            for i, (name, revoked) in enumerate(
                [("alice", None), ("alice", None), ("bob", None), ("carol", now), ("carol", None)]
            ):
                conn.execute(
                    text(
                        "INSERT INTO api_keys (name, role, key_hash, prefix, created_at, "
                        "revoked_at) VALUES (:name, 'agent', :hash, 'clk_', :now, :revoked)"
                    ),
                    {"name": name, "hash": f"hash{i}", "now": now, "revoked": revoked},
                )
            conn.execute(
                text(
                    "INSERT INTO messages (channel, text, lang, received_at, created_at) "
                    "VALUES ('chat', 'hi', 'en', :now, :now)"
                ),
                {"now": now},
            )
            conn.execute(
                text(
                    "INSERT INTO tickets (message_id, queue, state, labels, rule_hits, "
                    "base_priority, rank_at, sla_hours, sla_due_at, claimed_by, created_at, "
                    "updated_at) VALUES (1, 'q', 'claimed', '{}', '[]', 0, :now, 24, :now, "
                    "'bob', :now, :now)"
                ),
                {"now": now},
            )
            for actor in ("alice", "bob", "carol", None):
                conn.execute(
                    text(
                        "INSERT INTO ticket_events (ticket_id, kind, actor, at) "
                        "VALUES (1, 'replied', :actor, :now)"
                    ),
                    {"actor": actor, "now": now},
                )
        db.upgrade(db_url)
        with engine.connect() as conn:
            keys = conn.execute(
                text("SELECT id, name, revoked_at IS NULL FROM api_keys ORDER BY id")
            ).all()
            assert [(name, active) for _id, name, active in keys] == [
                ("alice", True),
                (f"alice (key {keys[1][0]})", True),
                ("bob", True),
                ("carol", False),
                ("carol", True),  # the other carol is revoked: no clash
            ]
            events = dict(conn.execute(text("SELECT actor, actor_key_id FROM ticket_events")).all())
            assert events == {"alice": None, "bob": keys[2][0], "carol": None, None: None}
            assert (
                conn.execute(text("SELECT claimed_by_key_id FROM tickets")).scalar() == keys[2][0]
            )
        with pytest.raises(Exception, match="(?i)unique"), engine.begin() as conn:
            conn.execute(
                text(
                    "INSERT INTO api_keys (name, role, key_hash, prefix, created_at) "
                    "VALUES ('bob', 'agent', 'another', 'clk_', :now)"
                ),
                {"now": now},
            )
    finally:
        engine.dispose()
