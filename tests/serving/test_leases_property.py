"""Leases under random sequences of claims, concurrent claims, releases, renewals
(a reply keeps the claim and renews its lease) and time passing (the service's clock,
``create_app(clock=...)``), by several agents over a few tickets of one queue, through
the routes on the real store (SQLite; PostgreSQL with CI=true).

A model of the leases predicts every answer:
- a claim gets the first claimable ticket in (rank, id) order, claimable meaning open
  or with an expired lease (so an expired lease goes to the next claimer), and never a
  ticket whose lease another agent still holds: no ticket is held by two agents;
- concurrent claims get distinct tickets, the first claimable ones;
- a release or reply by an agent that does not hold a live lease on the ticket is
  refused (409), and changes nothing;
and after every step the store agrees with the model on who holds what until when."""

from __future__ import annotations

import threading
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta

import pytest
from fastapi.testclient import TestClient
from hypothesis import HealthCheck, settings
from hypothesis import strategies as st
from hypothesis.stateful import (
    RuleBasedStateMachine,
    initialize,
    invariant,
    precondition,
    rule,
    run_state_machine_as_test,
)
from sqlalchemy import select, update

from serving import db
from serving.store import Message, Ticket
from tests.serving.factories import ADMIN_KEY

pytestmark = pytest.mark.slow

LEASE = 60  # seconds
QUEUE = "general"
AGENTS = ["ana", "ben", "cai"]
RANKS = [0.0, 1.0, 1.0, 5.0]  # hours after START; a tie: the older id first
START = datetime(2026, 11, 20, 18, 0, tzinfo=UTC)


@dataclass
class Lab:
    http: TestClient
    sessions: object
    clock: object
    keys: dict[str, tuple[int, str]]  # agent -> (key id, key)
    tickets: list[int]  # in claim order

    def post(self, agent: str, path: str, **kw):
        return self.http.post(path, headers={"X-API-Key": self.keys[agent][1]}, **kw)


@pytest.fixture
def lab(make_app, db_url, clock):
    with TestClient(make_app(db_url, lease_seconds=LEASE)) as tc:
        admin = {"X-API-Key": ADMIN_KEY}
        keys = {}
        for name in AGENTS:
            r = tc.post("/v1/keys", json={"name": name, "role": "agent"}, headers=admin)
            assert r.status_code == 201, r.text
            keys[name] = (r.json()["id"], r.json()["key"])
        sessions = tc.app.state.services.sessions
        with db.transaction(sessions) as s:
            rows = []
            for i, hours in enumerate(RANKS):
                msg = Message(channel="email", text=f"ticket {i}", lang="en", received_at=START)
                rank = START + timedelta(hours=hours)
                rows.append(
                    Ticket(
                        message=msg,
                        queue=QUEUE,
                        state="open",
                        labels={},
                        rule_hits=[],
                        base_priority=0.0,
                        rank_at=rank,
                        sla_hours=24.0,
                        sla_due_at=rank,
                    )
                )
            s.add_all(rows)
            s.flush()
            ids = [t.id for t in rows]
        yield Lab(http=tc, sessions=sessions, clock=clock, keys=keys, tickets=ids)


