"""The kinds book: what each registered kind asks for, as the workers registered it.

Workers publish a signed description of every kind they can run (``@raysys.task`` options:
attempts, time limit, concurrency, ``max_in_flight``, schedule-to-start, and what a task needs
from a node) in the namespace's ``kinds`` hash. The Distributor reads it to hand out only kinds
some node can place and to keep ``max_in_flight``; the reaper reads a kind's attempt limit; a
submission without a schedule-to-start limit takes its kind's. An entry that fails
verification is ignored (logged): it can only make a kind wait, never make anything run.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

import redis

from raysys.errors import IntegrityError
from raysys.models import DEFAULT_MAX_ATTEMPTS, DEFAULT_TIMEOUT_S
from raysys.signing.envelope import Sealer
from raysys.store.keyspace import Keyspace
from raysys.store.replies import as_bytes, as_text

log = logging.getLogger(__name__)
KIND = "kind"  # envelope purpose of a kind's description
CACHE_S = 2.0


@dataclass(frozen=True, slots=True)
class KindInfo:
    """One kind as the book has it."""

    kind: str
    max_attempts: int = DEFAULT_MAX_ATTEMPTS
    timeout_s: float = DEFAULT_TIMEOUT_S
    concurrency: int | None = None
    max_in_flight: int | None = None
    schedule_to_start_s: float | None = None
    remote: bool = False
    requirement: dict[str, float] = field(default_factory=dict)

    @classmethod
    def from_doc(cls, kind: str, doc: Mapping[str, Any]) -> KindInfo:
        """KeyError, TypeError or ValueError when a field is malformed."""
        def optional(name: str, cast: type[int] | type[float]) -> Any:
            value = doc.get(name)
            return None if value is None else cast(value)

        return cls(kind, int(doc["max_attempts"]), float(doc["timeout_s"]),
                   optional("concurrency", int), optional("max_in_flight", int),
                   optional("schedule_to_start_s", float), bool(doc.get("remote", False)),
                   {str(k): float(v) for k, v in dict(doc.get("requirement") or {}).items()})


class KindBook:
    """Read and publish the namespace's kinds (reads cached for ``CACHE_S``)."""

    def __init__(self, client: redis.Redis, keys: Keyspace, sealer: Sealer) -> None:
        self.client = client
        self.keys = keys
        self.sealer = sealer
        self._lock = threading.Lock()
        self._cached: dict[str, KindInfo] = {}
        self._read_at = float("-inf")

    def publish(self, docs: Mapping[str, Mapping[str, Any]]) -> None:
        """Sign and store each kind's description (``KindOptions.to_doc()``), replacing it."""
        if docs:
            self.client.hset(self.keys.kinds, mapping={
                kind: self.sealer.seal(KIND, {"kind": kind, **doc}) for kind, doc in docs.items()})
            with self._lock:
                self._read_at = float("-inf")

    def read(self, *, fresh: bool = False) -> dict[str, KindInfo]:
        """Every kind whose description verifies, by name."""
        with self._lock:
            if not fresh and time.monotonic() - self._read_at < CACHE_S:
                return self._cached
        book: dict[str, KindInfo] = {}
        for raw_kind, data in self.client.hgetall(self.keys.kinds).items():
            kind = as_text(raw_kind, errors="replace")
            try:
                body = self.sealer.open(as_bytes(data), KIND).body
                if not isinstance(body, dict) or body.get("kind") != kind:
                    raise IntegrityError("description names another kind", reason="copied")
                book[kind] = KindInfo.from_doc(kind, body)
            except (IntegrityError, KeyError, TypeError, ValueError) as exc:
                log.warning("kind %r: its description is ignored (%s)", kind, exc)
        with self._lock:
            self._cached, self._read_at = book, time.monotonic()
        return book

    def get(self, kind: str) -> KindInfo | None:
        return self.read().get(kind)
