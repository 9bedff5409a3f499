"""Development certificates: a private CA, a server and a client certificate.

The library part; the ``raysys certs`` command is :mod:`raysys.cli.certs`.

``write_dev_certs(DIR)`` writes, in ``DIR``:

- ``ca.pem`` / ``ca-key.pem``: a self-signed CA (``CA:TRUE, pathlen:0``, keyCertSign, cRLSign);
- ``server.pem`` / ``server-key.pem``: the server identity. Subject Alternative Names from
  ``--ip``/``--dns`` (default ``127.0.0.1`` and ``localhost``); extended key usage serverAuth
  *and* clientAuth, because a Ray node presents one certificate both as server and client
  (``RAY_TLS_SERVER_CERT``) and Redis presents ``tls-cert-file`` for replication too;
- ``client.pem`` / ``client-key.pem``: a client identity (clientAuth) for raysys processes talking
  to Redis with ``tls-auth-clients yes``.

Keys are EC P-256 (PKCS#8 PEM, unencrypted: Redis and gRPC read them as they are; checked with
Debian's redis-server 7.0 / OpenSSL 3.0). Each file is written to a temporary file in ``DIR``,
flushed and then linked into place, so a reader never sees half a file; private keys are mode
0600. Existing files are never overwritten unless ``force`` (``--force``). These certificates are
for development and tests: a production deployment uses its own PKI (e.g. cert-manager).
"""

from __future__ import annotations

import contextlib
import datetime as dt
import errno
import ipaddress
import os
import re
import secrets
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

from raysys.errors import ValidationError

DEFAULT_IPS = ("127.0.0.1",)
DEFAULT_DNS = ("localhost",)
DEFAULT_DAYS = 365
MAX_DAYS = 3650
CLIENT_NAME = "raysys-client"
BACKDATE = dt.timedelta(minutes=5)  # tolerate clocks a little behind ours
KEY_MODE = 0o600
CERT_MODE = 0o644
_DNS_LABEL = r"(?!-)[A-Za-z0-9-]{1,63}(?<!-)"
_DNS_NAME = re.compile(rf"^(\*\.)?{_DNS_LABEL}(\.{_DNS_LABEL})*\.?$")


@dataclass(frozen=True, slots=True)
class CertFiles:
    """Where ``write_dev_certs`` puts each file of one directory."""

    directory: Path

    @property
    def ca_cert(self) -> Path:
        return self.directory / "ca.pem"

    @property
    def ca_key(self) -> Path:
        return self.directory / "ca-key.pem"

    @property
    def server_cert(self) -> Path:
        return self.directory / "server.pem"

    @property
    def server_key(self) -> Path:
        return self.directory / "server-key.pem"

    @property
    def client_cert(self) -> Path:
        return self.directory / "client.pem"

    @property
    def client_key(self) -> Path:
        return self.directory / "client-key.pem"

    def all(self) -> dict[str, Path]:
        """Every file by role, in writing order."""
        return {
            "ca": self.ca_cert,
            "ca_key": self.ca_key,
            "server": self.server_cert,
            "server_key": self.server_key,
            "client": self.client_cert,
            "client_key": self.client_key,
        }

    def client_env(self) -> dict[str, str]:
        """The raysys variables for a client of a Redis using these certificates."""
        return {
            "REDIS_USE_TLS": "true",
            "REDIS_SSL_CA_CERTS": str(self.ca_cert),
            "REDIS_SSL_CERTFILE": str(self.client_cert),
            "REDIS_SSL_KEYFILE": str(self.client_key),
        }

    def redis_conf(self, tls_port: int = 6379) -> list[str]:
        """redis.conf lines for a TLS-only server with these certificates."""
        return [
            "port 0",
            f"tls-port {tls_port}",
            f"tls-cert-file {self.server_cert}",
            f"tls-key-file {self.server_key}",
            f"tls-ca-cert-file {self.ca_cert}",
            "tls-auth-clients yes",
        ]


@dataclass(frozen=True, slots=True)
class DevCerts:
    """The result of :func:`write_dev_certs`."""

    files: CertFiles
    ips: tuple[str, ...]
    dns_names: tuple[str, ...]
    not_after: dt.datetime

    def to_json(self) -> dict[str, Any]:
        return {
            "dir": str(self.files.directory),
            "files": {role: str(path) for role, path in self.files.all().items()},
            "ip": list(self.ips),
            "dns": list(self.dns_names),
            "not_after": self.not_after.isoformat(),
            "env": self.files.client_env(),
            "redis_conf": self.files.redis_conf(),
        }


