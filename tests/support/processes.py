"""Processes, ports and environments, for tests that start programs (and clusters) of their own.

- Environments: :func:`clean_env`, this process's environment without the caller's raysys and
  Redis settings (and, for ``ray`` commands, without Ray's), plus what the test sets; and
  :func:`private_env`, the same rooted in a private ``HOME``, ``TMPDIR`` and data dir.
- Processes, read from ``/proc``: :func:`proc_table` (:class:`Proc` rows), :func:`alive` (a pid,
  or a :class:`Proc` checked against pid reuse), :func:`terminate` (SIGTERM, then SIGKILL), and
  a test's own processes: those :func:`processes_working_in` a directory, or :func:`processes_of`
  a cluster started with :data:`MARKER_VAR` in its environment, with their descendants
  (:func:`with_descendants`). :func:`wait_no_processes`, :func:`wait_until_gone` and
  :func:`wait_gone` wait for them to exit; :func:`stop_selectively` stops a marked cluster the
  way ``ray stop`` never would: only that cluster.
- Ports: :func:`free_ports` (distinct, free now) and :func:`worker_port_range` (a free block for
  Ray's workers, off Ray's default range).
"""

from __future__ import annotations

import contextlib
import os
import secrets
import signal
import socket
import sys
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from pathlib import Path

PROC = Path("/proc")
VENV_BIN = Path(sys.executable).parent  # this venv: `ray`, `raysys`, and `python` for jobs
MARKER_VAR = "DEPLOY_TEST_MARKER"  # set on a cluster's start: every process it starts inherits it

# The caller's configuration must not leak into a command under test.
CLEARED_PREFIXES = ("RAYSYS_", "REDIS_")
CLEARED_NAMES = ("LOG_LEVEL", "COORDINATOR_ID", "DISTRIBUTOR_ID", "WORKER_ID", "TMPDIR")
RAY_CLEARED = ("RAY_",)
RAY_CLEARED_NAMES = ("VIRTUAL_ENV", "PYTHONPATH")


# ---- environments -------------------------------------------------------------------------------
def clean_env(*, ray: bool = False, **extra: str) -> dict[str, str]:
    """This process's environment without the caller's configuration, then ``extra``.

    Gone: ``RAYSYS_*``, ``REDIS_*``, the other variables raysys reads (``LOG_LEVEL``, the actor
    ids) and ``TMPDIR``. ``ray=True``, for ``ray`` commands and clusters started outside this
    process: ``RAY_*`` gone too (no address, token or auth mode of another cluster), this venv's
    ``bin`` first on ``PATH``, and no ``VIRTUAL_ENV`` or ``PYTHONPATH``.
    """
    prefixes = CLEARED_PREFIXES + (RAY_CLEARED if ray else ())
    names = CLEARED_NAMES + (RAY_CLEARED_NAMES if ray else ())
    env = {name: value for name, value in os.environ.items()
           if not name.startswith(prefixes) and name not in names}
    if ray:
        env["PATH"] = f"{VENV_BIN}{os.pathsep}{env.get('PATH', '/usr/bin:/bin')}"
    env.update(extra)
    return env


def private_env(root: Path, *, ray: bool = False, **extra: str) -> dict[str, str]:
    """:func:`clean_env` with ``HOME``, ``RAYSYS_DATA_DIR`` and ``TMPDIR`` in ``root``/home,
    /data and /tmp (made here), unbuffered Python output, then ``extra``."""
    for sub in ("home", "data", "tmp"):
        (root / sub).mkdir(parents=True, exist_ok=True)
    private = {"HOME": str(root / "home"), "RAYSYS_DATA_DIR": str(root / "data"),
               "TMPDIR": str(root / "tmp"), "PYTHONUNBUFFERED": "1"}
    return clean_env(ray=ray, **(private | extra))


# ---- processes ----------------------------------------------------------------------------------
@dataclass(frozen=True)
class Proc:
    """One process as ``/proc`` showed it."""

    pid: int
    ppid: int
    uid: int
    start: int  # clock ticks since boot: tells a reused pid from the process we saw
    state: str
    name: str  # comm: what `ray stop` matches for raylet/gcs_server
    cmdline: str
    cwd: str  # "" where we may not look
    environ: bytes  # b"" where we may not look


def _stat(pid: int) -> tuple[str, str, int, int] | None:
    """(name, state, ppid, start) from ``/proc/<pid>/stat``, or None when it is gone."""
    try:
        raw = (PROC / str(pid) / "stat").read_bytes()
    except OSError:
        return None
    name = raw[raw.index(b"(") + 1:raw.rindex(b")")].decode(errors="replace")
    fields = raw[raw.rindex(b")") + 2:].split()
    return name, fields[0].decode(), int(fields[1]), int(fields[19])


def _proc(pid: int) -> Proc | None:
    base = PROC / str(pid)
    try:
        uid = base.stat().st_uid
        stat = _stat(pid)
        cmdline = (base / "cmdline").read_bytes().replace(b"\0", b" ")
    except OSError:
        return None
    if stat is None:
        return None
    try:
        environ, cwd = (base / "environ").read_bytes(), os.readlink(base / "cwd")
    except OSError:
        environ, cwd = b"", ""
    name, state, ppid, start = stat
    return Proc(pid, ppid, uid, start, state, name, cmdline.decode(errors="replace").strip(),
                cwd, environ)


def proc_table() -> dict[int, Proc]:
    """Every process this user may inspect (root: all); empty without ``/proc``."""
    if not PROC.is_dir():
        return {}
    table = {}
    for entry in PROC.iterdir():
        if entry.name.isdigit() and (proc := _proc(int(entry.name))) is not None:
            table[proc.pid] = proc
    return table


