"""The chaos harness: a record of every attempt, and the invariants checked over it after a run.

Three independent sources, none of them mocked:

- the **attempt record**: :mod:`chaos_handlers` (kind ``chaos.work``) appends a ``start`` and an
  ``end`` event per attempt (task id, attempt, fence, worker, pid, time) to a Redis list on a
  server the test owns, apart from the raysys Redis the scenarios crash, pause or cut off;
- the **commit ledger** (:class:`raysys.ledger.CommitLedger`, the actors' ``ledger=True``): every
  final commit the store acknowledged, per task — ``lost`` and ``duplicate_commits``;
- the store's **audit stream**: ``fence_rejected`` (a stale holder's commit refused),
  ``lease_expired`` (the reaper took a lease back, stamped with Redis server time), ``fence_epoch``
  (fences raised on a new Redis ``run_id``).

:func:`collect` joins them into a :class:`RunRecord` whose attempts carry an outcome:
``ok`` (its result is the task's committed result), ``failed`` (it ended and its commit was
refused, or its handler failed) or ``unknown`` (no end event: killed or stopped mid-handler; or it
ended and nothing was committed or refused under its fence — its holder died before committing).
:func:`violations` checks the invariants: 0 lost, exactly one committed result per task (and it
is the result of the attempt holding the highest fence), fences unique and rising with the
attempt number, extra attempts within a bound, nothing left pending or leased.

Build payloads with :meth:`AttemptLog.specs`, run them, :func:`collect`, check
:func:`violations`, and store a :func:`chaos_row` in the results file
(:class:`tests.support.results.ResultsFile`, which :mod:`report` renders into
``docs/RELIABILITY.md``); the ``chaos_deploy`` fixture in ``tests/chaos/conftest.py`` shows the
wiring.
"""

from __future__ import annotations

import itertools
import json
import time
from collections import defaultdict
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import redis

from raysys.client import Client
from raysys.ledger import CommitLedger, LedgerReport
from raysys.models import FINAL_STATES, TaskSpec, TaskState, TaskStatus
from raysys.store.keyspace import Keyspace
from raysys.store.replies import as_text
from tests.support.polling import wait_until
from tests.support.results import environment, percentile
from tests.support.stores import AuditEvent, read_audit

HANDLER_MODULE = "tests.chaos.chaos_handlers"
KIND = "chaos.work"  # chaos_handlers.KIND
MAX_ATTEMPTS = 100  # chaos tasks must survive many faults: never dead by attempts

OK, FAILED, UNKNOWN = "ok", "failed", "unknown"


# ---- the attempt record -------------------------------------------------------------------------
@dataclass(frozen=True, slots=True)
class Attempt:
    """One run of a handler under one lease (task, fence)."""

    task_id: str
    attempt: int
    fence: int
    worker: str
    pid: int
    started: float  # wall clock, s
    ended: float | None  # None: no end event (killed or stopped mid-handler)
    outcome: str = UNKNOWN  # ok / failed / unknown
    detail: str = ""  # committed / fence_rejected / handler_failed / no_end / not_committed

    def to_json(self) -> dict[str, Any]:
        return {"task": self.task_id, "attempt": self.attempt, "fence": self.fence,
                "worker": self.worker, "pid": self.pid, "started": self.started,
                "ended": self.ended, "outcome": self.outcome, "detail": self.detail}


class AttemptLog:
    """The Redis list a run's chaos handlers append to (on a server the test owns)."""

    def __init__(self, client: redis.Redis, key: str, namespace: str) -> None:
        kwargs = client.connection_pool.connection_kwargs
        self.client = client
        self.key = key
        self.namespace = namespace
        self.address = f"{kwargs.get('host', '127.0.0.1')}:{kwargs.get('port', 6379)}"

    def payload(self, index: int, seconds: float) -> dict[str, Any]:
        return {"rec": self.address, "key": self.key, "ns": self.namespace, "i": index,
                "s": seconds}

    def specs(self, n: int, seconds: float, *, start: int = 0, priority: int = 0,
              max_attempts: int = MAX_ATTEMPTS) -> list[TaskSpec]:
        """``n`` chaos tasks that each sleep ``seconds`` and record their attempts here."""
        return [TaskSpec.build(kind=KIND, payload=self.payload(i, seconds), priority=priority,
                               max_attempts=max_attempts) for i in range(start, start + n)]

    def events(self) -> list[dict[str, Any]]:
        return [json.loads(raw) for raw in self.client.lrange(self.key, 0, -1)]

    def starts(self) -> int:
        """Attempts started so far (events are start/end pairs; counted without parsing)."""
        return sum(1 for raw in self.client.lrange(self.key, 0, -1) if b'"ev": "start"' in raw)

    def delete(self) -> None:
        self.client.delete(self.key)


