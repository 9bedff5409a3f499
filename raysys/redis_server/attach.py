"""The embedded default for CLI commands and clients: attach to the data dir's server, or
start one (under an ``fcntl`` lock, so two processes never start two servers on one directory).
"""

from __future__ import annotations

import logging
from pathlib import Path

from raysys.redis_server.binary import port_is_free
from raysys.redis_server.embedded import EmbeddedRedis
from raysys.redis_server.probe import attachable
from raysys.redis_server.state import dir_lock, make_redis_dir, read_state

log = logging.getLogger(__name__)


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
            if attachable(pid, port, password):
                log.debug(
                    "attached to the embedded Redis: pid=%d port=%d dir=%s", pid, port, redis_dir
                )
                server.prefer_port(port)
                return server.url, None
            if port_is_free(port):
                server.prefer_port(port)  # keep a stable port across crashes when we can
        server.start_holding_lock()
        return server.url, server
