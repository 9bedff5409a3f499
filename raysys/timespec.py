"""Durations and instants as users write them: ``30s``, ``5m``, ``2h``, ``7d`` (or plain
seconds), and ISO-8601 times with a zone. Bad input raises ValidationError naming it."""

from __future__ import annotations

import math
import re
import time
from datetime import datetime

from raysys.errors import ValidationError

_DURATION = re.compile(r"^\s*(\d+(?:\.\d+)?)\s*(ms|s|m|h|d|w)?\s*$")
_UNITS = {"ms": 0.001, "s": 1.0, "m": 60.0, "h": 3600.0, "d": 86_400.0, "w": 604_800.0}


def parse_duration(text: str, *, what: str = "duration") -> float:
    """Seconds in ``text``: a number with an optional unit (ms, s, m, h, d, w; default s)."""
    if (text or "").strip().startswith("-"):
        raise ValidationError(f"{what} {text!r} is negative: a duration is 0 or more")
    match = _DURATION.match(text or "")
    if not match:
        raise ValidationError(f"{what} {text!r} is not a duration (like 30s, 5m, 2h, 7d)")
    value = float(match.group(1)) * _UNITS[match.group(2) or "s"]
    if not math.isfinite(value):
        raise ValidationError(f"{what} {text!r} is too large")
    return value


def parse_instant(text: str, *, what: str = "time", now: float | None = None) -> float:
    """Epoch seconds of ``text``: an ISO-8601 time with a zone, or a duration meaning that
    long ago (``1h``: an hour ago)."""
    if _DURATION.match(text or ""):
        return (time.time() if now is None else now) - parse_duration(text, what=what)
    try:
        when = datetime.fromisoformat(text.strip().replace("Z", "+00:00"))
    except ValueError:
        raise ValidationError(f"{what} {text!r} is neither an ISO-8601 time (like "
                              "2026-12-24T18:00:00Z) nor a duration ago (like 1h)") from None
    return epoch_of(when, what)


def epoch_of(when: datetime, what: str = "time") -> float:
    """Epoch seconds of an aware ``when``; ValidationError without a zone or out of range."""
    if when.tzinfo is None:
        raise ValidationError(f"{what} {when.isoformat()} has no time zone (add Z or +01:00)")
    try:
        return when.timestamp()
    except (OverflowError, ValueError, OSError):  # e.g. 0001-01-01T00:00+05:00
        raise ValidationError(f"{what} {when.isoformat()} is out of range") from None