def attempts_from_events(events: Iterable[dict[str, Any]]
                         ) -> tuple[list[Attempt], list[tuple[str, int]]]:
    """Join start and end events per (task, fence); outcome left ``unknown`` (see collect).

    Also returns the (task, fence) pairs that started more than once: one lease run twice.
    """
    starts: dict[tuple[str, int], dict[str, Any]] = {}
    ends: dict[tuple[str, int], dict[str, Any]] = {}
    duplicates: list[tuple[str, int]] = []
    for event in events:
        key = (str(event["task"]), int(event["fence"]))
        target = starts if event["ev"] == "start" else ends
        if key in target:
            duplicates.append(key)
        target[key] = event
    out = []
    for key, start in starts.items():
        end = ends.get(key)
        out.append(Attempt(key[0], int(start["att"]), key[1], str(start["worker"]),
                           int(start["pid"]), float(start["t"]),
                           None if end is None else float(end["t"]),
                           detail="" if end is None or end.get("ok") else "handler_failed"))
    return sorted(out, key=lambda a: a.started), duplicates


# ---- the raysys side: leases, progress ---------------------------------------------------------
def held_leases(conn: redis.Redis, namespace: str, holder: str) -> dict[str, int]:
    """Task id -> fence of every lease ``holder`` holds now (read from Redis)."""
    keys = Keyspace(namespace)
    ids = [as_text(m) for m in conn.zrange(keys.leases, 0, -1)]
    pipe = conn.pipeline(transaction=False)
    for task_id in ids:
        pipe.hmget(keys.task(task_id), "state", "holder", "fence")
    out = {}
    for task_id, (state, who, fence) in zip(ids, pipe.execute(), strict=True):
        if state == b"leased" and who is not None and as_text(who) == holder:
            out[task_id] = int(fence)
    return out


def final_count(conn: redis.Redis, namespace: str) -> int:
    """Tasks of the namespace in a final state, from the store's per-state counts."""
    counts = conn.hgetall(Keyspace(namespace).counts)
    return sum(int(counts.get(state.value.encode(), 0)) for state in FINAL_STATES)


# ---- a deployment under test ---------------------------------------------------------------
@dataclass
class Deployment:
    """One raysys deployment under test: the client, a direct Redis client, the attempt log."""

    client: Client
    conn: redis.Redis  # on the raysys Redis: progress, leases, ledger and audit
    log: AttemptLog
    data_dir: Path
    ttl_s: float
    reaper_s: float
    capacity: int
    ledger: redis.Redis | None = None  # the ledger's Redis, when apart from the raysys one

    @property
    def namespace(self) -> str:
        return self.client.namespace

    def holder(self, index: int) -> str:
        """The lease holder id of worker ``index``."""
        return f"{self.namespace}-worker-{index}"

    def pid(self, index: int) -> int:
        """Worker ``index``'s process id (waits while Ray restarts it)."""
        return actor_pid(self.client.worker(index))

    def held(self, index: int) -> dict[str, int]:
        return held_leases(self.conn, self.namespace, self.holder(index))

    def final(self) -> int:
        return final_count(self.conn, self.namespace)

    def finish(self, ids: list[str], timeout: float, **faults: Any) -> RunRecord:
        """Wait until every task is final (cheap counts), fetch the statuses once, collect.

        ``faults``: ``redis_outage``/``killed``, passed to :func:`collect`.
        """
        wait_until(lambda: self.final() >= len(ids), timeout,
                   f"all {len(ids)} tasks to be final", interval=0.2)
        return collect(self.namespace, self.conn, self.log,
                       self.client.wait(ids, timeout=60), ledger_conn=self.ledger, **faults)

    def environment(self) -> dict[str, Any]:
        """What the figures were measured on (stored with each results row)."""
        return environment(self.conn)

    def worker_logs(self, index: int) -> str:
        """Everything worker ``index`` logged, every incarnation (``<data dir>/logs``)."""
        logs = self.data_dir / "logs"
        return "".join(p.read_text(errors="replace")
                       for p in sorted(logs.glob(f"agent_system-{self.holder(index)}-*.log")))


