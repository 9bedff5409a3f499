"""Settings: the one module that reads the environment (and ``.env``).

``load_settings()`` validates everything once and raises :class:`ConfigurationError`
with a message naming the variable at fault. Unknown ``RAYSYS_*`` variables are warned
about with the closest known name.
"""

from __future__ import annotations

import difflib
import logging
import os
from pathlib import Path
from typing import Literal
from urllib.parse import unquote, urlparse

from pydantic import AliasChoices, Field, SecretStr, ValidationError, model_validator
from pydantic_settings import BaseSettings, SettingsConfigDict

from raysys.errors import ConfigurationError

log = logging.getLogger(__name__)

MIN_SECRET_BYTES = 32
DEFAULT_RETENTION_S = 7 * 24 * 3600.0  # finished tasks and audit entries: one week
MIN_RETENTION_S = 10.0  # below this the replay window would refuse records still in flight

# Every variable of the public surface (DESIGN.md, "Configuration"); .env.example lists the same.
KNOWN_VARIABLES: tuple[str, ...] = (
    "RAYSYS_REDIS_URL",
    "REDIS_HOST",
    "REDIS_PORT",
    "REDIS_USERNAME",
    "REDIS_PASSWORD",
    "REDIS_USE_TLS",
    "REDIS_SSL_CERT_REQS",
    "REDIS_SSL_CA_CERTS",
    "REDIS_SSL_CERTFILE",
    "REDIS_SSL_KEYFILE",
    "LOG_LEVEL",
    "COORDINATOR_ID",
    "DISTRIBUTOR_ID",
    "WORKER_ID",
    "RAYSYS_NAMESPACE",
    "RAYSYS_DATA_DIR",
    "RAYSYS_SIGNING_KEY_FILE",
    "RAYSYS_HANDLERS",
    "RAYSYS_LEASE_TTL_S",
    "RAYSYS_REAPER_INTERVAL_S",
    "RAYSYS_HTTP_HOST",
    "RAYSYS_HTTP_PORT",
    "RAYSYS_API_TOKEN",
    "RAYSYS_SIGNING_KEYS",
    "RAYSYS_INSECURE_DEV",
    "RAYSYS_SCHEMA_DIR",
    "RAYSYS_RETENTION_S",
    "RAYSYS_AUDIT_RETENTION_S",
    "RAYSYS_SNAPSHOT_KEEP",
    "RAYSYS_REDIS_SENTINELS",
    "RAYSYS_REDIS_SENTINEL_MASTER",
    "RAYSYS_REDIS_SENTINEL_USERNAME",
    "RAYSYS_REDIS_SENTINEL_PASSWORD",
    "RAYSYS_REDIS_MIN_REPLICAS",
    "RAYSYS_REDIS_WAIT_TIMEOUT_MS",
)


def _env(name: str) -> AliasChoices:
    return AliasChoices(name)


