"""The worker's loop without Ray or actors: lease a batch, run it, commit, repeat.

A :class:`WorkerLoop` acquires leases for its own holder id and runs them through a
:class:`~raysys.execution.TaskRunner` (the same engine the Worker actor uses: concurrency,
deadlines, cancels, commits as outcomes come in). The core-only quickstart and the unit tests
drive it; the Worker actor gets its leases from the Distributor instead.

Fault-tolerance contract: the loop keeps nothing that matters in memory. If it dies, its leases
expire and the reaper hands the tasks to someone else; the fence stops a late commit from the
dead holder.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Sequence

from raysys.execution import Committer, Finished, TaskRunner
from raysys.execution.runner import DEFAULT_CONCURRENCY
from raysys.ledger import CommitLedger
from raysys.models import Lease, Outcome
from raysys.store import TaskStore

log = logging.getLogger(__name__)


class WorkerLoop:
    """Leases batches of up to ``batch`` for ``holder`` and runs them (``concurrency`` at
    once)."""

    def __init__(self, store: TaskStore, holder: str, *, batch: int = 100, ttl_s: float = 30.0,
                 ledger: CommitLedger | None = None,
                 concurrency: int = DEFAULT_CONCURRENCY) -> None:
        self.store = store
        self.holder = holder
        self.batch = batch
        self.ttl_s = ttl_s
        self.ledger = ledger
        self.runner = TaskRunner(store, holder, concurrency=concurrency, ttl_s=ttl_s,
                                 ledger=ledger)

    def run_once(self, timeout_s: float | None = None) -> int:
        """Lease one batch and finish it (committed); how many leases it got (0: none due)."""
        leases, quarantined = self.store.acquire_verified(self.holder, self.batch, self.ttl_s)
        if quarantined and self.ledger is not None:
            self.ledger.record((tid, fence, "quarantined") for tid, fence in quarantined)
        if leases:
            self.process(leases, timeout_s)
        return len(leases)

    def process(self, leases: Sequence[Lease], timeout_s: float | None = None) -> None:
        """Run leases this holder holds and wait until every outcome is committed (renewing
        them meanwhile)."""
        self.runner.submit(leases)
        deadline = None if timeout_s is None else time.monotonic() + timeout_s
        renew_at = time.monotonic() + self.ttl_s / 3
        while not self.runner.wait_idle(min(0.5, self.ttl_s / 6)):
            if time.monotonic() >= renew_at:
                self.runner.renew()
                renew_at = time.monotonic() + self.ttl_s / 3
            if deadline is not None and time.monotonic() > deadline:
                raise TimeoutError(f"{len(leases)} leases not finished within {timeout_s} s")

    def commit(self, results: Sequence[tuple[Lease, Outcome]],
               starts: Sequence[float] | None = None) -> list[bool]:
        """Commit outcomes now, under their fences (tests, tools); True where accepted.
        ``starts``: each handler's start, wall clock (the ledger's intents)."""
        when = list(starts) if starts is not None else [time.time()] * len(results)
        committer = Committer(self.store, self.holder, ledger=self.ledger)
        return committer.commit([Finished(lease, outcome, at)
                                 for (lease, outcome), at in zip(results, when, strict=True)])

    def close(self) -> None:
        self.runner.close()