DeployFn = Callable[..., Deployment]


def actor_pid(handle: Any, timeout: float = 60.0) -> int:
    """An actor's process id (its ``pid()`` method), waiting while Ray restarts it: calls to a
    restarting actor fail fast with ActorUnavailableError."""
    import ray
    from ray.exceptions import ActorUnavailableError

    deadline = time.monotonic() + timeout
    while True:
        try:
            return int(ray.get(handle.pid.remote(), timeout=timeout))
        except ActorUnavailableError:
            if time.monotonic() > deadline:
                raise
            time.sleep(0.1)


# ---- one run, joined ----------------------------------------------------------------------------
@dataclass
class RunRecord:
    namespace: str
    ids: list[str]
    statuses: dict[str, TaskStatus]
    attempts: list[Attempt]
    ledger: LedgerReport
    ledger_commits: dict[str, int]
    audit: list[AuditEvent]
    counts: dict[str, int]
    twice_run: list[tuple[str, int]] = field(default_factory=list)
    ledger_gaps: list[str] = field(default_factory=list)
    by_task: dict[str, list[Attempt]] = field(default_factory=dict)

    def __post_init__(self) -> None:
        grouped: dict[str, list[Attempt]] = defaultdict(list)
        for attempt in self.attempts:
            grouped[attempt.task_id].append(attempt)
        self.by_task = {t: sorted(a, key=lambda x: x.fence) for t, a in grouped.items()}

    @property
    def lost(self) -> int:
        """Accepted tasks without an acknowledged final commit (ledger gaps excepted)."""
        return self.ledger.lost - len(self.ledger_gaps)

    @property
    def executions(self) -> int:
        return len(self.attempts)

    @property
    def extra_attempts(self) -> int:
        """Handler runs beyond the first of each task."""
        return sum(len(a) - 1 for a in self.by_task.values())

    def outcomes(self) -> dict[str, int]:
        out: dict[str, int] = defaultdict(int)
        for attempt in self.attempts:
            out[attempt.outcome] += 1
        return dict(out)

    def events(self, ev: str) -> list[AuditEvent]:
        return [e for e in self.audit if e.ev == ev]

    def rejected(self) -> set[tuple[str, int]]:
        """(task, fence) of every commit the store refused under a stale fence."""
        return {(e.fields["id"], int(e.fields["fence"])) for e in self.events("fence_rejected")}


def collect(namespace: str, conn: redis.Redis, log: AttemptLog,
            statuses: Sequence[TaskStatus], *,
            redis_outage: tuple[float, float] | None = None,
            killed: dict[int, float] | None = None,
            ledger_conn: redis.Redis | None = None) -> RunRecord:
    """Join the attempt record, the ledger and the audit stream of one finished run.

    ``statuses``: ``client.wait(ids)`` (one per submitted id, in order). ``conn``: a client on
    the raysys Redis (the audit stream lives there, and the ledger unless ``ledger_conn``, a
    client on a Redis of its own, is given).

    A worker writes the ledger in a second round trip after its commit's reply, so a commit
    acknowledged just before a fault can miss its ledger entry: the worker was killed in between
    (``killed``: pid -> wall-clock time of its SIGKILL), or the raysys Redis, which holds the
    ledger too, went down (``redis_outage``: wall-clock start and end). A task missing from the
    ledger is a *ledger gap* (``RunRecord.ledger_gaps``), not lost, only when the store holds
    it succeeded under the fence of a recorded attempt (its signed completion record verified
    by ``status``) that ended within 5 s before its process was killed, or within 2 s of the
    outage. Any other missing entry is lost.
    """
    ids = [s.id for s in statuses]
    by_id = {s.id: s for s in statuses}
    ledger = CommitLedger(ledger_conn if ledger_conn is not None else conn, namespace,
                          store=conn)
    commits = ledger.commit_counts()
    audit = read_audit(conn, namespace)
    rejected = {(e.fields["id"], int(e.fields["fence"]))
                for e in audit if e.ev == "fence_rejected"}
    attempts = []
    joined, twice_run = attempts_from_events(log.events())
    for a in joined:
        status = by_id.get(a.task_id)
        committed = (status is not None and status.state == TaskState.SUCCEEDED
                     and status.fence == a.fence)
        if committed:
            outcome, detail = OK, "committed"
        elif (a.task_id, a.fence) in rejected:
            outcome, detail = FAILED, "fence_rejected"
        elif a.detail == "handler_failed":
            outcome, detail = FAILED, a.detail
        elif a.ended is None:
            outcome, detail = UNKNOWN, "no_end"
        else:
            outcome, detail = UNKNOWN, "not_committed"
        attempts.append(Attempt(a.task_id, a.attempt, a.fence, a.worker, a.pid, a.started,
                                a.ended, outcome, detail))
    report = ledger.report(ids)
    # a gap is a task the ledger counts lost (no entry, no intent that the store confirms)
    # whose committed attempt a fault could have cut off; each task once
    lost = set(report.lost_ids)
    gaps = list(dict.fromkeys(
        a.task_id for a in attempts if a.outcome == OK and a.task_id in lost
        and _ledger_write_lost(a, redis_outage, killed or {})))
    counts = {as_text(k): int(v) for k, v in conn.hgetall(Keyspace(namespace).counts).items()}
    return RunRecord(namespace, ids, by_id, attempts, report, commits, audit, counts,
                     twice_run, gaps)


