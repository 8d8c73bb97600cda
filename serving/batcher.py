"""The micro-batcher: one worker thread per process runs every prediction.

Requests put a job (their texts) on a bounded queue and wait on a future; the worker
takes the first job, keeps gathering jobs until ``max_batch_size`` texts are waiting
or ``max_wait_ms`` has passed since that first job arrived, runs one
``Predictor.predict`` over all of them and hands each caller its own slice. So the
event loop never runs model code, concurrent single-message requests share one
forward pass, and the model never runs in two threads at once (which on a 2-core
machine would only make both slower).

When ``queue_size`` texts are already waiting a new job is refused at once
(``Overloaded``, which the routes turn into 503 with Retry-After) instead of letting
the queue and the latency grow without bound.

The predictor is looked up through ``get_predictor`` for every batch, never kept:
a hot reload that swaps ``Services.predictor`` takes effect from the next batch.
"""

from __future__ import annotations

import logging
import math
import threading
import time
from collections import deque
from collections.abc import Callable
from concurrent.futures import Future
from dataclasses import dataclass, field

from model.predictor import Prediction, Predictor

log = logging.getLogger(__name__)


class Overloaded(RuntimeError):
    """The queue is full; ``retry_after`` (seconds) estimates when it has room."""

    def __init__(self, message: str, retry_after: int) -> None:
        super().__init__(message)
        self.retry_after = retry_after


class Unavailable(RuntimeError):
    """No model is loaded, or the batcher is stopped."""


@dataclass
class _Job:
    texts: list[str]
    evidence: bool | None
    ratings: list[int | None]
    future: Future = field(default_factory=Future)
    enqueued: float = field(default_factory=time.perf_counter)


class MicroBatcher:
    def __init__(
        self,
        get_predictor: Callable[[], Predictor | None],
        max_batch_size: int = 32,
        max_wait_ms: float = 2.0,
        queue_size: int = 512,
    ) -> None:
        if max_batch_size < 1 or queue_size < 1 or max_wait_ms < 0:
            raise ValueError("max_batch_size and queue_size must be >= 1, max_wait_ms >= 0")
        self.get_predictor = get_predictor
        self.max_batch_size = int(max_batch_size)
        self.max_wait = float(max_wait_ms) / 1000.0
        self.queue_size = int(queue_size)
        self._jobs: deque[_Job] = deque()
        self._queued_texts = 0
        self._cond = threading.Condition()
        self._stopping = False
        self._thread: threading.Thread | None = None
        self._texts_per_s = 50.0  # running estimate, for Retry-After
        self.batches = 0  # model calls made (for tests and metrics)
        self.texts = 0

    # -- life -------------------------------------------------------------------------
    def start(self) -> MicroBatcher:
        if self._thread is None:
            self._stopping = False
            self._thread = threading.Thread(target=self._run, name="carelens-batcher", daemon=True)
            self._thread.start()
        return self

    def stop(self, timeout: float = 10.0) -> None:
        """Finish the jobs already queued, then end the worker."""
        with self._cond:
            self._stopping = True
            self._cond.notify_all()
        if self._thread is not None:
            self._thread.join(timeout)
            self._thread = None
        with self._cond:  # anything left (the worker did not finish in time)
            while self._jobs:
                job = self._jobs.popleft()
                job.future.set_exception(Unavailable("the service is shutting down"))
            self._queued_texts = 0

    @property
    def queued(self) -> int:
        """Texts waiting (not yet taken by the worker)."""
        return self._queued_texts

    # -- callers ----------------------------------------------------------------------
    def submit(
        self,
        texts: list[str],
        evidence: bool | None = None,
        ratings: list[int | None] | None = None,
    ) -> Future:
        """Queue ``texts`` (with their star ratings, None for none); the future's result
        is their predictions, in order. Raises ``Overloaded`` at once when the queue has
        no room for them."""
        texts = list(texts)
        job = _Job(texts, evidence, list(ratings) if ratings is not None else [None] * len(texts))
        if not job.texts:
            job.future.set_result([])
            return job.future
        with self._cond:
            if self._stopping or self._thread is None:
                raise Unavailable("the batcher is not running")
            if self._jobs and self._queued_texts + len(job.texts) > self.queue_size:
                wait = (self._queued_texts + len(job.texts)) / max(self._texts_per_s, 1.0)
                raise Overloaded(
                    f"{self._queued_texts} texts are waiting for the model "
                    f"(CARELENS_BATCH_QUEUE_SIZE={self.queue_size}); retry later",
                    retry_after=max(1, math.ceil(wait)),
                )
            self._jobs.append(job)
            self._queued_texts += len(job.texts)
            self._cond.notify_all()
        return job.future

    def predict(
        self,
        texts: list[str],
        evidence: bool | None = None,
        ratings: list[int | None] | None = None,
    ) -> list[Prediction]:
        """Blocking form of ``submit`` (for sync routes running in the thread pool)."""
        return self.submit(texts, evidence, ratings).result()

    # -- worker -----------------------------------------------------------------------
    def _take_batch(self) -> list[_Job] | None:
        with self._cond:
            while not self._jobs:
                if self._stopping:
                    return None
                self._cond.wait()
            first = self._jobs[0]
            deadline = first.enqueued + self.max_wait
            while self._queued_texts < self.max_batch_size and not self._stopping:
                left = deadline - time.perf_counter()
                if left <= 0:
                    break
                self._cond.wait(left)
            batch, n = [], 0
            while self._jobs and (not batch or n + len(self._jobs[0].texts) <= self.max_batch_size):
                job = self._jobs.popleft()
                n += len(job.texts)
                if job.future.set_running_or_notify_cancel():  # False: the caller left
                    batch.append(job)
            self._queued_texts -= n
            return batch

    def _run(self) -> None:
        while True:
            batch = self._take_batch()
            if batch is None:
                return
            if not batch:
                continue
            try:
                self._process(batch)
            except BaseException as exc:  # never let the worker die with callers waiting
                log.exception("micro-batcher: batch failed")
                for job in batch:
                    if not job.future.done():
                        job.future.set_exception(exc)

    def _process(self, batch: list[_Job]) -> None:
        predictor = self.get_predictor()  # afresh for every batch (hot reload)
        if predictor is None:
            for job in batch:
                job.future.set_exception(Unavailable("no model is loaded"))
            return
        by_evidence: dict[bool | None, list[_Job]] = {}
        for job in batch:
            by_evidence.setdefault(job.evidence, []).append(job)
        for evidence, jobs in by_evidence.items():
            texts = [t for job in jobs for t in job.texts]
            ratings = [r for job in jobs for r in job.ratings]
            start = time.perf_counter()
            try:
                preds = predictor.predict(texts, evidence=evidence, ratings=ratings)
            except Exception:
                # one bad text must not fail its neighbours: run each job alone
                for job in jobs:
                    try:
                        job.future.set_result(
                            predictor.predict(job.texts, evidence=evidence, ratings=job.ratings)
                        )
                    except Exception as exc:
                        job.future.set_exception(exc)
                continue
            elapsed = time.perf_counter() - start
            self.batches += 1
            self.texts += len(texts)
            if elapsed > 0:
                self._texts_per_s = 0.8 * self._texts_per_s + 0.2 * (len(texts) / elapsed)
            i = 0
            for job in jobs:
                job.future.set_result(preds[i : i + len(job.texts)])
                i += len(job.texts)
