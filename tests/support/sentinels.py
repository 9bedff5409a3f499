"""A replicated Redis on loopback: a primary, replicas and Sentinels, all real processes.

:class:`RedisGroup` starts a primary and ``replicas`` replicas (:class:`EmbeddedRedis`, AOF
``always``, no password) and ``sentinels`` Sentinels (``redis-server CONF --sentinel``) that
monitor the primary as ``MASTER`` with a 1 s down-after window, so a failover takes seconds.
:meth:`RedisGroup.stop` stops everything it started; :meth:`RedisGroup.primary` asks the
Sentinels which server is the primary now.

``RedisGroup(..., config="manifest")`` runs the deployment manifests' own configuration instead
(tests/support/manifest_redis.py): every server gets the directives of the ConfigMap's
redis.conf (``min-replicas-to-write`` among them), every Sentinel those of its sentinel.conf,
with only the listening port, the directory, the primary's address and the two timeouts that
make a failover slow (see :meth:`RedisGroup._sentinel`) replaced.
"""

from __future__ import annotations

import contextlib
import os
import signal
import subprocess
from collections.abc import Iterator
from pathlib import Path
from typing import Literal

import redis

from raysys.redis_server.binary import free_port
from raysys.redis_server.embedded import EmbeddedRedis
from tests.support.manifest_redis import (
    manifest_appendfsync,
    manifest_redis_lines,
    manifest_sentinel_lines,
)
from tests.support.polling import wait_until
from tests.support.redis_servers import require_binary

MASTER = "raysys"
DOWN_AFTER_MS = 1000
FAILOVER_TIMEOUT_MS = 5000
QUORUM = 2
START_TIMEOUT_S = 30.0

Config = Literal["default", "manifest"]


