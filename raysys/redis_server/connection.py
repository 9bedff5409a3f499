"""Building Redis clients from settings, and explaining why a connection fails.

:func:`connect_redis` is the one place a ``redis.Redis`` is built from :class:`Settings`. It checks
the connection before returning, so a bad environment (server down, wrong password, TLS mismatch)
surfaces as one :class:`RedisUnavailable` line saying what failed and how to fix it — never a
traceback, and never the password.
"""

from __future__ import annotations

import errno
import logging
import ssl
from collections.abc import Iterator
from typing import Any, TypeVar
from urllib.parse import unquote, urlparse, urlunparse

import redis
from pydantic import SecretStr
from redis.backoff import ExponentialBackoff
from redis.retry import Retry
from redis.sentinel import MasterNotFoundError

from raysys.config import Settings
from raysys.errors import ConfigurationError, RedisUnavailable
from raysys.redis_server.retries import BoundedRetry
from raysys.redis_server.sentinel import sentinel_client

log = logging.getLogger(__name__)

HEALTH_CHECK_INTERVAL_S = 30
RETRIES = 3
REQUIRED_POLICY = "noeviction"
_T = TypeVar("_T")

_AUTH_MARKERS = ("WRONGPASS", "NOAUTH", "invalid username-password pair", "invalid password")
_CLOSED_MARKERS = ("Connection closed by server", "Connection reset", "Broken pipe")


def connect_redis(
    settings: Settings,
    url: str | None = None,
    *,
    decode_responses: bool = False,
    socket_timeout: float = 10.0,
) -> redis.Redis:
    """A checked client for ``url`` (e.g. the embedded server's), else the configured Redis.

    Precedence: ``url``, then ``RAYSYS_REDIS_URL``, then the primary ``RAYSYS_REDIS_SENTINELS``
    name (followed across failovers), then ``REDIS_HOST``/``PORT``/``USERNAME``/``PASSWORD``.
    TLS (``REDIS_USE_TLS`` or a ``rediss://`` URL) takes its certificate options from settings;
    an explicit ``url`` uses TLS only when it says ``rediss://``. Connection and timeout errors
    are retried 3 times with exponential backoff (behind Sentinel: for as long as a failover
    takes, ``sentinel.FAILOVER_RETRY_S``). Raises RedisUnavailable with one
    line when the server cannot be used, ConfigurationError for an unusable combination.
    """
    if url is not None:
        use_tls = url.startswith("rediss://")
    else:
        use_tls = settings.tls_enabled
        if settings.redis_url is not None:
            url = settings.redis_url.get_secret_value()
    options = _client_options(settings, use_tls, decode_responses, socket_timeout)
    if url is not None:
        client, endpoint = _client_for_url(url, use_tls, options)
    elif settings.redis_sentinels is not None:
        client, endpoint = sentinel_client(settings, options)
    else:
        endpoint = settings.redis_endpoint()
        password = settings.redis_password.get_secret_value() if settings.redis_password else None
        client = redis.Redis(ssl=use_tls, host=endpoint[0], port=endpoint[1],
                             username=settings.redis_username, password=password, **options)
    try:
        check_connection(client, settings, endpoint)
    except BaseException:
        client.close()
        raise
    return client


def _client_options(settings: Settings, use_tls: bool, decode_responses: bool,
                    socket_timeout: float) -> dict[str, Any]:
    """redis-py options every raysys client shares: timeouts, retries, health checks, TLS."""
    options: dict[str, Any] = {
        "decode_responses": decode_responses,
        "socket_timeout": socket_timeout,
        "socket_connect_timeout": socket_timeout,
        "retry": Retry(ExponentialBackoff(cap=1, base=0.05), retries=RETRIES),
        "health_check_interval": HEALTH_CHECK_INTERVAL_S,
    }
    if use_tls:
        options.update(_tls_options(settings))
        if settings.redis_ssl_cert_reqs == "none":  # allowed by RAYSYS_INSECURE_DEV: say so
            log.warning(
                "REDIS_SSL_CERT_REQS=none (RAYSYS_INSECURE_DEV): the Redis server's certificate "
                "is not checked, so anyone on the network path can impersonate it; "
                "development only"
            )
    return options


