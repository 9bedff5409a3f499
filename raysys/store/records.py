"""Reads and record rewrites of the task store: status, counts, audit, signed records.

:class:`StoreRecords` is the half of :class:`~raysys.store.task_store.TaskStore` that changes
no task's state: it verifies and builds the signed records (task records into leases, the
completion records of final states), answers queries, and rewrites a record's bytes in place
(key rotation) under an optimistic compare-and-set.
"""

from __future__ import annotations

import json
import logging
import re
from collections.abc import Callable, Sequence
from typing import TYPE_CHECKING, Any

import redis

from raysys.errors import IntegrityError, NotFound, RaysysError, ValidationError
from raysys.models import TASK_ID_PATTERN, Lease, TaskState, TaskStatus, quarantine_code
from raysys.signing.envelope import Opened, Sealer
from raysys.store.keyspace import Keyspace, glob_escape
from raysys.store.replies import as_bytes, as_text

if TYPE_CHECKING:
    from raysys.store.lua import Scripts

log = logging.getLogger(__name__)
AUDIT_MAXLEN = 100_000  # the audit stream is capped at about this many entries
RECORD = "task"  # envelope purpose of a task record
COMPLETION = "completion"  # envelope purpose of the signed record of a final state
_TASK_ID = re.compile(TASK_ID_PATTERN)


class NotDue(Exception):
    """A verified record whose signed due time has not come (by Redis server time)."""

    def __init__(self, due_ms: int) -> None:
        super().__init__(f"not due before {due_ms}")
        self.due_ms = due_ms