def write_dev_certs(
    directory: Path,
    *,
    ips: Sequence[str] = (),
    dns_names: Sequence[str] = (),
    days: int = DEFAULT_DAYS,
    force: bool = False,
    now: dt.datetime | None = None,
) -> DevCerts:
    """Write a dev CA plus server and client certificates into ``directory``; see the module doc.

    With neither ``ips`` nor ``dns_names``, the server certificate names 127.0.0.1 and localhost.
    Raises ValidationError (exit 3) for a bad name, address or day count, when a file exists and
    ``force`` is false (before anything is written), or when the directory cannot be written.
    """
    ip_sans = _parse_ips(ips)
    dns_sans = _parse_dns_names(dns_names)
    if not ip_sans and not dns_sans:
        ip_sans, dns_sans = [ipaddress.ip_address(a) for a in DEFAULT_IPS], list(DEFAULT_DNS)
    if not 1 <= days <= MAX_DAYS:
        raise ValidationError(f"--days must be between 1 and {MAX_DAYS}, not {days}")
    files = _checked_target(Path(directory), force)
    start = (now or dt.datetime.now(dt.UTC)).replace(microsecond=0) - BACKDATE
    issuer = _Issuer.new_ca(start, start + BACKDATE + dt.timedelta(days=days))
    server_names: list[x509.GeneralName] = [
        *(x509.DNSName(name) for name in dns_sans),
        *(x509.IPAddress(addr) for addr in ip_sans),
    ]
    server_key, server_cert = issuer.leaf(
        "raysys server",
        server_names,
        [ExtendedKeyUsageOID.SERVER_AUTH, ExtendedKeyUsageOID.CLIENT_AUTH],
    )
    client_key, client_cert = issuer.leaf(
        CLIENT_NAME, [x509.DNSName(CLIENT_NAME)], [ExtendedKeyUsageOID.CLIENT_AUTH]
    )
    _write_all(files, {
        files.ca_cert: (_cert_pem(issuer.cert), CERT_MODE),
        files.ca_key: (_key_pem(issuer.key), KEY_MODE),
        files.server_cert: (_cert_pem(server_cert), CERT_MODE),
        files.server_key: (_key_pem(server_key), KEY_MODE),
        files.client_cert: (_cert_pem(client_cert), CERT_MODE),
        files.client_key: (_key_pem(client_key), KEY_MODE),
    }, force)
    return DevCerts(files, tuple(str(a) for a in ip_sans), tuple(dns_sans), issuer.end)


def _checked_target(directory: Path, force: bool) -> CertFiles:
    """The files to write; ValidationError if the directory is a file, or (without ``force``)
    if any of them exists already."""
    files = CertFiles(directory)
    if files.directory.exists() and not files.directory.is_dir():
        raise ValidationError(f"{files.directory} exists and is not a directory")
    if not force:
        existing = [path.name for path in files.all().values() if path.exists()]
        if existing:
            raise ValidationError(
                f"{files.directory} already holds {', '.join(existing)}: "
                "refusing to overwrite (use --force to replace them)"
            )
    return files


def _write_all(files: CertFiles, contents: dict[Path, tuple[bytes, int]], force: bool) -> None:
    """Write every file atomically; on failure leave no partial set behind (without ``force``)."""
    written: list[Path] = []
    try:
        files.directory.mkdir(parents=True, exist_ok=True, mode=0o700)
        for path, (data, mode) in contents.items():
            _write_atomically(path, data, mode, replace=force)
            written.append(path)
        _fsync_directory(files.directory)
    except OSError as exc:
        if not force:  # with --force the old files are gone anyway
            for path in written:
                path.unlink(missing_ok=True)
        if isinstance(exc, FileExistsError):  # created by someone else since the check
            raise ValidationError(
                f"{exc.filename} appeared while writing: refusing to overwrite (use --force)"
            ) from None
        raise ValidationError(
            f"cannot write certificates to {files.directory}: {exc.strerror or exc}"
        ) from None