def _client_for_url(url: str, use_tls: bool, options: dict[str, Any]
                    ) -> tuple[redis.Redis, tuple[str, int]]:
    """A client for ``url`` (upgraded to ``rediss://`` when TLS is on) and its endpoint."""
    parsed = urlparse(url)
    if use_tls and parsed.scheme == "unix":
        raise ConfigurationError("RAYSYS_REDIS_URL: TLS cannot be used with a unix:// socket")
    if use_tls and parsed.scheme == "redis":
        url = urlunparse(parsed._replace(scheme="rediss"))
    return redis.Redis.from_url(url, **options), _url_endpoint(url)


def check_connection(client: redis.Redis, settings: Settings, endpoint: tuple[str, int]) -> None:
    """PING; map any failure to one RedisUnavailable line naming the cause and the fix.

    ``endpoint`` is (host, port) for the message; it never carries credentials. The PING runs on
    a fresh connection built like the client's, retrying connection errors 3 times but not
    timeouts and without the health check: with ``health_check_interval`` redis-py nests its
    retries (4 x 4 attempts), which would turn a wrong port into seconds and a timeout into
    minutes.
    """
    pool = client.connection_pool
    kwargs: dict[str, Any] = dict(pool.connection_kwargs)
    kwargs["retry"] = BoundedRetry(ExponentialBackoff(cap=1, base=0.05), RETRIES,
                                   supported_errors=(redis.ConnectionError,))
    kwargs["health_check_interval"] = 0
    connection_class: Any = pool.connection_class
    tls = issubclass(connection_class, redis.SSLConnection)
    conn = connection_class(**kwargs)
    try:
        conn.connect()
        conn.send_command("PING")
        reply = conn.read_response()
        if reply not in (b"PONG", "PONG", True):
            raise redis.ResponseError(f"unexpected PING reply {reply!r}")
    except (redis.RedisError, OSError) as exc:
        message = describe_failure(exc, endpoint, tls=tls, timeout_s=_socket_timeout(client))
        secrets = [kwargs.get("password"), settings.redis_password]
        raise RedisUnavailable(_scrub(message, secrets)) from None
    finally:
        conn.disconnect()


def describe_failure(
    exc: BaseException,
    endpoint: tuple[str, int],
    *,
    tls: bool,
    timeout_s: float | None = None,
) -> str:
    """One line explaining ``exc`` (from a Redis call to ``endpoint``) and how to fix it."""
    where = f"{endpoint[0]}:{endpoint[1]}" if endpoint[1] else endpoint[0]
    chain = list(_exception_chain(exc))
    text = " ".join(str(e) for e in chain)

    if any(isinstance(e, MasterNotFoundError) for e in chain):
        return (f"no Sentinel answered with a reachable {where.split(' via ')[0]} "
                f"({_first_line(exc)}): check RAYSYS_REDIS_SENTINELS, "
                f"RAYSYS_REDIS_SENTINEL_MASTER and the Sentinels' credentials")

    if any(isinstance(e, redis.AuthenticationError) for e in chain) or any(
        marker.lower() in text.lower() for marker in _AUTH_MARKERS
    ):
        return f"Redis at {where} refused the credentials: check REDIS_USERNAME / REDIS_PASSWORD"

    ssl_error = next((e for e in chain if isinstance(e, ssl.SSLError)), None)
    if ssl_error is not None or "certificate verify failed" in text.lower():
        reason = _ssl_reason(ssl_error, text)
        return (
            f"TLS handshake with Redis at {where} failed ({reason}): check REDIS_SSL_CA_CERTS / "
            f"REDIS_SSL_CERTFILE / REDIS_SSL_KEYFILE, and that the server speaks TLS on that port"
        )

    if any(isinstance(e, ConnectionRefusedError) for e in chain) or _has_errno(
        chain, errno.ECONNREFUSED
    ):
        return (
            f"cannot reach Redis at {where} (connection refused): start Redis there, "
            f"or set REDIS_HOST/REDIS_PORT or RAYSYS_REDIS_URL"
        )

    if any(isinstance(e, (redis.TimeoutError, TimeoutError)) for e in chain):
        within = f"{timeout_s:g} s" if timeout_s is not None else "the socket timeout"
        hint = " (if that port does not speak TLS, set REDIS_USE_TLS=false)" if tls else ""
        return f"Redis at {where} did not answer within {within}{hint}"

    closed = any(isinstance(e, (ConnectionResetError, BrokenPipeError)) for e in chain) or any(
        marker.lower() in text.lower() for marker in _CLOSED_MARKERS
    )
    if closed and not tls:
        return f"Redis at {where} closed the connection: if it requires TLS set REDIS_USE_TLS=true"
    if closed:
        return f"Redis at {where} closed the connection during the TLS session"

    oserror = next((e for e in chain if isinstance(e, OSError) and e.strerror), None)
    detail = oserror.strerror if isinstance(oserror, OSError) else type(exc).__name__
    return f"cannot use Redis at {where} ({detail}): {_first_line(exc)}"


