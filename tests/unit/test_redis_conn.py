"""Building clients from settings and the one-line explanation of each connection failure."""

from __future__ import annotations

import contextlib
import logging
import re
import socket
import threading
import time
from collections.abc import Iterator
from typing import TYPE_CHECKING, Any

import pytest
import redis

from raysys.config import Settings
from raysys.errors import RedisUnavailable
from raysys.redis_server.binary import free_port
from raysys.redis_server.connection import (
    check_connection,
    connect_redis,
    server_policy_warnings,
    server_run_id,
)
from raysys.redis_server.embedded import EmbeddedRedis

if TYPE_CHECKING:
    from tests.support.redis_servers import RedisServerFactory

# Settings in these tests come from arguments only, never the machine's environment.
pytestmark = [pytest.mark.unit, pytest.mark.timeout(60),
              pytest.mark.usefixtures("no_settings_variables")]

PASSWORD = "correct-horse-battery-staple-0123456789"
WRONG = "wrong-password-9876543210-abcdefghijklmno"


def make_settings(**fields: Any) -> Settings:
    """Settings from these fields only (the environment is cleared above; no .env file)."""
    return Settings(_env_file=None, **fields)


@pytest.fixture
def protected_server(redis_server_factory: RedisServerFactory, redis_binary: str) -> EmbeddedRedis:
    """A server requiring PASSWORD, once per binary."""
    return redis_server_factory(redis_binary, password=PASSWORD)


def failure(settings: Settings, **kwargs: object) -> tuple[str, float]:
    """connect_redis's RedisUnavailable message, and how long it took to fail."""
    started = time.monotonic()
    with pytest.raises(RedisUnavailable) as info:
        connect_redis(settings, **kwargs)  # type: ignore[arg-type]
    elapsed = time.monotonic() - started
    assert info.value.__suppress_context__  # raised "from None": no chained traceback
    message = str(info.value)
    assert "\n" not in message
    return message, elapsed


# -- success ----------------------------------------------------------------------------------


def test_connects_to_an_explicit_url(redis_server: EmbeddedRedis) -> None:
    client = connect_redis(make_settings(), redis_server.url, decode_responses=True)
    with client:
        client.set("k", "v")
        assert client.get("k") == "v"
        client.delete("k")


def test_connects_from_host_port_and_password(protected_server: EmbeddedRedis) -> None:
    settings = make_settings(
        redis_host="127.0.0.1", redis_port=protected_server.port, redis_password=PASSWORD
    )
    with connect_redis(settings) as client:
        assert client.ping()
        kwargs = client.connection_pool.connection_kwargs
        assert kwargs["health_check_interval"] == 30
        assert kwargs["retry"].get_retries() == 3


def test_raysys_redis_url_overrides_the_redis_parts(protected_server: EmbeddedRedis) -> None:
    settings = make_settings(
        redis_url=f"redis://:{PASSWORD}@127.0.0.1:{protected_server.port}/0",
        redis_host="127.0.0.1",
        redis_port=free_port(),  # nothing there: must not be used
    )
    with connect_redis(settings) as client:
        assert client.ping()


# -- failures: one clear line, never the password ---------------------------------------------


def test_refused_port_says_where_and_how_to_fix() -> None:
    port = free_port()
    message, elapsed = failure(make_settings(redis_host="127.0.0.1", redis_port=port))
    assert message == (
        f"cannot reach Redis at 127.0.0.1:{port} (connection refused): start Redis there, "
        f"or set REDIS_HOST/REDIS_PORT or RAYSYS_REDIS_URL"
    )
    assert elapsed < 3


def test_refused_url_never_shows_its_password() -> None:
    port = free_port()
    settings = make_settings(redis_url=f"redis://:{PASSWORD}@127.0.0.1:{port}/0")
    message, _ = failure(settings)
    assert message.startswith(f"cannot reach Redis at 127.0.0.1:{port} (connection refused)")
    assert PASSWORD not in message


@pytest.mark.parametrize(
    "credentials",
    [
        {"redis_password": WRONG},
        {},  # NOAUTH
        {"redis_username": "nobody", "redis_password": PASSWORD},
    ],
    ids=["wrong-password", "no-password", "unknown-user"],
)
def test_refused_credentials(protected_server: EmbeddedRedis, credentials: dict[str, str]) -> None:
    port = protected_server.port
    settings = make_settings(redis_host="127.0.0.1", redis_port=port, **credentials)
    message, elapsed = failure(settings)
    assert message == (
        f"Redis at 127.0.0.1:{port} refused the credentials: check REDIS_USERNAME / REDIS_PASSWORD"
    )
    assert PASSWORD not in message and WRONG not in message
    assert elapsed < 1  # refused credentials are not retried