# ---- helpers ----------------------------------------------------------------------------------
@dataclass(frozen=True, slots=True)
class _Issuer:
    cert: x509.Certificate
    key: ec.EllipticCurvePrivateKey
    ski: x509.SubjectKeyIdentifier
    start: dt.datetime
    end: dt.datetime

    @classmethod
    def new_ca(cls, start: dt.datetime, end: dt.datetime) -> _Issuer:
        """A fresh self-signed CA (``CA:TRUE, pathlen:0``) valid from ``start`` to ``end``."""
        key = ec.generate_private_key(ec.SECP256R1())
        name = x509.Name([
            x509.NameAttribute(NameOID.ORGANIZATION_NAME, "raysys development"),
            # a unique name: two dev CAs never pass for one another, even by name
            x509.NameAttribute(NameOID.COMMON_NAME, f"raysys dev CA {secrets.token_hex(4)}"),
        ])
        ski = x509.SubjectKeyIdentifier.from_public_key(key.public_key())
        cert = (
            x509.CertificateBuilder()
            .subject_name(name)
            .issuer_name(name)
            .public_key(key.public_key())
            .serial_number(x509.random_serial_number())
            .not_valid_before(start)
            .not_valid_after(end)
            .add_extension(x509.BasicConstraints(ca=True, path_length=0), critical=True)
            .add_extension(_key_usage(ca=True), critical=True)
            .add_extension(ski, critical=False)
            .sign(key, hashes.SHA256())
        )
        return cls(cert, key, ski, start, end)

    def leaf(
        self,
        common_name: str,
        names: list[x509.GeneralName],
        usages: list[x509.ObjectIdentifier],
    ) -> tuple[ec.EllipticCurvePrivateKey, x509.Certificate]:
        key = ec.generate_private_key(ec.SECP256R1())
        cert = (
            x509.CertificateBuilder()
            .subject_name(x509.Name([
                x509.NameAttribute(NameOID.ORGANIZATION_NAME, "raysys development"),
                x509.NameAttribute(NameOID.COMMON_NAME, common_name),
            ]))
            .issuer_name(self.cert.subject)
            .public_key(key.public_key())
            .serial_number(x509.random_serial_number())
            .not_valid_before(self.start)
            .not_valid_after(self.end)
            .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
            .add_extension(_key_usage(ca=False), critical=True)
            .add_extension(x509.ExtendedKeyUsage(usages), critical=False)
            .add_extension(x509.SubjectAlternativeName(names), critical=False)
            .add_extension(x509.SubjectKeyIdentifier.from_public_key(key.public_key()),
                           critical=False)
            .add_extension(
                x509.AuthorityKeyIdentifier.from_issuer_subject_key_identifier(self.ski),
                critical=False,
            )
            .sign(self.key, hashes.SHA256())
        )
        return key, cert


def _key_usage(*, ca: bool) -> x509.KeyUsage:
    # EC keys sign (ECDHE-ECDSA); keyEncipherment is for RSA key transport only.
    return x509.KeyUsage(
        digital_signature=not ca,
        content_commitment=False,
        key_encipherment=False,
        data_encipherment=False,
        key_agreement=False,
        key_cert_sign=ca,
        crl_sign=ca,
        encipher_only=False,
        decipher_only=False,
    )


def _parse_ips(values: Sequence[str]) -> list[ipaddress.IPv4Address | ipaddress.IPv6Address]:
    out: list[ipaddress.IPv4Address | ipaddress.IPv6Address] = []
    for value in values:
        try:
            addr = ipaddress.ip_address(value.strip())
        except ValueError:
            raise ValidationError(f"--ip {value!r} is not an IP address") from None
        if addr not in out:
            out.append(addr)
    return out


def _parse_dns_names(values: Sequence[str]) -> list[str]:
    out: list[str] = []
    for value in values:
        name = value.strip().lower()
        try:
            ipaddress.ip_address(name)
        except ValueError:
            pass
        else:
            raise ValidationError(f"--dns {value!r} is an IP address: use --ip {value}")
        if len(name) > 253 or not _DNS_NAME.match(name):
            raise ValidationError(f"--dns {value!r} is not a valid DNS name")
        name = name.rstrip(".")
        if name not in out:
            out.append(name)
    return out


def _cert_pem(cert: x509.Certificate) -> bytes:
    return cert.public_bytes(serialization.Encoding.PEM)


def _key_pem(key: ec.EllipticCurvePrivateKey) -> bytes:
    return key.private_bytes(
        serialization.Encoding.PEM,
        serialization.PrivateFormat.PKCS8,
        serialization.NoEncryption(),
    )


def _write_atomically(path: Path, data: bytes, mode: int, *, replace: bool) -> None:
    """Write ``data`` to a temporary file beside ``path``, fsync, then move it into place.

    Without ``replace`` the move is a hard link, which fails if ``path`` exists (no clobbering,
    even in a race); filesystems without hard links fall back to a checked rename.
    """
    tmp = path.with_name(f".{path.name}.{secrets.token_hex(6)}.tmp")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, mode)
    try:
        try:
            if mode == KEY_MODE:
                os.fchmod(fd, KEY_MODE)  # exact, whatever the umask
            os.write(fd, data)
            os.fsync(fd)
        finally:
            os.close(fd)
        if replace:
            os.replace(tmp, path)
            return
        try:
            os.link(tmp, path)
        except FileExistsError:
            raise FileExistsError(errno.EEXIST, "File exists", str(path)) from None
        except OSError:  # no hard links here (some network or FUSE filesystems)
            if path.exists():
                raise FileExistsError(errno.EEXIST, "File exists", str(path)) from None
            os.replace(tmp, path)
    finally:
        with contextlib.suppress(FileNotFoundError):
            tmp.unlink()


def _fsync_directory(directory: Path) -> None:
    with contextlib.suppress(OSError):  # not every platform can open a directory
        fd = os.open(directory, os.O_RDONLY)
        try:
            os.fsync(fd)
        finally:
            os.close(fd)


def shell_quote(value: str) -> str:
    """``value`` quoted for a POSIX shell (as-is when it needs no quoting)."""
    if re.fullmatch(r"[A-Za-z0-9_./:@+-]+", value):
        return value
    return "'" + value.replace("'", "'\"'\"'") + "'"