def server_policy_warnings(client: redis.Redis) -> list[str]:
    """Warnings about the server's settings; today: an evicting ``maxmemory-policy``.

    Reads ``INFO memory`` (the raysys ACL user has ``+info`` but no ``CONFIG``). Each warning is
    also logged at WARNING on ``raysys.redis``.
    """
    info = client.info("memory")
    policy = str(info.get("maxmemory_policy", "")).strip()
    warnings: list[str] = []
    if policy and policy != REQUIRED_POLICY:
        message = (
            f"Redis maxmemory-policy is {policy}: Redis may silently drop accepted tasks; "
            f"set maxmemory-policy {REQUIRED_POLICY}"
        )
        log.warning(message)
        warnings.append(message)
    return warnings


def server_run_id(client: redis.Redis) -> str:
    """The server's ``run_id`` from ``INFO server``: it changes whenever the server restarts."""
    run_id = client.info("server").get("run_id")
    if not run_id:
        raise RedisUnavailable(
            "Redis INFO server has no run_id: is this a Redis-compatible server?"
        )
    return str(run_id)


def _tls_options(settings: Settings) -> dict[str, Any]:
    """redis-py TLS keyword arguments from settings (certificates checked unless told not to)."""

    def path(value: object) -> str | None:
        return str(value) if value is not None else None

    return {
        "ssl_cert_reqs": settings.redis_ssl_cert_reqs,
        "ssl_ca_certs": path(settings.redis_ssl_ca_certs),
        "ssl_certfile": path(settings.redis_ssl_certfile),
        "ssl_keyfile": path(settings.redis_ssl_keyfile),
        "ssl_check_hostname": settings.redis_ssl_cert_reqs == "required",
    }


# -- helpers --------------------------------------------------------------------------------


def _exception_chain(exc: BaseException) -> Iterator[BaseException]:
    """``exc`` and its causes/contexts (redis-py wraps OSErrors while handling them)."""
    seen: set[int] = set()
    current: BaseException | None = exc
    while current is not None and id(current) not in seen:
        seen.add(id(current))
        yield current
        current = current.__cause__ or current.__context__


def _has_errno(chain: list[BaseException], number: int) -> bool:
    if any(isinstance(e, OSError) and e.errno == number for e in chain):
        return True
    # redis-py keeps only the text of the socket error: "Error 111 connecting to h:p. ..."
    return any(f"Error {number} connecting" in str(e) for e in chain)


def _ssl_reason(error: ssl.SSLError | None, text: str) -> str:
    if isinstance(error, ssl.SSLCertVerificationError) and error.verify_message:
        return f"certificate verify failed: {error.verify_message}"
    if error is not None and error.reason:
        return str(error.reason).replace("_", " ").lower()
    if "certificate verify failed" in text.lower():
        return "certificate verify failed"
    return _first_line(error) if error is not None else "unknown reason"


def _scrub(message: str, secrets: list[object]) -> str:
    """``message`` with every given secret (str or SecretStr) masked: defence in depth."""
    for secret in secrets:
        value = secret.get_secret_value() if isinstance(secret, SecretStr) else secret
        if isinstance(value, str) and value:
            message = message.replace(value, "***")
    return message


def _first_line(exc: BaseException) -> str:
    lines = str(exc).strip().splitlines()
    return lines[0][:200] if lines else type(exc).__name__


def _socket_timeout(client: redis.Redis) -> float | None:
    value = client.connection_pool.connection_kwargs.get("socket_timeout")
    return float(value) if isinstance(value, int | float) else None


def _url_endpoint(url: str) -> tuple[str, int]:
    """(host, port) of a Redis URL, for messages; never the credentials."""
    parsed = urlparse(url)
    if parsed.scheme == "unix":
        return unquote(parsed.path), 0
    return unquote(parsed.hostname or "localhost"), parsed.port or 6379


def pool_state(client: redis.Redis) -> dict[str, int]:
    """Connections of ``client``'s pool: ``in_use`` and ``available`` (for metrics)."""
    pool = client.connection_pool
    in_use = getattr(pool, "_in_use_connections", ())
    available = getattr(pool, "_available_connections", ())
    return {"in_use": len(in_use), "available": len(available)}
