"""The Distributor actor: leases pending work by priority and hands it to the least busy worker.

It acquires leases ON BEHALF of a worker (holder = that worker's id) and delivers them as one
signed, replay-protected message (``Messenger``); the worker verifies it before running anything.
Backpressure: a worker is offered at most the ``room`` it reports (its free slots plus a small
prefetch), and nothing while it drains, is stuck, or its heartbeat is older than the lease TTL.
Placement (:mod:`raysys.placement`): a kind no live node can place is not leased (its tasks wait
pending, listed in the ``waiting`` hash); a kind's per-worker ``concurrency`` and cluster-wide
``max_in_flight`` bound what is leased of it.

Fault-tolerance contract:

* Keeps in Redis: the queue and every lease it granted (through ``TaskStore.acquire_verified``),
  the ``paused`` flag (``control`` hash), the kinds held back (``waiting``). In memory: nothing
  that matters.
* A restart re-runs ``__init__`` and resumes the loop. Leases it granted but had not delivered
  belong to a worker that does not know them: nobody renews them, they expire and the reaper
  requeues them. A message delivered twice is rejected by the worker (nonce).
* ``pause``/``resume``/``info`` are idempotent.

Deliveries are pipelined: a round sends its message and goes on leasing; the replies are
settled at the start of later rounds (counted, or the worker is asked afresh about its room).
Leases in a message not yet answered count against that worker's room. With the queue empty
it waits on the store's wake-up list (``BLPOP``) instead of polling, so a submission is leased
within a Redis round trip.
"""

from __future__ import annotations

import logging
import os
import threading
import time
from collections import Counter
from collections.abc import Mapping, Sequence
from concurrent.futures import Future
from dataclasses import dataclass
from typing import Any, Protocol

from raysys.actors.context import ActorConfig, open_actor_core
from raysys.ledger import open_ledger
from raysys.messaging.messenger import Messenger
from raysys.messaging.wire import ASSIGN, assignment_chunks
from raysys.models import Lease
from raysys.placement import Plan, plan
from raysys.registry import Registry

log = logging.getLogger(__name__)

LIVE_REFRESH_S = 0.25  # how stale the live-worker set may be (a new worker waits this long)
LOAD_REFRESH_S = 0.25  # workers are asked their load at least this often while work waits
PLAN_REFRESH_S = 1.0  # queued/in-flight counts per kind and the nodes are re-read this often
PAUSE_REFRESH_S = 1.0  # the pause flag is also re-read from Redis this often
REPLY_TIMEOUT_S = 5.0  # a delivery unanswered this long counts as failed (worker stopped, gone)
WAKE_WAIT_S = 0.05  # longest wait on the wake-up list: bounds how late polled work is seen
IDLE_MIN_S, IDLE_MAX_S = 0.002, 0.005  # backoff while work waits for room or a live worker


class WorkerPort(Protocol):
    """How the distributor reaches workers and sees nodes (Ray in production, anything in unit
    tests)."""

    def loads(self, worker_ids: Sequence[str]) -> dict[str, dict[str, Any]]: ...

    def send(self, worker_id: str, envelope: bytes) -> Future[int]:
        """Deliver without waiting; the future gives the worker's ``assign`` reply."""
        ...

    def nodes(self) -> list[dict[str, float]] | None:
        """Total resources of each live node (None: no cluster to place on)."""
        ...


@dataclass(frozen=True, slots=True)
class _Sent:
    worker_id: str
    leases: int
    reply: Future[int]
    deadline: float


