"""Stores and cores over a real Redis client, for tests that build the parts by hand."""

from __future__ import annotations

from typing import Any

import redis

from raysys.core import Core, KeyringLike
from raysys.signing.envelope import Sealer
from raysys.store import TaskStore


def core_over(client: redis.Redis, keyring: Sealer | KeyringLike, namespace: str,
              **options: Any) -> Core:
    """A :class:`Core` from a client, a sealer (or keyring) and a namespace; owns no server.

    ``options``: ``audit``, ``settings``, ``script_overrides`` (see :meth:`Core.assemble`).
    """
    return Core.assemble(client, keyring, namespace, **options)


def store_over(client: redis.Redis, keyring: Sealer | KeyringLike, namespace: str,
               **options: Any) -> TaskStore:
    """A :class:`TaskStore` over :func:`core_over`; ``options`` go to the store (``retry``,
    ``audit``, ``fences_per_ms``), ``script_overrides`` to the core."""
    overrides = options.pop("script_overrides", None)
    core = core_over(client, keyring, namespace, script_overrides=overrides)
    return TaskStore(core, **options)