def alive(process: Proc | int) -> bool:
    """Whether it still runs (a zombie does not). A :class:`Proc` must also be the very process
    seen (same start time), not a later one that got its pid."""
    pid = process if isinstance(process, int) else process.pid
    if not PROC.is_dir():  # no /proc (macOS): signal 0 says whether the pid is taken
        try:
            os.kill(pid, 0)
        except ProcessLookupError:
            return False
        return True
    stat = _stat(pid)
    if stat is None:
        return False
    _, state, _, start = stat
    same = isinstance(process, int) or start == process.start
    return same and state not in ("Z", "X")


def terminate(procs: Iterable[Proc], grace_s: float = 10.0) -> None:
    """SIGTERM, then SIGKILL what is left after ``grace_s`` (Ray's GCS can hang on SIGTERM); by
    pid, checked against reuse."""
    procs = list(procs)
    for sig in (signal.SIGTERM, signal.SIGKILL):
        for p in procs:
            if alive(p):
                with contextlib.suppress(OSError):  # gone meanwhile
                    os.kill(p.pid, sig)
        deadline = time.monotonic() + grace_s
        while time.monotonic() < deadline and any(alive(p) for p in procs):
            time.sleep(0.2)


def with_descendants(pids: Iterable[int], table: dict[int, Proc]) -> dict[int, Proc]:
    """The processes of ``pids`` found in ``table``, and all their descendants."""
    chosen = {pid for pid in pids if pid in table}
    grew = True
    while grew:
        grew = False
        for pid, p in table.items():
            if p.ppid in chosen and pid not in chosen:
                chosen.add(pid)
                grew = True
    return {pid: table[pid] for pid in chosen}


def _inside(path: str, root: str) -> bool:
    return path == root or path.startswith(root + os.sep)


def processes_working_in(directory: Path) -> list[str]:
    """``pid N in CWD: CMDLINE`` of each process whose working directory is inside
    ``directory`` (redis-server chdirs to its ``--dir`` and rewrites its command line, so the
    cwd is what identifies it)."""
    root = str(directory.resolve())
    return [f"pid {p.pid} in {p.cwd}: {p.cmdline}" for p in proc_table().values()
            if p.cwd and _inside(p.cwd, root)]


def processes_of(marker: str, root: Path) -> dict[int, Proc]:
    """Processes carrying ``MARKER_VAR=marker`` or running from / naming ``root``, plus their
    descendants; never this one.

    The environment catches Ray's workers (whose process titles hide their command line); the
    cwd and command line catch processes that rewrite their environment area (redis-server).
    """
    table = proc_table()
    tag = f"{MARKER_VAR}={marker}".encode()
    where = str(root)
    marked = [pid for pid, p in table.items()
              if tag in p.environ.split(b"\0") or where in p.cmdline or _inside(p.cwd, where)]
    found = with_descendants(marked, table)
    found.pop(os.getpid(), None)
    return found


def wait_gone(find: Callable[[], list[str]], timeout: float) -> list[str]:
    """What ``find`` still reports once it reports nothing, or after ``timeout`` seconds (Ray's
    daemons exit a moment after the driver)."""
    deadline = time.monotonic() + timeout
    left = find()
    while left and time.monotonic() < deadline:
        time.sleep(0.5)
        left = find()
    return left


def wait_no_processes(*directories: Path, timeout: float = 20.0,
                      also: Callable[[], list[str]] | None = None) -> list[str]:
    """Processes working in any of ``directories``, and whatever ``also`` reports, once none is
    left or after ``timeout`` seconds (see :func:`wait_gone`)."""
    def left() -> list[str]:
        found = [line for d in directories for line in processes_working_in(d)]
        return found + (also() if also is not None else [])

    return wait_gone(left, timeout)


def wait_until_gone(marker: str, root: Path, timeout: float = 30.0) -> list[str]:
    """Command lines of the processes of a marked cluster (:func:`processes_of`) still running
    after ``timeout`` seconds (none: [])."""
    return wait_gone(lambda: [p.cmdline for p in processes_of(marker, root).values()
                              if alive(p)], timeout)


def stop_selectively(marker: str, root: Path) -> None:
    """Stop every process of one marked cluster (never `ray stop`, which stops every Ray
    process of the user); new children can appear while it dies: loop."""
    for _ in range(3):
        procs = processes_of(marker, root)
        if not procs:
            return
        terminate(procs.values())


# ---- ports --------------------------------------------------------------------------------------
def free_ports(count: int) -> list[int]:
    """Distinct free TCP ports of 127.0.0.1 (held open together while chosen, so they differ)."""
    socks = []
    try:
        for _ in range(count):
            s = socket.socket()
            s.bind(("127.0.0.1", 0))
            socks.append(s)
        return [s.getsockname()[1] for s in socks]
    finally:
        for s in socks:
            s.close()


def _port_free(port: int) -> bool:
    with socket.socket() as s:
        try:
            s.bind(("127.0.0.1", port))
        except OSError:
            return False
    return True


def worker_port_range(size: int = 100) -> tuple[int, int]:
    """A free block between Ray's default worker range (10002-19999) and the ephemeral ports."""
    for _ in range(50):
        low = 20_000 + secrets.randbelow(32_000 - size - 20_000)
        if all(_port_free(p) for p in range(low, low + size)):
            return low, low + size - 1
    raise RuntimeError("no free block of worker ports in 20000-32000")
