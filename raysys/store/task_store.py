"""The durable task store: every state transition is one atomic Lua script on Redis.

Contract (DESIGN.md "Guarantees"):

* ``submit``/``submit_many`` return only after the signed records are in Redis. They are the
  one write path for new tasks; an idempotency key (or a retried call with the same ids and
  bytes) returns the existing task.
* ``acquire`` leases tasks in priority order (FIFO within a priority) under fences from one
  monotonic counter, with deadlines by Redis server time. Every record is verified before it
  is handed out; a record that fails (tampered, forged, unknown or revoked key, copied under
  another task's key, foreign namespace) is quarantined, counted and audited instead.
* ``complete`` commits outcomes only under the current fence: a stale fence is rejected
  atomically and counted. Final states carry a signed completion record and never change;
  a task with one is never leased again.
* ``reap`` returns expired leases to the queue (or ``dead`` on the last attempt).
* Whenever the Redis ``run_id`` is new to the namespace (a restart, a failover, the first grant),
  the fence counter is raised to at least ``server_ms * fences_per_ms`` before any lease is
  granted: a floor from the server clock, which a lost AOF tail cannot roll back.
"""

from __future__ import annotations

import logging
import os
import random
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import redis

from raysys.errors import Conflict, IntegrityError, NotFound, ValidationError
from raysys.models import (
    DEFAULT_MAX_ATTEMPTS,
    MAX_BATCH,
    Lease,
    Outcome,
    TaskSpec,
    TaskState,
    new_task_id,
    record_body,
)
from raysys.store.histograms import bucket as duration_bucket
from raysys.store.kinds import KindBook, KindInfo
from raysys.store.listing import StoreListing
from raysys.store.reaping import StoreReaping
from raysys.store.records import AUDIT_MAXLEN, COMPLETION, RECORD, NotDue, check_task_id
from raysys.store.redrive import StoreRedrive
from raysys.store.replies import as_text

if TYPE_CHECKING:
    from raysys.core import Core

log = logging.getLogger(__name__)
KindQuota = tuple[int, int]  # (take in this call or -1, cluster-wide cap or -1)
FENCES_PER_MS = 1000  # fence floor scale: assumes < 1,000 grants per ms (1e6/s) on average
MAX_KEY_DEFERRALS = 50  # leases of a record under an unknown key before it is quarantined
CANCEL_LIST_KEEP_MS = 600_000  # a holder's cancel list outlives a holder that died this long
CANCEL_TAKE = 1000
MAX_RESULT_ERROR_CHARS = 2_000
MIN_WAKE_S = 0.001  # the shortest wait for work (a delayed task due now still waits this)


@dataclass(frozen=True, slots=True)
class RetryPolicy:
    """Exponential backoff with jitter between attempts: base * 2**(attempt-1), capped."""

    base_s: float = 0.2
    cap_s: float = 30.0
    jitter: float = 0.2

    def delay_ms(self, attempt: int) -> int:
        raw = min(self.base_s * (2 ** max(attempt - 1, 0)), self.cap_s)
        return max(1, int(raw * 1000 * (1 + random.uniform(-self.jitter, self.jitter))))


