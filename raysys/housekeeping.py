"""Housekeeping the Coordinator runs off the hot path, in bounded steps: indexing tasks an
earlier version wrote (raysys/store/upgrade.py), retention of finished tasks and tombstones,
re-signing live records before the replay window closes on them, trimming the audit stream by
age, keeping the newest ``RAYSYS_SNAPSHOT_KEEP`` stored snapshots, and re-signing schedule
cursors older than half the window (a yearly schedule's outlives it).

Every step is stateless and safe from two Coordinators at once: each script re-checks under
Redis server time what it removes, and a page is bounded (``PURGE_PAGE`` tasks, a time budget
per pass), so a backlog of a million finished tasks drains over passes without blocking Redis.
"""

from __future__ import annotations

import logging
import time
from dataclasses import dataclass
from typing import TYPE_CHECKING

from raysys.schedules import ScheduleTicker
from raysys.store.upgrade import upgrade_step

if TYPE_CHECKING:
    from raysys.core import Core

log = logging.getLogger(__name__)
HOUSEKEEPING_INTERVAL_S = 1.0
SLOW_STEPS_EVERY_S = 60.0  # audit trim and snapshot pruning
PASS_BUDGET_S = 0.5  # at most this long purging per pass (then the next pass goes on)


@dataclass(frozen=True, slots=True)
class HousekeepingReport:
    purged: int = 0
    tombstones_expired: int = 0
    resealed: int = 0
    audit_trimmed: int = 0
    snapshots_dropped: int = 0


class Housekeeper:
    """One namespace's housekeeping; :meth:`run_once` is one pass."""

    def __init__(self, core: Core) -> None:
        self.core = core
        self.store = core.store
        self.settings = core.settings
        self._slow_at = float("-inf")

    def run_once(self) -> HousekeepingReport:
        upgrade_step(self.store)  # tasks of earlier versions: indexed, once, a page a pass
        expired = self.store.expire(budget_s=PASS_BUDGET_S)
        resealed = self.store.reseal_stale()
        trimmed = dropped = 0
        if time.monotonic() - self._slow_at >= SLOW_STEPS_EVERY_S:
            self._slow_at = time.monotonic()
            trimmed = self.store.trim_audit(self.settings.audit_retention_s)
            dropped = self._prune_snapshots()
            resealed += ScheduleTicker(self.core).reseal_cursors()
        return HousekeepingReport(expired.total, expired.tombstones_expired, resealed, trimmed,
                                  dropped)

    def _prune_snapshots(self) -> int:
        keep = self.settings.snapshot_keep
        if keep <= 0:
            return 0
        from raysys.snapshots import SnapshotManager

        dropped = SnapshotManager(self.core).prune(keep)
        if dropped:
            log.info("dropped %d stored snapshots beyond RAYSYS_SNAPSHOT_KEEP=%d", len(dropped),
                     keep)
        return len(dropped)
