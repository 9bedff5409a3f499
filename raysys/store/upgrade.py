"""Bringing a namespace written by an earlier version up to the retention era, in pages.

Tasks stored before retention existed have no place in the time indexes (``ix:sub``,
``ix:f:<state>``, ``ix:seal``) and their completions were never counted in the monotonic
``stats completed:<state>`` counters. Without this step such finished tasks would never be
purged, and such queued tasks, once older than the replay window, would be refused as expired.

:func:`upgrade_step` runs from the Coordinator's housekeeping until the namespace is done
(``upgrade`` hash, field ``done``):

1. once, atomically (``upgrade_seed.lua``): each final state's counter is raised by the tasks
   in that state that no index holds yet (so ``raysys_tasks_completed_total`` does not drop);
2. one SCAN page of task keys per call: a task without the ``sub`` field (written before this
   version) is indexed: submitted at its record's issue time, finished "now" (so retention
   removes it one window after the upgrade), and a live one is re-signed at once and indexed to
   be re-signed again, also when its record is already older than the window: the records
   stored at the upgrade are taken as they are (there was no window when they were written).

Each write is an ``NX`` index add or a compare-and-set, so a task that moves meanwhile (or a
second Coordinator doing the same) leaves at worst an index entry its readers already skip.
"""

from __future__ import annotations

import logging
from typing import TYPE_CHECKING, Any

from raysys.errors import IntegrityError
from raysys.store.records import RECORD
from raysys.store.replies import as_bytes, as_text
from raysys.store.retention import FINAL_STATE_NAMES, LIVE_STATES

if TYPE_CHECKING:
    from raysys.store import TaskStore

log = logging.getLogger(__name__)
SCAN_PAGE = 1000


def upgrade_step(store: TaskStore, page: int = SCAN_PAGE) -> int:
    """One bounded step; how many tasks it indexed (0 also when the namespace is done)."""
    k = store.keys
    state = {as_text(f): as_text(v) for f, v in store.client.hgetall(k.upgrade).items()}
    if state.get("done"):
        return 0
    if "seeded" not in state:
        store._run("upgrade_seed", [k.upgrade, k.counts, k.stats],
                   [k.prefix, *FINAL_STATE_NAMES])
        if _all_indexed(store):  # a namespace this version wrote: nothing to look for
            store.client.hset(k.upgrade, "done", "1")
            return 0
    cursor, raw = store.client.scan(int(state.get("cursor", "0")),
                                    match=k.task_pattern(), count=page)
    done = _index(store, [as_text(key)[len(k.task("")):] for key in raw])
    store.client.hset(k.upgrade, mapping={"cursor": str(cursor), **(
        {"done": "1"} if int(cursor) == 0 else {})})
    if int(cursor) == 0:
        log.info("namespace %s: tasks of earlier versions indexed for retention and listing",
                 store.namespace)
    return done


def _all_indexed(store: TaskStore) -> bool:
    k = store.keys
    total = sum(store.counts().values())
    return int(store.client.zcard(k.submitted_index)) >= total


def _index(store: TaskStore, task_ids: list[str]) -> int:
    """Index the tasks of ``task_ids`` that an earlier version wrote; how many."""
    k = store.keys
    pipe = store.client.pipeline(transaction=False)
    for task_id in task_ids:
        pipe.hmget(k.task(task_id), ["rec", "state", "k", "sub", "tomb"])
    now = store.server_ms()
    writes = store.client.pipeline(transaction=False)
    resign: list[tuple[str, bytes, bytes]] = []
    count = 0
    for task_id, (rec, state, kind, sub, tomb) in zip(task_ids, pipe.execute(), strict=True):
        if rec is None or state is None or sub is not None or tomb is not None:
            continue
        state_name = as_text(state)
        issued, body_kind = _issued(store, task_id, as_bytes(rec), now)
        kind_name = as_text(kind) if kind else body_kind
        count += 1
        writes.zadd(k.submitted_index, {task_id: issued}, nx=True)
        writes.zadd(k.submitted_kind_index(kind_name), {task_id: issued}, nx=True)
        writes.hsetnx(k.task(task_id), "sub", issued)
        if state_name in FINAL_STATE_NAMES:
            writes.hsetnx(k.task(task_id), "end", now)
            writes.zadd(k.finished_index(state_name), {task_id: now}, nx=True)
            writes.zadd(k.finished_index(state_name, kind_name), {task_id: now}, nx=True)
        elif state_name in LIVE_STATES.split(","):
            fresh = _resigned(store, task_id, as_bytes(rec))
            if fresh is not None:
                resign.append((task_id, as_bytes(rec), fresh))
    writes.execute()
    for (task_id, _, _), ok in zip(resign, store.compare_and_set("rec", LIVE_STATES, resign),
                                   strict=True):
        if ok:
            store.client.zadd(k.seal_index, {task_id: now}, nx=True)
    return count


def _issued(store: TaskStore, task_id: str, rec: bytes, default: int) -> tuple[int, str]:
    """(When the record was issued, ms; its kind); (``default``, "unknown") when it does not
    verify (acquire quarantines it)."""
    try:
        opened = store.sealer.open(rec, RECORD)
    except IntegrityError:
        log.warning("task %s of an earlier version: its record does not verify (left to "
                    "acquire, which quarantines it)", task_id)
        return default, "unknown"
    kind = opened.body.get("kind") if isinstance(opened.body, dict) else None
    return int(opened.iat * 1000), str(kind or "unknown")


def _resigned(store: TaskStore, task_id: str, rec: bytes) -> bytes | None:
    """The record signed afresh, whatever its age (see the module docstring), or None."""
    try:
        body: Any = store.sealer.open(rec, RECORD).body
    except IntegrityError:
        return None
    if not isinstance(body, dict) or body.get("id") != task_id:
        return None
    return store.sealer.seal(RECORD, body)
