"""Stores and cores over a real Redis client, for tests that build the parts by hand, and what a
store wrote to its audit stream.

- :func:`core_over` and :func:`store_over`: a :class:`Core` or :class:`TaskStore` from a client, a
  sealer (or keyring) and a namespace; they own no server.
- :func:`read_audit`: every entry of a namespace's audit stream, as :class:`AuditEvent` (its
  Redis server time and fields).
- :func:`flip_record_bit`: an attacker's one-bit change to a task's stored signed record.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import redis

from raysys.core import Core, KeyringLike
from raysys.signing.envelope import Sealer
from raysys.store import TaskStore
from raysys.store.keyspace import Keyspace
from raysys.store.replies import as_text


def core_over(client: redis.Redis, keyring: Sealer | KeyringLike, namespace: str,
              **options: Any) -> Core:
    """A :class:`Core` from a client, a sealer (or keyring) and a namespace; owns no server.

    ``options``: ``audit``, ``settings``, ``script_overrides`` (see :meth:`Core.assemble`).
    """
    return Core.assemble(client, keyring, namespace, **options)


def store_over(client: redis.Redis, keyring: Sealer | KeyringLike, namespace: str,
               **options: Any) -> TaskStore:
    """A :class:`TaskStore` over :func:`core_over`; ``options`` go to the store (``retry``,
    ``audit``, ``fences_per_ms``), ``script_overrides`` and ``settings`` to the core."""
    overrides = options.pop("script_overrides", None)
    settings = options.pop("settings", None)
    core = core_over(client, keyring, namespace, script_overrides=overrides, settings=settings)
    return TaskStore(core, **options)


@dataclass(frozen=True, slots=True)
class AuditEvent:
    """One audit entry: its Redis server time (the stream id) and its fields."""

    ts: float  # s
    fields: dict[str, str]

    @property
    def ev(self) -> str:
        return self.fields.get("ev", "")


def read_audit(conn: redis.Redis, namespace: str) -> list[AuditEvent]:
    """The whole audit stream of ``namespace``, oldest first (read in pages of 10,000)."""
    out: list[AuditEvent] = []
    last = "-"
    key = Keyspace(namespace).audit
    while True:
        page: Any = conn.xrange(key, min=last, max="+", count=10_000)
        if last != "-":
            page = page[1:]
        if not page:
            return out
        for entry_id, fields in page:
            ms = int(as_text(entry_id).split("-")[0])
            out.append(AuditEvent(ms / 1000, {as_text(k): as_text(v) for k, v in fields.items()}))
        last = as_text(page[-1][0])


def flip_record_bit(conn: redis.Redis, namespace: str, task_id: str) -> None:
    """Change one bit of the task's stored signed record: its last byte, inside the signed
    JSON, so the signature no longer matches (``bad_signature``)."""
    key = Keyspace(namespace).task(task_id)
    rec = bytearray(conn.hget(key, "rec") or b"")
    rec[-1] ^= 0x01
    conn.hset(key, "rec", bytes(rec))
