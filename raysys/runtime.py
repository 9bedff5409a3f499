"""Composition of the core from settings: Redis (configured or embedded), keyring, store.

``open_store`` is what the CLI and clients use; it owns an embedded Redis it started and
stops it on exit. Keys: ``RAYSYS_SIGNING_KEYS`` (inline), else ``RAYSYS_SIGNING_KEY_FILE``, else
``<data dir>/keys.json``. Only the embedded default creates that file on first use; with a
configured Redis a missing keyring is an error (production keys are deployed, not invented).
"""

from __future__ import annotations

import gc
import logging
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

import redis

from raysys.config import Settings
from raysys.embedded import EmbeddedRedis, attach_or_start
from raysys.envelope import Sealer
from raysys.keyring import Keyring, generate_key, write_keyring_file
from raysys.keysource import KeyringSource
from raysys.redis_conn import connect_redis, server_policy_warnings
from raysys.store import TaskStore

log = logging.getLogger("raysys.runtime")


def freeze_heap() -> None:
    """Exempt everything allocated so far (imported modules, settings) from the cyclic GC.

    In a Ray worker process a full collection walks ~100,000 objects, mostly modules that live
    for ever: ~50 ms here, during which the process answers nothing (a p99 latency spike on a
    hot path). Frozen, they are never scanned again and a full collection takes well under a
    millisecond. Call it once start-up is done; what is frozen is never freed (by design: it
    lives as long as the process).
    """
    gc.collect()
    gc.freeze()


def keyring_path(settings: Settings) -> Path:
    return settings.signing_key_file or settings.data_dir / "keys.json"


def load_keyring(settings: Settings, *, create: bool | None = None) -> Keyring:
    """The keyring the settings name. ``create`` defaults to: only for the embedded default."""
    return keyring_source(settings, create=create)()


def keyring_source(settings: Settings, *, create: bool | None = None) -> KeyringSource:
    """A reloading source for the settings' keyring (file), or a fixed one (variable)."""
    if settings.signing_keys is not None:
        return KeyringSource(text=settings.signing_keys.get_secret_value())
    path = keyring_path(settings)
    if create is None:
        create = not settings.redis_configured and settings.signing_key_file is None
    if create and not path.exists():
        write_keyring_file(path, Keyring([generate_key()]))
        log.warning("created a new signing keyring at %s (keep it; back it up)", path)
    return KeyringSource(path)


@dataclass
class StoreHandle:
    """A store with what it stands on; ``close()`` stops an embedded Redis this process owns."""

    store: TaskStore
    client: redis.Redis
    server: EmbeddedRedis | None
    embedded: bool

    def close(self) -> None:
        self.client.close()
        if self.server is not None:
            self.server.stop()


@contextmanager
def open_store(settings: Settings, *, namespace: str | None = None,
               keyring: Keyring | Callable[[], Keyring] | None = None,
               audit: bool = True, appendfsync: str = "always") -> Iterator[StoreHandle]:
    """Connect to the configured Redis, or attach to / start the embedded one, and build a store."""
    server: EmbeddedRedis | None = None
    url: str | None = None
    if not settings.redis_configured:
        url, server = attach_or_start(settings.data_dir, appendfsync=appendfsync)
    try:
        client = connect_redis(settings, url)
        server_policy_warnings(client)  # logs loudly itself when the policy can evict
        source = keyring if keyring is not None else keyring_source(settings)
        store = TaskStore(client, Sealer(source), namespace or settings.namespace, audit=audit)
        handle = StoreHandle(store, client, server, embedded=not settings.redis_configured)
    except BaseException:
        if server is not None:
            server.stop()
        raise
    try:
        yield handle
    finally:
        handle.close()