def test_wrong_password_in_url_is_not_shown(protected_server: EmbeddedRedis) -> None:
    url = f"redis://:{WRONG}@127.0.0.1:{protected_server.port}/0"
    message, _ = failure(make_settings(redis_url=url))
    assert "refused the credentials" in message
    assert WRONG not in message
    message, _ = failure(make_settings(), url=url)
    assert WRONG not in message


@pytest.fixture
def silent_port() -> Iterator[int]:
    """A port that accepts connections (the kernel backlog) but never answers."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as listener:
        listener.bind(("127.0.0.1", 0))
        listener.listen(16)
        yield listener.getsockname()[1]


@pytest.fixture
def closing_port() -> Iterator[int]:
    """A port that accepts each connection, reads a little, and closes it (like a TLS-only
    server greeted in plain text)."""
    listener = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    listener.bind(("127.0.0.1", 0))
    listener.listen(16)
    listener.settimeout(0.05)
    stop = threading.Event()

    def serve() -> None:
        while not stop.is_set():
            try:
                conn, _ = listener.accept()
            except OSError:
                continue
            with conn:
                conn.settimeout(1)
                with contextlib.suppress(OSError):
                    conn.recv(1024)

    thread = threading.Thread(target=serve, daemon=True)
    thread.start()
    yield listener.getsockname()[1]
    stop.set()
    thread.join(timeout=5)
    listener.close()


def test_timeout_names_the_limit(silent_port: int) -> None:
    settings = make_settings(redis_host="127.0.0.1", redis_port=silent_port)
    message, elapsed = failure(settings, socket_timeout=0.2)
    assert message == f"Redis at 127.0.0.1:{silent_port} did not answer within 0.2 s"
    assert elapsed < 2  # timeouts are not retried by the check


def test_closed_connection_suggests_tls(closing_port: int) -> None:
    settings = make_settings(redis_host="127.0.0.1", redis_port=closing_port)
    message, elapsed = failure(settings, socket_timeout=2)
    assert message == (
        f"Redis at 127.0.0.1:{closing_port} closed the connection: "
        f"if it requires TLS set REDIS_USE_TLS=true"
    )
    assert elapsed < 3


def test_tls_client_against_a_plain_server_hints_at_tls(redis_server: EmbeddedRedis) -> None:
    # A plain Redis reads the ClientHello as an unfinished inline command and never answers.
    settings = make_settings(
        redis_host="127.0.0.1", redis_port=redis_server.port, redis_use_tls=True
    )
    message, _ = failure(settings, socket_timeout=0.3)
    assert message == (
        f"Redis at 127.0.0.1:{redis_server.port} did not answer within 0.3 s "
        f"(if that port does not speak TLS, set REDIS_USE_TLS=false)"
    )


def test_check_connection_maps_failures_of_an_existing_client() -> None:
    port = free_port()
    client = redis.Redis(port=port, password=PASSWORD)
    with pytest.raises(RedisUnavailable, match=re.escape(f"127.0.0.1:{port} (connection refused)")):
        check_connection(client, make_settings(), ("127.0.0.1", port))
    client.close()


# -- server checks ----------------------------------------------------------------------------


def test_noeviction_gives_no_warning(redis_client: redis.Redis) -> None:
    assert server_policy_warnings(redis_client) == []


def test_an_evicting_policy_is_warned_about_loudly(
    redis_server_factory: RedisServerFactory, redis_binary: str, caplog: pytest.LogCaptureFixture
) -> None:
    # given a server configured like the seed guide's (allkeys-lru)
    server = redis_server_factory(redis_binary, extra_args=["--maxmemory-policy", "allkeys-lru"])
    client = connect_redis(make_settings(), server.url)
    # when its policy is checked
    with client, caplog.at_level(logging.WARNING, logger="raysys.redis_server.connection"):
        warnings = server_policy_warnings(client)
    # then one loud warning, returned and logged
    expected = (
        "Redis maxmemory-policy is allkeys-lru: Redis may silently drop accepted tasks; "
        "set maxmemory-policy noeviction"
    )
    assert warnings == [expected]
    assert [(r.name, r.levelno, r.getMessage()) for r in caplog.records] == [
        ("raysys.redis_server.connection", logging.WARNING, expected)
    ]


def test_run_id_is_stable_and_changes_on_restart(
    redis_server_factory: RedisServerFactory, redis_binary: str
) -> None:
    server = redis_server_factory(redis_binary)
    with connect_redis(make_settings(), server.url) as client:
        run_id = server_run_id(client)
        assert re.fullmatch(r"[0-9a-f]{40}", run_id)
        assert server_run_id(client) == run_id
    server.stop()
    server.start()
    with connect_redis(make_settings(), server.url) as client:
        assert server_run_id(client) != run_id
