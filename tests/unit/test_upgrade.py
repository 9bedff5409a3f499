"""A namespace written by an earlier version (no time indexes, no completion counters) is
brought into retention and listing by the Coordinator's housekeeping, without losing queued
work to the replay window and without counters going backwards."""

from __future__ import annotations

import time

import pytest

from raysys.models import Outcome, TaskSpec
from raysys.store import TaskStore
from raysys.store import retention as retention_module
from raysys.store.records import RECORD
from raysys.store.upgrade import upgrade_step
from tests.unit.conftest import StoreFactory

pytestmark = pytest.mark.unit
WINDOW_MS = 2_000


def as_earlier_version(store: TaskStore, task_ids: list[str]) -> None:
    """Strip what this version adds: the time indexes, per-task times, completion counters."""
    k = store.keys
    for task_id in task_ids:
        store.client.hdel(k.task(task_id), "sub", "end")
    for key in store.client.scan_iter(match=k.prefix.replace("{", "\\{").replace("}", "\\}")
                                      + "ix:*"):
        store.client.delete(key)
    stats = store.client.hkeys(k.stats)
    completed = [f for f in stats if f.startswith(b"completed:")]
    if completed:
        store.client.hdel(k.stats, *completed)


def run_upgrade(store: TaskStore) -> None:
    for _ in range(100):
        upgrade_step(store, page=5)
        if store.client.hget(store.keys.upgrade, "done"):
            return
    raise AssertionError("the upgrade did not finish")


def test_an_earlier_versions_tasks_are_indexed_counted_and_kept_runnable(
        make_store: StoreFactory, monkeypatch: pytest.MonkeyPatch) -> None:
    # given: an earlier version's namespace: 3 succeeded, 1 dead, 2 queued (one queued record
    # issued long before what is now the replay window)
    monkeypatch.setattr(retention_module, "CLOCK_SKEW_MS", 0)
    store = make_store()
    store.retention_ms = WINDOW_MS
    done = store.submit_many([TaskSpec.build(kind="noop", payload=i) for i in range(4)])
    leases = store.acquire("w", 4, 30)
    store.complete("w", [(lease, Outcome(ok=lease.task_id != done[3], error="x",
                                         retryable=False)) for lease in leases])
    queued = store.submit_many([TaskSpec.build(kind="echo", payload=i) for i in range(2)])
    old = store.sealer.seal(RECORD, store.sealer.open(
        bytes(store.client.hget(store.keys.task(queued[0]), "rec")), RECORD).body,
        now=time.time() - 3600)
    store.client.hset(store.keys.task(queued[0]), "rec", old)
    as_earlier_version(store, done + queued)
    assert store.tasks().tasks == []  # invisible to listing before

    # when: housekeeping runs the upgrade to the end
    run_upgrade(store)

    # then: the counters hold the earlier completions (no drop), listing sees every task, ...
    stats = store.stats()
    assert stats["completed:succeeded"] == 3 and stats["completed:dead"] == 1
    assert {row.id for row in store.tasks(limit=50).tasks} == set(done + queued)
    assert {row.id for row in store.tasks(state="succeeded").tasks} == set(done[:3])
    # ... the old queued record was re-signed (not refused as expired) and runs ...
    leases, quarantined = store.acquire_verified("w2", 2, 30)
    assert sorted(lease.task_id for lease in leases) == sorted(queued) and quarantined == []
    # ... and the finished ones are purged one window after the upgrade
    assert store.expire().total == 0
    time.sleep(WINDOW_MS / 1000 + 0.3)
    assert store.expire().total == 4
    assert store.client.exists(*(store.keys.task(t) for t in done)) == 0


def test_a_namespace_this_version_wrote_is_done_at_once(store: TaskStore) -> None:
    store.submit_many([TaskSpec.build(kind="noop", payload=i) for i in range(3)])
    assert upgrade_step(store) == 0
    assert store.client.hget(store.keys.upgrade, "done") == b"1"
    assert store.stats().get("completed:succeeded", 0) == 0