class TaskStore(StoreReaping, StoreRedrive, StoreListing):
    """Task store for one namespace on one Redis: the state transitions (reads and record
    rewrites in :class:`~raysys.store.records.StoreRecords`). Thread-safe as far as the
    client is. Built over a :class:`~raysys.core.Core` (its client, keys, sealer, scripts)."""

    def __init__(self, core: Core, *, audit: bool | None = None,
                 retry: RetryPolicy | None = None, fences_per_ms: int = FENCES_PER_MS) -> None:
        self.core = core
        self.client = core.client
        self.sealer = core.sealer
        self.keys = core.keys
        self.namespace = core.namespace
        self.audit_enabled = core.audit if audit is None else audit
        self.retry = retry or RetryPolicy()
        self.fences_per_ms = fences_per_ms
        # The replay window: a record issued longer ago is refused (0: no window, keep all).
        self.retention_ms = int(core.settings.retention_s * 1000)
        self._scripts = core.scripts
        self._audit = "1" if self.audit_enabled else "0"
        self.kinds = KindBook(core.client, core.keys, core.sealer)
        self.last_server_ms = 0  # Redis server time of the last acquire (ms)

    # ---- submission: the one write path -------------------------------------------------
    def submit(self, spec: TaskSpec) -> str:
        """Store one task durably; return its id (an existing id for a known idempotency key)."""
        return self.submit_many([spec])[0]

    def submit_many(self, specs: Sequence[TaskSpec], *,
                    cursor: tuple[str, bytes, bytes] | None = None) -> list[str]:
        """Store a batch atomically (all or nothing); ids in the order of ``specs``.

        ``cursor``: (schedule name, its cursor as read, the cursor to write): the batch is
        stored, and the cursor moved, only if it still holds what was read; else
        :class:`~raysys.errors.Conflict` and nothing is written.
        """
        if not specs and cursor is None:
            return []
        if len(specs) > MAX_BATCH:
            raise ValidationError(f"batch of {len(specs)} tasks; at most {MAX_BATCH} per call")
        k = self.keys
        ids: list[str] = [""] * len(specs)
        todo = list(range(len(specs)))
        book = self.kinds.read()
        for _ in range(3):  # a random 128-bit id is taken only by an attacker's guess; re-issue
            args: list[Any] = [k.prefix, self._audit, AUDIT_MAXLEN,
                               *(cursor if cursor is not None else ("", "", ""))]
            for index in todo:
                spec = specs[index]
                task_id = new_task_id()
                record = self.sealer.seal(RECORD, record_body(task_id, spec, self.namespace))
                args += [task_id, record, spec.priority, spec.idempotency_key or "", spec.kind,
                         start_limit_ms(spec, book), spec.not_before_ms or 0]
            try:
                reply = self._run("submit", [k.seq, k.counts, k.stats, k.audit, k.wake,
                                             k.start_by, k.scheduled], args)
            except redis.ResponseError as exc:
                if "ERR_CURSOR" in str(exc):
                    raise Conflict(f"schedule {cursor[0] if cursor else ''}: its cursor moved "
                                   "on (another Coordinator enqueued the tick) or it was "
                                   "removed; nothing stored") from None
                if "ERR_CORRUPT" not in str(exc):
                    raise
                raise IntegrityError(f"submit refused, nothing stored: {exc}",
                                     reason="corrupt_key") from None
            cursor = None if cursor is None else (cursor[0], cursor[2], cursor[2])
            for index, value in zip(todo, reply, strict=True):
                ids[index] = as_text(value)
            todo = [index for index in todo if not ids[index]]
            if not todo:
                return ids
            log.warning("%d task ids were already taken in Redis; re-issuing them", len(todo))
        raise IntegrityError("task ids keep colliding with existing keys: is someone writing "
                             "raysys keys?", reason="id_collision")

    # ---- leasing ------------------------------------------------------------------------
    def acquire(self, holder: str, n: int, ttl_s: float) -> list[Lease]:
        """Lease up to ``n`` verified tasks to ``holder`` for ``ttl_s`` (server time)."""
        return self.acquire_verified(holder, n, ttl_s)[0]

    def acquire_verified(self, holder: str, n: int, ttl_s: float, *,
                         quotas: Mapping[str, KindQuota] | None = None, default_quota: int = -1,
                         ) -> tuple[list[Lease], list[tuple[str, int]]]:
        """Like :meth:`acquire`, also returning the (id, fence) of records it quarantined.

        ``quotas``: per kind, (at most this many in this call, -1 for no limit; at most this
        many leased at once across the cluster, -1 for no cap); a kind not named takes
        ``default_quota`` (-1: up to ``n``). The best ``n`` by priority, then submission order,
        across the kinds allowed; the cap is checked in the same atomic step.
        """
        k = self.keys
        args: list[Any] = [k.prefix, holder, n, int(ttl_s * 1000), self._audit, AUDIT_MAXLEN,
                           self.fences_per_ms, os.urandom(8).hex(),  # a resend replays
                           default_quota]
        for kind, (take, cap) in (quotas or {}).items():
            args += [kind, int(take), int(cap)]
        reply = self._run("acquire", [k.delayed, k.leases, k.fence, k.run_id, k.counts, k.stats,
                                      k.audit, k.acquire_log, k.start_by, k.scheduled], args)
        now_ms = self.last_server_ms = int(reply[0])
        if int(reply[1]) == 2:
            log.warning("Redis run_id changed (restart or failover): fences raised to the "
                        "server-clock floor before leasing")
        leases: list[Lease] = []
        rejected: list[Any] = []
        for i in range(2, len(reply), 5):
            task_id, fence, attempt, deadline = as_text(reply[i]), int(reply[i + 1]), int(
                reply[i + 2]), int(reply[i + 3])
            try:  # an unknown key id makes Sealer.open re-read the keyring once (rotation)
                leases.append(self._verify_record(task_id, fence, attempt, deadline,
                                                  reply[i + 4], now_ms=now_ms))
            except NotDue as early:  # the scheduled set said due, the signed record says not
                log.warning("task %s handed out before its signed due time; put back to wait "
                            "%.3f s", task_id, (early.due_ms - now_ms) / 1000)
                rejected += [task_id, fence, "not_due", f"wait:{early.due_ms}"]
            except IntegrityError as exc:
                # A key this node does not know yet is deferred (rotation still propagating);
                # anything else failed verification for good.
                action = "defer" if exc.reason == "unknown_key" else "quarantine"
                if action == "defer":
                    log.warning("task %s deferred (%s): %s", task_id, exc.reason, exc)
                else:
                    log.error("task %s rejected (%s): %s", task_id, exc.reason, exc)
                rejected += [task_id, fence, exc.reason, action]
        quarantined: list[tuple[str, int]] = []
        if rejected:
            done = self._run("quarantine", [k.leases, k.counts, k.stats, k.audit, k.scheduled],
                             [k.prefix, AUDIT_MAXLEN, MAX_KEY_DEFERRALS, *rejected])
            quarantined = [(rejected[i * 4], rejected[i * 4 + 1])
                           for i, verdict in enumerate(done) if int(verdict) == 1]
        return leases, quarantined

    def renew(self, holder: str, leases: Sequence[tuple[str, int]], ttl_s: float) -> dict[str, int]:
        """Extend leases; return {task id: new deadline ms, or 0 when the lease is lost}."""
        if not leases:
            return {}
        args: list[Any] = [self.keys.prefix, holder, int(ttl_s * 1000)]
        for task_id, fence in leases:
            args += [task_id, fence]
        reply = self._run("renew", [self.keys.leases, self.keys.stats], args)
        return {task_id: int(dl) for (task_id, _), dl in zip(leases, reply[1:], strict=True)}

    def release(self, holder: str, leases: Sequence[tuple[str, int]]) -> list[bool]:
        """Hand back leases that never started: queued again, the attempt not counted.

        False where the lease is no longer this holder's under that fence (expired, reaped).
        """
        if not leases:
            return []
        k = self.keys
        args: list[Any] = [k.prefix, holder, self._audit, AUDIT_MAXLEN]
        for task_id, fence in leases:
            args += [task_id, fence]
        reply = self._run("release", [k.leases, k.counts, k.stats, k.audit], args)
        return [bool(int(x)) for x in reply[1:]]

    def wait_for_work(self, timeout_s: float) -> bool:
        """Block up to ``timeout_s`` for a submission's wake-up, or until the next delayed task
        or retry is due, whichever is first; True if a wake-up came.

        A hint, not a queue: one wake-up may stand for many submissions, and work made ready
        otherwise (the reaper requeueing) is found by polling.
        """
        due = self.next_due_ms()
        if due is not None and self.last_server_ms:
            timeout_s = min(timeout_s, max(MIN_WAKE_S, (due - self.last_server_ms) / 1000))
        return self.client.blpop([self.keys.wake], timeout=timeout_s) is not None

    def next_due_ms(self) -> int | None:
        """When the next delayed task or retry is due (ms, server clock), if any is waiting."""
        pipe = self.client.pipeline(transaction=False)
        pipe.zrange(self.keys.scheduled, 0, 0, withscores=True)
        pipe.zrange(self.keys.delayed, 0, 0, withscores=True)
        scores = [int(score) for reply in pipe.execute() for _, score in reply]
        return min(scores) if scores else None

    # ---- commits ------------------------------------------------------------------------
    def complete(self, holder: str, items: Sequence[tuple[Lease, Outcome]], *,
                 before: Callable[[redis.client.Pipeline], None] | None = None) -> list[bool]:
        """Commit each lease's outcome under its fence; False where the fence was stale.

        ``before`` queues commands Redis must apply ahead of the commit (the ledger's intents)
        on the same round trip.
        """
        if not items:
            return []
        args: list[Any] = [self.keys.prefix, holder, self._audit, AUDIT_MAXLEN]
        for lease, outcome in items:
            timing = (f"{outcome.seconds:.6f}", duration_bucket(outcome.seconds))
            if outcome.ok:
                try:
                    fin = self.sealer.seal(COMPLETION, self._final_body(
                        lease.task_id, TaskState.SUCCEEDED, lease.attempt, lease.fence,
                        result=outcome.result))
                    args += [lease.task_id, lease.fence, "ok", fin, "", *timing]
                    continue
                except ValidationError as exc:  # the same result would fail every time
                    outcome = Outcome(ok=False, error=f"result not storable: {exc}",
                                      retryable=False)
            error = (outcome.error or "failed")[:MAX_RESULT_ERROR_CHARS]
            if outcome.retryable and lease.attempt < (lease.max_attempts or DEFAULT_MAX_ATTEMPTS):
                delay = (self.retry.delay_ms(lease.attempt) if outcome.delay_s is None
                         else max(1, int(outcome.delay_s * 1000)))
                args += [lease.task_id, lease.fence, "retry", "", f"{delay}|{error}", *timing]
            else:
                fin = self._final_record(lease.task_id, TaskState.DEAD, lease.attempt,
                                         lease.fence, error=error)
                args += [lease.task_id, lease.fence, "dead", fin, error, *timing]
        k = self.keys
        keys = [k.leases, k.delayed, k.counts, k.stats, k.audit, k.histograms,
                k.reply("complete", os.urandom(8).hex())]  # a resend counts no rejection twice
        if before is None:
            reply = self._run("complete", keys, args)
        else:
            log.debug("redis script complete keys=%d args=%d (after queued commands)",
                      len(keys), len(args))
            reply = self._scripts.run_after(before, "complete", keys, args)
        return [bool(int(x)) for x in reply[1:]]

    # ---- control and queries --------------------------------------------------------------
    def cancel(self, task_id: str) -> TaskState:
        """Cancel a task not yet final; return the state it was in. Final tasks are unchanged."""
        check_task_id(task_id)
        k = self.keys
        fin = self._final_record(task_id, TaskState.CANCELLED, 0, 0)
        before = as_text(self._run("cancel", [k.delayed, k.leases, k.counts, k.audit,
                                              k.start_by, k.scheduled],
                                   [k.prefix, self._audit, AUDIT_MAXLEN, task_id, fin,
                                    CANCEL_LIST_KEEP_MS]))
        if not before:
            raise NotFound(f"no task {task_id} in namespace {self.namespace}")
        return TaskState(before)

    def take_cancels(self, holder: str, wait_s: float) -> list[str]:
        """Ids of tasks cancelled while ``holder`` held their lease, waiting up to ``wait_s``
        for the first (a push from ``cancel``: the holder stops them within a second)."""
        key = self.keys.cancels(holder)
        first = self.client.blpop([key], timeout=wait_s)
        if first is None:
            return []
        rest = self.client.lpop(key, CANCEL_TAKE) or []
        return [as_text(first[1]), *(as_text(x) for x in rest)]


def start_limit_ms(spec: TaskSpec, book: Mapping[str, KindInfo]) -> int:
    """The schedule-to-start limit in ms: the submission's, else its kind's, else 0."""
    limit = spec.schedule_to_start_s
    if limit is None:
        info = book.get(spec.kind)
        limit = info.schedule_to_start_s if info is not None else None
    return int(limit * 1000) if limit else 0