class Distributor:
    def __init__(self, config: ActorConfig, port: WorkerPort, *, autostart: bool = True) -> None:
        self.config = config
        self.port = port
        self.core = open_actor_core(config, "distributor")
        settings = self.core.settings
        self.store = self.core.store
        self.ttl_s = settings.lease_ttl_s
        self.party = settings.distributor_id
        self.messenger = Messenger(self.core, self.party)
        self.registry = Registry(self.core)
        self.ledger = (open_ledger(self.core.client, config.namespace, config.ledger_url)
                       if config.ledger else None)
        self.granted = 0
        self.delivered = 0
        self.failed_deliveries = 0
        self._cycle_lock = threading.Lock()
        self._free: dict[str, int] = {}  # estimated room per worker since the last poll
        self._held: dict[str, Counter[str]] = {}  # per worker: leases held per kind (estimate)
        self._loads_at = 0.0
        self._live_ids: list[str] = []
        self._live_at = 0.0
        self._paused = False
        self._paused_at = 0.0
        self._counts: tuple[dict[str, int], dict[str, int]] = ({}, {})  # queued, inflight
        self._nodes: list[dict[str, float]] | None = None
        self._waiting: dict[str, dict[str, Any]] = {}
        self._plan_at = float("-inf")
        self._sent: list[_Sent] = []  # deliveries not answered yet
        self._queue_empty = False  # the last round found nothing to lease
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="distributor", daemon=True)
        if autostart:
            self._thread.start()

    # ---- one round: pick a worker, lease for it, deliver ------------------------------------
    def cycle(self) -> int:
        """Hand out one batch; return how many leases were granted (0: nothing to do)."""
        with self._cycle_lock:
            self._settle()
            self._queue_empty = False
            if self._is_paused():
                return 0
            live = self._live()
            if not live:
                return 0
            fresh = time.monotonic() - self._loads_at > LOAD_REFRESH_S
            best, room = self._pick(live, fresh=fresh)
            if room <= 0 and not fresh:  # estimates say everyone is full: ask the workers
                best, room = self._pick(live, fresh=True)
            if room <= 0:
                return 0
            wanted = min(self.config.batch, room)
            current = self._plan(self._held.get(best, Counter()))
            leases, quarantined = self.store.acquire_verified(best, wanted, self.ttl_s,
                                                              quotas=current.quotas)
            if quarantined and self.ledger is not None:
                self.ledger.record((tid, fence, "quarantined") for tid, fence in quarantined)
            # Fewer than asked for: the queue ran dry (wait for a wake-up, not another round).
            self._queue_empty = not quarantined and len(leases) < wanted
            if not leases:
                return 0
            self.granted += len(leases)
            self._free[best] = room - len(leases)
            self._held.setdefault(best, Counter()).update(lease.kind for lease in leases)
            self._deliver(best, leases)
            return len(leases)

    def _deliver(self, worker_id: str, leases: list[Lease]) -> None:
        for chunk in assignment_chunks(leases):
            envelope = self.messenger.seal(worker_id, ASSIGN, {"leases": chunk})
            try:
                reply = self.port.send(worker_id, envelope)
            except Exception as exc:  # the leases expire and the reaper requeues them
                self._failed(worker_id, f"delivery of {len(chunk)} leases failed: {exc}")
                continue
            self._sent.append(_Sent(worker_id, len(chunk), reply,
                                    time.monotonic() + REPLY_TIMEOUT_S))

    def _settle(self) -> None:
        """Count the deliveries answered since the last round; time out the silent ones."""
        now = time.monotonic()
        waiting: list[_Sent] = []
        for sent in self._sent:
            if sent.reply.done():
                try:
                    accepted = sent.reply.result()
                except Exception as exc:  # the leases expire and the reaper requeues them
                    self._failed(sent.worker_id,
                                 f"delivery of {sent.leases} leases failed: {exc}")
                    continue
                if accepted:
                    self.delivered += accepted
                else:  # rejected (draining, say): ask it afresh before offering it more
                    self._failed(sent.worker_id)
            elif now > sent.deadline:
                self._failed(sent.worker_id, f"{sent.leases} leases unanswered after "
                             f"{REPLY_TIMEOUT_S:.0f} s; they expire and are requeued")
            else:
                waiting.append(sent)
        self._sent = waiting

    def _failed(self, worker_id: str, why: str | None = None) -> None:
        """Count a failed delivery and forget the worker's room estimate; log ``why``."""
        self.failed_deliveries += 1
        self._free.pop(worker_id, None)
        if why is not None:
            log.warning("to %s: %s", worker_id, why)

    def _pick(self, live: list[str], *, fresh: bool) -> tuple[str, int]:
        """The live, non-draining worker with the most room, and that room.

        ``fresh``: ask every worker its load (one Ray round trip); otherwise use the estimates
        kept since the last poll (room minus what was handed out since).
        """
        if fresh:
            self._poll_loads(live)
        best, room = "", 0
        for worker_id in live:
            free = self._free.get(worker_id, 0)
            if free > room:
                best, room = worker_id, free
        return best, room

    def _poll_loads(self, live: list[str]) -> None:
        self._free, self._held = {}, {}
        self._loads_at = time.monotonic()
        unanswered: Counter[str] = Counter()
        for sent in self._sent:
            unanswered[sent.worker_id] += sent.leases
        for worker_id, load in self.port.loads(live).items():
            if not load.get("draining"):
                self._free[worker_id] = int(load["room"]) - unanswered[worker_id]
                self._held[worker_id] = Counter(load.get("by_kind") or {})

    # ---- placement ----------------------------------------------------------------------------
    def _plan(self, held: Mapping[str, int]) -> Plan:
        """Quotas for one hand-out; re-reads counts and nodes (and publishes the kinds held
        back) at most every PLAN_REFRESH_S."""
        book = self.store.kinds.read()
        if time.monotonic() - self._plan_at > PLAN_REFRESH_S:
            self._plan_at = time.monotonic()
            self._counts = (self.store.queued_by_kind(), self.store.inflight_by_kind())
            self._nodes = self.port.nodes()
            self._publish_waiting(plan(book, nodes=self._nodes, queued=self._counts[0],
                                       inflight=self._counts[1], held_by_worker={}).waiting)
        return plan(book, nodes=self._nodes, queued=self._counts[0], inflight=self._counts[1],
                    held_by_worker=held)

    def _publish_waiting(self, waiting: dict[str, dict[str, Any]]) -> None:
        now_ms = int(time.time() * 1000)
        for kind, doc in waiting.items():
            doc["since_ms"] = self._waiting.get(kind, {}).get("since_ms", now_ms)
        if waiting != self._waiting:
            for kind, doc in waiting.items():
                if kind not in self._waiting:
                    log.warning("kind %s held back: %s", kind, doc)
            self.registry.set_waiting(waiting)
            self._waiting = waiting

    def _live(self) -> list[str]:
        """Workers with a fresh heartbeat (re-read from Redis at most every LIVE_REFRESH_S)."""
        now = time.monotonic()
        if now - self._live_at > LIVE_REFRESH_S:
            self._live_ids = self.registry.live(max_age_ms=int(self.ttl_s * 1000))
            self._live_at = now
        return self._live_ids

    def _is_paused(self) -> bool:
        """The pause flag: set locally by pause()/resume(), re-read from Redis every second."""
        now = time.monotonic()
        if now - self._paused_at > PAUSE_REFRESH_S:
            self._paused = self.registry.paused()
            self._paused_at = now
        return self._paused

    # ---- control ------------------------------------------------------------------------------
    def pause(self) -> None:
        """Hand out nothing more (persisted); returns after any round in progress has ended."""
        self.registry.set_paused(True)
        with self._cycle_lock:
            self._paused, self._paused_at = True, time.monotonic()

    def resume(self) -> None:
        self.registry.set_paused(False)
        with self._cycle_lock:
            self._paused, self._paused_at = False, time.monotonic()

    def info(self) -> dict[str, Any]:
        return {"id": self.party, "paused": self.registry.paused(), "granted": self.granted,
                "delivered": self.delivered, "failed_deliveries": self.failed_deliveries,
                "waiting": self._waiting}

    def pid(self) -> int:
        return os.getpid()

    def stop(self) -> None:
        self._stop.set()
        if self._thread.is_alive():
            self._thread.join(timeout=5)
        self.core.close()

    def _run(self) -> None:
        idle = IDLE_MIN_S
        while not self._stop.is_set():
            try:
                got = self.cycle()
                if self._queue_empty:  # nothing (more) to lease: sleep until a submission
                    self.store.wait_for_work(WAKE_WAIT_S)
                    idle = IDLE_MIN_S
                elif got:
                    idle = IDLE_MIN_S
                else:  # work may wait for room, a live worker, or a resume: poll
                    self._stop.wait(idle)
                    idle = min(idle * 2, IDLE_MAX_S)
            except Exception:
                log.exception("distributor round failed; retrying")
                self._stop.wait(0.5)
