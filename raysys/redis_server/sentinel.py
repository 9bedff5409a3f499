"""Redis behind Sentinel: a client that finds the current primary and follows it.

With ``RAYSYS_REDIS_SENTINELS`` set, :func:`sentinel_client` builds the one client a process
uses through redis-py's Sentinel support: every new connection asks the Sentinels for the
primary of ``RAYSYS_REDIS_SENTINEL_MASTER``; a connection to a primary that was demoted (it
answers ``READONLY``) or lost is dropped, and the call that was cut is sent again, with backoff,
for as long as a failover takes (``FAILOVER_RETRY_S``). Sending again is safe: every state
change is a script that answers a resend the way it answered the first send (request ids,
same-fence acknowledgements).
"""

from __future__ import annotations

from typing import Any

import redis
from redis.backoff import ExponentialBackoff
from redis.connection import SSLConnection
from redis.sentinel import Sentinel, SentinelManagedConnection

from raysys.config import Settings
from raysys.redis_server.retries import BoundedRetry

FAILOVER_RETRY_S = 40.0  # a cut call is resent for this long: longer than a failover takes
BACKOFF_CAP_S = 1.0
BACKOFF_BASE_S = 0.05


def failover_retry() -> BoundedRetry:
    """Connection errors and timeouts retried with backoff (50 ms up to 1 s) for
    ``FAILOVER_RETRY_S``."""
    return BoundedRetry(ExponentialBackoff(cap=BACKOFF_CAP_S, base=BACKOFF_BASE_S), -1,
                        within_s=FAILOVER_RETRY_S)


class PrimaryConnection(SentinelManagedConnection):
    """A connection to the primary that asks the Sentinels where it is on every reconnect.

    redis-py 8 reconnects a dropped connection inside ``send_packed_command`` to the address it
    last used, not through :meth:`connect`, which asks the Sentinels. After a failover, a call
    cut while its old primary came back as a replica was then refused (``READONLY``) on every
    retry, for the whole retry budget: 40 s with no write (found by chaos scenario 9)."""

    def send_packed_command(self, command: Any, check_health: bool = True) -> None:
        if not self._sock:
            self.connect()  # type: ignore[no-untyped-call]  # asks the Sentinels
        super().send_packed_command(command, check_health)  # type: ignore[no-untyped-call]


class PrimarySSLConnection(PrimaryConnection, SSLConnection):
    """:class:`PrimaryConnection` over TLS."""


def sentinel_client(settings: Settings, options: dict[str, Any]
                    ) -> tuple[redis.Redis, tuple[str, int]]:
    """A client for the current primary, and a (name, 0) endpoint for messages.

    ``options`` are the shared client options (timeouts, TLS); the Sentinels get the same
    socket and TLS options, and their own credentials
    (``RAYSYS_REDIS_SENTINEL_USERNAME``/``_PASSWORD``).
    """
    tls = settings.tls_enabled
    sentinel_options: dict[str, Any] = {
        key: value for key, value in options.items()
        if key.startswith(("socket_", "ssl_")) or key == "ssl"
    }
    if tls:
        sentinel_options["ssl"] = True
    if settings.redis_sentinel_username is not None:
        sentinel_options["username"] = settings.redis_sentinel_username
    if settings.redis_sentinel_password is not None:
        sentinel_options["password"] = settings.redis_sentinel_password.get_secret_value()
    password = settings.redis_password.get_secret_value() if settings.redis_password else None
    sentinel = Sentinel(settings.sentinel_endpoints(), sentinel_kwargs=sentinel_options)
    client_options = {**options, "retry": failover_retry()}
    client = sentinel.master_for(
        settings.redis_sentinel_master, redis_class=redis.Redis,
        connection_class=PrimarySSLConnection if tls else PrimaryConnection,
        username=settings.redis_username, password=password, **client_options)
    return client, (sentinel_description(settings), 0)


def sentinel_description(settings: Settings) -> str:
    """``primary 'NAME' via Sentinel host:port,...`` (no credentials)."""
    where = ",".join(f"{host}:{port}" for host, port in settings.sentinel_endpoints())
    return f"primary {settings.redis_sentinel_master!r} via Sentinel {where}"
