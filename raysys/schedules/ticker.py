"""The schedule ticker the Coordinator runs: each due tick becomes exactly one task.

One pass (:meth:`ScheduleTicker.run_once`, every ``TICK_INTERVAL_S``) reads the schedules whose
next tick has come (server time), and for each:

1. verifies its signed definition and cursor (the last tick handled);
2. works out the ticks after the cursor: those due within ``GRACE_MS`` always run (normal
   lateness, a Coordinator restart); older ones were missed while nothing ran the ticker and
   follow the schedule's ``catchup``: ``skip`` drops them (counted and audited), ``all`` runs
   the newest ``CATCHUP_MAX`` of them, oldest first, ``PER_PASS`` per pass;
3. submits one task per tick, idempotency key ``schedule:<name>:<tick ms>``, and moves the cursor
   in the same script (``submit.lua``), only if the cursor is still what step 1 read.

So a tick is enqueued once even when the Coordinator is killed across it (the cursor and the
tasks land together, or neither does) or two Coordinators race (one cursor check wins, the
other gets a Conflict and moves on; the idempotency key is a second line). A definition or
cursor that fails verification is never used: logged, counted, audited, retried a minute later.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from raysys.errors import Conflict, IntegrityError
from raysys.models import TaskSpec
from raysys.schedules import cron
from raysys.schedules.spec import (
    PAUSED_SCORE,
    ScheduleSpec,
    open_cursor,
    open_spec,
    seal_cursor,
)
from raysys.signing.envelope import Sealer
from raysys.store.records import AUDIT_MAXLEN
from raysys.store.replies import as_bytes, as_text

if TYPE_CHECKING:
    from raysys.core import Core

log = logging.getLogger(__name__)
TICK_INTERVAL_S = 0.2
GRACE_MS = 30_000  # a tick due this recently is late, not missed: it runs whatever catchup says
CATCHUP_MAX = 1000  # catchup "all": at most this many missed ticks run (the newest)
PER_PASS = 100  # ticks one schedule enqueues per pass (one submit call)
RETRY_BAD_MS = 60_000  # a schedule that failed verification is looked at again this much later
DUE_PAGE = 100


@dataclass(frozen=True, slots=True)
class Fired:
    """What one schedule's pass did."""

    name: str
    ticks: tuple[int, ...] = ()
    task_ids: tuple[str, ...] = ()
    skipped: int = 0
    lost_race: bool = False


