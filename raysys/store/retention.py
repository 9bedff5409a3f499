"""Retention: finished tasks go after ``RAYSYS_RETENTION_S``; live records stay inside the
replay window.

The replay window is the retention: a task record issued (signed) longer ago than the
retention is refused as expired when it is handed out (``expired_record``, quarantined). So a
purged task's old record, written back by someone who copied it, can never run again: it was
issued before its task finished, and the task is purged only a retention (plus
``CLOCK_SKEW_MS``) after that. Live records (scheduled, pending, failed, leased) are re-signed
once they are half a retention old (:meth:`StoreRetention.reseal_stale`), so queued work never
expires. A record already outside the window is never re-signed, here or by key rotation or
redrive: that would launder a replay.

``purge --older-than`` below the retention replaces each task with a tombstone (state, an empty
completion record): acquire refuses any record under it like under any final task, until the
window has closed on it and the tombstone goes too.
"""

from __future__ import annotations

import logging
import os
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

from raysys.errors import IntegrityError, ValidationError
from raysys.models import FINAL_STATES
from raysys.store.records import AUDIT_MAXLEN, RECORD, StoreRecords
from raysys.store.replies import as_bytes, as_text

log = logging.getLogger(__name__)
PURGE_PAGE = 500  # tasks one purge.lua call removes (about 5 ms of Redis time)
RESEAL_PAGE = 500
CLOCK_SKEW_MS = 10_000  # how far a signer's clock may run ahead of Redis's (NTP keeps it far less)
LIVE_STATES = "scheduled,pending,failed,leased"
FINAL_STATE_NAMES = tuple(sorted(state.value for state in FINAL_STATES))


@dataclass
class PurgeReport:
    """What a purge removed (or would remove: ``dry_run``), per state."""

    removed: dict[str, int] = field(default_factory=dict)
    tombstoned: dict[str, int] = field(default_factory=dict)
    tombstones_expired: int = 0
    dry_run: bool = False
    cutoff_ms: int = 0

    @property
    def total(self) -> int:
        return sum(self.removed.values()) + sum(self.tombstoned.values())

    def to_json(self) -> dict[str, Any]:
        return {"removed": self.removed, "tombstoned": self.tombstoned,
                "tombstones_expired": self.tombstones_expired, "total": self.total,
                "dry_run": self.dry_run, "cutoff_ms": self.cutoff_ms}


