"""The execution engine on a real Redis, without Ray: concurrency, the event loop, commits as they
come in, time limits, cancels, lost leases, handler-driven retries and the kinds' defaults.

Handlers here are registered under unique kind names per test, so tests never share a kind.
Concurrency is observed, not timed: each handler counts how many run at once.
"""

from __future__ import annotations

import asyncio
import threading
import time
import uuid
from collections.abc import Callable, Iterator
from typing import Any

import pytest

import raysys
from raysys.execution import TaskRunner
from raysys.handlers import TaskContext
from raysys.models import Lease, TaskSpec, TaskState
from raysys.store import TaskStore
from tests.support.polling import wait_until

pytestmark = [pytest.mark.unit, pytest.mark.timeout(60)]
HOLDER = "runner-test"


class Peak:
    """Counts handlers running at once; ``release`` lets the blocked ones finish."""

    def __init__(self) -> None:
        self.now = 0
        self.peak = 0
        self.started = 0
        self.lock = threading.Lock()
        self.gate = threading.Event()

    def enter(self) -> None:
        with self.lock:
            self.now += 1
            self.started += 1
            self.peak = max(self.peak, self.now)

    def leave(self) -> None:
        with self.lock:
            self.now -= 1


def kind(prefix: str) -> str:
    return f"{prefix}-{uuid.uuid4().hex[:8]}"


@pytest.fixture
def runner_for(store: TaskStore) -> Iterator[Callable[..., TaskRunner]]:
    made: list[TaskRunner] = []

    def make(**options: Any) -> TaskRunner:
        options.setdefault("ttl_s", 10.0)
        runner = TaskRunner(store, HOLDER, **options)
        made.append(runner)
        return runner

    yield make
    for runner in made:
        runner.close()


def submit_and_lease(store: TaskStore, kind_name: str, n: int, **fields: Any) -> list[Lease]:
    store.submit_many([TaskSpec.build(kind=kind_name, payload=i, **fields) for i in range(n)])
    return store.acquire(HOLDER, n, ttl_s=10.0)


def states(store: TaskStore, leases: list[Lease]) -> list[TaskState]:
    return [store.status(lease.task_id).state for lease in leases]


# ---- concurrency ----------------------------------------------------------------------------
def test_a_worker_runs_up_to_its_concurrency_at_once(store: TaskStore, runner_for: Any) -> None:
    # given a blocking plain handler and a runner with 16 slots
    peak, name = Peak(), kind("block")

    @raysys.task(name)
    def block(payload: Any, ctx: TaskContext) -> int:
        peak.enter()
        peak.gate.wait(10)
        peak.leave()
        return int(payload)

    runner = runner_for(concurrency=16)
    leases = submit_and_lease(store, name, 40)
    # when 40 leases are handed to it
    runner.submit(leases)
    wait_until(lambda: peak.started == 16, 10, "16 handlers running")
    # then exactly 16 run at once and the rest wait; released, all 40 succeed
    time.sleep(0.2)
    assert peak.peak == 16 and runner.load()["queued"] == 24
    peak.gate.set()
    wait_until(lambda: runner.idle(), 20, "all 40 done")
    assert set(states(store, leases)) == {TaskState.SUCCEEDED}
    assert [store.status(lease.task_id).result for lease in leases] == list(range(40))


def test_a_kind_with_its_own_concurrency_runs_at_most_that_many(store: TaskStore,
                                                                 runner_for: Any) -> None:
    peak, name = Peak(), kind("capped")

    @raysys.task(name, concurrency=3)
    def capped(payload: Any, ctx: TaskContext) -> None:
        peak.enter()
        time.sleep(0.05)
        peak.leave()

    runner = runner_for(concurrency=16)
    leases = submit_and_lease(store, name, 12)
    runner.submit(leases)
    wait_until(lambda: runner.idle(), 20, "12 done")
    assert peak.peak == 3 and peak.started == 12
    assert set(states(store, leases)) == {TaskState.SUCCEEDED}


def test_async_handlers_run_together_on_the_event_loop(store: TaskStore,
                                                       runner_for: Any) -> None:
    # given an async handler that awaits a shared gate
    peak, name = Peak(), kind("aio")
    loops: set[int] = set()

    @raysys.task(name)
    async def aio(payload: Any, ctx: TaskContext) -> int:
        peak.enter()
        loops.add(id(asyncio.get_running_loop()))
        while not peak.gate.is_set():
            await asyncio.sleep(0.01)
        peak.leave()
        return int(payload) * 2

    runner = runner_for(concurrency=64)
    leases = submit_and_lease(store, name, 50)
    runner.submit(leases)
    # then all 50 are awaiting at once, on one event loop, without 50 threads
    wait_until(lambda: peak.started == 50, 10, "50 coroutines started")
    assert peak.peak == 50 and len(loops) == 1
    peak.gate.set()
    wait_until(lambda: runner.idle(), 20, "50 done")
    assert [store.status(lease.task_id).result for lease in leases] == [2 * i for i in range(50)]


