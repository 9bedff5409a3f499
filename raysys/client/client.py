"""The Python client: submit, wait, query and control one namespace through its named actors.

A :class:`Client` is built in one step, from the actors' handles (``raysys.client.launch``
finds or starts them). Ray and ``raysys.actors`` are imported inside methods only (DESIGN.md,
"Layers"); every actor call goes through :meth:`Client._call`, which unwraps Ray's errors into
raysys's own (``raysys.client.calls``). What it sends is built, and what it reads is judged, by
the modules it shares with the async client (``requests``, ``outcomes``).
"""

from __future__ import annotations

import logging
import shutil
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from datetime import datetime
from functools import partial
from pathlib import Path
from typing import Any, TypeVar

from raysys.actor_config import ActorConfig
from raysys.client.calls import CallAttempts, first_line
from raysys.client.handles import (
    CoordinatorHandle,
    DistributorHandle,
    Ref,
    WorkerHandle,
    get,
    get_all,
    kill,
)
from raysys.client.history import ClientHistory
from raysys.client.outcomes import POLL_S, WaitRounds, result_of
from raysys.client.requests import chunks, task_spec, task_specs
from raysys.errors import ConfigurationError, RayUnavailable
from raysys.models import TaskSpec, TaskState, TaskStatus
from raysys.redis_server.embedded import EmbeddedRedis

log = logging.getLogger(__name__)

T = TypeVar("T")
DEFAULT_CALL_TIMEOUT_S = 60.0
READY_TIMEOUT_S = 120.0


@dataclass
class Owned:
    """What ``start`` created and ``shutdown`` must take down."""

    server: EmbeddedRedis | None = None
    ray_started: bool = False
    ray_temp_dir: Path | None = None

    def release(self) -> None:
        """Stop the embedded Redis and remove Ray's temp dir (after Ray is shut down)."""
        if self.server is not None:
            self.server.stop()
        if self.ray_temp_dir is not None:
            shutil.rmtree(self.ray_temp_dir, ignore_errors=True)


def worker_index(config: ActorConfig, worker_id: str) -> int:
    """The index of worker ``<namespace>-<WORKER_ID>-<n>``; ConfigurationError otherwise."""
    index = config.worker_index(worker_id)
    if index is None:
        raise ConfigurationError(f"{worker_id!r} is not a worker id of namespace "
                                 f"{config.namespace} (expected {config.worker_id(0)[:-1]}<n>)")
    return index


