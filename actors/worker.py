"""The Worker actor: runs the leases the Distributor hands it, renews them, commits under fences.

A thin shell over :class:`~raysys.execution.TaskRunner`: up to ``concurrency`` leases at once
(threads for plain handlers, the event loop for ``async def`` ones, Ray tasks for kinds with Ray
options), outcomes committed as they come in.

Fault-tolerance contract:

* Keeps in Redis: every lease it holds (holder = its worker id, fence, deadline by server time),
  every commit (through ``TaskStore.complete``, fenced), its heartbeat (``workers`` hash), its
  drain flag (``control`` hash), and the kinds it can run (the kinds book). In memory only: the
  leases handed to it and not finished yet, and counters.
* A restart (kill -9, node loss) re-runs ``__init__`` with the same worker id: the queue is gone,
  nobody renews those leases, they expire after the lease TTL and the Coordinator's reaper
  returns them to the queue; the fence rejects any late commit of the old incarnation. Nothing
  is lost and nothing is committed twice; a task may run again (at-least-once execution).
* ``assign`` accepts a message only once (signed, addressed to this worker, unexpired, nonce
  never seen): a retried or replayed delivery is rejected, so it is safe to retry. ``load``,
  ``info``, ``pid`` are read-only; ``drain``/``undrain`` are idempotent.
* A cancel made anywhere (CLI, HTTP, client) reaches a running handler within a second through
  the holder's cancel list (``ctx.cancelled``; a Ray task is force-cancelled).
"""

from __future__ import annotations

import logging
import os
import socket
import threading
from typing import Any

from raysys.actors.context import ActorConfig, open_actor_core
from raysys.errors import IntegrityError
from raysys.execution import TaskRunner
from raysys.execution.lanes import RemoteLane
from raysys.handlers import handlers, import_handler_modules
from raysys.handlers.context import CANCELLED
from raysys.ledger import open_ledger
from raysys.messaging.messenger import Messenger
from raysys.messaging.wire import ASSIGN, leases_from_assignment
from raysys.models import Lease
from raysys.redis_server.connection import pool_state
from raysys.registry import Registry
from raysys.timer import PeriodicTimer

log = logging.getLogger(__name__)

CANCEL_WAIT_S = 0.25  # the cancel watcher's longest wait; message metrics are written as often


