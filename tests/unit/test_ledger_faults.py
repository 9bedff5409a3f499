"""The commit ledger catches a faulty store: a test that proves the demo's figures can fail.

``lost`` and ``duplicate_commits`` come from the ledger, not from the store's counters
(DESIGN.md, "Public surface"). Here the store's own Lua scripts are replaced by faulty copies
(the fence check skipped; a submitted task silently dropped), the same workload runs through the
real worker loop on a real Redis, and the ledger must report the fault as a non-zero figure,
while the real scripts give zero.
"""

from __future__ import annotations

import time
from collections.abc import Callable

import pytest

from raysys.ledger import CommitLedger
from raysys.models import Outcome, TaskSpec
from raysys.store import TaskStore
from raysys.store.lua import script_source
from raysys.worker_loop import WorkerLoop

pytestmark = pytest.mark.unit
StoreFactory = Callable[..., TaskStore]  # the make_store fixture of tests/unit/conftest.py
TTL_S = 0.2


def fence_check_skipped() -> dict[str, str]:
    """complete.lua that accepts a commit whatever its fence (the bug fences exist to stop)."""
    source = script_source("complete")
    guard = 'elseif h[1] ~= "leased" or h[2] ~= fence or h[3] then'
    assert guard in source, "complete.lua changed: update the fault injection"
    return {"complete": source.replace(guard, "elseif false then")}


def last_task_dropped() -> dict[str, str]:
    """submit.lua that acknowledges the batch's last task without storing it."""
    source = script_source("submit")
    store_it = 'if redis.call("HSETNX", tk, "rec", rec) == 1 then'
    assert store_it in source, "submit.lua changed: update the fault injection"
    return {"submit": source.replace(store_it, "if i == n - 1 then\n      out[i + 1] = id\n"
                                                "    elseif redis.call(\"HSETNX\", tk, \"rec\", "
                                                "rec) == 1 then")}


def stale_holder_commits_late(store: TaskStore, ledger: CommitLedger) -> list[str]:
    """A holder leases a task, stalls past its TTL, another finishes it, then the first commits."""
    ids = store.submit_many([TaskSpec.build(kind="echo", payload={"n": 1})])
    slow = WorkerLoop(store, "slow-holder", batch=1, ttl_s=TTL_S, ledger=ledger)
    fast = WorkerLoop(store, "fast-holder", batch=1, ttl_s=TTL_S, ledger=ledger)
    stale, _ = store.acquire_verified("slow-holder", 1, TTL_S)
    assert [lease.task_id for lease in stale] == ids
    time.sleep(TTL_S * 2)
    store.reap()
    assert fast.run_once() == 1  # the task runs again under a newer fence and commits
    slow.process(stale)  # the stalled holder wakes up and commits under its old fence
    return ids


@pytest.mark.parametrize("faulty", [False, True], ids=["real-scripts", "fence-check-skipped"])
def test_ledger_counts_a_commit_the_fence_should_have_refused(
        make_store: StoreFactory, faulty: bool) -> None:
    # given: a store with the real complete.lua, or one that skips the fence check
    store = make_store(script_overrides=fence_check_skipped() if faulty else None)
    ledger = CommitLedger(store.client, store.namespace)

    # when: a stale holder commits after the task was re-leased and committed
    ids = stale_holder_commits_late(store, ledger)

    # then: the ledger reports the second commit only when the store let it through
    report = ledger.report(ids)
    assert report.lost == 0
    assert report.duplicate_commits == (1 if faulty else 0)
    ledger.clear()


@pytest.mark.parametrize("faulty", [False, True], ids=["real-scripts", "task-dropped"])
def test_ledger_counts_a_task_the_store_acknowledged_but_dropped(
        make_store: StoreFactory, faulty: bool) -> None:
    # given: a store with the real submit.lua, or one that drops each batch's last task
    store = make_store(script_overrides=last_task_dropped() if faulty else None)
    ledger = CommitLedger(store.client, store.namespace)

    # when: 20 tasks are submitted and a worker runs until the queue is empty
    ids = store.submit_many([TaskSpec.build(kind="noop", payload={"i": i}) for i in range(20)])
    loop = WorkerLoop(store, "worker", batch=8, ttl_s=5.0, ledger=ledger)
    while loop.run_once():
        pass

    # then: every id was acknowledged, and the ledger finds the dropped one lost
    assert len(ids) == 20
    report = ledger.report(ids)
    assert report.lost == (1 if faulty else 0)
    assert report.duplicate_commits == 0
    assert report.succeeded == 20 - report.lost
    ledger.clear()


def test_intent_rides_ahead_of_the_commit_so_a_cut_off_entry_is_recovered(
        make_store: StoreFactory) -> None:
    # given: two leased tasks, one of them re-leased to someone else (its fence is stale)
    store = make_store()
    ledger = CommitLedger(store.client, store.namespace)
    ids = store.submit_many([TaskSpec.build(kind="noop") for _ in range(2)])
    leases = store.acquire("w", 2, TTL_S)
    time.sleep(TTL_S * 2)
    store.reap()
    fresh = store.acquire("other", 2, 5.0)
    store.complete("other", [(fresh[1], Outcome(ok=True))])
    ledger.record([(fresh[1].task_id, fresh[1].fence, "succeeded")])
    current = fresh[0]

    # when: the holder of the current fence commits with its intents on the same round trip,
    # and "crashes" before writing the ledger entry
    started = time.time() - 0.5
    accepted = store.complete("other", [(current, Outcome(ok=True))],
                              before=lambda pipe: ledger.queue_intents(
                                  pipe, [(current.task_id, current.fence, started)]))
    stale = store.complete("w", [(leases[1], Outcome(ok=True))],
                           before=lambda pipe: ledger.queue_intents(
                               pipe, [(leases[1].task_id, leases[1].fence, started)]))

    # then: the commit counts once (recovered from its intent), the stale one not at all,
    # and the task's start is the earliest recorded for it
    assert accepted == [True] and stale == [False]
    report = ledger.report(ids)
    assert (report.lost, report.duplicate_commits, report.succeeded) == (0, 0, 2)
    assert report.recovered == 1
    assert ledger.starts()[current.task_id] == pytest.approx(started, abs=1e-3)
    ledger.clear()
