"""The one composition of the core: settings, a Redis client, key names, a sealer, the scripts.

Every process builds its :class:`Core` the same way, with :func:`open_core`: the CLI, the Python
client, each actor and the Serve app. The core's parts (``Messenger``, ``SnapshotManager``,
``Registry``, rotation, metrics, the ``TaskStore``) take the Core, so Redis, the keyring and the
Lua scripts are set up once per process, not once per part.

Redis: the configured one, else the embedded default in the data dir (attached to, or started
and then owned: ``close()`` stops a server this core started). Keys: ``RAYSYS_SIGNING_KEYS``
(inline), else ``RAYSYS_SIGNING_KEY_FILE``, else ``<data dir>/keys.json``; only the embedded
default creates that file on first use (production keys are deployed, not invented).
"""

from __future__ import annotations

import gc
import logging
from collections.abc import Callable
from dataclasses import dataclass
from functools import cached_property
from typing import TYPE_CHECKING

import redis

from raysys.config import Settings, load_settings
from raysys.redis_server.attach import attach_or_start
from raysys.redis_server.connection import connect_redis, server_policy_warnings
from raysys.redis_server.embedded import EmbeddedRedis
from raysys.signing.envelope import Sealer
from raysys.signing.keyring import Keyring
from raysys.signing.keysource import keyring_source
from raysys.store.keyspace import Keyspace
from raysys.store.lua import Scripts

if TYPE_CHECKING:
    from raysys.store.task_store import TaskStore

log = logging.getLogger(__name__)

KeyringLike = Keyring | Callable[[], Keyring]


@dataclass(eq=False)
class Core:
    """What every raysys process stands on, for one namespace on one Redis.

    ``server`` is an embedded Redis this core started and stops on :meth:`close`; ``embedded``
    says the embedded default serves this core (started here or attached to). ``audit`` is
    whether state changes are written to the audit stream.
    """

    settings: Settings
    client: redis.Redis
    keys: Keyspace
    sealer: Sealer
    scripts: Scripts
    audit: bool = True
    server: EmbeddedRedis | None = None
    embedded: bool = False

    @classmethod
    def assemble(cls, client: redis.Redis, keyring: Sealer | KeyringLike, namespace: str, *,
                 settings: Settings | None = None, audit: bool = True,
                 script_overrides: dict[str, str] | None = None) -> Core:
        """A core from parts already made (tests, tools); owns no server."""
        sealer = keyring if isinstance(keyring, Sealer) else Sealer(keyring)
        settings = settings if settings is not None else load_settings(namespace=namespace)
        return cls(settings, client, Keyspace(namespace), sealer,
                   scripts_for(client, settings, script_overrides), audit)

    @property
    def namespace(self) -> str:
        return self.keys.namespace

    @cached_property
    def store(self) -> TaskStore:
        """The task store over this core (built on first use, then shared)."""
        from raysys.store.task_store import TaskStore

        return TaskStore(self)

    def close(self) -> None:
        """Close the Redis client; stop the embedded Redis if this core started it."""
        self.client.close()
        if self.server is not None:
            self.server.stop()

    def __enter__(self) -> Core:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


def open_core(settings: Settings, *, namespace: str | None = None,
              keyring: KeyringLike | None = None, create_keys: bool | None = None,
              audit: bool = True, appendfsync: str = "always") -> Core:
    """Connect to the configured Redis, or attach to / start the embedded one; build the core.

    ``keyring`` defaults to the settings' keyring (reloaded when its file changes);
    ``create_keys`` to: create ``<data dir>/keys.json`` only for the embedded default.
    ``appendfsync`` applies to an embedded Redis this call starts. Raises
    :class:`~raysys.errors.RedisUnavailable` or :class:`~raysys.errors.ConfigurationError`
    with one clear line; nothing is left running on failure.
    """
    server: EmbeddedRedis | None = None
    url: str | None = None
    if not settings.redis_configured:
        url, server = attach_or_start(settings.data_dir, appendfsync=appendfsync)
    try:
        client = connect_redis(settings, url)
        server_policy_warnings(client)  # logs loudly itself when the policy can evict
        source = keyring if keyring is not None else keyring_source(settings, create=create_keys)
        sealer = Sealer(source)
        core = Core(settings, client, Keyspace(namespace or settings.namespace), sealer,
                    scripts_for(client, settings), audit, server,
                    embedded=not settings.redis_configured)
    except BaseException:
        if server is not None:
            server.stop()
        raise
    return core


def scripts_for(client: redis.Redis, settings: Settings,
                overrides: dict[str, str] | None = None) -> Scripts:
    """The scripts of ``client``, waiting for ``RAYSYS_REDIS_MIN_REPLICAS`` replicas."""
    return Scripts(client, overrides, replicas=settings.redis_min_replicas,
                   wait_timeout_ms=settings.redis_wait_timeout_ms)


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