class Worker:
    """Runs assigned leases ``concurrency`` at once; heartbeats and renews every TTL/3."""

    def __init__(self, worker_id: str, config: ActorConfig) -> None:
        self.worker_id = worker_id
        self.config = config
        self.core = open_actor_core(config, worker_id)
        settings = self.core.settings
        import_handler_modules(settings.handler_modules())
        self.store = self.core.store
        self.registry = Registry(self.core)
        self.messenger = Messenger(self.core, worker_id)
        self.distributor_id = settings.distributor_id
        ledger = (open_ledger(self.core.client, config.namespace, config.ledger_url)
                       if config.ledger else None)
        self.runner = TaskRunner(self.store, worker_id, concurrency=config.concurrency,
                                 ttl_s=settings.lease_ttl_s, ledger=ledger,
                                 remote=_remote_lane(), max_prefetch=config.max_prefetch)
        self.store.kinds.publish({h.name: h.options.to_doc() for h in handlers()})
        self._lock = threading.Lock()
        self._rejected_messages = 0
        self._draining = self.registry.draining(worker_id)
        self._node = _node_identity()
        self._stop = threading.Event()
        self._watcher = threading.Thread(target=self._watch_cancels, name=f"{worker_id}-cancels",
                                         daemon=True)
        self._watcher.start()
        self._beat_thread = PeriodicTimer(f"{worker_id}-beat",
                                          max(settings.lease_ttl_s / 3, 0.05), self._beat)
        self._beat_thread.start()
        self._beat()
        log.info("worker %s up (pid %d, concurrency %d)", worker_id, os.getpid(),
                 config.concurrency)

    # ---- called by the Distributor ------------------------------------------------------------
    def assign(self, envelope: bytes) -> int:
        """Queue the leases of one signed assignment; return how many (0: message rejected)."""
        try:
            message = self.messenger.open(envelope)
            if message.type != ASSIGN or message.sender != self.distributor_id:
                raise IntegrityError(f"unexpected {message.type!r} from {message.sender!r}",
                                     reason="unexpected_message")
            leases = leases_from_assignment(message.body)
        except (IntegrityError, KeyError, TypeError, ValueError) as exc:
            with self._lock:
                self._rejected_messages += 1
            log.error("worker %s rejected an assignment: %s", self.worker_id, exc)
            return 0
        log.debug("worker %s accepted %d leases from %s", self.worker_id, len(leases),
                  message.sender)
        with self._lock:
            draining = self._draining
        if draining:  # raced with drain: straight back to the queue, never started
            self._hand_back(leases)
            return 0
        self.runner.submit(leases)  # renewed from now on, while queued too
        return len(leases)

    def load(self) -> dict[str, Any]:
        """``room`` (leases it should be given now), ``queued``, ``running``, ``stuck``,
        ``concurrency``, ``by_kind``, ``draining``."""
        with self._lock:
            draining = self._draining
        load = self.runner.load()
        if draining:
            load["room"] = 0
        return {"worker_id": self.worker_id, **load, "capacity": load["concurrency"],
                "draining": draining}

    # ---- called by Ray tasks this worker started ----------------------------------------------
    def attempt_started(self, task_id: str, fence: int, wall: float) -> None:
        """A Ray-task attempt began running its handler (its time limit starts)."""
        self.runner.attempt_started(task_id, fence, wall)

    # ---- control ------------------------------------------------------------------------------
    def pid(self) -> int:
        return os.getpid()

    def info(self) -> dict[str, Any]:
        load = self.load()
        committer = self.runner.committer.counters
        counters = self.runner.counters
        return {**load, "id": self.worker_id, "pid": os.getpid(), **self._node,
                "inflight": load["queued"] + load["running"], "completed": committer.committed,
                "commits_rejected": committer.rejected, "timed_out": counters.timed_out,
                "cancelled": counters.cancelled, "messages_rejected": self._rejected_messages,
                "held": len(self.runner.held()), "redis_pool": pool_state(self.core.client)}

    def drain(self, timeout_s: float = 60.0) -> bool:
        """Take no new work, hand back leases not started; True once running ones are done.

        Leases still queued here go back to the queue at once (their attempt not counted);
        those running are finished and committed. On timeout (False) whatever is still held
        expires after the lease TTL and the reaper requeues it: nothing is lost either way.
        """
        self.registry.set_draining(self.worker_id, True)
        with self._lock:
            self._draining = True
        self._beat()
        self._hand_back(self.runner.take_queued())
        return self.runner.wait_idle(timeout_s)

    def undrain(self) -> None:
        self.registry.set_draining(self.worker_id, False)
        with self._lock:
            self._draining = False
        self._beat()

    def stop(self) -> None:
        """Stop the threads (before ``ray.kill``); unfinished leases expire and are requeued."""
        self._stop.set()
        self._beat_thread.stop()
        self._watcher.join(timeout=5)
        self.runner.close()
        self.messenger.flush_metrics()
        self.registry.forget(self.worker_id)
        self.core.close()

    # ---- internals ----------------------------------------------------------------------------
    def _hand_back(self, leases: list[Lease]) -> None:
        if not leases:
            return
        try:
            back = self.store.release(self.worker_id,
                                      [(lease.task_id, lease.fence) for lease in leases])
        except Exception as exc:  # Redis blip: the leases expire and the reaper requeues them
            log.warning("worker %s could not hand back %d leases (%s); they expire in %.0f s",
                        self.worker_id, len(leases), exc, self.runner.ttl_s)
            return
        log.info("worker %s handed back %d of %d leases", self.worker_id, sum(back),
                 len(leases))

    def _watch_cancels(self) -> None:
        """Stop tasks cancelled while this worker holds them (pushed by ``cancel``)."""
        while not self._stop.is_set():
            try:
                cancelled = self.store.take_cancels(self.worker_id, CANCEL_WAIT_S)
                if cancelled:
                    self.runner.cancel(cancelled, CANCELLED)
                self.messenger.flush_metrics()  # off the delivery path
            except Exception as exc:  # Redis blip: cancels wait in the list; retry
                log.warning("worker %s: cancel watch failed (%s); retrying", self.worker_id, exc)
                self._stop.wait(CANCEL_WAIT_S)

    def _beat(self) -> None:
        if self._stop.is_set():
            return
        self.runner.renew()
        self._release_unplaceable()
        draining = self.registry.draining(self.worker_id)
        with self._lock:
            self._draining = draining
        self.registry.beat(self.worker_id, self.info())

    def _release_unplaceable(self) -> None:
        """Hand back Ray-task attempts Ray has not started whose kind no node can place now
        (the Distributor says so): they wait pending, not leased, until a node can."""
        unstarted = self.runner.unstarted()
        if not unstarted:
            return
        waiting = self.registry.waiting_kinds()
        stranded = [lease.task_id for lease in unstarted if lease.kind in waiting]
        if stranded:
            log.warning("worker %s hands back %d tasks no node can place now", self.worker_id,
                        len(stranded))
            self._hand_back(self.runner.hand_back(stranded))


def _remote_lane() -> RemoteLane | None:
    """The Ray lane, with this actor's handle for start notices (None outside Ray)."""
    import ray

    if not ray.is_initialized():  # unit tests run the actor classes without Ray
        return None
    from raysys.actors.remote_lane import RayRemoteLane

    try:
        handle = ray.get_runtime_context().current_actor
    except Exception:  # not inside an actor
        handle = None
    return RayRemoteLane(handle)


def _node_identity() -> dict[str, str]:
    """Where this worker runs: host name, IP and Ray node id (what ``drain --node`` matches)."""
    import ray

    node_id, ip = "", ""
    if ray.is_initialized():  # not in unit tests: get_runtime_context() would start a cluster
        node_id = ray.get_runtime_context().get_node_id()
        ip = ray.util.get_node_ip_address()  # type: ignore[no-untyped-call]  # Ray: no hints
    return {"node": socket.gethostname(), "node_ip": ip, "node_id": node_id}
