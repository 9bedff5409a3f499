"""Signed envelopes: the one byte format for records, results, snapshots and messages.

Stored bytes::

    RS1.<kid>.<alg>.<hex signature>.<JSON payload>

The signature covers every stored byte except itself (``RS1.<kid>.<alg>.`` + payload), so
the key id and algorithm cannot be swapped. :meth:`Sealer.open` checks the signature before
it parses any JSON, then checks that the payload repeats the header and has the expected
purpose. The payload is ``{"v", "kid", "alg", "purpose", "iat", "nonce", "body"}``; messages add
``sender``, ``recipient``, ``type`` and ``exp``.
"""

from __future__ import annotations

import os
import time
from collections.abc import Callable
from typing import Any, NamedTuple

import orjson

from raysys.errors import IntegrityError, ValidationError
from raysys.signing.keyring import Keyring

MAGIC = b"RS1"
VERSION = 1
MAX_ENVELOPE_BYTES = 1 << 20  # 1 MiB: payload limit plus headroom
_STANDARD = frozenset({"v", "kid", "alg", "purpose", "iat", "nonce", "body"})


class Opened(NamedTuple):
    """A verified envelope. ``body`` is the parsed JSON body; ``extra`` holds message fields."""

    kid: str
    alg: str
    purpose: str
    iat: float
    nonce: str
    body: Any
    extra: dict[str, Any]


def _dumps(doc: object) -> bytes:
    """Compact JSON. Callers validate user values first (NaN would become null here)."""
    try:
        return orjson.dumps(doc)
    except TypeError as exc:
        raise ValidationError(f"value is not JSON-serialisable: {exc}") from None


def signing_kid(data: bytes | None) -> str | None:
    """The key id in an envelope's header, read WITHOUT verifying it (to find what a key
    signed); None for bytes that are not an envelope."""
    if not data or not data.startswith(MAGIC + b"."):
        return None
    parts = data.split(b".", 2)
    return parts[1].decode("ascii", "replace") if len(parts) == 3 else None


class Sealer:
    """Signs with the keyring's active key and verifies with any non-revoked key.

    ``keyring`` is a callable so a reloading source can hand out the current keyring.
    """

    def __init__(self, keyring: Keyring | Callable[[], Keyring]) -> None:
        self._keyring: Callable[[], Keyring] = keyring if callable(keyring) else (lambda: keyring)

    @property
    def keyring(self) -> Keyring:
        return self._keyring()

    def refresh(self) -> None:
        """Re-read a reloading keyring source now (e.g. on a record under an unknown key)."""
        reload = getattr(self._keyring, "reload", None)
        if callable(reload):
            reload()

    def seal(self, purpose: str, body: object, *, extra: dict[str, Any] | None = None,
             now: float | None = None) -> bytes:
        """Return the signed bytes for ``body``. Raises ValidationError for non-JSON bodies."""
        key = self._keyring().active
        payload: dict[str, Any] = {
            "v": VERSION,
            "kid": key.kid,
            "alg": key.alg,
            "purpose": purpose,
            "iat": round(time.time() if now is None else now, 3),
            "nonce": os.urandom(12).hex(),
        }
        if extra:
            payload.update(extra)
        payload["body"] = body
        raw = _dumps(payload)
        if len(raw) > MAX_ENVELOPE_BYTES:
            raise ValidationError(
                f"signed value is {len(raw)} bytes; the limit is {MAX_ENVELOPE_BYTES}")
        header = b"%s.%s.%s." % (MAGIC, key.kid.encode(), key.alg.encode())
        return header + key.sign_hex(header + raw) + b"." + raw

    def open(self, data: bytes, purpose: str) -> Opened:
        """Verify ``data`` and return its contents; raise IntegrityError (with a reason) if not."""
        if not isinstance(data, bytes | bytearray) or len(data) > MAX_ENVELOPE_BYTES:
            raise IntegrityError("envelope missing or too large", reason="malformed")
        if not isinstance(data, bytes):
            data = bytes(data)
        parts = data.split(b".", 4)
        if len(parts) != 5 or parts[0] != MAGIC:
            raise IntegrityError("not a raysys envelope", reason="malformed")
        _, kid_b, alg_b, sig_hex, raw = parts
        kid, alg = kid_b.decode("ascii", "replace"), alg_b.decode("ascii", "replace")
        key = self._keyring().get(kid)  # a malformed id is simply unknown
        if key is None:  # signed under a key added since our last reload: re-read once
            self.refresh()  # (a file source re-reads only if the file changed: a stat)
            key = self._keyring().get(kid)
        if key is None:
            raise IntegrityError(f"envelope signed by unknown key {kid}", reason="unknown_key")
        if key.status == "revoked":
            raise IntegrityError(f"envelope signed by revoked key {kid}", reason="revoked_key")
        if alg != key.alg:
            raise IntegrityError(
                f"envelope names algorithm {alg!r} but key {kid} is {key.alg}",
                reason="algorithm_mismatch",
            )
        signed_end = len(MAGIC) + len(kid_b) + len(alg_b) + 3
        # Only lower-case hex verifies: one encoding, so no malleable stored bytes.
        if not key.verify_hex(data[:signed_end] + raw, sig_hex):
            raise IntegrityError("envelope signature does not match", reason="bad_signature")
        # Signed by us: parsing is now safe from forged input, but stay defensive.
        try:
            payload = orjson.loads(raw)
        except orjson.JSONDecodeError:
            raise IntegrityError("signed payload is not JSON", reason="malformed") from None
        if not isinstance(payload, dict) or payload.get("kid") != kid or payload.get("alg") != alg:
            raise IntegrityError("envelope header and payload disagree", reason="header_mismatch")
        if payload.get("v") != VERSION:
            raise IntegrityError(f"unsupported envelope version {payload.get('v')!r}",
                                 reason="malformed")
        if payload.get("purpose") != purpose:
            raise IntegrityError(
                f"envelope is a {payload.get('purpose')!r}, expected {purpose!r}",
                reason="purpose_mismatch",
            )
        extra = {k: v for k, v in payload.items() if k not in _STANDARD} if len(
            payload) > len(_STANDARD) else {}
        return Opened(kid, alg, purpose, float(payload.get("iat", 0)),
                      str(payload.get("nonce", "")), payload.get("body"), extra)
