"""The one place that applies ``ray.remote``: names, namespaces and options of the actors.

Actors: ``raysys-coordinator``, ``raysys-distributor``, ``raysys-worker-<i>``, all in the Ray
namespace equal to ``RAYSYS_NAMESPACE``, detached, found again with ``get_if_exists``, restarted
without limit (``max_restarts=-1``). Settings reach them as an :class:`ActorConfig` (no
secrets: ``ActorConfig`` refuses them); never through ``runtime_env`` ``env_vars``.

``max_task_retries``: the Coordinator 0 (``submit_many`` is not idempotent; the client retries
the idempotent reads itself), the Worker 0 (a lost ``assign`` costs one lease TTL, and a resend
would be rejected as a replay anyway), the Distributor -1 (its methods are idempotent).
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from concurrent.futures import Future
from dataclasses import dataclass
from typing import Any, cast

import ray

from raysys.actor_config import ActorConfig
from raysys.actors.coordinator import Coordinator
from raysys.actors.distributor import Distributor
from raysys.actors.worker import Worker
from raysys.client.handles import (
    CoordinatorHandle,
    DistributorHandle,
    Ref,
    WorkerHandle,
    get,
    get_all,
)

log = logging.getLogger(__name__)

COORDINATOR = "raysys-coordinator"
DISTRIBUTOR = "raysys-distributor"
WORKER_PREFIX = "raysys-worker-"
CALL_TIMEOUT_S = 5.0
LOAD_TIMEOUT_S = 1.0
READY_TIMEOUT_S = 120.0

_COMMON: dict[str, Any] = {"lifetime": "detached", "get_if_exists": True, "max_restarts": -1,
                           "num_cpus": 0}


def worker_name(index: int) -> str:
    return f"{WORKER_PREFIX}{index}"


@dataclass(frozen=True)
class ControlPlane:
    """The two singleton actors of a namespace."""

    coordinator: CoordinatorHandle
    distributor: DistributorHandle


def deploy(config: ActorConfig, workers: int | None = None) -> ControlPlane:
    """Find or start the Coordinator, the Distributor and workers ``0..workers-1`` (default
    the pool's MIN); return once each answers (idempotent: actors that exist are found, not
    started twice).

    Raises whatever Ray raises when an actor does not come up within ``READY_TIMEOUT_S``.
    """
    plane = ControlPlane(start_coordinator(config), start_distributor(config))
    count = config.min_workers if workers is None else workers
    started = [start_worker(config, i) for i in range(count)]
    answers: list[Ref[object]] = [plane.coordinator.ping.remote(),
                                  plane.distributor.pid.remote(),
                                  *[h.pid.remote() for h in started]]
    get_all(answers, timeout=READY_TIMEOUT_S)
    return plane


def find(namespace: str) -> ControlPlane | None:
    """The running Coordinator and Distributor of ``namespace``, or None."""
    coordinator, distributor = _find(COORDINATOR, namespace), _find(DISTRIBUTOR, namespace)
    if coordinator is None or distributor is None:
        return None
    return ControlPlane(coordinator, distributor)


def start_coordinator(config: ActorConfig) -> CoordinatorHandle:
    cls = ray.remote(Coordinator)
    handle = cls.options(name=COORDINATOR, namespace=config.namespace, max_task_retries=0,
                         max_concurrency=16, **_COMMON).remote(config)
    return cast(CoordinatorHandle, handle)


def start_distributor(config: ActorConfig) -> DistributorHandle:
    cls = ray.remote(Distributor)
    handle = cls.options(name=DISTRIBUTOR, namespace=config.namespace, max_task_retries=-1,
                         max_concurrency=4, **_COMMON).remote(config,
                                                              RayWorkerPort(config.namespace))
    return cast(DistributorHandle, handle)


def start_worker(config: ActorConfig, index: int) -> WorkerHandle:
    """Worker ``index``; ``SPREAD`` places the pool across the cluster's nodes."""
    cls = ray.remote(Worker)
    handle = cls.options(name=worker_name(index), namespace=config.namespace,
                         max_task_retries=0, max_concurrency=16, scheduling_strategy="SPREAD",
                         **_COMMON).remote(config.worker_id(index), config)
    return cast(WorkerHandle, handle)


