"""The Worker actor: runs leases the Distributor hands it, renews them, commits under fences.

Fault-tolerance contract:

* Keeps in Redis: every lease it holds (holder = its worker id, fence, deadline by server time),
  every commit (through ``TaskStore.complete``, fenced), its heartbeat (``workers`` hash) and
  its drain flag (``control`` hash). In memory only: the queue of leases handed to it and not yet
  finished, and counters.
* A restart (kill -9, node loss) re-runs ``__init__`` with the same worker id: the queue is gone,
  nobody renews those leases, they expire after the lease TTL and the Coordinator's reaper
  returns them to the queue; the fence rejects any late commit of the old incarnation. Nothing
  is lost and nothing is committed twice; a task may run again (at-least-once execution).
* ``assign`` accepts a message only once (signed, addressed to this worker, unexpired, nonce
  never seen): a retried or replayed delivery is rejected, so it is safe to retry. ``load``,
  ``info``, ``pid`` are read-only; ``drain``/``undrain`` are idempotent.
"""

from __future__ import annotations

import logging
import os
import queue
import socket
import threading
import time
from typing import Any

from raysys.actors.context import ActorConfig, open_actor_core
from raysys.errors import IntegrityError
from raysys.handlers import Executor, import_handler_modules
from raysys.ledger import CommitLedger
from raysys.messaging.messenger import Messenger
from raysys.messaging.wire import ASSIGN, leases_from_assignment
from raysys.models import Lease
from raysys.redis_server.connection import pool_state
from raysys.registry import Registry
from raysys.timer import PeriodicTimer
from raysys.worker_loop import WorkerLoop

log = logging.getLogger(__name__)

METRICS_FLUSH_S = 0.25  # message metrics are written between batches at most this often


