"""Listing tasks newest first, by state and kind, in pages; and one task's attempt history.

Indexes (sorted sets the scripts keep, removed with the task by retention):

* a final state: ``ix:f:<state>`` and ``ix:f:<state>:<kind>``, by when the task finished. A
  page costs O(log N + page).
* no state, or a live state (scheduled, pending, leased, failed): ``ix:sub`` and
  ``ix:sub:<kind>``, by when the task was submitted; a live state is filtered while walking,
  at most ``SCAN_BUDGET`` entries per call, so a page may come back short with a cursor to go
  on (as Redis's SCAN does). Live tasks are the backlog, usually few next to the finished ones.

A cursor is ``<score>:<n>``: go on below that score (ms), after the n entries holding exactly
it. Opaque to users; a malformed one is bad input.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from typing import Any, cast

from raysys.errors import NotFound, ValidationError
from raysys.models import FINAL_STATES, TaskState
from raysys.store.records import StoreRecords, check_task_id
from raysys.store.replies import as_text

MAX_PAGE = 1000
WALK_BATCH = 200
SCAN_BUDGET = 20_000  # index entries one call may walk past while filtering a live state
HISTORY_FIELDS = ("event", "attempt", "fence", "holder", "started_ms", "ended_ms", "detail")
_CURSOR = re.compile(r"^(-?\d{1,16}):(\d{1,9})$")  # (score ms, offset): bounded for Redis
_ROW = ("state", "k", "att", "sub", "end", "err", "due", "tomb")


@dataclass(frozen=True, slots=True)
class TaskRow:
    """One task as a listing shows it."""

    id: str
    state: str
    kind: str
    attempts: int
    submitted_ms: int | None
    finished_ms: int | None
    error: str | None
    run_at_ms: int | None

    def to_json(self) -> dict[str, Any]:
        return {"id": self.id, "state": self.state, "kind": self.kind,
                "attempts": self.attempts, "submitted_ms": self.submitted_ms,
                "finished_ms": self.finished_ms, "error": self.error,
                "run_at_ms": self.run_at_ms}


@dataclass(frozen=True, slots=True)
class TaskPage:
    """One page, newest first; ``cursor`` continues it (None: nothing more)."""

    tasks: list[TaskRow] = field(default_factory=list)
    cursor: str | None = None

    def to_json(self) -> dict[str, Any]:
        return {"tasks": [t.to_json() for t in self.tasks], "cursor": self.cursor}


def parse_state(text: str | None) -> TaskState | None:
    """A state name from user input (None stays None); ValidationError naming the valid ones."""
    if text is None:
        return None
    try:
        return TaskState(text)
    except ValueError:
        names = ", ".join(s.value for s in TaskState)
        raise ValidationError(f"unknown state {text!r}: one of {names}") from None


class StoreListing(StoreRecords):
    """Listing and history over one namespace (a base of the ``TaskStore``)."""

    def tasks(self, *, state: str | None = None, kind: str | None = None,
              since_ms: int | None = None, limit: int = 50,
              cursor: str | None = None) -> TaskPage:
        """Tasks newest first (by finish time for a final state, else by submission), at
        most ``limit``; ``since_ms``: only those at or after that time (epoch ms)."""
        wanted = parse_state(state)
        if not 1 <= limit <= MAX_PAGE:
            raise ValidationError(f"limit must be between 1 and {MAX_PAGE}")
        high, skip = _parse_cursor(cursor)
        low = "-inf" if since_ms is None else str(int(since_ms))
        if wanted in FINAL_STATES:
            assert wanted is not None
            key = self.keys.finished_index(wanted.value, kind)
        else:
            key = (self.keys.submitted_kind_index(kind) if kind is not None
                   else self.keys.submitted_index)
        return self._walk(key, high, skip, low, limit, wanted)

    def _walk(self, key: str, high: str, skip: int, low: str, limit: int,
              wanted: TaskState | None) -> TaskPage:
        rows: list[TaskRow] = []
        walked = 0
        while len(rows) < limit and walked < SCAN_BUDGET:
            batch = cast(list[tuple[Any, float]], self.client.zrange(
                key, high, low, desc=True, byscore=True, offset=skip, num=WALK_BATCH,
                withscores=True))
            if not batch:
                return TaskPage(rows, None)
            ids = [as_text(member) for member, _ in batch]
            pipe = self.client.pipeline(transaction=False)
            for task_id in ids:
                pipe.hmget(self.keys.task(task_id), _ROW)
            for task_id, (_, score), values in zip(ids, batch, pipe.execute(), strict=True):
                walked += 1
                mark = str(int(score))
                if mark == high:
                    skip += 1
                else:
                    high, skip = mark, 1
                row = _row(task_id, values)
                if row is not None and (wanted is None or row.state == wanted.value):
                    rows.append(row)
                    if len(rows) == limit:
                        break
            else:
                if len(batch) < WALK_BATCH:
                    return TaskPage(rows, None)
        return TaskPage(rows, f"{high}:{skip}")

    def history(self, task_id: str) -> list[dict[str, Any]]:
        """The task's attempts and events, oldest first (at most the last 20), each
        ``{"event", "attempt", "fence", "holder", "started_ms", "ended_ms", "detail"}``."""
        check_task_id(task_id)
        raw = {as_text(k): as_text(v, errors="replace")
               for k, v in self.client.hgetall(self.keys.task(task_id)).items()}
        if "state" not in raw:
            raise NotFound(f"no task {task_id} in namespace {self.namespace}")
        n = int(raw.get("hn", 0))
        out = []
        for seq in range(max(1, n - 19), n + 1):
            text = raw.get(f"h{(seq - 1) % 20 + 1}")
            if text is None:
                continue
            parts = text.split("|", 6)
            doc: dict[str, Any] = dict(zip(HISTORY_FIELDS, parts, strict=False))
            for name in ("attempt", "fence", "started_ms", "ended_ms"):
                doc[name] = int(doc[name]) if doc.get(name) else None
            doc["holder"] = doc.get("holder") or None
            doc["detail"] = doc.get("detail") or None
            out.append(doc)
        return out


    def start_waits(self, since_ms: int, until_ms: int, limit: int) -> list[int]:
        """Submit-to-start waits (ms) of up to ``limit`` tasks that succeeded in
        (``since_ms``, ``until_ms``], newest first: from submission to the start of the attempt
        that finished them (its history entry). Two round trips, whatever is stored."""
        ids = [as_text(i) for i in self.client.zrevrangebyscore(
            self.keys.finished_index(TaskState.SUCCEEDED.value), until_ms, f"({since_ms}",
            start=0, num=limit)]
        pipe = self.client.pipeline(transaction=False)
        for task_id in ids:
            pipe.hmget(self.keys.task(task_id), "sub", "hn")
        heads = pipe.execute()
        for task_id, (_, hn) in zip(ids, heads, strict=True):
            pipe.hget(self.keys.task(task_id), f"h{(int(hn or 1) - 1) % 20 + 1}")
        waits = []
        for (sub, _), entry in zip(heads, pipe.execute(), strict=True):
            started = dict(zip(HISTORY_FIELDS, as_text(entry or "").split("|", 6),
                               strict=False)).get("started_ms")
            if sub and started:
                waits.append(max(0, int(started) - int(sub)))
        return waits

def _row(task_id: str, values: list[Any]) -> TaskRow | None:
    state, kind, att, sub, end, err, due, tomb = values
    if state is None or tomb is not None:
        return None
    return TaskRow(task_id, as_text(state), as_text(kind) if kind else "", int(att or 0),
                   int(sub) if sub else None, int(end) if end else None,
                   as_text(err, errors="replace") if err else None,
                   int(due) if due and as_text(state) == TaskState.SCHEDULED.value else None)


def _parse_cursor(cursor: str | None) -> tuple[str, int]:
    if cursor is None or cursor == "":
        return "+inf", 0
    match = _CURSOR.match(cursor)
    if not match:
        raise ValidationError(f"cursor {cursor!r} is not one a listing returned")
    return match.group(1), int(match.group(2))
