"""The Distributor actor: leases pending work by priority and hands it to the least busy worker.

It acquires leases ON BEHALF of a worker (holder = that worker's id) and delivers them as one
signed, replay-protected message (``Messenger``); the worker verifies it before running anything.
Backpressure: a worker is offered at most ``capacity - (queued + running)`` leases, and none
while it drains or its heartbeat is older than the lease TTL.

Fault-tolerance contract:

* Keeps in Redis: the queue and every lease it granted (through ``TaskStore.acquire_verified``),
  the ``paused`` flag (``control`` hash). In memory: nothing that matters.
* A restart re-runs ``__init__`` and resumes the loop. Leases it granted but had not delivered
  belong to a worker that does not know them: nobody renews them, they expire and the reaper
  requeues them. A message delivered twice is rejected by the worker (nonce).
* ``pause``/``resume``/``info`` are idempotent.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Sequence
from typing import Any, Protocol

import orjson

from raysys.actors.context import ActorConfig, open_core
from raysys.actors.registry import Registry
from raysys.actors.worker import ASSIGN, lease_to_json
from raysys.ledger import CommitLedger
from raysys.messages import Messenger
from raysys.models import Lease

log = logging.getLogger("raysys.actors.distributor")

MESSAGE_BUDGET = 768 * 1024  # bytes of lease JSON per message (the envelope limit is 1 MiB)


class WorkerPort(Protocol):
    """How the distributor reaches workers (Ray in production, anything in unit tests)."""

    def loads(self, worker_ids: Sequence[str]) -> dict[str, dict[str, Any]]: ...

    def assign(self, worker_id: str, envelope: bytes) -> int: ...


class Distributor:
    def __init__(self, config: ActorConfig, port: WorkerPort, *, autostart: bool = True) -> None:
        self.config = config
        self.port = port
        self.core = open_core(config, "distributor")
        settings = self.core.settings
        self.store = self.core.store
        self.ttl_s = settings.lease_ttl_s
        self.party = settings.distributor_id
        self.messenger = Messenger(self.store, self.party)
        self.registry = Registry(self.core.client, config.namespace)
        self.ledger = CommitLedger(self.core.client, config.namespace) if config.ledger else None
        self.granted = 0
        self.delivered = 0
        self.failed_deliveries = 0
        self._cycle_lock = threading.Lock()
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="distributor", daemon=True)
        if autostart:
            self._thread.start()

    # ---- one round: pick a worker, lease for it, deliver ------------------------------------
    def cycle(self) -> int:
        """Hand out one batch; return how many leases were granted (0: nothing to do)."""
        with self._cycle_lock:
            if self.registry.paused():
                return 0
            live = self.registry.live(max_age_ms=int(self.ttl_s * 1000))
            if not live:
                return 0
            loads = self.port.loads(live)
            best, room = "", 0
            for worker_id, load in loads.items():
                if load.get("draining"):
                    continue
                free = int(load["capacity"]) - int(load["queued"]) - int(load["running"])
                if free > room:
                    best, room = worker_id, free
            if room <= 0:
                return 0
            leases, quarantined = self.store.acquire_verified(
                best, min(self.config.batch, room), self.ttl_s)
            if quarantined and self.ledger is not None:
                self.ledger.record((tid, fence, "quarantined") for tid, fence in quarantined)
            if not leases:
                return 0
            self.granted += len(leases)
            for chunk in _chunks(leases):
                envelope = self.messenger.seal(best, ASSIGN, {"leases": chunk})
                try:
                    accepted = self.port.assign(best, envelope)
                except Exception as exc:  # the leases expire and the reaper requeues them
                    accepted = 0
                    log.warning("delivery of %d leases to %s failed: %s", len(chunk), best, exc)
                if accepted:
                    self.delivered += accepted
                else:
                    self.failed_deliveries += 1
            return len(leases)

    # ---- control ------------------------------------------------------------------------------
    def pause(self) -> None:
        """Hand out nothing more (persisted); returns after any round in progress has ended."""
        self.registry.set_paused(True)
        with self._cycle_lock:
            pass

    def resume(self) -> None:
        self.registry.set_paused(False)

    def info(self) -> dict[str, Any]:
        return {"id": self.party, "paused": self.registry.paused(), "granted": self.granted,
                "delivered": self.delivered, "failed_deliveries": self.failed_deliveries}

    def pid(self) -> int:
        import os

        return os.getpid()

    def stop(self) -> None:
        self._stop.set()
        if self._thread.is_alive():
            self._thread.join(timeout=5)
        self.core.close()

    def _run(self) -> None:
        idle = 0.002
        while not self._stop.is_set():
            try:
                got = self.cycle()
            except Exception:
                log.exception("distributor round failed; retrying")
                got = 0
                idle = 0.5
            if got:
                idle = 0.002
            else:
                self._stop.wait(idle)
                idle = min(idle * 2, 0.05)


def _chunks(leases: list[Lease]) -> list[list[dict[str, Any]]]:
    """Lease documents in messages of at most MESSAGE_BUDGET bytes each (one lease at least)."""
    out: list[list[dict[str, Any]]] = [[]]
    size = 0
    for lease in leases:
        doc = lease_to_json(lease)
        n = len(orjson.dumps(doc))
        if out[-1] and size + n > MESSAGE_BUDGET:
            out.append([])
            size = 0
        out[-1].append(doc)
        size += n
    return out
