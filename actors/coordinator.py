"""The Coordinator actor: the submission path, the reaper, the pool keeper, and queries.

Fault-tolerance contract:

* Keeps in Redis: everything. Submissions go through ``TaskStore.submit_many`` (the one write
  path): a call returns only after the signed records are stored. The reaper (``store.reap``
  every ``RAYSYS_REAPER_INTERVAL_S``) is stateless: any incarnation finishes what another began.
* Housekeeping (:mod:`raysys.housekeeping`, every second): retention, tombstones, re-signing
  live records before the replay window closes, the audit stream's age, stored snapshots kept.
  Stateless and bounded per pass; two Coordinators may run it at once.
* The schedule ticker (:mod:`raysys.schedules.ticker`, every 0.2 s): each due tick of a
  periodic schedule becomes one task; its cursor moves in the same script as the submit, so a
  kill across a tick or a second Coordinator enqueues nothing twice.
* The pool keeper (:mod:`raysys.actors.pool`, every ``POOL_INTERVAL_S``) replaces workers whose
  every slot is stuck, follows the backlog between MIN and MAX workers, and asks Ray's
  autoscaler for what held-back kinds need; it decides from Redis and Ray alone.
* A restart re-runs ``__init__`` (reaper and keeper restart; nothing to recover). A
  ``submit_many`` cut off by the crash either stored its whole batch or nothing (one Lua
  script); the caller cannot tell which, so it resubmits only with idempotency keys.
  ``status``/``statuses``/``counts``/``workers``/``cancel`` are idempotent and safe to retry.
"""

from __future__ import annotations

import logging
import os
from collections.abc import Sequence
from typing import TYPE_CHECKING, Any

from raysys import metrics
from raysys.actors.context import ActorConfig, open_actor_core
from raysys.errors import NotFound, ValidationError
from raysys.housekeeping import HOUSEKEEPING_INTERVAL_S, Housekeeper, HousekeepingReport
from raysys.ledger import open_ledger
from raysys.models import FINAL_STATES, MAX_BATCH, TaskSpec, TaskState, TaskStatus
from raysys.registry import Registry
from raysys.schedules import ScheduleBook, ScheduleSpec, ScheduleTicker
from raysys.schedules.ticker import TICK_INTERVAL_S
from raysys.store.listing import TaskPage
from raysys.store.redrive import RedriveReport
from raysys.timer import PeriodicTimer

if TYPE_CHECKING:
    from raysys.actors.pool import PoolKeeper
    from raysys.actors.ray_metrics import RayMetricsMirror

log = logging.getLogger(__name__)
MIRROR_INTERVAL_S = 5.0
POOL_INTERVAL_S = 2.0


