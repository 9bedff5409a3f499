"""The embedded server's data directory: its state file, its lock, the binary it last used.

``<data_dir>/redis/embedded.json`` records the running server's pid and port; an ``fcntl`` lock
on ``embedded.lock`` serialises check-and-start across processes; ``binary`` names the server
that last wrote the directory (an AOF written by valkey 9 does not load in redis 7.0).
"""

from __future__ import annotations

import contextlib
import errno
import fcntl
import json
import logging
import os
import secrets
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path

from raysys.errors import ConfigurationError, RedisUnavailable

log = logging.getLogger(__name__)

LOCK_TIMEOUT_S = 30.0
STATE_FILE = "embedded.json"
LOCK_FILE = "embedded.lock"
PASSWORD_FILE = "password"  # the generated password, mode 0600
BINARY_FILE = "binary"  # the server that last wrote the directory; preferred on later starts


@contextlib.contextmanager
def dir_lock(redis_dir: Path, timeout: float = LOCK_TIMEOUT_S) -> Iterator[None]:
    """Hold an exclusive ``fcntl`` lock on ``<redis_dir>/embedded.lock`` (across processes)."""
    fd = os.open(redis_dir / LOCK_FILE, os.O_RDWR | os.O_CREAT, 0o600)
    try:
        deadline = time.monotonic() + timeout
        while True:
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
                break
            except OSError as exc:
                if exc.errno not in (errno.EAGAIN, errno.EACCES, errno.EWOULDBLOCK):
                    raise
                if time.monotonic() > deadline:
                    raise RedisUnavailable(
                        f"another process holds {redis_dir / LOCK_FILE} for over {timeout:g} s"
                    ) from None
                time.sleep(0.05)
        yield
    finally:
        os.close(fd)  # closing the descriptor releases the lock


def read_state(redis_dir: Path) -> tuple[int, int] | None:
    """(pid, port) from ``embedded.json``, or None when absent or unreadable."""
    try:
        data = json.loads((redis_dir / STATE_FILE).read_text())
        pid, port = data["pid"], data["port"]
    except (OSError, ValueError, KeyError, TypeError):
        return None
    if not (isinstance(pid, int) and isinstance(port, int)):
        return None
    return pid, port


def write_state(redis_dir: Path, pid: int, port: int) -> None:
    tmp = redis_dir / f".{STATE_FILE}.{os.getpid()}"
    tmp.write_text(json.dumps({"pid": pid, "port": port}))
    os.replace(tmp, redis_dir / STATE_FILE)


def recorded_binary(redis_dir: Path) -> Path | None:
    try:
        recorded = Path((redis_dir / BINARY_FILE).read_text().strip())
    except OSError:
        return None
    return recorded if recorded.is_file() and os.access(recorded, os.X_OK) else None


def make_redis_dir(data_dir: Path) -> Path:
    redis_dir = data_dir / "redis"
    redis_dir.mkdir(parents=True, exist_ok=True, mode=0o700)
    return redis_dir


def load_or_generate_password(data_dir: Path) -> str:
    redis_dir = make_redis_dir(data_dir)
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


def repair_aof(binary: Path, redis_dir: Path) -> None:
    """Cut a torn AOF back to its last whole transaction before the server loads it.

    Redis 7.0 (``aof-load-truncated yes``) truncates a torn AOF after the last complete
    command, which can sit inside a script's MULTI block: half a script would be replayed
    and accepted tasks stranded. ``redis-check-aof --fix`` truncates before that MULTI.
    Valkey truncates to whole transactions itself (valkey-io/valkey#4342).
    """
    manifest = redis_dir / "appendonlydir" / "appendonly.aof.manifest"
    checker = binary.parent / "redis-check-aof"
    if "valkey" in binary.name or not manifest.is_file():
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
