"""Worker heartbeats, pool control flags and kinds waiting for a node, in Redis.

Keys (named in :mod:`raysys.store.keyspace`), under the namespace prefix ``{raysys:<ns>}:``:

* ``workers`` — hash: worker id -> JSON ``{"ts": server ms, "pid", "node", "queued",
  "running", "stuck", "concurrency", "room", "inflight", "draining", "completed", ...}``,
  written by each worker's heartbeat.
* ``control`` — hash: ``paused`` ("1": the distributor hands out nothing) and
  ``drain:<worker id>`` ("1": that worker takes no new work). Flags live here, not in actor
  memory, so a restarted actor obeys them.
* ``waiting`` — hash: kind -> JSON ``{"reason", "need", "since_ms", "pending"}`` for kinds the
  Distributor holds back (no node can place them now; ``max_in_flight`` reached), written by
  the Distributor, read by ``status``, ``/health`` and the workers.
"""

from __future__ import annotations

import json
from typing import TYPE_CHECKING, Any

from raysys.store.replies import as_text

if TYPE_CHECKING:
    from raysys.core import Core


class Registry:
    """The pool's heartbeats and control flags in one namespace (Redis data access only)."""

    def __init__(self, core: Core) -> None:
        self.client = core.client
        self.workers_key = core.keys.workers
        self.control_key = core.keys.control
        self.waiting_key = core.keys.waiting

    def server_ms(self) -> int:
        seconds, micros = self.client.time()
        return int(seconds) * 1000 + int(micros) // 1000

    # ---- heartbeats ---------------------------------------------------------------------
    def beat(self, worker_id: str, info: dict[str, Any]) -> None:
        doc = {**info, "ts": self.server_ms()}
        self.client.hset(self.workers_key, worker_id, json.dumps(doc))

    def forget(self, worker_id: str) -> None:
        self.client.hdel(self.workers_key, worker_id)

    def workers(self, max_age_ms: int) -> list[dict[str, Any]]:
        """Every worker that ever beat, with ``age_ms`` and ``live`` (beat within max_age_ms)."""
        now = self.server_ms()
        out = []
        for key, raw in sorted(self.client.hgetall(self.workers_key).items()):
            doc = json.loads(raw)
            doc["id"] = as_text(key)
            doc["age_ms"] = now - int(doc.get("ts", 0))
            doc["live"] = doc["alive"] = doc["age_ms"] <= max_age_ms
            out.append(doc)
        return out

    def live(self, max_age_ms: int) -> list[str]:
        return [doc["id"] for doc in self.workers(max_age_ms) if doc["live"]]

    # ---- control flags ------------------------------------------------------------------
    def set_paused(self, paused: bool) -> None:
        if paused:
            self.client.hset(self.control_key, "paused", "1")
        else:
            self.client.hdel(self.control_key, "paused")

    def paused(self) -> bool:
        return self.client.hget(self.control_key, "paused") is not None

    def set_draining(self, worker_id: str, draining: bool) -> None:
        if draining:
            self.client.hset(self.control_key, f"drain:{worker_id}", "1")
        else:
            self.client.hdel(self.control_key, f"drain:{worker_id}")

    def draining(self, worker_id: str) -> bool:
        return self.client.hget(self.control_key, f"drain:{worker_id}") is not None

    # ---- kinds held back --------------------------------------------------------------------
    def set_waiting(self, waiting: dict[str, dict[str, Any]]) -> None:
        """Replace the kinds held back and why (one round trip)."""
        pipe = self.client.pipeline(transaction=True)
        pipe.delete(self.waiting_key)
        if waiting:
            pipe.hset(self.waiting_key, mapping={k: json.dumps(v) for k, v in waiting.items()})
        pipe.execute()

    def waiting(self) -> dict[str, dict[str, Any]]:
        """Kind -> why its tasks are held back (``reason``, ``need``, ``since_ms``, ...)."""
        out: dict[str, dict[str, Any]] = {}
        for kind, raw in self.client.hgetall(self.waiting_key).items():
            try:
                doc = json.loads(raw)
            except ValueError:
                continue
            if isinstance(doc, dict):
                out[as_text(kind, errors="replace")] = doc
        return out

    def waiting_kinds(self) -> set[str]:
        """Kinds no node can place now (``reason`` ``resources``)."""
        return {kind for kind, doc in self.waiting().items() if doc.get("reason") == "resources"}

    def clear(self) -> None:
        """Forget every heartbeat and flag (``raysys down``)."""
        self.client.delete(self.workers_key, self.control_key, self.waiting_key)