def test_outcomes_are_committed_as_they_come_in(store: TaskStore, runner_for: Any) -> None:
    # given one slow task and ten fast ones in the same hand-out
    slow_gate, slow, fast = threading.Event(), kind("slow"), kind("fast")

    @raysys.task(slow)
    def slow_fn(payload: Any, ctx: TaskContext) -> None:
        slow_gate.wait(10)

    @raysys.task(fast)
    def fast_fn(payload: Any, ctx: TaskContext) -> None:
        return None

    runner = runner_for(concurrency=16)
    slow_lease = submit_and_lease(store, slow, 1)
    fast_leases = submit_and_lease(store, fast, 10)
    runner.submit(slow_lease + fast_leases)
    # then the fast ones are committed while the slow one still runs
    wait_until(lambda: set(states(store, fast_leases)) == {TaskState.SUCCEEDED}, 10,
               "fast tasks committed")
    assert states(store, slow_lease) == [TaskState.LEASED]
    slow_gate.set()
    wait_until(lambda: states(store, slow_lease) == [TaskState.SUCCEEDED], 10, "slow committed")


# ---- time limits ----------------------------------------------------------------------------
def test_a_plain_handler_past_its_limit_fails_is_told_and_leaves_a_stuck_slot(
        store: TaskStore, runner_for: Any) -> None:
    # given a handler that ignores its cancel signal for a while, limited to 0.3 s
    release, seen, name = threading.Event(), [], kind("hang")

    @raysys.task(name, timeout_s=0.3, max_attempts=1)
    def hang(payload: Any, ctx: TaskContext) -> str:
        release.wait(10)
        seen.append(ctx.cancelled.reason)
        return "too late"

    runner = runner_for(concurrency=1)
    leases = submit_and_lease(store, name, 1)
    runner.submit(leases)
    # then the attempt fails as timed out, the handler is told, and its slot stays taken
    wait_until(lambda: states(store, leases) == [TaskState.DEAD], 5, "timed out")
    status = store.status(leases[0].task_id)
    assert status.error == "timed out after 0.3 s"
    load = runner.load()
    assert (load["stuck"], load["room"]) == (1, 0)  # every slot stuck: takes no work
    release.set()
    wait_until(lambda: runner.load()["stuck"] == 0, 5, "the thread came back")
    assert seen == ["timed out"]
    assert store.status(leases[0].task_id).result is None  # the late result is never committed


def test_an_async_handler_past_its_limit_is_cancelled_and_retried(store: TaskStore,
                                                                  runner_for: Any) -> None:
    cancelled, name = [], kind("aio-hang")

    @raysys.task(name, timeout_s=0.2, max_attempts=2)
    async def aio_hang(payload: Any, ctx: TaskContext) -> None:
        try:
            await asyncio.sleep(30)
        except asyncio.CancelledError:
            cancelled.append(ctx.attempt)
            raise

    runner = runner_for(concurrency=4)
    leases = submit_and_lease(store, name, 1)
    runner.submit(leases)
    wait_until(lambda: states(store, leases) == [TaskState.FAILED], 5, "first attempt failed")
    wait_until(lambda: cancelled == [1], 5, "coroutine cancelled")
    assert runner.load()["stuck"] == 0  # a coroutine is stopped, not left running