def _ledger_write_lost(attempt: Attempt, outage: tuple[float, float] | None,
                       killed: dict[int, float]) -> bool:
    """Could a fault have cut this committed attempt's ledger write off (see ``collect``)?"""
    if attempt.ended is None:
        return False
    if outage is not None and outage[0] - 2.0 <= attempt.ended <= outage[1] + 2.0:
        return True
    kill = killed.get(attempt.pid)
    return kill is not None and attempt.ended <= kill <= attempt.ended + 5.0


def violations(record: RunRecord, *, extra_bound: int | None = None,
               expect: TaskState = TaskState.SUCCEEDED) -> list[str]:
    """Every invariant the run broke, one line each (empty: all hold)."""
    out: list[str] = []
    ids = set(record.ids)
    if len(ids) != len(record.ids):
        out.append(f"{len(record.ids) - len(ids)} task ids were returned twice by submit")
    # 0 lost: every accepted task has an acknowledged final commit and is final in the store
    if record.lost:
        missing = [t for t in record.ids if record.ledger_commits.get(t, 0) == 0
                   and t not in record.ledger_gaps]
        out.append(f"lost: {record.lost} accepted tasks have no acknowledged final commit in "
                   f"the ledger, e.g. {missing[:3]}")
    wrong = [(t, s.state.value) for t, s in record.statuses.items() if s.state != expect]
    if wrong:
        out.append(f"{len(wrong)} tasks ended other than {expect.value}: {wrong[:3]}")
    left = {s: n for s, n in record.counts.items() if s in ("pending", "leased", "failed") and n}
    if left:
        out.append(f"the store still counts unfinished tasks: {left}")
    # exactly one committed result per task, the one of the attempt with the highest fence
    if record.ledger.duplicate_commits:
        twice = [t for t, n in record.ledger_commits.items() if n > 1]
        out.append(f"duplicate commits: {record.ledger.duplicate_commits} extra acknowledged "
                   f"final commits, e.g. {twice[:3]}")
    if record.twice_run:  # a lease is run once: a resent or replayed assignment must not run
        out.append(f"{len(record.twice_run)} leases ran more than once (same task and fence), "
                   f"e.g. {record.twice_run[:3]}")
    strangers = set(record.by_task) - ids
    if strangers:
        out.append(f"{len(strangers)} tasks ran that were never submitted: {sorted(strangers)[:3]}")
    for task_id in record.ids:
        status = record.statuses[task_id]
        attempts = record.by_task.get(task_id, [])
        if status.state != TaskState.SUCCEEDED:
            continue
        ok = [a for a in attempts if a.outcome == OK]
        if len(ok) != 1:
            out.append(f"task {task_id}: {len(ok)} recorded attempts hold the committed fence "
                       f"{status.fence} (expected exactly 1); attempts {_brief(attempts)}")
            continue
        result = status.result if isinstance(status.result, dict) else {}
        if result.get("fence") != status.fence or result.get("worker") != ok[0].worker:
            out.append(f"task {task_id}: committed result {status.result} is not the result of "
                       f"the attempt under fence {status.fence} on {ok[0].worker}")
        # fences: unique per task, rising with the attempt number; the commit holds the highest
        fences = [a.fence for a in attempts]
        if len(set(fences)) != len(fences):
            out.append(f"task {task_id}: a fence was granted twice: {_brief(attempts)}")
        numbers = [a.attempt for a in attempts]
        if any(b <= a for a, b in itertools.pairwise(numbers)):
            out.append(f"task {task_id}: attempt numbers do not rise with the fence: "
                       f"{_brief(attempts)}")
        if status.fence != max(fences):
            out.append(f"task {task_id}: committed under fence {status.fence}, but fence "
                       f"{max(fences)} was granted later: {_brief(attempts)}")
    if extra_bound is not None and record.extra_attempts > extra_bound:
        out.append(f"{record.extra_attempts} extra attempts, above the bound {extra_bound}")
    return out


