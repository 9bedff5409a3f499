"""Signing keys: ids, algorithms, status; loaded from a file or the environment.

A keyring holds keys by id. Exactly one key is ``active`` (it signs); ``verify-only`` keys
verify what they signed earlier; ``revoked`` keys verify nothing. The algorithm is pinned
to the key: a record that names another algorithm for the same key id is rejected.
Keys never live in Redis. File format (JSON, mode 0600)::

    {"keys": [{"kid": "k1", "alg": "hmac-sha256", "status": "active", "secret": "<base64>"},
              {"kid": "k2", "alg": "ed25519", "status": "verify-only",
               "private": "<base64 raw 32 bytes>" | null, "public": "<base64 raw 32 bytes>"}]}
"""

from __future__ import annotations

import base64
import hmac
import json
import os
import re
import secrets
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Literal

from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey, Ed25519PublicKey

from raysys.config import MIN_SECRET_BYTES
from raysys.errors import KeyringError

Algorithm = Literal["hmac-sha256", "ed25519"]
KeyStatus = Literal["active", "verify-only", "revoked"]
ALGORITHMS: tuple[Algorithm, ...] = ("hmac-sha256", "ed25519")
STATUSES: tuple[KeyStatus, ...] = ("active", "verify-only", "revoked")
DEFAULT_ALGORITHM: Algorithm = "hmac-sha256"
KID_PATTERN = re.compile(r"^[A-Za-z0-9_-]{1,64}$")


@dataclass(frozen=True)
class SigningKey:
    """One key. ``sign`` needs the secret (HMAC) or private key (Ed25519)."""

    kid: str
    alg: Algorithm
    status: KeyStatus
    secret: bytes | None = field(default=None, repr=False)
    private: Ed25519PrivateKey | None = field(default=None, repr=False)
    public: Ed25519PublicKey | None = field(default=None, repr=False)

    def can_sign(self) -> bool:
        return self.status == "active" and (self.secret is not None or self.private is not None)

    def sign(self, message: bytes) -> bytes:
        if self.alg == "hmac-sha256" and self.secret is not None:
            return hmac.digest(self.secret, message, "sha256")
        if self.alg == "ed25519" and self.private is not None:
            return self.private.sign(message)
        raise KeyringError(f"key {self.kid} cannot sign (no secret or private key)")

    def sign_hex(self, message: bytes) -> bytes:
        """The signature as lower-case hex ASCII: the one encoding envelopes store."""
        return self.sign(message).hex().encode()

    def verify_hex(self, message: bytes, signature_hex: bytes) -> bool:
        """Constant-time check of a lower-case hex signature (any other encoding fails)."""
        if self.alg == "hmac-sha256" and self.secret is not None:
            expected = hmac.digest(self.secret, message, "sha256").hex().encode()
            return hmac.compare_digest(expected, signature_hex)
        try:
            signature = bytes.fromhex(signature_hex.decode("ascii"))
        except (UnicodeDecodeError, ValueError):
            return False
        return signature.hex().encode() == signature_hex and self.verify(message, signature)

    def verify(self, message: bytes, signature: bytes) -> bool:
        """Constant-time check; False on any mismatch, never raises for bad input."""
        if self.alg == "hmac-sha256" and self.secret is not None:
            expected = hmac.digest(self.secret, message, "sha256")
            return hmac.compare_digest(expected, signature)
        if self.alg == "ed25519" and self.public is not None:
            try:
                self.public.verify(signature, message)
            except InvalidSignature:
                return False
            return True
        return False

    def with_status(self, status: KeyStatus) -> SigningKey:
        return SigningKey(self.kid, self.alg, status, self.secret, self.private, self.public)

    def to_json(self) -> dict[str, object]:
        doc: dict[str, object] = {"kid": self.kid, "alg": self.alg, "status": self.status}
        if self.secret is not None:
            doc["secret"] = _b64(self.secret)
        if self.private is not None:
            doc["private"] = _b64(self.private.private_bytes_raw())
        if self.public is not None:
            doc["public"] = _b64(self.public.public_bytes_raw())
        return doc


def generate_key(alg: Algorithm = DEFAULT_ALGORITHM, *, status: KeyStatus = "active") -> SigningKey:
    """A fresh random key with a random id."""
    kid = "k" + secrets.token_hex(6)
    if alg == "hmac-sha256":
        return SigningKey(kid, alg, status, secret=secrets.token_bytes(32))
    private = Ed25519PrivateKey.generate()
    return SigningKey(kid, alg, status, private=private, public=private.public_key())