class Settings(BaseSettings):
    """Validated raysys configuration. Build it with :func:`load_settings`."""

    model_config = SettingsConfigDict(
        env_file=".env",
        env_file_encoding="utf-8",
        extra="ignore",
        frozen=True,
        populate_by_name=True,
    )

    redis_url: SecretStr | None = Field(None, validation_alias=_env("RAYSYS_REDIS_URL"))
    redis_host: str | None = Field(None, validation_alias=_env("REDIS_HOST"))
    redis_port: int = Field(6379, ge=1, le=65535, validation_alias=_env("REDIS_PORT"))
    redis_username: str | None = Field(None, validation_alias=_env("REDIS_USERNAME"))
    redis_password: SecretStr | None = Field(None, validation_alias=_env("REDIS_PASSWORD"))
    redis_use_tls: bool = Field(False, validation_alias=_env("REDIS_USE_TLS"))
    redis_ssl_cert_reqs: Literal["required", "optional", "none"] = Field(
        "required", validation_alias=_env("REDIS_SSL_CERT_REQS")
    )
    redis_ssl_ca_certs: Path | None = Field(None, validation_alias=_env("REDIS_SSL_CA_CERTS"))
    redis_ssl_certfile: Path | None = Field(None, validation_alias=_env("REDIS_SSL_CERTFILE"))
    redis_ssl_keyfile: Path | None = Field(None, validation_alias=_env("REDIS_SSL_KEYFILE"))
    log_level: Literal["DEBUG", "INFO", "WARNING", "ERROR", "CRITICAL"] = Field(
        "INFO", validation_alias=_env("LOG_LEVEL")
    )
    # Identities: the Coordinator's name in its log lines and the audit entries it writes; the
    # Distributor's as the signed sender of its messages; the prefix of the workers' ids
    # (lease holders, heartbeats, logs): <namespace>-<WORKER_ID>-<n>.
    coordinator_id: str = Field("coordinator-1", pattern=r"^[A-Za-z0-9_.:-]{1,64}$",
                                validation_alias=_env("COORDINATOR_ID"))
    distributor_id: str = Field("distributor-1", pattern=r"^[A-Za-z0-9_.:-]{1,64}$",
                                validation_alias=_env("DISTRIBUTOR_ID"))
    worker_id: str = Field("worker", pattern=r"^[A-Za-z0-9_.]{1,40}$",
                           validation_alias=_env("WORKER_ID"))
    namespace: str = Field(
        "raysys", pattern=r"^[A-Za-z0-9_.-]{1,64}$", validation_alias=_env("RAYSYS_NAMESPACE")
    )
    data_dir: Path = Field(Path.home() / ".raysys", validation_alias=_env("RAYSYS_DATA_DIR"))
    signing_key_file: Path | None = Field(None, validation_alias=_env("RAYSYS_SIGNING_KEY_FILE"))
    signing_keys: SecretStr | None = Field(None, validation_alias=_env("RAYSYS_SIGNING_KEYS"))
    handlers: str = Field("", validation_alias=_env("RAYSYS_HANDLERS"))
    lease_ttl_s: float = Field(30.0, gt=0.05, le=3600, validation_alias=_env("RAYSYS_LEASE_TTL_S"))
    reaper_interval_s: float = Field(
        1.0, gt=0.01, le=600, validation_alias=_env("RAYSYS_REAPER_INTERVAL_S")
    )
    http_host: str = Field("127.0.0.1", validation_alias=_env("RAYSYS_HTTP_HOST"))
    http_port: int = Field(8000, ge=1, le=65535, validation_alias=_env("RAYSYS_HTTP_PORT"))
    api_token: SecretStr | None = Field(None, validation_alias=_env("RAYSYS_API_TOKEN"))
    insecure_dev: bool = Field(False, validation_alias=_env("RAYSYS_INSECURE_DEV"))
    schema_dir: Path | None = Field(None, validation_alias=_env("RAYSYS_SCHEMA_DIR"))
    retention_s: float = Field(
        DEFAULT_RETENTION_S, ge=0, validation_alias=_env("RAYSYS_RETENTION_S")
    )
    audit_retention_s: float = Field(
        DEFAULT_RETENTION_S, ge=0, validation_alias=_env("RAYSYS_AUDIT_RETENTION_S")
    )
    snapshot_keep: int = Field(24, ge=0, validation_alias=_env("RAYSYS_SNAPSHOT_KEEP"))
    # Sentinel: find the current primary of RAYSYS_REDIS_SENTINEL_MASTER through these
    # Sentinels (host:port,...) instead of one fixed address; follow it across failovers.
    redis_sentinels: str | None = Field(None, validation_alias=_env("RAYSYS_REDIS_SENTINELS"))
    redis_sentinel_master: str = Field("raysys", pattern=r"^[A-Za-z0-9_.-]{1,64}$",
                                       validation_alias=_env("RAYSYS_REDIS_SENTINEL_MASTER"))
    redis_sentinel_username: str | None = Field(
        None, validation_alias=_env("RAYSYS_REDIS_SENTINEL_USERNAME"))
    redis_sentinel_password: SecretStr | None = Field(
        None, validation_alias=_env("RAYSYS_REDIS_SENTINEL_PASSWORD"))
    # Replicated acknowledgements: a state change is acknowledged only once WAIT confirms it
    # on this many replicas (within the timeout; otherwise a retryable error).
    redis_min_replicas: int = Field(0, ge=0, le=16,
                                    validation_alias=_env("RAYSYS_REDIS_MIN_REPLICAS"))
    redis_wait_timeout_ms: int = Field(1000, ge=10, le=60_000,
                                       validation_alias=_env("RAYSYS_REDIS_WAIT_TIMEOUT_MS"))

    @model_validator(mode="after")
    def _check_consistency(self) -> Settings:
        url = self.redis_url.get_secret_value() if self.redis_url else None
        tls = self.redis_use_tls or (url is not None and url.startswith("rediss://"))
        if url is not None and urlparse(url).scheme not in ("redis", "rediss", "unix"):
            raise ValueError("RAYSYS_REDIS_URL must start with redis://, rediss:// or unix://")
        tls_files = (self.redis_ssl_ca_certs, self.redis_ssl_certfile, self.redis_ssl_keyfile)
        if not tls and any(tls_files):
            raise ValueError(
                "REDIS_SSL_* files are set but TLS is off: set REDIS_USE_TLS=true (or use rediss://)"
            )
        if (self.redis_ssl_certfile is None) != (self.redis_ssl_keyfile is None):
            raise ValueError("REDIS_SSL_CERTFILE and REDIS_SSL_KEYFILE must be set together")
        for path in tls_files:
            if path is not None and not path.is_file():
                raise ValueError(f"TLS file {path} does not exist")
        if tls and self.redis_ssl_cert_reqs == "none" and not self.insecure_dev:
            raise ValueError(
                "REDIS_SSL_CERT_REQS=none disables certificate checks; "
                "set RAYSYS_INSECURE_DEV=1 to allow it on a development machine"
            )
        if self.redis_sentinels is not None:
            self.sentinel_endpoints()  # raises ValueError naming the bad entry
            if url is not None or self.redis_host is not None:
                raise ValueError("RAYSYS_REDIS_SENTINELS finds the primary itself: unset "
                                 "RAYSYS_REDIS_URL and REDIS_HOST")
        if 0 < self.retention_s < MIN_RETENTION_S:
            raise ValueError(f"RAYSYS_RETENTION_S must be 0 (keep for ever) or at least "
                             f"{MIN_RETENTION_S:g} seconds")
        if self.api_token is not None and len(self.api_token.get_secret_value()) < MIN_SECRET_BYTES:
            raise ValueError(f"RAYSYS_API_TOKEN must be at least {MIN_SECRET_BYTES} bytes")
        return self

    @property
    def redis_configured(self) -> bool:
        """True when the user named a Redis; False means: use the embedded server."""
        return (self.redis_url is not None or self.redis_host is not None
                or self.redis_sentinels is not None)

    @property
    def tls_enabled(self) -> bool:
        url = self.redis_url.get_secret_value() if self.redis_url else ""
        return self.redis_use_tls or url.startswith("rediss://")

    def redis_endpoint(self) -> tuple[str, int]:
        """(host, port) for messages; never includes credentials."""
        if self.redis_url is not None:
            parsed = urlparse(self.redis_url.get_secret_value())
            return unquote(parsed.hostname or "localhost"), parsed.port or 6379
        return self.redis_host or "127.0.0.1", self.redis_port

    def sentinel_endpoints(self) -> list[tuple[str, int]]:
        """The Sentinels of ``RAYSYS_REDIS_SENTINELS`` as (host, port); [] when unset."""
        if self.redis_sentinels is None:
            return []
        endpoints = []
        for item in self.redis_sentinels.split(","):
            host, _, port = item.strip().rpartition(":")
            if not host or not port.isdigit() or not 0 < int(port) < 65536:
                raise ValueError(f"RAYSYS_REDIS_SENTINELS: {item.strip()!r} is not host:port")
            endpoints.append((host.strip("[]"), int(port)))
        return endpoints

    def handler_modules(self) -> list[str]:
        return [m.strip() for m in self.handlers.split(",") if m.strip()]