def get_actor(name: str, namespace: str) -> Any:
    return ray.get_actor(name, namespace=namespace)


def worker_handles(namespace: str) -> dict[int, WorkerHandle]:
    """Every live named worker actor of the namespace, by index."""
    out: dict[int, WorkerHandle] = {}
    for entry in ray.util.list_named_actors(all_namespaces=True):
        name = str(entry.get("name", ""))
        if entry.get("namespace") != namespace or not name.startswith(WORKER_PREFIX):
            continue
        try:
            out[int(name[len(WORKER_PREFIX):])] = get_actor(name, namespace)
        except ValueError:  # not a number, or gone since the listing
            continue
    return out


class RayWorkerPort:
    """Reaches worker actors by holder id (``<namespace>-<WORKER_ID>-<i>``) through Ray."""

    def __init__(self, namespace: str) -> None:
        self.namespace = namespace
        self._handles: dict[str, WorkerHandle] = {}

    def _handle(self, holder: str) -> WorkerHandle:
        handle = self._handles.get(holder)
        if handle is None:
            index = int(holder.rsplit("-", 1)[1])
            handle = get_actor(worker_name(index), self.namespace)
            self._handles[holder] = handle
        return handle

    def loads(self, worker_ids: Sequence[str]) -> dict[str, dict[str, Any]]:
        refs = {}
        for holder in worker_ids:
            try:
                refs[holder] = self._handle(holder).load.remote()
            except Exception:  # not registered (yet / any more): skip it this round
                self._handles.pop(holder, None)
        if not refs:
            return {}
        # One short wait for all: a stopped (SIGSTOP) or slow worker must not stall hand-out
        # to the others; its heartbeat goes stale within the TTL and it leaves the live set.
        ready, _ = ray.wait(list(refs.values()), num_returns=len(refs), timeout=LOAD_TIMEOUT_S)
        ready_set = set(ready)
        out: dict[str, dict[str, Any]] = {}
        for holder, ref in refs.items():
            if ref not in ready_set:
                continue
            try:
                out[holder] = get(ref, timeout=0)
            except Exception:  # dead or replaced: look the name up afresh next time
                self._handles.pop(holder, None)
        return out

    def nodes(self) -> list[dict[str, float]] | None:
        """Total resources of each live node of the cluster."""
        return [{str(k): float(v) for k, v in node.get("Resources", {}).items()}
                for node in ray.nodes()  # type: ignore[no-untyped-call]  # Ray: no hints
                if node.get("Alive")]

    def send(self, worker_id: str, envelope: bytes) -> Future[int]:
        handle = self._handle(worker_id)
        reply: Future[int] = handle.assign.remote(envelope).future()

        def forget_on_failure(done: Future[int]) -> None:
            if done.exception() is not None:  # a replaced actor needs a fresh handle
                self._handles.pop(worker_id, None)

        reply.add_done_callback(forget_on_failure)
        return reply


def _find(name: str, namespace: str) -> Any:
    try:
        return get_actor(name, namespace)
    except ValueError:
        return None


def kill_all(namespace: str, *, graceful: bool = True) -> None:
    """Stop and remove every raysys actor of the namespace (no restart); Redis keeps the tasks."""
    coordinator = _find(COORDINATOR, namespace)
    distributor = _find(DISTRIBUTOR, namespace)
    workers = list(worker_handles(namespace).values())
    handles = [h for h in (distributor, *workers, coordinator) if h is not None]
    if graceful:
        if coordinator is not None:
            try:  # a later `up` must not inherit a paused pool or stale heartbeats
                ray.get(coordinator.reset_pool.remote(), timeout=CALL_TIMEOUT_S)
            except Exception as exc:
                log.warning("could not reset the pool flags: %s", exc)
        try:
            ray.get([h.stop.remote() for h in handles], timeout=CALL_TIMEOUT_S)
        except Exception as exc:
            log.warning("some actors did not stop cleanly: %s", exc)
    for handle in handles:
        ray.kill(handle, no_restart=True)