class ScheduleTicker:
    """Turns due ticks into tasks for one namespace; stateless between passes."""

    def __init__(self, core: Core, *, by: str = "coordinator") -> None:
        self.core = core
        self.client = core.client
        self.keys = core.keys
        self.sealer: Sealer = core.sealer
        self.store = core.store
        self.by = by

    def run_once(self) -> list[Fired]:
        """One pass over every due schedule (server time); what each did."""
        now = self.store.server_ms()
        due = [as_text(n) for n in self.client.zrangebyscore(
            self.keys.schedules, "-inf", now, start=0, num=DUE_PAGE)]
        out = []
        for name in due:
            try:
                out.append(self.fire(name, now))
            except IntegrityError as exc:
                log.error("schedule %s rejected: %s (%s); it enqueues nothing until fixed",
                          name, exc, exc.reason)
                self.client.hincrby(self.keys.stats, "signature_failures", 1)
                self._audit({"ev": "schedule_rejected", "schedule": name, "reason": exc.reason,
                             "by": self.by})
                self.client.zadd(self.keys.schedules, {name: now + RETRY_BAD_MS}, xx=True)
        return out

    def fire(self, name: str, now: int) -> Fired:
        """Enqueue the due ticks of schedule ``name`` at server time ``now``."""
        rec, cur = self.client.hmget(self.keys.schedule(name), ["rec", "cur"])
        if rec is None:  # removed meanwhile
            self.client.zrem(self.keys.schedules, name)
            return Fired(name)
        spec, _ = open_spec(self.sealer, as_bytes(rec), name, self.core.namespace)
        if spec.paused:
            self.client.zadd(self.keys.schedules, {name: PAUSED_SCORE}, xx=True)
            return Fired(name)
        cur_bytes = as_bytes(cur) if cur is not None else b""
        last = self._last(name, cur_bytes, now)
        ticks, skipped = self._plan(spec, last, now)
        if not ticks and not skipped:
            self._reschedule(spec, last)
            return Fired(name)
        mark = ticks[-1] if ticks else now - GRACE_MS
        specs = [TaskSpec.build(kind=spec.kind, payload=spec.payload, priority=spec.priority,
                                idempotency_key=f"schedule:{name}:{tick}") for tick in ticks]
        new_cur = seal_cursor(self.sealer, name, self.core.namespace, mark)
        try:
            ids = self.store.submit_many(specs, cursor=(name, cur_bytes, new_cur))
        except Conflict:
            log.info("schedule %s: another Coordinator enqueued this tick", name)
            return Fired(name, lost_race=True)
        if skipped:
            log.warning("schedule %s: %d ticks missed while nothing ran the ticker were "
                        "skipped (catchup %s)", name, skipped, spec.catchup)
            self._audit({"ev": "schedule_skipped", "schedule": name, "n": skipped,
                         "by": self.by})
        if ticks:
            log.info("schedule %s fired %d tick(s), last %d (%s)", name, len(ticks), ticks[-1],
                     self.by)
            self._audit({"ev": "schedule_fired", "schedule": name, "ticks": len(ticks),
                         "last_ms": ticks[-1], "by": self.by})
        self._reschedule(spec, mark)
        return Fired(name, tuple(ticks), tuple(ids), skipped)

    def _last(self, name: str, cur: bytes, now: int) -> int:
        """The verified cursor. Every schedule is added with one, so a missing cursor is a
        definition written back without it (a removed schedule replayed): refused."""
        if not cur:
            raise IntegrityError(f"schedule {name}: no cursor (a schedule is always added with "
                                 "one: a definition written back?)", reason="missing_cursor")
        at = open_cursor(self.sealer, cur, name, self.core.namespace)
        opened = self.sealer.open(cur, "schedule_cursor")
        if self.store.outside_window(opened.iat, now):
            raise IntegrityError(f"schedule {name}: cursor signed before the replay window "
                                 "(an old copy written back?)", reason="expired_record")
        return at

    def _plan(self, spec: ScheduleSpec, last: int, now: int) -> tuple[list[int], int]:
        """(ticks to enqueue now, oldest first; missed ticks skipped for good)."""
        line = now - GRACE_MS
        if spec.catchup == "all":
            ticks, dropped = cron.ticks_between(spec.cron, spec.tz, last, now, CATCHUP_MAX)
            return ticks[:PER_PASS], dropped
        recent, _ = cron.ticks_between(spec.cron, spec.tz, max(last, line), now, CATCHUP_MAX)
        missed = 0
        if last < line:
            _, missed = cron.ticks_between(spec.cron, spec.tz, last, line, 0)
        return recent[:PER_PASS], missed

    def _reschedule(self, spec: ScheduleSpec, after: int) -> None:
        nxt = cron.next_tick(spec.cron, spec.tz, after)
        self.client.zadd(self.keys.schedules, {spec.name: nxt}, xx=True)

    def _audit(self, fields: dict[str, Any]) -> None:
        if self.store.audit_enabled:
            entry: dict[Any, Any] = dict(fields)
            self.client.xadd(self.keys.audit, entry, maxlen=AUDIT_MAXLEN, approximate=True)

    def reseal_cursors(self) -> int:
        """Re-sign cursors older than half the replay window (a yearly schedule's cursor
        outlives the retention); how many. A cursor that fails verification is left alone."""
        if not self.store.retention_ms:
            return 0
        now = self.store.server_ms()
        done = 0
        for raw in self.client.zrange(self.keys.schedules, 0, -1):
            name = as_text(raw)
            cur = self.client.hget(self.keys.schedule(name), "cur")
            if cur is None:
                continue
            try:
                at = open_cursor(self.sealer, as_bytes(cur), name, self.core.namespace)
                opened = self.sealer.open(as_bytes(cur), "schedule_cursor")
            except IntegrityError:
                continue
            if opened.iat * 1000 > now - self.store.retention_ms // 2 or self.store.outside_window(
                    opened.iat, now):
                continue
            fresh = seal_cursor(self.sealer, name, self.core.namespace, at)
            try:
                self.store.submit_many([], cursor=(name, as_bytes(cur), fresh))
                done += 1
            except Conflict:
                continue
        return done
