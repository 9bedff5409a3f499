"""The worker pool's keeper, run by the Coordinator: replace stuck workers, follow the backlog
between MIN and MAX workers, and tell Ray's autoscaler what held-back kinds need.

* **Stuck workers.** A worker whose every slot is taken by a handler that overran its time limit
  (a thread Python cannot stop) reports ``stuck`` = ``concurrency`` and takes no work; the
  keeper kills its process (``ray.kill`` with restart): the actor comes back fresh under the
  same id, and the leases it still held expire and are requeued.
* **Autoscaling** (``min_workers < max_workers``). Pressure is the backlog of kinds that can be
  handed out now per slot of the live workers. Above ``SCALE_UP_PRESSURE`` for
  ``SCALE_UP_CHECKS`` checks in a row, one worker is added (never above MAX); with no backlog and
  a worker idle for ``scale_down_idle_s``, the highest-numbered worker is drained and removed
  (never below MIN). One step per check: the hysteresis keeps the pool from flapping.
* **Ray's autoscaler.** Kinds no node can place (the Distributor's ``waiting`` list) are asked
  for with ``ray.autoscaler.sdk.request_resources``: one bundle per pending task, at most
  ``max_workers * concurrency`` per kind. Without an autoscaler the request does nothing.

Stateless across restarts: everything it decides from is in Redis or Ray.
"""

from __future__ import annotations

import logging
import time
from dataclasses import dataclass, field
from typing import Any

import ray

from raysys.actor_config import ActorConfig
from raysys.actors import factory
from raysys.client.handles import get, kill
from raysys.registry import Registry
from raysys.store import TaskStore

log = logging.getLogger(__name__)
SCALE_UP_PRESSURE = 1.0  # backlog per live slot above which the pool grows
SCALE_UP_CHECKS = 2
DRAIN_TIMEOUT_S = 60.0


@dataclass
class PoolState:
    """What the keeper remembers between checks (lost on restart, rebuilt in a few checks)."""

    hot_checks: int = 0
    idle_since: dict[str, float] = field(default_factory=dict)
    requested: list[dict[str, float]] = field(default_factory=list)
    killed_pids: set[int] = field(default_factory=set)  # a heartbeat of these is a stale one
    added: int = 0
    removed: int = 0
    replaced: int = 0


class PoolKeeper:
    """One ``check()`` per interval (the Coordinator's timer)."""

    def __init__(self, config: ActorConfig, store: TaskStore, registry: Registry, *,
                 worker_max_age_ms: int, scale_down_idle_s: float = 30.0) -> None:
        self.config = config
        self.store = store
        self.registry = registry
        self.max_age_ms = worker_max_age_ms
        self.scale_down_idle_s = scale_down_idle_s
        self.state = PoolState()

    def check(self) -> dict[str, Any]:
        """Replace stuck workers, scale, ask for resources; what was done."""
        workers = [w for w in self.registry.workers(self.max_age_ms) if w["live"]]
        waiting = self.registry.waiting()
        replaced = self._replace_stuck(workers)
        change = self._scale(workers, waiting) if self.config.autoscaled else 0
        self._request_resources(waiting)
        return {"workers": len(workers), "replaced": replaced, "change": change}

    def _replace_stuck(self, workers: list[dict[str, Any]]) -> int:
        replaced = 0
        handles = factory.worker_handles(self.config.namespace)
        for w in workers:
            if int(w.get("stuck", 0)) < int(w.get("concurrency", 1)):
                continue
            pid = int(w.get("pid", 0))
            index = self.config.worker_index(str(w["id"]))
            index = -1 if index is None else index
            if index in handles and pid not in self.state.killed_pids:
                self.state.killed_pids.add(pid)
                log.warning("worker %s has every slot stuck past its time limit: restarting "
                            "it", w["id"])
                ray.kill(handles[index], no_restart=False)  # type: ignore[arg-type]
                replaced += 1
        self.state.replaced += replaced
        return replaced

    def _scale(self, workers: list[dict[str, Any]], waiting: dict[str, Any]) -> int:
        handles = factory.worker_handles(self.config.namespace)
        count = len(handles)
        if count < self.config.min_workers:
            return self._add(handles)
        backlog = sum(n for kind, n in self.store.queued_by_kind().items() if kind not in waiting)
        slots = sum(int(w.get("concurrency", 0)) for w in workers if not w.get("draining"))
        pressure = backlog / max(slots, 1)
        self.state.hot_checks = self.state.hot_checks + 1 if pressure > SCALE_UP_PRESSURE else 0
        if self.state.hot_checks >= SCALE_UP_CHECKS and count < self.config.max_workers:
            self.state.hot_checks = 0
            return self._add(handles)
        now = time.monotonic()
        idle = self.state.idle_since
        for w in workers:
            busy = int(w.get("queued", 0)) + int(w.get("running", 0))
            idle[str(w["id"])] = idle.get(str(w["id"]), now) if busy == 0 else now
        longest = min(idle.values(), default=now)
        if (backlog == 0 and count > self.config.min_workers
                and now - longest >= self.scale_down_idle_s):
            return self._remove(handles)
        return 0

    def _add(self, handles: dict[int, Any]) -> int:
        index = next(i for i in range(self.config.max_workers + 1) if i not in handles)
        log.info("backlog per slot is high: adding worker %d", index)
        get(factory.start_worker(self.config, index).pid.remote(), timeout=120)
        self.state.added += 1
        return 1

    def _remove(self, handles: dict[int, Any]) -> int:
        index = max(handles)
        handle = handles[index]
        log.info("the pool is idle: draining and removing worker %d", index)
        get(handle.drain.remote(DRAIN_TIMEOUT_S), timeout=DRAIN_TIMEOUT_S + 30)
        get(handle.stop.remote(), timeout=30)
        kill(handle)
        self.state.idle_since.pop(self.config.worker_id(index), None)
        self.state.removed += 1
        return -1

    def _request_resources(self, waiting: dict[str, Any]) -> None:
        cap = self.config.max_workers * self.config.concurrency
        bundles: list[dict[str, float]] = []
        for doc in waiting.values():
            if doc.get("reason") == "resources" and doc.get("need"):
                need = {str(k): float(v) for k, v in doc["need"].items()}
                bundles += [need] * min(int(doc.get("pending", 0)), cap)
        if bundles != self.state.requested:
            from ray.autoscaler.sdk import request_resources

            request_resources(bundles=bundles)
            self.state.requested = bundles
            log.info("asked Ray's autoscaler for %d bundles for kinds waiting for a node",
                     len(bundles))