class StoreRetention(StoreRecords):
    """Purging finished tasks, expiring tombstones, re-sealing live records, trimming the
    audit stream (a base of :class:`~raysys.store.task_store.TaskStore`)."""

    _audit: str

    def server_ms(self) -> int:
        """Redis server time in ms (every retention decision is judged by it)."""
        seconds, micros = self.client.time()
        return int(seconds) * 1000 + int(micros) // 1000

    # ---- purging --------------------------------------------------------------------------
    def purge(self, older_than_s: float, *, states: Sequence[str] = FINAL_STATE_NAMES,
              dry_run: bool = False, budget_s: float = float("inf")) -> PurgeReport:
        """Remove tasks in ``states`` (final states only) that finished more than
        ``older_than_s`` ago by server time, in pages; stop early after ``budget_s``.

        Below the retention, each removed task leaves a tombstone (see the module doc).
        """
        bad = [s for s in states if s not in FINAL_STATE_NAMES]
        if bad:
            raise ValidationError(f"cannot purge state {bad[0]!r}: only final states "
                                  f"({', '.join(FINAL_STATE_NAMES)}) are purged")
        if older_than_s < 0:
            raise ValidationError("--older-than must not be negative")
        now = self.server_ms()
        cutoff = now - int(older_than_s * 1000)
        report = PurgeReport(dry_run=dry_run, cutoff_ms=cutoff)
        if dry_run:
            for state in states:
                n = int(self.client.zcount(self.keys.finished_index(state), "-inf", cutoff))
                report.removed[state] = n
            return report
        line = self._tombstone_line(now)
        started = time.monotonic()
        for state in states:
            removed = tombs = 0
            while True:
                got = self._run("purge", self._purge_keys(),
                                [self.keys.prefix, self._audit, AUDIT_MAXLEN, state, cutoff,
                                 PURGE_PAGE, line])
                removed, tombs = removed + int(got[0]), tombs + int(got[1])
                seen = int(got[0]) + int(got[1]) + int(got[2])
                if seen < PURGE_PAGE or time.monotonic() - started > budget_s:
                    break
            report.removed[state] = removed
            report.tombstoned[state] = tombs
        if report.total:
            log.info("purged %d finished tasks (%s; %d tombstones)", report.total,
                     ", ".join(f"{s} {n}" for s, n in report.removed.items() if n),
                     sum(report.tombstoned.values()))
        return report

    def expire(self, budget_s: float = 0.5) -> PurgeReport:
        """The retention pass: purge what finished a retention (plus the clock-skew margin)
        ago, and tombstones the window has closed on. Nothing when the retention is 0."""
        if not self.retention_ms:
            return PurgeReport()
        report = self.purge((self.retention_ms + CLOCK_SKEW_MS) / 1000, budget_s=budget_s)
        report.tombstones_expired = self._expire_tombstones(budget_s)
        return report

    def _expire_tombstones(self, budget_s: float) -> int:
        cutoff = self.server_ms() - self.retention_ms - CLOCK_SKEW_MS
        started, total = time.monotonic(), 0
        while True:
            got = self._run("purge", self._purge_keys(),
                            [self.keys.prefix, self._audit, AUDIT_MAXLEN, "tomb", cutoff,
                             PURGE_PAGE, 0])
            total += int(got[0])
            if int(got[0]) + int(got[2]) < PURGE_PAGE or time.monotonic() - started > budget_s:
                return total

    def _tombstone_line(self, now_ms: int) -> int:
        """Tasks that finished after this ms get a tombstone when purged (-1: all of them,
        when there is no replay window because nothing expires)."""
        if not self.retention_ms:
            return -1
        return now_ms - self.retention_ms - CLOCK_SKEW_MS

    def _purge_keys(self) -> list[str]:
        """The purge script's keys; the last names this call (a resend gets its answer)."""
        k = self.keys
        return [k.counts, k.stats, k.audit, k.tombstones, k.reply("purge", os.urandom(8).hex())]

    # ---- the replay window for live records -----------------------------------------------
    def reseal_stale(self, page: int = RESEAL_PAGE) -> int:
        """Re-sign live records sealed more than half a retention ago (one page); how many.

        Judged by server time. A record that does not verify, or was issued before the window
        (a replay), is left as it is: acquire quarantines it.
        """
        if not self.retention_ms:
            return 0
        k = self.keys
        now = self.server_ms()
        due = [as_text(x) for x in self.client.zrangebyscore(
            k.seal_index, "-inf", now - self.retention_ms // 2, start=0, num=page)]
        if not due:
            return 0
        pipe = self.client.pipeline(transaction=False)
        for task_id in due:
            pipe.hmget(k.task(task_id), ["rec", "state"])
        triples: list[tuple[str, bytes, bytes]] = []
        later: dict[str, int] = {}
        gone: list[str] = []
        for task_id, (rec, state) in zip(due, pipe.execute(), strict=True):
            if rec is None or state is None or as_text(state) not in LIVE_STATES.split(","):
                gone.append(task_id)
                continue
            fresh = self.resealed(task_id, as_bytes(rec), RECORD, now_ms=now)
            if fresh is None:  # judged again in half a window; acquire refuses it meanwhile
                later[task_id] = now
            else:
                triples.append((task_id, as_bytes(rec), fresh))
        done = self.compare_and_set("rec", LIVE_STATES, triples)
        pipe = self.client.pipeline(transaction=False)
        for (task_id, _, _), ok in zip(triples, done, strict=True):
            later[task_id] = now if ok else now - self.retention_ms // 2  # retry next pass
        if later:
            pipe.zadd(k.seal_index, later, xx=True)
        if gone:
            pipe.zrem(k.seal_index, *gone)
        pipe.execute()
        n = sum(done)
        if n:
            log.info("re-signed %d live task records half a retention old", n)
        return n

    def resealed(self, task_id: str, data: bytes, purpose: str, *, now_ms: int) -> bytes | None:
        """``data`` signed afresh (same body), or None when it does not verify as this task's,
        or was issued before the replay window (never launder a replayed record)."""
        try:
            opened = self.sealer.open(data, purpose)
        except IntegrityError:
            return None
        body = opened.body
        if not isinstance(body, dict) or body.get("id") != task_id or (
                body.get("ns") != self.namespace):
            return None
        if self.outside_window(opened.iat, now_ms):
            return None
        return self.sealer.seal(purpose, body)

    def outside_window(self, iat_s: float, now_ms: int) -> bool:
        """True when something issued at ``iat_s`` (epoch s) is older than the replay window."""
        return bool(self.retention_ms) and iat_s * 1000 < now_ms - self.retention_ms

    # ---- the audit stream -------------------------------------------------------------------
    def trim_audit(self, max_age_s: float) -> int:
        """Drop audit entries older than ``max_age_s`` by server time (0: none); how many."""
        if max_age_s <= 0:
            return 0
        oldest = self.server_ms() - int(max_age_s * 1000)
        return int(self.client.xtrim(self.keys.audit, minid=f"{oldest}-0", approximate=False))