class Worker:
    """Executes assigned leases in a background thread; heartbeats and renews every TTL/3."""

    def __init__(self, worker_id: str, config: ActorConfig) -> None:
        self.worker_id = worker_id
        self.config = config
        self.core = open_actor_core(config, worker_id)
        settings = self.core.settings
        import_handler_modules(settings.handler_modules())
        store = self.core.store
        self.registry = Registry(self.core)
        self.messenger = Messenger(self.core, worker_id)
        self.distributor_id = settings.distributor_id
        ledger = CommitLedger(self.core.client, config.namespace) if config.ledger else None
        self.loop = WorkerLoop(store, worker_id, batch=config.batch, ttl_s=settings.lease_ttl_s,
                               ledger=ledger, executor=Executor())
        self._queue: queue.Queue[list[Lease]] = queue.Queue()
        self._lock = threading.Lock()
        self._queued = 0
        self._running = 0
        self._rejected_messages = 0
        self._draining = self.registry.draining(worker_id)
        self._node = _node_identity()
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name=f"{worker_id}-run", daemon=True)
        self._thread.start()
        self._beat_thread = PeriodicTimer(f"{worker_id}-beat", max(settings.lease_ttl_s / 3, 0.05),
                                      self._beat)
        self._beat_thread.start()
        self._beat()
        log.info("worker %s up (pid %d)", worker_id, os.getpid())

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
            if not draining:
                self._queued += len(leases)
        if draining:  # raced with drain: straight back to the queue, never started
            self._hand_back([leases])
            return 0
        self.loop.hold(leases)  # renewed from now on, while queued too
        self._queue.put(leases)
        return len(leases)

    def load(self) -> dict[str, Any]:
        with self._lock:
            return {"worker_id": self.worker_id, "queued": self._queued,
                    "running": self._running, "capacity": self.config.capacity,
                    "draining": self._draining}

    # ---- control ------------------------------------------------------------------------------
    def pid(self) -> int:
        return os.getpid()

    def info(self) -> dict[str, Any]:
        counters = self.loop.counters
        load = self.load()
        return {**load, "id": self.worker_id, "pid": os.getpid(), **self._node,
                "inflight": load["queued"] + load["running"], "completed": counters.completed,
                "commits_rejected": counters.rejected,
                "messages_rejected": self._rejected_messages, "held": len(self.loop.held()),
                "redis_pool": pool_state(self.core.client)}

    def drain(self, timeout_s: float = 60.0) -> bool:
        """Take no new work, hand back leases not started; True once the running batch is done.

        Leases still queued here go back to the queue at once (their attempt not counted); the
        batch being run is finished and committed. On timeout (False) whatever is still held
        expires after the lease TTL and the reaper requeues it: nothing is lost either way.
        """
        self.registry.set_draining(self.worker_id, True)
        with self._lock:
            self._draining = True
        self._beat()
        batches: list[list[Lease]] = []
        while True:
            try:
                batches.append(self._queue.get_nowait())
            except queue.Empty:
                break
        if batches:
            with self._lock:
                self._queued -= sum(len(b) for b in batches)
            self._hand_back(batches)
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            with self._lock:
                if self._queued == 0 and self._running == 0:
                    return True
            time.sleep(0.05)
        return False

    def undrain(self) -> None:
        self.registry.set_draining(self.worker_id, False)
        with self._lock:
            self._draining = False
        self._beat()

    def stop(self) -> None:
        """Stop the threads (before ``ray.kill``); unfinished leases expire and are requeued."""
        self._stop.set()
        self._beat_thread.stop()
        self._thread.join(timeout=5)
        self.messenger.flush_metrics()
        self.registry.forget(self.worker_id)
        self.loop.executor.shutdown()
        self.core.close()

    # ---- internals ----------------------------------------------------------------------------
    def _hand_back(self, batches: list[list[Lease]]) -> None:
        leases = [lease for batch in batches for lease in batch]
        self.loop.forget([lease.task_id for lease in leases])
        try:
            back = self.loop.store.release(self.worker_id,
                                           [(lease.task_id, lease.fence) for lease in leases])
        except Exception as exc:  # Redis blip: the leases expire and the reaper requeues them
            log.warning("worker %s could not hand back %d leases (%s); they expire in %.0f s",
                        self.worker_id, len(leases), exc, self.loop.ttl_s)
            return
        log.info("worker %s handed back %d of %d queued leases", self.worker_id, sum(back),
                 len(leases))

    def _run(self) -> None:
        flushed = time.monotonic()
        while not self._stop.is_set():
            if time.monotonic() - flushed >= METRICS_FLUSH_S:  # off the delivery path
                self.messenger.flush_metrics()
                flushed = time.monotonic()
            try:
                leases = self._queue.get(timeout=0.1)
            except queue.Empty:
                self.messenger.flush_metrics()
                flushed = time.monotonic()
                continue
            with self._lock:
                self._queued -= len(leases)
                self._running = len(leases)
            try:
                self.loop.process(leases)
            except Exception:  # Redis blip at commit: the leases expire and are requeued
                log.exception("worker %s: batch of %d failed", self.worker_id, len(leases))
            finally:
                with self._lock:
                    self._running = 0

    def _beat(self) -> None:
        if self._stop.is_set():
            return
        lost = self.loop.renew_held()
        if lost:
            log.warning("worker %s lost %d leases (expired before renewal)", self.worker_id, lost)
        draining = self.registry.draining(self.worker_id)
        with self._lock:
            self._draining = draining
        self.registry.beat(self.worker_id, {**self.info(), "capacity": self.config.capacity})


def _node_identity() -> dict[str, str]:
    """Where this worker runs: host name, IP and Ray node id (what ``drain --node`` matches)."""
    import ray

    node_id, ip = "", ""
    if ray.is_initialized():  # not in unit tests: get_runtime_context() would start a cluster
        node_id = ray.get_runtime_context().get_node_id()
        ip = ray.util.get_node_ip_address()  # type: ignore[no-untyped-call]  # Ray: no hints
    return {"node": socket.gethostname(), "node_ip": ip, "node_id": node_id}