class StoreRecords:
    """Record verification, queries and record rewrites over one namespace."""

    client: redis.Redis
    sealer: Sealer
    keys: Keyspace
    namespace: str
    retention_ms: int
    _scripts: Scripts

    def _verify_record(self, task_id: str, fence: int, attempt: int, deadline: int,
                       data: bytes | None, *, now_ms: int) -> Lease:
        """The lease for a record that verifies at server time ``now_ms``; IntegrityError
        (with a reason) when it does not, NotDue when it verifies but is not due yet."""
        if data is None:
            raise IntegrityError("task has no record", reason="malformed")
        opened = self._opened_record(task_id, data)
        body = opened.body
        if self.retention_ms and opened.iat * 1000 < now_ms - self.retention_ms:
            raise IntegrityError(
                f"record issued {(now_ms - opened.iat * 1000) / 86_400_000:.2f} days ago, "
                f"before the replay window (RAYSYS_RETENTION_S={self.retention_ms / 1000:g}): "
                "refused as expired", reason="expired_record")
        due = body.get("not_before_ms")
        if isinstance(due, int) and due > now_ms:
            raise NotDue(due)
        try:
            return Lease.from_doc({**body, "task_id": task_id, "fence": fence,
                                   "attempt": attempt, "deadline_ms": deadline})
        except (KeyError, TypeError, ValueError):
            raise IntegrityError("record body lacks required fields", reason="malformed") from None

    def _opened_record(self, task_id: str, data: bytes) -> Opened:
        """The verified task record ``data``, signed for ``task_id`` in this namespace;
        IntegrityError (with a reason) when it is not."""
        opened = self.sealer.open(data, RECORD)
        body = opened.body
        if not isinstance(body, dict):
            raise IntegrityError("record body is not an object", reason="malformed")
        if body.get("id") != task_id or body.get("ns") != self.namespace:
            raise IntegrityError("record was signed for another task or namespace",
                                 reason="copied_record")
        return opened

    def _final_body(self, task_id: str, state: TaskState, attempts: int, fence: int,
                    result: Any = None, error: str | None = None) -> dict[str, Any]:
        return {"id": task_id, "ns": self.namespace, "state": state.value, "result": result,
                "error": error, "attempts": attempts, "fence": fence}

    def _final_record(self, task_id: str, state: TaskState, attempts: int, fence: int,
                      error: str | None = None) -> bytes:
        """A signed completion record without a result (dead, cancelled)."""
        return self.sealer.seal(COMPLETION, self._final_body(task_id, state, attempts, fence,
                                                             error=error))

    def status(self, task_id: str) -> TaskStatus:
        """State, attempts, and the verified result or error of one task.

        Nothing unverified is trusted: when the task record or the completion record fails
        verification (tampered, garbled, forged, copied, unknown or revoked key), ``integrity``
        is ``"failed: <reason> (<which record>)"`` and ``error`` says so; such a task never
        runs (leasing it quarantines it) and its result is withheld. A quarantined task always
        has ``integrity`` set. ``integrity`` is None when every stored record verifies.
        """
        check_task_id(task_id)
        fields = ("state", "att", "rec", "fence", "holder", "err", "fin", "due", "tomb")
        values = self.client.hmget(self.keys.task(task_id), fields)
        if values[0] is None:
            raise NotFound(f"no task {task_id} in namespace {self.namespace}")
        state, att, rec, fence, holder, err, fin, due, tomb = values
        if tomb is not None:  # purged early: only the state is left, to refuse replays
            return TaskStatus(task_id, TaskState(as_text(state)), 0, 0, "", None,
                              "purged (record and result removed by `raysys purge`)")
        task_state = TaskState(as_text(state))
        error = as_text(err) if err else None
        failures: list[str] = []
        kind, prio, bad_record = self._record_fields(task_id, as_bytes(rec or b""))
        if bad_record is not None:
            failures.append(f"{bad_record} (task record)")
            error = error or _unverified_record_error(bad_record, task_state)
        result: Any = None
        if fin is not None:
            try:
                result, error = self._verified_outcome(task_id, as_bytes(fin), error)
            except IntegrityError as exc:
                failures.append(f"{exc.reason} (completion record)")
                error = f"completion record failed verification ({exc.reason})"
        if task_state == TaskState.QUARANTINED and not failures:  # e.g. refused as expired
            failures.append(_quarantine_reason(error))
        waiting = self._waiting_reason(kind) if task_state == TaskState.PENDING else None
        return TaskStatus(task_id, task_state, int(att or 0), prio, kind, result, error,
                          int(fence or 0),
                          as_text(holder) if holder and task_state == TaskState.LEASED else None,
                          waiting,
                          int(due) if due is not None and task_state == TaskState.SCHEDULED
                          else None,
                          "failed: " + "; ".join(failures) if failures else None)

    def _record_fields(self, task_id: str, rec: bytes) -> tuple[str, int, str | None]:
        """(kind, priority, None) of a task record that verifies as this task's, in this
        namespace; ("", 0, reason) when it does not."""
        try:
            body = self._opened_record(task_id, rec).body
            return str(body["kind"]), int(body["priority"]), None
        except IntegrityError as exc:
            return "", 0, exc.reason
        except (KeyError, TypeError, ValueError):
            return "", 0, "malformed"

    def _verified_outcome(self, task_id: str, fin: bytes, error: str | None
                          ) -> tuple[Any, str | None]:
        """(result, error) from a completion record that verifies; IntegrityError if not."""
        body = self.sealer.open(fin, COMPLETION).body
        if not isinstance(body, dict) or body.get("id") != task_id:
            raise IntegrityError("completion record names another task", reason="copied_record")
        if body.get("state") == TaskState.SUCCEEDED.value:
            return body.get("result"), None  # an earlier attempt's error is history
        return body.get("result"), body.get("error") or error

    def _waiting_reason(self, kind: str) -> str | None:
        """Why tasks of ``kind`` are held back now, in words (None: they are not)."""
        raw = self.client.hget(self.keys.waiting, kind) if kind else None
        if raw is None:
            return None
        try:
            doc = json.loads(raw)
        except ValueError:
            return None
        if doc.get("reason") == "resources":
            need = ", ".join(f"{name} {amount:g}" for name, amount in doc.get("need", {}).items())
            return f"waiting for resources: no live node has {need}"
        if doc.get("reason") == "max_in_flight":
            return f"waiting: {doc.get('max_in_flight')} of its kind in flight (max_in_flight)"
        return f"waiting: {doc.get('reason')}"

    def counts(self) -> dict[str, int]:
        """Tasks per state (every state present, zero included)."""
        raw = self.client.hgetall(self.keys.counts)
        got = {as_text(key): int(value) for key, value in raw.items()}
        return {state.value: got.get(state.value, 0) for state in TaskState}

    def queued_ids(self) -> dict[str, set[str]]:
        """Kind -> ids in its queue, read from the queues themselves (a SCAN: checks and
        tools, not the hot path)."""
        prefix = self.keys.queue("")
        out: dict[str, set[str]] = {}
        for key in self.client.scan_iter(match=glob_escape(prefix) + "*", count=1000):
            kind = as_text(key)[len(prefix):]
            out[kind] = {as_text(m) for m in self.client.zrange(key, 0, -1)}
        return out

    def queued_by_kind(self) -> dict[str, int]:
        """Pending tasks per kind (kinds with none are absent)."""
        return _int_hash(self.client.hgetall(self.keys.queued_kinds))

    def inflight_by_kind(self) -> dict[str, int]:
        """Leased tasks per kind (kinds with none are absent)."""
        return _int_hash(self.client.hgetall(self.keys.inflight))

    def stats(self) -> dict[str, int]:
        """Event counters: submitted, granted, renewed, fenced_rejected, retries, expired, ..."""
        return {as_text(key): int(v) for key, v in self.client.hgetall(self.keys.stats).items()}

    def count_conflict_retries(self, n: int = 1) -> None:
        self.client.hincrby(self.keys.stats, "conflict_retries", n)

    def audit_tail(self, count: int = 100) -> list[dict[str, str]]:
        """The newest ``count`` audit entries, oldest first."""
        entries = self.client.xrevrange(self.keys.audit, count=count) or []
        return [{as_text(k): as_text(v) for k, v in (fields or {}).items()}
                for _, fields in reversed(entries)]

    def fence_value(self) -> int:
        return int(self.client.get(self.keys.fence) or 0)

    def replace_record(self, task_id: str, transform: Callable[[bytes], bytes | None], *,
                       field: str = "rec", states: str = "pending,failed",
                       max_tries: int = 10) -> bool:
        """Optimistically rewrite one task's signed bytes: ``transform(old) -> new or None``.

        ``field`` is ``rec`` (the task record) or ``fin`` (the completion record); ``states``
        the comma-separated states in which the rewrite is allowed (``*``: any but
        quarantined). Retries when the bytes changed between read and write, counting each
        retry in the ``conflict_retries`` stat. False if the state does not allow it or
        ``transform`` returned None (nothing to change).
        """
        tk = self.keys.task(task_id)
        for _ in range(max_tries):
            old, state = self.client.hmget(tk, [field, "state"])
            if state is None:
                raise NotFound(f"no task {task_id} in namespace {self.namespace}")
            if old is None:
                return False
            new = transform(as_bytes(old))
            if new is None:
                return False
            if self.compare_and_set(field, states, [(task_id, as_bytes(old), new)]) == [True]:
                return True
            state = self.client.hget(tk, "state")
            if state is None or (states != "*" and as_text(state) not in states.split(",")):
                return False
            self.count_conflict_retries()
        raise RaysysError(f"task {task_id}: record kept changing; gave up after {max_tries} tries")

    def compare_and_set(self, field: str, states: str,
                        triples: Sequence[tuple[str, bytes, bytes]]) -> list[bool]:
        """Batch compare-and-set of one hash field; True where the old bytes were still there."""
        if not triples:
            return []
        args: list[Any] = [self.keys.prefix, field, states]
        for task_id, old, new in triples:
            args += [task_id, old, new]
        return [bool(int(x)) for x in self._run("cas_record", [self.keys.stats], args)]

    def _run(self, name: str, keys: list[str], args: list[Any]) -> Any:
        log.debug("redis script %s keys=%d args=%d", name, len(keys), len(args))
        return self._scripts.run(name, keys, args)


def _int_hash(raw: dict[Any, Any]) -> dict[str, int]:
    return {as_text(key, errors="replace"): int(value) for key, value in raw.items()
            if int(value) > 0}


def _unverified_record_error(reason: str, state: TaskState) -> str:
    """The ``error`` of a task whose record fails verification (``reason``) in ``state``."""
    if state in (TaskState.PENDING, TaskState.SCHEDULED, TaskState.FAILED):
        return (f"task record failed verification ({reason}): it will never run (a worker "
                "that leases it quarantines it)")
    return f"task record failed verification ({reason})"


def _quarantine_reason(error: str | None) -> str:
    """Why a task was quarantined, from the error the quarantine script stored."""
    code = quarantine_code(error)
    return f"{code} (task record)" if code else "quarantined"


def check_task_id(task_id: str) -> None:
    """Raise ValidationError unless ``task_id`` has the shape of a task id."""
    if not _TASK_ID.fullmatch(task_id):
        raise ValidationError(f"{task_id!r} is not a task id (32 lower-case hex characters)")
