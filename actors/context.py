"""What every actor stands on: settings, a Redis client, the store, built from an ActorConfig.

An actor never receives a secret as an argument or through Ray's ``runtime_env``: it gets the
non-secret settings overrides (namespace, data dir, the keyring FILE path, lease TTL, ...) and
reads everything else from its own environment (``RAYSYS_*``/``REDIS_*`` set on the node by the
deployment) or, for the embedded default, from the data dir on its machine (the embedded Redis's
password file and state file).
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, field
from typing import Any

import redis

from raysys.config import Settings, load_settings
from raysys.embedded import EmbeddedRedis, attach_or_start
from raysys.envelope import Sealer
from raysys.errors import ConfigurationError
from raysys.logs import configure as configure_logging
from raysys.redis_conn import connect_redis
from raysys.runtime import freeze_heap, keyring_source
from raysys.store import TaskStore

log = logging.getLogger("raysys.actors.context")

# Settings that must never travel as actor arguments (Ray records them in its GCS and logs).
SECRET_SETTINGS = frozenset({"redis_url", "redis_password", "signing_keys", "api_token"})


@dataclass(frozen=True)
class ActorConfig:
    """Non-secret configuration shared by the three actors (picklable, small)."""

    namespace: str
    overrides: dict[str, Any] = field(default_factory=dict)  # Settings field -> value
    batch: int = 50  # leases per assignment
    capacity: int = 100  # leases a worker may hold (queued + running)
    ledger: bool = False  # record acknowledged commits in the CommitLedger (demo, tests)

    def __post_init__(self) -> None:
        secret = SECRET_SETTINGS.intersection(self.overrides)
        if secret:
            raise ConfigurationError(
                f"{', '.join(sorted(secret))} must reach actors through their environment or a "
                "file, never as an actor argument")
        if self.batch < 1 or self.capacity < self.batch:
            raise ConfigurationError("actor batch must be >= 1 and capacity >= batch")

    def settings(self) -> Settings:
        return load_settings(**{**self.overrides, "namespace": self.namespace})


@dataclass
class Core:
    settings: Settings
    client: redis.Redis
    store: TaskStore
    server: EmbeddedRedis | None  # set only if this actor had to start the embedded Redis

    def close(self) -> None:
        self.client.close()
        if self.server is not None:
            self.server.stop()


def open_core(config: ActorConfig, role: str) -> Core:
    """Connect to the configured Redis, or attach to the embedded one in the data dir.

    Also sets up this process's logging: ``LOG_LEVEL``, to stderr (Ray's log files for the
    actor) and to ``<data dir>/logs/agent_system-<role>-<pid>.log``.
    """
    settings = config.settings()
    configure_logging(settings.log_level, role, settings.data_dir / "logs")
    server: EmbeddedRedis | None = None
    url: str | None = None
    if not settings.redis_configured:
        url, server = attach_or_start(settings.data_dir)
        if server is not None:  # nobody was serving the data dir: AOF replay keeps the data
            log.warning("no embedded Redis was running in %s; this actor started one",
                        settings.data_dir)
    client = connect_redis(settings, url)
    # Keys come from a file (reloaded on change) or the node's environment; never created here.
    store = TaskStore(client, Sealer(keyring_source(settings, create=False)), config.namespace)
    freeze_heap()  # start-up is done: keep full GC passes off the actor's hot path
    return Core(settings, client, store, server)
