"""Figures that take a while to count, kept a short time so that the pages showing them
render at once.

The console's products and team pages show a month of figures (every product's issue
mix and spike tests, every agent's response times): with a few thousand messages a
week that is tens of thousands of rows to count. A ``Snapshots`` keeps each figure set
(by key) with the time it was counted, computed by the same functions the API runs:

- the first request for a key counts it in the request;
- a snapshot younger than ``ttl`` seconds is served as it is;
- an older one is still served at once, and one background thread counts it again
  (stale-while-revalidate); a failed recount keeps the old snapshot and is logged;
- ``ttl`` 0 counts every request (no snapshot is kept).

Pages say when their figures were counted. Each process keeps its own snapshots.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime
from typing import Any

log = logging.getLogger("carelens.snapshots")


@dataclass(frozen=True)
class Snapshot:
    value: Any
    counted_at: datetime  # the service's clock when the count started


class Snapshots:
    def __init__(self, ttl: float, clock: Callable[[], datetime]):
        self.ttl = ttl
        self.clock = clock
        self._kept: dict[str, Snapshot] = {}
        self._recounting: set[str] = set()
        self._lock = threading.Lock()

    def get(self, key: str, count: Callable[[], Any]) -> Snapshot:
        """The snapshot of ``key``, counting it with ``count`` when there is none (see
        the module docstring for when a stale one is recounted)."""
        if self.ttl <= 0:
            return self._count(count)
        with self._lock:
            kept = self._kept.get(key)
            stale = (
                kept is not None and (self.clock() - kept.counted_at).total_seconds() >= self.ttl
            )
            if stale and key not in self._recounting:
                self._recounting.add(key)
                threading.Thread(
                    target=self._recount, args=(key, count), name=f"snapshot-{key}", daemon=True
                ).start()
        if kept is not None:
            return kept
        fresh = self._count(count)
        with self._lock:
            self._kept[key] = fresh
        return fresh

    def _count(self, count: Callable[[], Any]) -> Snapshot:
        started = self.clock()
        return Snapshot(count(), started)

    def _recount(self, key: str, count: Callable[[], Any]) -> None:
        try:
            fresh = self._count(count)
        except Exception:
            log.exception("recounting the %s figures failed; the previous ones stay", key)
            fresh = None
        with self._lock:
            if fresh is not None:
                self._kept[key] = fresh
            self._recounting.discard(key)