class Coordinator:
    def __init__(self, config: ActorConfig, *, reaper: bool = True) -> None:
        self.config = config
        self.core = open_actor_core(config, "coordinator")
        self.store = self.core.store
        self.registry = Registry(self.core)
        self.ledger = (open_ledger(self.core.client, config.namespace, config.ledger_url)
                       if config.ledger else None)
        self.ttl_s = self.core.settings.lease_ttl_s
        self._reaper = PeriodicTimer("reaper", self.core.settings.reaper_interval_s, self.reap)
        self._mirror: PeriodicTimer | None = None
        self._ray_mirror: RayMetricsMirror | None = None  # first use: needs Ray's runtime
        self._pool: PeriodicTimer | None = None
        self._keeper: PoolKeeper | None = None
        self._housekeeper = Housekeeper(self.core)
        self._housekeeping = PeriodicTimer("housekeeping", HOUSEKEEPING_INTERVAL_S,
                                           self.housekeep)
        self.schedule_book = ScheduleBook(self.core)
        self._ticker = ScheduleTicker(self.core, by=self.core.settings.coordinator_id)
        self._ticking = PeriodicTimer("schedules", TICK_INTERVAL_S, self._ticker.run_once)
        if reaper:
            self._reaper.start()
            self._housekeeping.start()
            self._ticking.start()
            self._mirror = PeriodicTimer("ray-metrics", MIRROR_INTERVAL_S, self.publish_metrics)
            self._mirror.start()
            self._pool = PeriodicTimer("pool", POOL_INTERVAL_S, self.keep_pool)
            self._pool.start()
        log.info("Coordinator %s of namespace %s up (pid %d)", self.core.settings.coordinator_id,
                 config.namespace, os.getpid())

    def submit_many(self, specs: Sequence[dict[str, Any] | TaskSpec]) -> list[str]:
        """Validate and store tasks (all or nothing per 10,000); ids in order."""
        # Re-validated here: an unpickled TaskSpec skipped its validators on the way in.
        built = [TaskSpec.build(**(s.__dict__ if isinstance(s, TaskSpec) else s))
                 for s in specs]
        ids: list[str] = []
        for offset in range(0, len(built), MAX_BATCH):
            ids += self.store.submit_many(built[offset:offset + MAX_BATCH])
        return ids

    def status(self, task_id: str) -> TaskStatus:
        return self.store.status(task_id)

    def statuses(self, task_ids: Sequence[str]) -> list[TaskStatus | None]:
        """Status of each id (None where unknown), same order."""
        out: list[TaskStatus | None] = []
        for task_id in task_ids:
            try:
                out.append(self.store.status(task_id))
            except NotFound:
                out.append(None)
        return out

    def cancel(self, task_id: str) -> TaskState:
        """Cancel one task; the state it was in (a final state: nothing changed)."""
        before = self.store.cancel(task_id)
        if self.ledger is not None and before not in FINAL_STATES:
            self.ledger.record([(task_id, 0, TaskState.CANCELLED.value)])
        return before

    def cancel_many(self, task_ids: Sequence[str]) -> list[TaskState | None]:
        """:meth:`cancel` each id; None where the task is unknown."""
        out: list[TaskState | None] = []
        for task_id in task_ids:
            try:
                out.append(self.cancel(task_id))
            except NotFound:
                out.append(None)
        return out

    def tasks(self, **query: Any) -> TaskPage:
        """A page of tasks, newest first (``TaskStore.tasks``: state, kind, since_ms, limit,
        cursor)."""
        return self.store.tasks(**query)

    def history(self, task_id: str) -> list[dict[str, Any]]:
        return self.store.history(task_id)

    def redrive(self, **request: Any) -> RedriveReport:
        """Run finished tasks again (``TaskStore.redrive``: ids or state, kind, dry_run,
        request_id); idempotent per request id."""
        return self.store.redrive(**request)

    def schedules(self, op: str, **args: Any) -> Any:
        """Periodic schedules: ``op`` is add (``spec``: the fields of ScheduleSpec), list,
        get, remove, pause or resume (``name``). Returns ScheduleInfo, or for list
        ``(infos, {name: why it failed verification})``."""
        book = self.schedule_book
        if op == "add":
            return book.add(ScheduleSpec.build(**args["spec"]))
        if op == "list":
            return book.list()
        if op in ("get", "remove", "pause", "resume"):
            return getattr(book, op)(str(args["name"]))
        raise ValidationError(f"unknown schedule operation {op!r}")

    def waiting(self) -> dict[str, dict[str, Any]]:
        """Kinds held back (no node can place them, max_in_flight reached), and why."""
        return self.registry.waiting()

    def counts(self) -> dict[str, int]:
        return self.store.counts()

    def stats(self) -> dict[str, int]:
        return self.store.stats()

    def workers(self) -> list[dict[str, Any]]:
        return self.registry.workers(max_age_ms=int(self.ttl_s * 1000))

    def reap(self) -> tuple[int, int]:
        """One reaper pass: (requeued, dead). Dead-by-expiry is a final commit for the ledger."""
        report = self.store.reap()
        if self.ledger is not None and (report.dead_leases or report.unstarted):
            self.ledger.record([*((tid, fence, "dead") for tid, fence in report.dead_leases),
                                *((tid, 0, "dead") for tid in report.unstarted)])
        return report.requeued, report.dead

    def housekeep(self) -> HousekeepingReport:
        """One housekeeping pass (retention, re-signing, audit trim, snapshots kept)."""
        return self._housekeeper.run_once()

    def keep_pool(self) -> dict[str, Any]:
        """One pass of the pool keeper (stuck workers, autoscaling, resource requests)."""
        if self._keeper is None:
            from raysys.actors.pool import PoolKeeper

            self._keeper = PoolKeeper(self.config, self.store, self.registry,
                                      worker_max_age_ms=int(self.ttl_s * 1000),
                                      scale_down_idle_s=self.config.scale_down_idle_s)
        return self._keeper.check()

    def publish_metrics(self) -> int:
        """Copy the system-wide metrics into Ray's metrics API (the Ray dashboard)."""
        from raysys.actors.ray_metrics import RayMetricsMirror

        if self._ray_mirror is None:
            self._ray_mirror = RayMetricsMirror()
        snap = metrics.read(self.core, worker_max_age_ms=int(self.ttl_s * 1000),
                            actors={"coordinator": True})
        return self._ray_mirror.publish(snap)

    def actor_config(self) -> ActorConfig:
        """How this deployment's actors are configured (``connect`` starts workers with it)."""
        return self.config

    def pid(self) -> int:
        return os.getpid()

    def ping(self) -> str:
        return "pong"

    def reset_pool(self) -> None:
        """Forget every heartbeat and the paused/drain flags (``raysys down``)."""
        self.registry.clear()

    def stop(self) -> None:
        self._reaper.stop()
        for timer in (self._mirror, self._pool, self._housekeeping, self._ticking):
            if timer is not None:
                timer.stop()
        self.core.close()