class Client(ClientHistory):
    """Submit, wait, query and control one raysys namespace through its named actors.

    ``owned``: what this client started and takes down on :meth:`shutdown` (``start``); None
    for a client of actors that outlive it (``up``, ``connect``). ``dashboard_url``: the Ray
    dashboard of the local cluster ``start`` started (None: off, failed, or not ours).
    """

    def __init__(self, config: ActorConfig, coordinator: CoordinatorHandle,
                 distributor: DistributorHandle, *, owned: Owned | None = None,
                 ray_connected: bool = False, dashboard_url: str | None = None,
                 call_timeout_s: float = DEFAULT_CALL_TIMEOUT_S) -> None:
        self.namespace = config.namespace
        self.config = config  # how to start more workers
        self.coordinator = coordinator
        self.distributor = distributor
        self.call_timeout_s = call_timeout_s
        self.dashboard_url = dashboard_url
        self._owned = owned
        self._ray_connected = ray_connected
        self._closed = False

    # ---- tasks --------------------------------------------------------------------------------
    def submit(self, kind: str, payload: Any = None, priority: int = 0,
               idempotency_key: str | None = None, *, delay_s: float | None = None,
               run_at: float | datetime | str | None = None, **spec: Any) -> str:
        """Store one task durably (returns after it is in Redis); its id.

        ``delay_s`` (seconds from now) or ``run_at`` (an aware datetime, ISO-8601 text with a
        zone, or epoch seconds): the task waits in state ``scheduled`` and never starts before
        then (the time is signed into its record).
        """
        task = task_spec(kind, payload, priority, idempotency_key, delay_s=delay_s,
                         run_at=run_at, **spec)
        return self._submit([task], retry=idempotency_key is not None)[0]

    def submit_many(self, kind: str, payloads: Sequence[Any], priority: int = 0, *,
                    delay_s: float | None = None, run_at: float | datetime | str | None = None,
                    **spec: Any) -> list[str]:
        """Store many tasks of one kind; ids in the order of ``payloads`` (``delay_s`` and
        ``run_at`` as in :meth:`submit`, for all of them)."""
        tasks = task_specs(kind, payloads, priority, delay_s=delay_s, run_at=run_at, **spec)
        return self._submit(tasks, retry=False)

    def submit_specs(self, specs: Sequence[TaskSpec]) -> list[str]:
        """Store prepared specs (mixed kinds and priorities); ids in order."""
        return self._submit(list(specs), retry=False)

    def _submit(self, specs: list[TaskSpec], *, retry: bool) -> list[str]:
        # Without idempotency keys a resend after a lost reply could store the batch twice,
        # so only keyed submissions are retried when the Coordinator is restarting.
        ids: list[str] = []
        for chunk in chunks(specs):
            got = self._call(partial(self.coordinator.submit_many.remote, chunk), retry=retry)
            ids += [str(task_id) for task_id in got]
        return ids

    def status(self, task_id: str) -> TaskStatus:
        return self._call(lambda: self.coordinator.status.remote(task_id))

    def statuses(self, task_ids: Sequence[str]) -> list[TaskStatus | None]:
        ids = list(task_ids)
        return self._call(lambda: self.coordinator.statuses.remote(ids))

    def wait(self, task_ids: Sequence[str], timeout: float | None = None) -> list[TaskStatus]:
        """Wait until every task is final (or ``timeout`` s passed); statuses in ``ids`` order.

        On timeout the current statuses are returned: check ``.state``. An unknown id raises
        NotFound. Each round asks about the tasks not yet final, a thousand per call.
        """
        rounds = WaitRounds(task_ids, self.namespace, timeout)
        while True:
            for batch in rounds.batches():
                rounds.take(batch, self.statuses(batch))
            if rounds.over():
                return rounds.statuses()
            time.sleep(POLL_S)

    def cancel(self, task_id: str) -> TaskState:
        """Cancel a task; the state it was in. Pending: cancelled at once; running: its handler
        is told (``ctx.cancelled``, within a second; a Ray task is force-cancelled) and any
        late commit is fenced out. A final state comes back unchanged: nothing to cancel."""
        return self._call(lambda: self.coordinator.cancel.remote(task_id))

    def cancel_many(self, task_ids: Sequence[str]) -> list[TaskState | None]:
        """:meth:`cancel` each id; the state each was in (None: unknown id)."""
        ids = list(task_ids)
        return self._call(lambda: self.coordinator.cancel_many.remote(ids))

    def result(self, task_id: str, timeout: float | None = None) -> Any:
        """Wait for the task to be final (at most ``timeout`` s; None: as long as it takes) and
        return its verified result.

        Raises TaskDead, TaskCancelled or TaskQuarantined (all TaskNotSucceeded: ``task_id``,
        ``state``, ``error``) when it ended otherwise, TimeoutError when it is not final in
        time, NotFound for an unknown id (``raysys.client.outcomes.result_of``).
        """
        return result_of(self.wait([task_id], timeout)[0])

    def waiting(self) -> dict[str, dict[str, Any]]:
        """Kinds held back now (no node can place them; max_in_flight reached), and why."""
        return self._call(lambda: self.coordinator.waiting.remote())

    def counts(self) -> dict[str, int]:
        return self._call(lambda: self.coordinator.counts.remote())

    def stats(self) -> dict[str, int]:
        """Store event counters (submitted, granted, expired, retries, fenced_rejected, ...)."""
        return self._call(lambda: self.coordinator.stats.remote())

    def workers(self) -> list[dict[str, Any]]:
        """Heartbeats of every worker (``live``: beat within the lease TTL)."""
        return self._call(lambda: self.coordinator.workers.remote())

    def actor_pids(self) -> dict[str, int]:
        """Process id of the Coordinator, the Distributor and each worker (by worker id)."""
        pids = dict(zip(("coordinator", "distributor"), get_all(
            [self.coordinator.pid.remote(), self.distributor.pid.remote()],
            timeout=self.call_timeout_s), strict=True))
        pids.update({str(w["id"]): int(w["pid"]) for w in self.workers() if w.get("pid")})
        return pids

    # ---- the pool -----------------------------------------------------------------------------
    def scale(self, workers: int) -> None:
        """Start workers ``0..workers-1`` that are missing; drain and stop any above."""
        if workers < 0:
            raise ConfigurationError("workers must be >= 0")
        from raysys.actors import factory

        existing = factory.worker_handles(self.namespace)
        started = [factory.start_worker(self.config, i) for i in range(workers)
                   if i not in existing]
        self._ready([h.pid.remote() for h in started])
        surplus = [h for i, h in existing.items() if i >= workers]
        if surplus:
            get_all([h.drain.remote(60.0) for h in surplus], timeout=READY_TIMEOUT_S)
            get_all([h.stop.remote() for h in surplus], timeout=READY_TIMEOUT_S)
            for handle in surplus:
                kill(handle)

    def worker(self, index: int) -> WorkerHandle:
        """The actor handle of worker ``index`` (tests, chaos tooling)."""
        from raysys.actors import factory

        try:
            handle: WorkerHandle = factory.get_actor(factory.worker_name(index), self.namespace)
        except ValueError:
            raise RayUnavailable(f"no worker {index} in namespace {self.namespace}") from None
        return handle

    def drain(self, timeout: float = 60.0, *, worker: str | None = None,
              node: str | None = None) -> bool:
        """Let workers finish what they run, hand back what they hold queued, take nothing new.

        True when every drained worker finished in time (on False, whatever is still held
        expires after the lease TTL and is requeued: nothing is lost). Without ``worker`` or
        ``node``, hand-out pauses for the whole pool; afterwards no worker holds a lease. With
        ``worker`` (a worker id such as ``<namespace>-worker-3``, as ``workers()`` lists) only
        that one drains; with ``node`` (Ray node id, IP or host name) every worker on that node
        (a preStop hook). ``resume`` undoes either.
        """
        chosen = self._drain_targets(worker, node)
        if worker is None and node is None:
            self._call(lambda: self.distributor.pause.remote())
        elif not chosen:
            log.warning("no raysys worker runs on node %s: nothing to drain", node)
            return True
        done = get_all([h.drain.remote(timeout) for h in chosen], timeout=timeout + 30)
        return all(done)

    def _drain_targets(self, worker: str | None, node: str | None) -> list[WorkerHandle]:
        from raysys.actors.factory import worker_handles

        handles = worker_handles(self.namespace)
        if worker is not None:
            index = worker_index(self.config, worker)
            if index not in handles:
                raise RayUnavailable(f"no worker {worker!r} in namespace {self.namespace}")
            return [handles[index]]
        if node is not None:
            on_node = {worker_index(self.config, w["id"]) for w in self.workers()
                       if node in (w.get("node"), w.get("node_ip"), w.get("node_id"))}
            return [h for i, h in handles.items() if i in on_node]
        return list(handles.values())

    def resume(self) -> None:
        """Undo :meth:`drain`: every worker takes work again, hand-out resumes."""
        from raysys.actors.factory import worker_handles

        handles = list(worker_handles(self.namespace).values())
        get_all([h.undrain.remote() for h in handles], timeout=self.call_timeout_s)
        self._call(lambda: self.distributor.resume.remote())

    def serve(self, host: str, port: int) -> str | None:
        """Run the HTTP app (``/health``, ``/metrics``, the API, the console) on this cluster;
        its URL. The console links to :attr:`dashboard_url` when this client started one.

        None, with a warning, when the port is taken: the actors keep working without it. If
        Serve already runs on the cluster, the app joins it (on Serve's port).
        """
        from raysys.client.launch import port_free
        from raysys.serve import app

        if app.running_http() is None and not port_free(host, port):
            log.warning("HTTP app not started: %s:%d is in use (set RAYSYS_HTTP_PORT)", host,
                        port)
            return None
        url: str = app.deploy(self.config, host=host, port=port,
                              dashboard_url=self.dashboard_url)
        return url

    def down(self, *, drain: bool = False, timeout: float = 60.0) -> None:
        """Stop and remove every actor of the namespace (``raysys down``); Redis keeps the tasks."""
        if drain:
            self.drain(timeout)
        if not (self._owned and self._ray_connected):  # a cluster that outlives us (``up``,
            # ``connect``, or ``start`` on a Ray already running): remove our HTTP app
            try:
                from raysys.serve.app import remove

                remove(self.namespace)
            except Exception as exc:  # Serve never ran here, or is gone already
                log.debug("no HTTP app to remove: %s", exc)
        from raysys.actors.factory import kill_all

        kill_all(self.namespace)

    def shutdown(self) -> None:
        """``start``: remove the actors, stop Ray and the embedded Redis it started.
        ``connect``/``up``: disconnect only (the actors keep running)."""
        if self._closed:
            return
        self._closed = True
        import ray

        owned = self._owned
        try:
            if owned is not None:
                try:
                    self.down()
                except Exception as exc:  # Ray already gone: nothing left to remove
                    log.warning("could not remove the actors: %s", exc)
            if self._ray_connected:
                ray.shutdown()
        finally:
            if owned is not None:
                owned.release()

    def __enter__(self) -> Client:
        return self

    def __exit__(self, *exc: object) -> None:
        self.shutdown()

    # ---- plumbing -----------------------------------------------------------------------------
    def _call(self, make: Callable[[], Ref[T]], *, retry: bool = True) -> T:
        """``ray.get(make())``, retried while the actor restarts (if ``retry``).

        A RaysysError raised in the actor is re-raised here as itself.
        """
        attempts = CallAttempts(self.call_timeout_s, retry=retry)
        while True:
            try:
                return get(make(), timeout=self.call_timeout_s)
            except Exception as exc:
                pause = attempts.after(exc)  # raises the actor's own error, or RayUnavailable
                if pause is None:
                    raise
                time.sleep(pause)

    def _ready(self, refs: list[Ref[Any]]) -> None:
        if refs:
            ready_or_raise(refs)


def ready_or_raise(refs: Sequence[Ref[Any]]) -> None:
    """Wait for freshly started actors to answer; RayUnavailable if they do not."""
    try:
        get_all(refs, timeout=READY_TIMEOUT_S)
    except Exception as exc:
        raise RayUnavailable(f"raysys actors did not start: {first_line(exc)}") from None