def mid_run(done: float, fault: str) -> list[str]:
    """A problem line unless the fault landed mid-run: ``done``, the share of the tasks final
    when it struck, between 25 % and 75 %. ``fault`` names it ("the stop landed")."""
    return [] if 0.25 <= done <= 0.75 else [f"{fault} at {done:.0%} committed, not mid-run"]


def _brief(attempts: Sequence[Attempt]) -> str:
    return ", ".join(f"#{a.attempt}/f{a.fence}/{a.worker.rsplit('-', 1)[-1]}:{a.outcome}"
                     for a in attempts[:6])


# ---- reclaim latency ----------------------------------------------------------------------------
def reclaim_latencies(record: RunRecord, held: dict[str, int], since: float
                      ) -> tuple[list[float], list[str]]:
    """Seconds from ``since`` (the fault) until the reaper took back each lease of ``held``.

    A lease the holder committed under that same fence before expiring needs no reclaim. Returns
    (latencies, problems): a held lease neither taken back nor committed is a problem.
    """
    expired = {(e.fields["id"], int(e.fields["fence"])): e.ts
               for e in record.events("lease_expired")}
    latencies, problems = [], []
    for task_id, fence in held.items():
        ts = expired.get((task_id, fence))
        if ts is not None:
            latencies.append(ts - since)
            continue
        status = record.statuses.get(task_id)
        if status is not None and status.fence == fence:
            continue  # finished and committed by its holder in time
        problems.append(f"lease of task {task_id} under fence {fence} was never taken back")
    return latencies, problems


# Measuring slack on top of the guarantee (TTL + reaper interval): the reaper's own pass and a
# loaded 2-core machine's scheduling. A reclaim later than bound + slack is a violation.
RECLAIM_SLACK_S = 1.0


def late_reclaims(latencies: Sequence[float], bound_s: float) -> list[str]:
    """A problem line if any reclaim took longer than ``bound_s`` (+ the measuring slack)."""
    late = [round(x, 2) for x in latencies if x > bound_s + RECLAIM_SLACK_S]
    return [f"{len(late)} leases were taken back later than TTL + reaper interval "
            f"({bound_s:g} s, +{RECLAIM_SLACK_S:g} s slack): {late[:5]}"] if late else []


# ---- results rows -----------------------------------------------------------------------------
def chaos_row(scenario_id: str, scenario: str, record: RunRecord, *, seed: int, size: str,
              faults: str, duration_s: float, problems: Sequence[str],
              extra_bound: int | None = None, reclaims: Sequence[float] = (),
              reclaim_bound_s: float | None = None, **extra: Any) -> dict[str, Any]:
    """A results row for one chaos scenario."""

    def rounded(value: float | None) -> float | None:
        return None if value is None else round(value, 2)

    return {"suite": "chaos", "id": scenario_id, "scenario": scenario, "size": size,
            "seed": seed, "faults": faults, "tasks": len(record.ids),
            "executions": record.executions, "outcomes": record.outcomes(),
            "lost": record.lost, "ledger_gaps": len(record.ledger_gaps),
            "duplicate_commits": record.ledger.duplicate_commits,
            "extra_attempts": record.extra_attempts, "extra_bound": extra_bound,
            "fenced_rejected": len(record.events("fence_rejected")),
            "reclaimed": len(reclaims), "reclaim_p50_s": rounded(percentile(reclaims, 50)),
            "reclaim_max_s": rounded(max(reclaims) if reclaims else None),
            "reclaim_bound_s": reclaim_bound_s, "duration_s": round(duration_s, 1),
            "passed": not problems, "problems": list(problems)[:10], **extra}