class RedisGroup:
    """A primary, replicas and Sentinels under ``root``; see the module docstring."""

    def __init__(self, root: Path, *, replicas: int = 2, sentinels: int = 3,
                 config: Config = "default") -> None:
        self.root = root
        self.config = config
        self.binary = require_binary("redis")
        self.servers: list[EmbeddedRedis] = []
        self.sentinel_ports: list[int] = []
        self._sentinel_procs: list[subprocess.Popen[bytes]] = []
        self._replicas = replicas
        self._sentinels = sentinels

    def start(self) -> RedisGroup:
        primary = self._server("primary", [])
        for index in range(self._replicas):
            self._server(f"replica-{index}", [f"replicaof 127.0.0.1 {primary.port}"])
        self.wait_replicas(self._replicas, START_TIMEOUT_S, primary)
        for index in range(self._sentinels):
            self._sentinel(index, primary.port)
        wait_until(self._sentinels_agree, START_TIMEOUT_S,
                   "the Sentinels to see the primary, its replicas and each other")
        return self

    def stop(self) -> None:
        for proc in self._sentinel_procs:
            if proc.poll() is None:
                proc.kill()
                proc.wait(10)
        for server in self.servers:
            if server.pid is not None:
                os.kill(server.pid, signal.SIGCONT)  # a paused one cannot shut down
            server.stop()

    @property
    def sentinels(self) -> str:
        """``RAYSYS_REDIS_SENTINELS`` for this group."""
        return ",".join(f"127.0.0.1:{port}" for port in self.sentinel_ports)

    def primary(self) -> EmbeddedRedis:
        """The server the first answering Sentinel names as primary now."""
        for port in self.sentinel_ports:
            try:
                _host, primary_port = self._ask(port, "get-master-addr-by-name", MASTER)
            except (redis.RedisError, TypeError):
                continue
            return next(s for s in self.servers if s.port == int(primary_port))
        raise AssertionError("no Sentinel names a primary")

    def replicas(self, primary: EmbeddedRedis | None = None) -> list[EmbeddedRedis]:
        """The servers ``primary`` (default: the current one) counts as online replicas."""
        primary = primary if primary is not None else self.primary()
        with redis.Redis(port=primary.port) as conn:
            info = conn.info("replication")
        ports = {int(v["port"]) for k, v in info.items() if k.startswith("slave")
                 and isinstance(v, dict) and v.get("state") == "online"}
        return [server for server in self.servers if server.port in ports]

    def wait_replicas(self, count: int, timeout: float = 60.0,
                      primary: EmbeddedRedis | None = None) -> list[EmbeddedRedis]:
        """Wait until the primary has ``count`` replicas online; those replicas."""
        wait_until(lambda: len(self.replicas(primary)) >= count, timeout,
                   f"{count} replicas online", interval=0.2)
        return self.replicas(primary)

    def wait_new_primary(self, old: EmbeddedRedis, timeout: float = 30.0) -> EmbeddedRedis:
        """Wait until the Sentinels name another primary than ``old``, and it takes writes."""
        def promoted() -> bool:
            current = self.primary()
            if current is old:
                return False
            with redis.Redis(port=current.port) as conn:
                return bool(conn.info("replication")["role"] == "master")

        wait_until(promoted, timeout, "the Sentinels to promote a replica")
        return self.primary()

    def wait_demoted(self, old: EmbeddedRedis, timeout: float = 30.0) -> None:
        """Wait until ``old`` (alive) follows the new primary as a replica."""
        def demoted() -> bool:
            with redis.Redis(port=old.port) as conn:
                return bool(conn.info("replication")["role"] == "slave")

        wait_until(demoted, timeout, "the old primary to be turned into a replica")

    def rejoin(self, server: EmbeddedRedis, primary: EmbeddedRedis) -> None:
        """Start a stopped ``server`` again as a replica of ``primary``, as the manifests'
        start-up script does (it asks the Sentinels for the primary first); a server started
        as a primary instead would wait up to 10 s for a Sentinel to notice and demote it."""
        lines = [line for line in server.config_lines if not line.startswith("replicaof ")]
        server.config_lines = (*lines, f"replicaof 127.0.0.1 {primary.port}")
        server.start()

    def settle(self, timeout: float = 90.0) -> EmbeddedRedis:
        """Bring the group back to rest, as a test that changes it must find it: every stopped
        server started again as a replica, every Sentinel naming one primary with no failover
        in progress, every other server an online replica of it; that primary. On a timeout the
        ``AssertionError`` carries each server's role and the Sentinels' last log lines."""
        for server in self.servers:
            if server.pid is not None:
                os.kill(server.pid, signal.SIGCONT)
        try:
            wait_until(self._one_primary_named, timeout, "every Sentinel to name one primary")
            primary = self.primary()
            for server in self.servers:
                if not server.is_running():
                    self.rejoin(server, primary)
            wait_until(lambda: self._at_rest(primary), timeout,
                       f"all {len(self.servers) - 1} replicas online and no failover running")
        except AssertionError as exc:
            raise AssertionError(f"{exc}\n{self.describe()}") from None
        return primary

    def describe(self) -> str:
        """Each server's role as it reports it, and each Sentinel's last log lines."""
        lines = []
        for server in self.servers:
            try:
                with redis.Redis(port=server.port, socket_timeout=2) as conn:
                    info = conn.info("replication")
                role = f"{info['role']} of {info.get('master_port', '-')} " \
                       f"link {info.get('master_link_status', '-')}"
            except redis.RedisError as exc:
                role = f"not answering ({exc})"
            lines.append(f"server {server.port}: {role}")
        for index, port in enumerate(self.sentinel_ports):
            log = self.root / f"sentinel-{index}" / "sentinel.log"
            tail = log.read_text(errors="replace").splitlines()[-15:] if log.exists() else []
            lines.append(f"sentinel {port} log:\n  " + "\n  ".join(tail))
        return "\n".join(lines)

    def _one_primary_named(self) -> bool:
        named = set()
        for port in self.sentinel_ports:
            try:
                named.add(int(self._ask(port, "get-master-addr-by-name", MASTER)[1]))
            except (redis.RedisError, TypeError, IndexError):
                return False
        return len(named) == 1

    def _at_rest(self, primary: EmbeddedRedis) -> bool:
        if len(self.replicas(primary)) < len(self.servers) - 1:
            return False
        for port in self.sentinel_ports:
            with redis.Redis(port=port, decode_responses=True) as conn:
                master = conn.execute_command("SENTINEL", "MASTER", MASTER)
            fields = dict(zip(master[::2], master[1::2], strict=True)) \
                if isinstance(master, list) else master
            if int(fields["port"]) != primary.port or "failover" in fields["flags"] \
                    or "down" in fields["flags"]:
                return False
        return True

    # -- starting ------------------------------------------------------------------------

    def _server(self, name: str, lines: list[str]) -> EmbeddedRedis:
        appendfsync, base = "always", []
        if self.config == "manifest":
            appendfsync, base = manifest_appendfsync(), manifest_redis_lines()
        server = EmbeddedRedis(self.root / name, password=None, appendfsync=appendfsync,
                               binary=self.binary, config_lines=[*base, *lines])
        self.servers.append(server)
        server.start()
        return server

    def _sentinel(self, index: int, primary_port: int) -> None:
        port = free_port()
        directory = self.root / f"sentinel-{index}"
        directory.mkdir(parents=True, exist_ok=True)
        conf = directory / "sentinel.conf"  # Sentinel rewrites it: it must be a writable file
        if self.config == "manifest":
            # The manifests' sentinel.conf with two values shortened for tests: down-after 1 s
            # (the manifest's 5 s would only slow each failover down) and failover-timeout 5 s
            # (a failed election is retried after twice this: 10 s here, 2 minutes with the
            # manifest's 60 s, longer than a test may take).
            monitor = manifest_sentinel_lines("127.0.0.1", primary_port, {
                "down-after-milliseconds": str(DOWN_AFTER_MS),
                "failover-timeout": str(FAILOVER_TIMEOUT_MS),
            })
        else:
            monitor = [
                f"sentinel monitor {MASTER} 127.0.0.1 {primary_port} {QUORUM}",
                f"sentinel down-after-milliseconds {MASTER} {DOWN_AFTER_MS}",
                f"sentinel failover-timeout {MASTER} {FAILOVER_TIMEOUT_MS}",
                f"sentinel parallel-syncs {MASTER} 1",
            ]
        conf.write_text("\n".join([
            f"port {port}", "bind 127.0.0.1", f"dir {directory}", *monitor, "",
        ]))
        with open(directory / "sentinel.log", "wb") as log:  # the child keeps its own copy
            self._sentinel_procs.append(subprocess.Popen(
                [str(self.binary), str(conf), "--sentinel"], stdout=log,
                stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL))
        self.sentinel_ports.append(port)

    def _sentinels_agree(self) -> bool:
        try:
            for port in self.sentinel_ports:
                with redis.Redis(port=port, decode_responses=True) as conn:
                    master = conn.execute_command("SENTINEL", "MASTER", MASTER)
                    fields = dict(zip(master[::2], master[1::2], strict=True)) \
                        if isinstance(master, list) else master
                    if (int(fields["num-slaves"]) < self._replicas
                            or int(fields["num-other-sentinels"]) < self._sentinels - 1):
                        return False
        except (redis.RedisError, KeyError):
            return False
        return True

    @staticmethod
    def _ask(port: int, *command: str) -> list[str]:
        with redis.Redis(port=port, decode_responses=True) as conn:
            reply = conn.execute_command("SENTINEL", *command)
        return list(reply)


@contextlib.contextmanager
def running_group(root: Path, *, config: Config = "default") -> Iterator[RedisGroup]:
    """A started :class:`RedisGroup` under ``root``, stopped when the block ends."""
    group = RedisGroup(root, config=config).start()
    try:
        yield group
    finally:
        group.stop()
