"""Snapshots: a month's figures served at once, recounted in the background when stale."""

from __future__ import annotations

import threading
import time
from datetime import UTC, datetime, timedelta

from serving.snapshots import Snapshots


class Clock:
    def __init__(self):
        self.now = datetime(2026, 5, 1, 12, tzinfo=UTC)

    def __call__(self) -> datetime:
        return self.now


def wait_for(condition, seconds: float = 5.0) -> None:
    deadline = time.monotonic() + seconds
    while not condition():
        assert time.monotonic() < deadline, "timed out"
        time.sleep(0.01)


def test_a_stale_snapshot_is_served_at_once_and_recounted_once_in_the_background():
    clock = Clock()
    snapshots = Snapshots(60, clock)
    counts = []
    release = threading.Event()

    def count():
        counts.append(clock())
        if len(counts) > 1:
            assert release.wait(5)
        return len(counts)

    first = snapshots.get("team", count)
    assert (first.value, first.counted_at) == (1, clock.now)
    clock.now += timedelta(seconds=59)
    assert snapshots.get("team", count).value == 1 and len(counts) == 1

    clock.now += timedelta(seconds=1)  # stale: served as it is, one recount starts
    assert snapshots.get("team", count).value == 1
    assert snapshots.get("team", count).value == 1
    wait_for(lambda: len(counts) == 2)
    release.set()
    wait_for(lambda: snapshots.get("team", count).value == 2)
    assert len(counts) == 2
    assert snapshots.get("team", count).counted_at == clock.now
    # keys are apart
    assert snapshots.get("products", lambda: "p").value == "p"


def test_a_failed_recount_keeps_the_previous_figures_and_tries_again_later(caplog):
    clock = Clock()
    snapshots = Snapshots(60, clock)
    assert snapshots.get("team", lambda: "old").value == "old"
    clock.now += timedelta(minutes=5)
    tried = threading.Event()

    def broken():
        tried.set()
        raise RuntimeError("database gone")

    assert snapshots.get("team", broken).value == "old"
    assert tried.wait(5)
    wait_for(lambda: "recounting the team figures failed" in caplog.text)
    wait_for(lambda: not snapshots._recounting)
    assert snapshots.get("team", lambda: "new").value == "old"  # stale still: recounts
    wait_for(lambda: snapshots.get("team", lambda: "newer").value in ("new", "newer"))


def test_no_snapshot_is_kept_with_ttl_zero():
    clock = Clock()
    snapshots = Snapshots(0, clock)
    values = iter(range(10))
    assert [snapshots.get("team", lambda: next(values)).value for _ in range(3)] == [0, 1, 2]
