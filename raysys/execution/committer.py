"""Committing outcomes as they come in: batched, never waiting for the slowest task.

A :class:`Committer` thread takes every outcome queued since its last round, and what comes in
within ``LINGER_S`` of the first (at most ``batch``), and commits them in one
``TaskStore.complete`` call, under each lease's fence. With
a commit ledger, the ledger's intents ride on the same round trip, ahead of the commit, and the
final states acknowledged are recorded after it. A failed round (a Redis blip) is tried again
with the same fences (a resent commit is acknowledged once); if Redis stays away, the leases
expire and the reaper requeues them: nothing is lost.
"""

from __future__ import annotations

import logging
import queue
import threading
import time
from collections.abc import Sequence
from dataclasses import dataclass

import redis

from raysys.ledger import CommitLedger
from raysys.models import DEFAULT_MAX_ATTEMPTS, Lease, Outcome
from raysys.store import TaskStore

log = logging.getLogger(__name__)
COMMIT_BATCH = 500
# How long a round waits for more outcomes after its first one. Each round is one script call
# (and, with appendfsync always, one fsync): waiting a little turns dozens of small commits of
# fast tasks into one (measured: 675 rounds of ~60 for 40,000 no-ops without it, 81 of ~500
# with it, the commit time halved), and it never waits for a slow task, only for the clock.
LINGER_S = 0.02
RETRIES = 5
RETRY_PAUSE_S = 0.2


@dataclass(frozen=True, slots=True)
class Finished:
    """One attempt's outcome, ready to commit; ``started``: handler start, wall clock."""

    lease: Lease
    outcome: Outcome
    started: float


@dataclass
class CommitCounters:
    committed: int = 0  # commits the store acknowledged
    rejected: int = 0  # refused under a stale fence (the lease was lost)
    failed_rounds: int = 0  # rounds given up after retries (their leases expire)


class Committer:
    """Commits for one holder, in a thread of its own (:meth:`start`), or at once
    (:meth:`commit`)."""

    def __init__(self, store: TaskStore, holder: str, *, ledger: CommitLedger | None = None,
                 batch: int = COMMIT_BATCH) -> None:
        self.store = store
        self.holder = holder
        self.ledger = ledger
        self.batch = batch
        self.counters = CommitCounters()
        self._queue: queue.SimpleQueue[list[Finished] | None] = queue.SimpleQueue()
        self._thread = threading.Thread(target=self._run, name=f"{holder}-commit", daemon=True)
        self._idle = threading.Event()
        self._idle.set()
        self._pending = 0
        self._lock = threading.Lock()

    def start(self) -> None:
        self._thread.start()

    def put(self, item: Finished) -> None:
        self.put_many([item])

    def put_many(self, items: Sequence[Finished]) -> None:
        if not items:
            return
        with self._lock:
            self._pending += len(items)
            self._idle.clear()
        self._queue.put(list(items))

    def wait_idle(self, timeout: float | None = None) -> bool:
        """True once everything put so far has been committed (or given up)."""
        return self._idle.wait(timeout)

    def stop(self, timeout: float = 5.0) -> None:
        """Commit what is queued, then end the thread."""
        self._queue.put(None)
        if self._thread.is_alive():
            self._thread.join(timeout)

    def _run(self) -> None:
        while True:
            first = self._queue.get()
            items = [] if first is None else list(first)
            stopping = first is None
            until = time.monotonic() + LINGER_S
            while len(items) < self.batch and not stopping:
                try:
                    nxt = self._queue.get(timeout=max(until - time.monotonic(), 0))
                except queue.Empty:
                    break
                if nxt is None:
                    stopping = True
                    break
                items.extend(nxt)
            if items:
                self._commit_with_retries(items)
            with self._lock:
                self._pending -= len(items)
                if self._pending == 0:
                    self._idle.set()
            if stopping:
                return

    def _commit_with_retries(self, items: Sequence[Finished]) -> None:
        for attempt in range(RETRIES):
            try:
                self.commit(items)
                return
            except (redis.RedisError, OSError) as exc:
                log.warning("%s: commit of %d outcomes failed (%s); %s", self.holder,
                            len(items), exc, "retrying" if attempt + 1 < RETRIES
                            else "their leases expire and are requeued")
                time.sleep(RETRY_PAUSE_S * (attempt + 1))
        self.counters.failed_rounds += 1

    def commit(self, items: Sequence[Finished]) -> list[bool]:
        """Commit now under each lease's fence; True where the store accepted it."""
        pairs = [(item.lease, item.outcome) for item in items]
        ledger = self.ledger
        if ledger is None:
            accepted = self.store.complete(self.holder, pairs)
        else:
            intents = [(i.lease.task_id, i.lease.fence, i.started) for i in items]
            if ledger.client is self.store.client:  # one round trip: intents ahead of it
                accepted = self.store.complete(
                    self.holder, pairs, before=lambda pipe: ledger.queue_intents(pipe, intents))
            else:  # the ledger on its own Redis: its intents first, then the commit
                ledger.write_intents(intents)
                accepted = self.store.complete(self.holder, pairs)
        entries = []
        for (lease, outcome), ok in zip(pairs, accepted, strict=True):
            if not ok:
                self.counters.rejected += 1
                log.warning("commit of task %s under fence %d rejected (lease lost)",
                            lease.task_id, lease.fence)
                continue
            self.counters.committed += 1
            final = final_state(lease, outcome)
            log.debug("%s committed task %s fence %d -> %s", self.holder, lease.task_id,
                      lease.fence, final or "failed (will retry)")
            if final is not None:
                entries.append((lease.task_id, lease.fence, final))
        if ledger is not None and entries:
            ledger.record(entries)
        return accepted


def final_state(lease: Lease, outcome: Outcome) -> str | None:
    """The final state a commit of ``outcome`` makes (None: failed, will retry)."""
    if outcome.ok:
        return "succeeded"
    if not outcome.retryable or lease.attempt >= (lease.max_attempts or DEFAULT_MAX_ATTEMPTS):
        return "dead"
    return None
