"""Decoding Redis replies: the one place that turns reply values into text or bytes."""

from __future__ import annotations

from typing import Any


def as_text(value: Any, errors: str = "strict") -> str:
    """A reply value as text; ``errors="replace"`` for bytes anyone may have written."""
    if isinstance(value, bytes | bytearray):
        return value.decode(errors=errors)
    return str(value)


def as_bytes(value: Any) -> bytes:
    """A reply value as bytes (str is encoded as UTF-8)."""
    return value.encode() if isinstance(value, str) else bytes(value)
