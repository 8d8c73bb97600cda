"""``claim_next`` under the routes: on PostgreSQL one statement (row lock with SKIP
LOCKED, update, event rows), on SQLite the ORM steps; both must leave the same rows."""

from __future__ import annotations

import threading
from datetime import UTC, datetime, timedelta

import pytest
from sqlalchemy import select, text

from serving import db
from serving.store import Message, Ticket, TicketEvent
from serving.tickets import claim_next

NOW = datetime(2026, 11, 20, 18, 0, tzinfo=UTC)
LEASE = 900


@pytest.fixture
def store(db_url):
    db.upgrade(db_url)
    engine = db.make_engine(db_url)
    yield engine, db.session_factory(engine)
    engine.dispose()


def _seed(sessions, rows: list[tuple[str, str, float]]) -> list[int]:
    """(queue, state, rank hours from NOW) -> ticket ids, in the order given."""
    with db.transaction(sessions) as s:
        tickets = []
        for i, (queue, state, hours) in enumerate(rows):
            msg = Message(
                channel="email", text=f"message {i}", lang="en", received_at=NOW, created_at=NOW
            )
            rank = NOW + timedelta(hours=hours)
            t = Ticket(
                message=msg,
                queue=queue,
                state=state,
                labels={},
                rule_hits=[],
                base_priority=0.0,
                rank_at=rank,
                sla_hours=24.0,
                sla_due_at=rank,
                created_at=NOW,
                updated_at=NOW,
            )
            s.add(t)
            tickets.append(t)
        s.flush()
        return [t.id for t in tickets]


def _claim(engine, sessions, queue: str, actor: str, now: datetime) -> Ticket | None:
    with db.transaction(sessions) as s:
        ticket = claim_next(s, queue, actor, now, LEASE, skip_locked=db.is_postgres(engine))
        if ticket is not None:
            assert ticket.message.text.startswith("message ")  # loaded with the ticket
        return ticket


def _events(sessions, ticket_id: int) -> list[tuple]:
    with sessions() as s:
        rows = s.scalars(
            select(TicketEvent).where(TicketEvent.ticket_id == ticket_id).order_by(TicketEvent.id)
        )
        return [(e.kind, e.actor, e.at, e.note) for e in rows]


def test_claims_follow_rank_order_and_expired_leases_are_reclaimed_with_their_event(store):
    engine, sessions = store
    first, tie_a, tie_b, late, other_queue, resolved = _seed(
        sessions,
        [
            ("q", "open", -5),
            ("q", "open", 1),
            ("q", "open", 1),  # same rank: the older id goes first
            ("q", "open", 9),
            ("other", "open", -50),
            ("q", "resolved", -90),
        ],
    )
    got = _claim(engine, sessions, "q", "alice", NOW)
    assert got.id == first and got.state == "claimed" and got.claimed_by == "alice"
    assert got.lease_expires_at == NOW + timedelta(seconds=LEASE) and got.updated_at == NOW
    assert [_claim(engine, sessions, "q", "bob", NOW).id for _ in range(2)] == [tie_a, tie_b]
    assert _events(sessions, first) == [("claimed", "alice", NOW, None)]

    # alice's lease runs out: her ticket ranks first again, and carol's claim records it
    later = NOW + timedelta(seconds=LEASE + 1)
    again = _claim(engine, sessions, "q", "carol", later)
    assert again.id == first and again.claimed_by == "carol" and again.updated_at == later
    assert again.lease_expires_at == later + timedelta(seconds=LEASE)
    assert _events(sessions, first) == [
        ("claimed", "alice", NOW, None),
        ("lease_expired", "alice", later, None),
        ("claimed", "carol", later, None),
    ]
    # bob's two leases ran out too (claimed at NOW), so they come before the later ticket
    assert [_claim(engine, sessions, "q", "dan", later).id for _ in range(3)] == [
        tie_a,
        tie_b,
        late,
    ]
    assert _claim(engine, sessions, "q", "dan", later) is None  # resolved never comes back
    with sessions() as s:
        assert s.get(Ticket, other_queue).state == "open"
        assert s.get(Ticket, resolved).state == "resolved"
        assert s.scalar(select(Ticket.claimed_by).where(Ticket.id == late)) == "dan"


@pytest.mark.postgres
def test_an_uncommitted_claim_is_skipped_not_waited_for(pg_url):
    db.upgrade(pg_url)
    engine = db.make_engine(pg_url)
    sessions = db.session_factory(engine)
    holder = sessions()
    try:
        first, second = _seed(sessions, [("q", "open", 0), ("q", "open", 1)])
        holder.begin()
        assert claim_next(holder, "q", "alice", NOW, LEASE, skip_locked=True).id == first
        # alice's transaction is still open: bob passes over her row at once
        with db.transaction(sessions) as s:
            s.execute(text("SET LOCAL lock_timeout = '2s'"))
            assert claim_next(s, "q", "bob", NOW, LEASE, skip_locked=True).id == second
        holder.rollback()  # alice's claim never happened: the ticket is back, no event
        assert _events(sessions, first) == []
        assert _claim(engine, sessions, "q", "carol", NOW).id == first
        assert _claim(engine, sessions, "q", "carol", NOW) is None
    finally:
        holder.close()  # a failure above must not leave alice's row lock behind
        engine.dispose()


@pytest.mark.postgres
def test_concurrent_claimers_never_get_the_same_ticket(pg_url):
    db.upgrade(pg_url)
    engine = db.make_engine(pg_url, pool_size=8)
    sessions = db.session_factory(engine)
    n = 120
    try:
        ids = _seed(sessions, [("q", "open", i % 7) for i in range(n)])
        got: list[tuple[str, int]] = []
        errors: list[BaseException] = []
        lock = threading.Lock()
        start = threading.Barrier(8)

        def agent(name: str) -> None:
            try:
                start.wait()
                while (t := _claim(engine, sessions, "q", name, NOW)) is not None:
                    with lock:
                        got.append((name, t.id))
            except BaseException as exc:  # surfaced below
                errors.append(exc)

        threads = [threading.Thread(target=agent, args=(f"a{i}",)) for i in range(8)]
        for t in threads:
            t.start()
        for t in threads:
            t.join()
        assert not errors
        assert sorted(i for _, i in got) == sorted(ids)  # each ticket once, none missed
        with sessions() as s:
            rows = s.execute(
                select(TicketEvent.ticket_id, TicketEvent.actor).where(
                    TicketEvent.kind == "claimed"
                )
            ).all()
            holders = dict(s.execute(select(Ticket.id, Ticket.claimed_by)).all())
        assert sorted((a, i) for i, a in rows) == sorted(got)  # one event per claim, by its holder
        assert all(holders[i] == a for a, i in got)
    finally:
        engine.dispose()


@pytest.mark.postgres
def test_the_asynchronous_commit_stays_with_the_claim(pg_url):
    """The claim's SET LOCAL ends with its transaction: the next transaction on the same
    pooled connection commits synchronously again."""
    db.upgrade(pg_url)
    engine = db.make_engine(pg_url, pool_size=1, max_overflow=0)
    sessions = db.session_factory(engine)
    try:
        _seed(sessions, [("q", "open", 0)])
        with db.transaction(sessions) as s:
            server_default = s.scalar(text("SHOW synchronous_commit"))
        with db.transaction(sessions) as s:
            assert claim_next(s, "q", "alice", NOW, LEASE, skip_locked=True) is not None
            assert s.scalar(text("SHOW synchronous_commit")) == "off"
        with db.transaction(sessions) as s:
            assert s.scalar(text("SHOW synchronous_commit")) == server_default
    finally:
        engine.dispose()
