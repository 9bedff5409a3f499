"""Probing a Redis server once, and telling whether a recorded embedded server still serves.

:func:`probe` PINGs 127.0.0.1:port once, without retries, and names what it found;
:func:`attachable` waits for a recorded server to answer, or says it is gone.
"""

from __future__ import annotations

import time
from collections.abc import Mapping
from typing import Any, Literal

import redis
from redis.backoff import NoBackoff
from redis.retry import Retry

from raysys.errors import RedisUnavailable
from raysys.redis_server.binary import HOST, pid_alive
from raysys.redis_server.state import STATE_FILE

START_TIMEOUT_S = 10.0

# ok: answers as expected; foreign: answers, but is not the expected process; loading: replaying
# its AOF; refused: nothing listens; auth: rejects the password; error: anything else (timeout).
Probe = Literal["ok", "foreign", "loading", "refused", "auth", "error"]


def probe(
    port: int,
    password: str | None,
    *,
    expect_pid: int | None = None,
    timeout: float = 1.0,
    tls: Mapping[str, Any] | None = None,
) -> Probe:
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


def attachable(pid: int, port: int, password: str | None) -> bool:
    """True when the recorded server answers; False when it is gone; raise when it is stuck."""
    deadline = time.monotonic() + START_TIMEOUT_S
    while True:
        result = probe(port, password, expect_pid=pid)
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