class Keyring:
    """Immutable set of keys with exactly one active signing key (or none: verify-only node)."""

    def __init__(self, keys: Iterable[SigningKey]) -> None:
        self._keys: dict[str, SigningKey] = {}
        for key in keys:
            if key.kid in self._keys:
                raise KeyringError(f"key id {key.kid} appears twice in the keyring")
            self._keys[key.kid] = key
        active = [k for k in self._keys.values() if k.status == "active"]
        if len(active) > 1:
            raise KeyringError(f"keyring has {len(active)} active keys; exactly one may sign")
        self._active = active[0] if active else None

    @property
    def active(self) -> SigningKey:
        if self._active is None or not self._active.can_sign():
            raise KeyringError("keyring has no active signing key: run `raysys keys new`")
        return self._active

    def get(self, kid: str) -> SigningKey | None:
        return self._keys.get(kid)

    def keys(self) -> list[SigningKey]:
        return list(self._keys.values())

    def to_json(self) -> dict[str, object]:
        return {"keys": [k.to_json() for k in self._keys.values()]}

    @classmethod
    def from_json(cls, doc: object, *, source: str) -> Keyring:
        if not isinstance(doc, Mapping) or not isinstance(doc.get("keys"), list):
            raise KeyringError(f"{source}: expected an object with a 'keys' list")
        return cls(_parse_key(entry, source) for entry in doc["keys"])


def _parse_key(entry: object, source: str) -> SigningKey:
    if not isinstance(entry, Mapping):
        raise KeyringError(f"{source}: each key must be an object")
    kid, alg, status = entry.get("kid"), entry.get("alg"), entry.get("status", "active")
    if not isinstance(kid, str) or not KID_PATTERN.match(kid):
        raise KeyringError(f"{source}: key id {kid!r} must match {KID_PATTERN.pattern}")
    if alg not in ALGORITHMS:
        raise KeyringError(f"{source}: key {kid} has unknown algorithm {alg!r}; use {ALGORITHMS}")
    if status not in STATUSES:
        raise KeyringError(f"{source}: key {kid} has unknown status {status!r}; use {STATUSES}")
    if alg == "hmac-sha256":
        secret = _unb64(entry.get("secret"), f"{source}: key {kid} secret")
        if len(secret) < MIN_SECRET_BYTES:
            raise KeyringError(
                f"{source}: key {kid} secret is {len(secret)} bytes; "
                f"at least {MIN_SECRET_BYTES} needed"
            )
        return SigningKey(kid, alg, status, secret=secret)
    private = public = None
    if entry.get("private") is not None:
        raw = _unb64(entry.get("private"), f"{source}: key {kid} private")
        try:
            private = Ed25519PrivateKey.from_private_bytes(raw)
        except ValueError:
            raise KeyringError(f"{source}: key {kid} private key is not 32 raw bytes") from None
        public = private.public_key()
    elif entry.get("public") is not None:
        raw = _unb64(entry.get("public"), f"{source}: key {kid} public")
        try:
            public = Ed25519PublicKey.from_public_bytes(raw)
        except ValueError:
            raise KeyringError(f"{source}: key {kid} public key is not 32 raw bytes") from None
    else:
        raise KeyringError(f"{source}: ed25519 key {kid} needs 'private' or 'public'")
    return SigningKey(kid, alg, status, private=private, public=public)


def load_keyring_file(path: Path) -> Keyring:
    """Read a keyring file; a missing or malformed file raises KeyringError naming it."""
    try:
        text = path.read_text(encoding="utf-8")
    except FileNotFoundError:
        raise KeyringError(f"keyring file {path} does not exist: run `raysys keys new`") from None
    except OSError as exc:
        raise KeyringError(f"cannot read keyring file {path}: {exc.strerror}") from None
    return load_keyring_text(text, source=str(path))


def load_keyring_text(text: str, *, source: str) -> Keyring:
    try:
        doc = json.loads(text)
    except ValueError:
        raise KeyringError(f"{source}: not valid JSON") from None
    return Keyring.from_json(doc, source=source)


def write_keyring_file(path: Path, keyring: Keyring) -> None:
    """Atomically replace ``path`` with ``keyring`` (mode 0600, never half-written)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "w", encoding="utf-8") as fh:
        json.dump(keyring.to_json(), fh, indent=2)
        fh.flush()
        os.fsync(fh.fileno())
    os.replace(tmp, path)


def _b64(raw: bytes) -> str:
    return base64.b64encode(raw).decode("ascii")


def _unb64(value: object, what: str) -> bytes:
    if not isinstance(value, str):
        raise KeyringError(f"{what} must be a base64 string")
    try:
        return base64.b64decode(value, validate=True)
    except ValueError:
        raise KeyringError(f"{what} is not valid base64") from None