# ---- cancels and lost leases ------------------------------------------------------------------
def test_a_cancel_reaches_a_running_handler_through_the_holders_list(store: TaskStore,
                                                                     runner_for: Any) -> None:
    # given a running handler that waits on its cancel signal
    seen, name = [], kind("cancellable")

    @raysys.task(name)
    def cancellable(payload: Any, ctx: TaskContext) -> str:
        ctx.cancelled.wait(20)
        seen.append((ctx.cancelled.reason, time.monotonic()))
        return "stopped"

    runner = runner_for(concurrency=2)
    leases = submit_and_lease(store, name, 1)
    runner.submit(leases)
    wait_until(lambda: runner.load()["running"] == 1, 5, "running")
    # when the task is cancelled in the store (as the CLI does) and the holder takes its list
    asked = time.monotonic()
    assert store.cancel(leases[0].task_id) == TaskState.LEASED
    taken = store.take_cancels(HOLDER, wait_s=1.0)
    runner.cancel(taken)
    # then the handler is told at once, the task stays cancelled, and nothing is committed
    wait_until(lambda: bool(seen), 5, "handler told")
    assert taken == [leases[0].task_id] and seen[0][0] == "cancelled"
    assert seen[0][1] - asked < 1.0
    wait_until(lambda: runner.idle(), 5, "idle")
    assert store.status(leases[0].task_id).state == TaskState.CANCELLED
    assert store.stats().get("fenced_rejected", 0) == 0  # no late commit was even tried


def test_a_lost_lease_stops_its_handler_and_commits_nothing(store: TaskStore,
                                                            runner_for: Any) -> None:
    seen, name = [], kind("losing")

    @raysys.task(name)
    def losing(payload: Any, ctx: TaskContext) -> None:
        ctx.cancelled.wait(20)
        seen.append(ctx.cancelled.reason)

    runner = runner_for(concurrency=2, ttl_s=0.3)
    store.submit(TaskSpec.build(kind=name))
    leases = store.acquire(HOLDER, 1, ttl_s=0.3)
    runner.submit(leases)
    time.sleep(0.5)  # the lease expires; the reaper takes it back
    store.reap()
    # when the runner renews, the store says the lease is lost
    assert runner.renew() == 1
    wait_until(lambda: seen == ["lease lost"], 5, "handler told")
    assert store.status(leases[0].task_id).state == TaskState.PENDING


# ---- handler-driven retries and the kinds' defaults -------------------------------------------
def test_retry_with_a_delay_waits_that_long_and_fail_ends_at_once(store: TaskStore,
                                                                  runner_for: Any) -> None:
    again, never = kind("again"), kind("never")

    @raysys.task(again, max_attempts=5)
    def again_fn(payload: Any, ctx: TaskContext) -> None:
        raise raysys.Retry("later", delay_s=30)

    @raysys.task(never, max_attempts=5)
    def never_fn(payload: Any, ctx: TaskContext) -> None:
        raise raysys.Fail("this input can never work")

    runner = runner_for()
    retried, failed = submit_and_lease(store, again, 1), submit_and_lease(store, never, 1)
    runner.submit(retried + failed)
    wait_until(lambda: runner.idle(), 5, "both committed")
    assert states(store, failed) == [TaskState.DEAD]
    assert store.status(failed[0].task_id).attempts == 1
    due_ms = store.client.zscore(store.keys.delayed, retried[0].task_id)
    seconds, micros = store.client.time()
    assert due_ms is not None and due_ms - (seconds * 1000 + micros // 1000) > 25_000


def test_the_kinds_limits_are_defaults_a_submission_may_only_lower(store: TaskStore,
                                                                   runner_for: Any) -> None:
    name = kind("flaky")

    @raysys.task(name, max_attempts=2)
    def flaky(payload: Any, ctx: TaskContext) -> None:
        raise RuntimeError(f"attempt {ctx.attempt}")

    store.retry = type(store.retry)(base_s=0.001, cap_s=0.002)
    ids = store.submit_many([TaskSpec.build(kind=name),  # the kind's 2
                             TaskSpec.build(kind=name, max_attempts=1),  # lowered to 1
                             TaskSpec.build(kind=name, max_attempts=10)])  # not raised: 2
    runner = runner_for()
    deadline = time.monotonic() + 10
    while time.monotonic() < deadline and any(
            store.status(i).state != TaskState.DEAD for i in ids):
        runner.submit(store.acquire(HOLDER, 10, ttl_s=10.0))
        time.sleep(0.02)
    assert [store.status(i).attempts for i in ids] == [2, 1, 2]


def test_a_submission_lowers_the_kinds_time_limit(store: TaskStore, runner_for: Any) -> None:
    name = kind("limited")

    @raysys.task(name, timeout_s=30, max_attempts=1)
    def limited(payload: Any, ctx: TaskContext) -> float:
        ctx.cancelled.wait(5)
        return ctx.timeout_s

    runner = runner_for()
    leases = submit_and_lease(store, name, 1, timeout_s=0.2)
    runner.submit(leases)
    wait_until(lambda: states(store, leases) == [TaskState.DEAD], 5, "timed out at 0.2 s")
    assert store.status(leases[0].task_id).error == "timed out after 0.2 s"
