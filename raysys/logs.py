"""Logging set-up: stderr plus one log file per process, ``agent_system-<role>-<pid>.log``.

One file per process, never one file shared by several: a rotating handler shared between
processes corrupts at rotation (``../shared/RAY_NOTES.md``). Files go to ``<data dir>/logs``;
each rotates at 20 MiB, keeping 3. ``LOG_LEVEL=DEBUG`` shows every message sent and received,
every task run and committed, and every Redis script call. Secrets are never logged: records
and messages are logged by id, type and size, never by content.
"""

from __future__ import annotations

import logging
import os
import sys
from logging.handlers import RotatingFileHandler
from pathlib import Path

FORMAT = "%(asctime)s %(levelname)s %(process)d %(name)s: %(message)s"
MAX_BYTES = 20 * 1024 * 1024
BACKUPS = 3
ROOT_LOGGER = "raysys"
_configured: set[str] = set()


def log_file(log_dir: Path, role: str, pid: int | None = None) -> Path:
    return log_dir / f"agent_system-{role}-{os.getpid() if pid is None else pid}.log"


def configure(level: str, role: str, log_dir: Path | None, *, stderr: bool = True) -> Path | None:
    """Send ``raysys.*`` logs at ``level`` to stderr and to this process's file; return its path.

    Idempotent per (role, process): a restarted actor gets a new pid, hence a new file.
    """
    logger = logging.getLogger(ROOT_LOGGER)  # every raysys.* module logs below it
    logger.setLevel(getattr(logging, level))
    key = f"{role}:{os.getpid()}"
    if key in _configured:
        return log_file(log_dir, role) if log_dir is not None else None
    _configured.add(key)
    formatter = logging.Formatter(FORMAT)
    if stderr and not any(getattr(h, "_raysys", False) for h in logger.handlers):
        handler = logging.StreamHandler(sys.stderr)
        handler.setFormatter(formatter)
        handler._raysys = True  # type: ignore[attr-defined]
        logger.addHandler(handler)
        logger.propagate = False
    if log_dir is None:
        return None
    path = log_file(log_dir, role)
    try:
        log_dir.mkdir(parents=True, exist_ok=True)
        file_handler = RotatingFileHandler(path, maxBytes=MAX_BYTES, backupCount=BACKUPS,
                                           encoding="utf-8")
    except OSError as exc:  # a read-only data dir must not stop the actor
        logger.warning("cannot write log file %s: %s", path, exc)
        return None
    file_handler.setFormatter(formatter)
    logger.addHandler(file_handler)
    return path