def test_leases_hold_under_random_claims_releases_renewals_and_expiry(lab):
    seen = {"expired lease claimed by another": 0, "concurrent claims": 0, "refused": 0}

    class Leases(RuleBasedStateMachine):
        @initialize()
        def reset(self):
            """Every example starts from open tickets at START (examples replay alike)."""
            with db.transaction(lab.sessions) as s:
                s.execute(
                    update(Ticket)
                    .where(Ticket.id.in_(lab.tickets))
                    .values(
                        state="open", claimed_by=None, claimed_by_key_id=None, lease_expires_at=None
                    )
                )
            lab.clock.now = START
            self.held: dict[int, tuple[str, datetime]] = {}  # ticket -> (agent, lease end)

        def holder(self, ticket: int) -> str | None:
            """The agent with a live lease on ``ticket``, or None."""
            agent, until = self.held.get(ticket, (None, None))
            return agent if agent is not None and until > lab.clock.now else None

        def claimable(self) -> list[int]:
            return [t for t in lab.tickets if self.holder(t) is None]

        def took(self, agent: str, ticket: int) -> None:
            other = self.holder(ticket)
            assert other is None, f"ticket {ticket} given to {agent} while {other} holds it"
            before = self.held.get(ticket)
            if before is not None and before[0] != agent:
                seen["expired lease claimed by another"] += 1
            self.held[ticket] = (agent, lab.clock.now + timedelta(seconds=LEASE))

        @rule(agent=st.sampled_from(AGENTS))
        def claim(self, agent):
            r = lab.post(agent, f"/v1/queues/{QUEUE}/claim")
            assert r.status_code == 200, r.text
            got = r.json()["ticket"]
            expected = self.claimable()[:1]
            assert ([got["id"]] if got else []) == expected, (agent, got, expected)
            if got:
                self.took(agent, got["id"])
                assert got["claimed_by_key_id"] == lab.keys[agent][0]

        @rule(agents=st.lists(st.sampled_from(AGENTS), min_size=2, max_size=3, unique=True))
        def claim_together(self, agents):
            barrier = threading.Barrier(len(agents))
            answers: dict[str, object] = {}

            def one(agent: str) -> None:
                barrier.wait()
                answers[agent] = lab.post(agent, f"/v1/queues/{QUEUE}/claim")

            threads = [threading.Thread(target=one, args=(a,)) for a in agents]
            for t in threads:
                t.start()
            for t in threads:
                t.join(60)
            got = {}
            for agent, r in answers.items():
                assert r.status_code == 200, r.text
                if r.json()["ticket"]:
                    got[agent] = r.json()["ticket"]["id"]
            assert len(answers) == len(agents)
            assert len(set(got.values())) == len(got), f"one ticket to two agents: {got}"
            expected = self.claimable()[: len(agents)]
            assert sorted(got.values()) == sorted(expected), (got, expected)
            for agent, ticket in got.items():
                self.took(agent, ticket)
            seen["concurrent claims"] += 1

        @rule(agent=st.sampled_from(AGENTS), i=st.integers(0, len(RANKS) - 1))
        def release(self, agent, i):
            ticket = lab.tickets[i]
            r = lab.post(agent, f"/v1/tickets/{ticket}/release")
            if self.holder(ticket) == agent:
                assert r.status_code == 200, r.text
                self.held.pop(ticket)
            else:
                assert r.status_code == 409, (agent, ticket, self.holder(ticket), r.text)
                seen["refused"] += 1

        @rule(agent=st.sampled_from(AGENTS), i=st.integers(0, len(RANKS) - 1))
        def renew(self, agent, i):
            """A reply keeps the claim and renews the lease; on a ticket nobody holds
            it claims it; on another agent's live claim it is refused."""
            ticket = lab.tickets[i]
            r = lab.post(agent, f"/v1/tickets/{ticket}/reply", json={"text": "on it"})
            other = self.holder(ticket)
            if other is not None and other != agent:
                assert r.status_code == 409, (agent, ticket, other, r.text)
                seen["refused"] += 1
                return
            assert r.status_code == 200, r.text
            if other is None:
                self.took(agent, ticket)
            else:
                self.held[ticket] = (agent, lab.clock.now + timedelta(seconds=LEASE))
            assert r.json()["lease_expires_at"].startswith(self.held[ticket][1].isoformat()[:19])

        @precondition(lambda self: self.held)
        @rule(seconds=st.sampled_from([1, LEASE // 2, LEASE - 1, LEASE, LEASE + 1, 3 * LEASE]))
        def advance(self, seconds):
            lab.clock.advance(seconds=seconds)

        @invariant()
        def store_agrees(self):
            now = lab.clock.now
            with lab.sessions() as s:
                rows = s.execute(
                    select(
                        Ticket.id, Ticket.state, Ticket.claimed_by_key_id, Ticket.lease_expires_at
                    ).where(Ticket.id.in_(lab.tickets))
                ).all()
            for ticket, state, key_id, until in rows:
                live = state == "claimed" and until is not None and until > now
                agent = self.holder(ticket)
                if agent is None:
                    assert not live, (ticket, state, key_id, until, now)
                else:
                    assert live and key_id == lab.keys[agent][0], (ticket, agent, key_id, until)
                    assert until == self.held[ticket][1]

    run_state_machine_as_test(
        Leases,
        settings=settings(
            max_examples=25,
            stateful_step_count=20,
            deadline=None,
            database=None,  # no .hypothesis folder in the working tree
            derandomize=True,  # the same sequences in every run (CI reproduces a failure)
            suppress_health_check=[HealthCheck.too_slow],
        ),
    )
    assert all(seen.values()), seen  # every property was put to the test