def warn_unknown_variables(environ: dict[str, str] | None = None) -> list[str]:
    """Log a warning for every unknown ``RAYSYS_*`` variable; return the warnings."""
    env = os.environ if environ is None else environ
    warnings: list[str] = []
    for name in sorted(env):
        if name.startswith("RAYSYS_") and name not in KNOWN_VARIABLES:
            close = difflib.get_close_matches(name, KNOWN_VARIABLES, n=1, cutoff=0.6)
            hint = f"; did you mean {close[0]}?" if close else ""
            message = f"unknown variable {name} is ignored{hint}"
            log.warning(message)
            warnings.append(message)
    return warnings


def load_settings(**overrides: object) -> Settings:
    """Read and validate settings from the environment; raise ConfigurationError on bad values."""
    warn_unknown_variables()
    try:
        return Settings(**overrides)  # type: ignore[arg-type]
    except ValidationError as exc:
        raise ConfigurationError(_describe(exc)) from None


def _describe(exc: ValidationError) -> str:
    parts = []
    for err in exc.errors():
        loc = [str(p) for p in err.get("loc", ()) if p != "__root__"]
        field = loc[0] if loc else ""
        name = _variable_for_field(field) if field else ""
        msg = str(err.get("msg", "invalid value")).removeprefix("Value error, ")
        parts.append(f"{name}: {msg}" if name else msg)
    return "invalid configuration: " + "; ".join(parts)


def _variable_for_field(field: str) -> str:
    info = Settings.model_fields.get(field)
    if info is not None and isinstance(info.validation_alias, AliasChoices):
        first = info.validation_alias.choices[0]
        return str(first)
    return field.upper()
