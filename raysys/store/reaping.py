"""The reaper's half of the task store: take back expired leases, end tasks that were not
started in time, and move tasks out of the queue of earlier versions.

Every pass is stateless and safe to run twice or from two Coordinators: each step reads what
is due by Redis server time, signs the ``dead`` records it needs, and applies only what is still
due under the same fence (``expire.lua``, ``unstarted.lua``).
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from raysys.errors import IntegrityError
from raysys.models import DEFAULT_MAX_ATTEMPTS, TaskState
from raysys.store.records import AUDIT_MAXLEN, RECORD, StoreRecords
from raysys.store.replies import as_text

if TYPE_CHECKING:
    from raysys.store.kinds import KindBook

log = logging.getLogger(__name__)
REAP_PAGES = 50  # pages of expired leases one reap() call takes back
MIGRATE_BATCH = 1000


@dataclass(frozen=True, slots=True)
class ReapReport:
    """What one reap did; ``dead_leases`` are (task id, fence) it made final (for ledgers);
    ``unstarted`` are the ids ended for missing their schedule-to-start limit."""

    requeued: int
    dead: int
    dead_leases: tuple[tuple[str, int], ...] = ()
    unstarted: tuple[str, ...] = ()


class StoreReaping(StoreRecords):
    """Reaping over one namespace (the base of :class:`~raysys.store.task_store.TaskStore`)."""

    kinds: KindBook
    _audit: str

    def reap(self, limit: int = 1000) -> ReapReport:
        """Take back leases expired by server time: requeue, or ``dead`` on the last attempt;
        then end tasks past their schedule-to-start limit.

        Takes pages of ``limit`` until none is left (at most ``REAP_PAGES``), so a dead node's
        whole batch returns in one pass. A record that does not verify is requeued, never made
        dead here: the acquirer judges it, and quarantines, counts and audits it.
        """
        self._migrate_legacy_queue()
        requeued, dead = 0, 0
        dead_leases: list[tuple[str, int]] = []
        for _ in range(REAP_PAGES):
            page, scanned = self._reap_page(limit)
            requeued += page.requeued
            dead += page.dead
            dead_leases += page.dead_leases
            if scanned < limit:  # a short page: nothing expired is left
                break
        unstarted = self._end_unstarted(limit)
        report = ReapReport(requeued, dead, tuple(dead_leases), tuple(unstarted))
        if requeued or dead:
            log.info("reaped %d expired leases (%d requeued, %d dead)", requeued + dead,
                     requeued, dead)
        if unstarted:
            log.warning("%d tasks were not started within their schedule-to-start limit: dead",
                        len(unstarted))
        return report

    def _reap_page(self, limit: int) -> tuple[ReapReport, int]:
        """One page of expired leases: what was taken back, and how many entries were seen."""
        k = self.keys
        reply = self._run("expired", [k.leases], [k.prefix, limit])
        if len(reply) <= 1:
            return ReapReport(0, 0), 0
        args: list[Any] = [k.prefix, self._audit, AUDIT_MAXLEN]
        maxima = self._max_attempts([as_text(reply[i]) for i in range(1, len(reply), 4)])
        entries: list[tuple[str, int, str]] = []
        for i in range(1, len(reply), 4):
            task_id, fence, attempts = as_text(reply[i]), int(reply[i + 1]), int(reply[i + 2])
            limit_for_task = maxima.get(task_id)
            if limit_for_task is not None and attempts >= limit_for_task:
                fin = self._final_record(task_id, TaskState.DEAD, attempts, fence,
                                         error="lease expired on the last attempt")
                args += [task_id, fence, "dead", fin]
                entries.append((task_id, fence, "dead"))
            else:
                args += [task_id, fence, "requeue", ""]
                entries.append((task_id, fence, "requeue"))
        done = self._run("expire", [k.leases, k.counts, k.stats, k.audit], args)
        taken = [e for e, ok in zip(entries, done[1:], strict=True) if int(ok)]
        dead = tuple((t, f) for t, f, action in taken if action == "dead")
        return ReapReport(len(taken) - len(dead), len(dead), dead), len(entries)

    def _max_attempts(self, task_ids: list[str]) -> dict[str, int]:
        """Each verified record's attempt limit: its own, lowering its kind's (the kinds
        book; 3 for a kind the book does not know). Unverifiable records are left out."""
        pipe = self.client.pipeline(transaction=False)
        for task_id in task_ids:
            pipe.hget(self.keys.task(task_id), "rec")
        book = self.kinds.read()
        out: dict[str, int] = {}
        for task_id, data in zip(task_ids, pipe.execute(), strict=True):
            try:
                body = self.sealer.open(bytes(data), RECORD).body if data else None
                if isinstance(body, dict) and body.get("id") == task_id:
                    info = book.get(str(body.get("kind")))
                    own = info.max_attempts if info is not None else DEFAULT_MAX_ATTEMPTS
                    asked = body.get("max_attempts")
                    out[task_id] = own if asked is None else min(own, int(asked))
            except (IntegrityError, KeyError, TypeError, ValueError):
                continue
        return out

    def _end_unstarted(self, limit: int) -> list[str]:
        """End pending tasks past their schedule-to-start deadline; their ids."""
        k = self.keys
        seconds, micros = self.client.time()
        now_ms = int(seconds) * 1000 + int(micros) // 1000
        due = [as_text(x) for x in self.client.zrangebyscore(k.start_by, "-inf", now_ms,
                                                             start=0, num=limit)]
        if not due:
            return []
        error = "not started within its schedule-to-start limit (no worker or node free?)"
        args: list[Any] = [k.prefix, self._audit, AUDIT_MAXLEN, error]
        for task_id in due:
            args += [task_id, self._final_record(task_id, TaskState.DEAD, 0, 0, error=error)]
        done = self._run("unstarted", [k.delayed, k.start_by, k.counts, k.audit, k.scheduled],
                         args)
        return [task_id for task_id, ok in zip(due, done[1:], strict=True) if int(ok)]

    def _migrate_legacy_queue(self) -> None:
        """Move tasks queued by an earlier version (one queue for all kinds) to their kind's."""
        key = self.keys.legacy_pending
        if self.client.exists(key):
            moved = self._run("migrate_queues", [key], [self.keys.prefix, MIGRATE_BATCH])
            log.info("moved %d tasks from the queue of an earlier version to their kind's "
                     "queue", int(moved))
