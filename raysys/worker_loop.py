"""The worker's core loop, free of Ray: lease a batch, verify, run, renew, commit.

The Worker actor is a thin shell around :class:`WorkerLoop`; the core-only demo runs it in
threads. Fault-tolerance contract: the loop keeps nothing that matters in memory. If it dies,
its leases expire and the reaper hands the tasks to someone else; the fence stops a late
commit from the dead holder.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass

from raysys.handlers import Executor
from raysys.ledger import CommitLedger
from raysys.models import Lease, Outcome
from raysys.store import TaskStore

log = logging.getLogger(__name__)


@dataclass
class WorkerCounters:
    batches: int = 0
    completed: int = 0
    rejected: int = 0
    inflight: int = 0


class WorkerLoop:
    """Processes leases for one holder id. ``on_start`` sees each lease as it starts."""

    def __init__(self, store: TaskStore, holder: str, *, batch: int = 100, ttl_s: float = 30.0,
                 ledger: CommitLedger | None = None, executor: Executor | None = None,
                 on_start: Callable[[Lease], None] | None = None) -> None:
        self.store = store
        self.holder = holder
        self.batch = batch
        self.ttl_s = ttl_s
        self.ledger = ledger
        self.executor = executor or Executor()
        self.on_start = on_start
        self.counters = WorkerCounters()
        self._held: dict[str, Lease] = {}
        self._held_lock = threading.Lock()

    def run_once(self) -> int:
        """Lease one batch and finish it; return how many leases it got (0: queue empty)."""
        leases, quarantined = self.store.acquire_verified(self.holder, self.batch, self.ttl_s)
        if quarantined and self.ledger is not None:
            self.ledger.record((tid, fence, "quarantined") for tid, fence in quarantined)
        if not leases:
            return 0
        self.process(leases)
        return len(leases)

    def hold(self, leases: list[Lease]) -> None:
        """Track leases granted elsewhere (a distributor) so ``renew_held`` keeps them alive."""
        with self._held_lock:
            self._held.update((lease.task_id, lease) for lease in leases)

    def process(self, leases: list[Lease]) -> None:
        """Run and commit leases held by this loop's holder (acquired here or handed over)."""
        if not leases:
            return
        self.hold(leases)
        self.counters.inflight = len(leases)
        results: list[tuple[Lease, Outcome]] = []
        starts: list[float] = []
        try:
            for lease in leases:
                if self.on_start is not None:
                    self.on_start(lease)
                starts.append(time.time())
                log.debug("%s runs task %s attempt %d fence %d kind %s", self.holder,
                          lease.task_id, lease.attempt, lease.fence, lease.kind)
                results.append((lease, self.executor.run(lease)))
            self.commit(results, starts)
        finally:
            with self._held_lock:
                for lease in leases:
                    self._held.pop(lease.task_id, None)
            self.counters.inflight = 0
        self.counters.batches += 1

    def commit(self, results: list[tuple[Lease, Outcome]],
               starts: list[float] | None = None) -> None:
        """Commit under the fences; ``starts``: each result's handler start time (wall clock).

        With a ledger, its intents go on the commit's own round trip, ahead of it: a crash
        between the store's ack and the ledger entry is then recoverable.
        """
        ledger = self.ledger
        if ledger is None:
            accepted = self.store.complete(self.holder, results)
        else:
            when = starts or [time.time()] * len(results)
            intents = [(lease.task_id, lease.fence, at)
                       for (lease, _), at in zip(results, when, strict=True)]
            accepted = self.store.complete(
                self.holder, results, before=lambda pipe: ledger.queue_intents(pipe, intents))
        entries = []
        for (lease, outcome), ok in zip(results, accepted, strict=True):
            if not ok:
                self.counters.rejected += 1
                log.warning("commit of task %s under fence %d rejected (lease lost)",
                            lease.task_id, lease.fence)
                continue
            self.counters.completed += 1
            final = _final_state(lease, outcome)
            log.debug("%s committed task %s fence %d -> %s", self.holder, lease.task_id,
                      lease.fence, final or "failed (will retry)")
            if final is not None:
                entries.append((lease.task_id, lease.fence, final))
        if self.ledger is not None and entries:
            self.ledger.record(entries)

    def renew_held(self) -> int:
        """Renew every lease this loop holds; return how many were lost."""
        with self._held_lock:
            held = [(lease.task_id, lease.fence) for lease in self._held.values()]
        if not held:
            return 0
        result = self.store.renew(self.holder, held, self.ttl_s)
        return sum(1 for deadline in result.values() if deadline == 0)

    def forget(self, task_ids: list[str]) -> None:
        """Stop renewing these leases (handed back or given up)."""
        with self._held_lock:
            for task_id in task_ids:
                self._held.pop(task_id, None)

    def held(self) -> list[Lease]:
        with self._held_lock:
            return list(self._held.values())


def _final_state(lease: Lease, outcome: Outcome) -> str | None:
    if outcome.ok:
        return "succeeded"
    if not outcome.retryable or lease.attempt >= lease.max_attempts:
        return "dead"
    return None
