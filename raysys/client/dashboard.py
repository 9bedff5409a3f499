"""The Ray dashboard of a local run (``raysys.start``, ``raysys demo``).

``raysys.start(dashboard=True)`` (the default) starts its private Ray with the dashboard bound
to 127.0.0.1 at a free port (never Redis's 6379, outside Ray's worker port range), so several
local runs and a Redis on the default port live side by side. A dashboard that cannot start
(``ray`` installed without ``ray[default]``, a dashboard process that dies) is one warning
line and the run goes on without it: :func:`ray_init_options` asks Ray for the dashboard
without making its failure fatal, and :func:`started_url` reads what came up.

A fresh local ``ray.init`` turns Ray's token authentication on (unless ``RAY_AUTH_MODE`` says
otherwise): the dashboard's page loads, its API answers 401 until the browser is given the
token; :func:`sign_in_hint` says where that token is. No token is ever read or printed here.
"""

from __future__ import annotations

import logging
import os
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from raysys.client.ray_auth import (
    AUTH_MODE,
    TOKEN_PATH_VARIABLE,
    TOKEN_VARIABLE,
    default_token_file,
)
from raysys.redis_server.binary import free_port

log = logging.getLogger(__name__)

DASHBOARD_HOST = "127.0.0.1"
RAY_SERVICES_LOGGER = "ray._private.services"  # logs a failed dashboard start in ~20 lines
MAX_SOCKET_PATH = 107  # bytes of an AF_UNIX socket path (Ray's own check)


def ray_init_options(dashboard: bool, temp_dir: Path) -> dict[str, Any]:
    """The dashboard's ``ray.init`` arguments for a private local cluster in ``temp_dir``.

    Off: ``include_dashboard=False``. On: Ray's default mode (``include_dashboard=None``, where
    a dashboard that fails to start is logged, not raised) on 127.0.0.1 at a free port; off,
    with one warning, when it could not start: Ray reports its packages missing, or the
    sockets of its modules would not fit under ``temp_dir`` (Ray would wait 60 s for it).
    """
    if not dashboard:
        return {"include_dashboard": False}
    missing = _missing_dependencies() or _socket_path_too_long(temp_dir)
    if missing:
        log.warning("Ray dashboard not started: %s; continuing without it", missing)
        return {"include_dashboard": False}
    return {"include_dashboard": None, "dashboard_host": DASHBOARD_HOST,
            "dashboard_port": free_port()}


def started_url(dashboard: bool, webui_url: str | None, temp_dir: Path) -> str | None:
    """The dashboard's ``http://`` URL from what ``ray.init`` returned (``webui_url``, no
    scheme); None when it was not asked for, or did not come up (then one warning line)."""
    if not dashboard:
        return None
    if not webui_url:
        logs = temp_dir / "session_latest" / "logs"
        log.warning("Ray dashboard did not start (see %s/dashboard.log and dashboard.err); "
                    "continuing without it", logs)
        return None
    return webui_url if "://" in webui_url else f"http://{webui_url}"


@contextmanager
def quiet_dashboard_failure(dashboard: bool) -> Iterator[None]:
    """While ``ray.init`` runs with the dashboard on: Ray's ~20-line report of a dashboard
    that failed to start is muted (:func:`started_url` says it in one line)."""
    logger = logging.getLogger(RAY_SERVICES_LOGGER)
    was = logger.disabled
    logger.disabled = dashboard or was
    try:
        yield
    finally:
        logger.disabled = was


def sign_in_hint() -> str:
    """For a dashboard of a local cluster this process started: where the token its API asks
    for is (Ray turns token auth on for a fresh local cluster unless ``RAY_AUTH_MODE`` is set
    otherwise); "" when token auth is off."""
    mode = os.environ.get(AUTH_MODE)
    if mode is not None and mode.strip().lower() != "token":
        return ""
    if os.environ.get(TOKEN_VARIABLE):
        where = f"{TOKEN_VARIABLE}"
    elif os.environ.get(TOKEN_PATH_VARIABLE):
        where = os.environ[TOKEN_PATH_VARIABLE]
    else:
        where = str(default_token_file())
    return f"token auth: sign in with the token in {where}"


def _missing_dependencies() -> str | None:
    """Why Ray cannot run its dashboard here (its packages missing), or None."""
    try:
        from ray._private.utils import get_dashboard_dependency_error
    except ImportError:
        return None
    error = get_dashboard_dependency_error()
    return None if error is None else f"{error} (install ray[default])"


def _socket_path_too_long(temp_dir: Path) -> str | None:
    """Why the dashboard's module sockets cannot live under ``temp_dir``, or None.

    Ray 2.60 puts them at ``<temp>/session_<%Y-%m-%d_%H-%M-%S_%f>_<pid>/sockets/dash_<module>``
    (the longest module name: TaskEventsHead) and AF_UNIX paths hold at most 107 bytes; a
    module that cannot bind leaves the dashboard unregistered until Ray's 60 s wait ends.
    """
    longest = (len(str(temp_dir)) + len("/session_") + 26 + 1 + len(str(os.getpid()))
               + len("/sockets/dash_TaskEventsHead"))
    if longest <= MAX_SOCKET_PATH:
        return None
    return (f"the Ray temp dir {temp_dir} is too long for the dashboard's sockets "
            f"({longest} > {MAX_SOCKET_PATH} bytes): set a shorter TMPDIR")
