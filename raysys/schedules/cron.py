"""Cron expressions and time zones, through ``cronsim`` and ``zoneinfo``.

Five fields (minute hour day month weekday) or six with seconds first (``*/5 * * * * *``:
every five seconds). Times are the schedule's zone's wall-clock times. Across daylight-saving
changes (Debian cron's rules, which cronsim follows):

* a five-field job at a fixed wall time that does not exist (spring forward: 02:30 on the night
  the clocks jump from 02:00 to 03:00) runs once, when the clocks jump;
* one at a wall time that occurs twice (fall back) runs once, at the first occurrence;
* interval expressions (``*/30 * * * *``) and six-field ones follow elapsed wall time: they run
  at both occurrences of a repeated hour.

Every tick is an instant (epoch ms); the cursor of a schedule holds the last one enqueued.
"""

from __future__ import annotations

from collections.abc import Iterator
from datetime import UTC, datetime
from functools import lru_cache
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from cronsim import CronSim, CronSimError

from raysys.errors import ValidationError


@lru_cache(maxsize=256)
def zone(name: str) -> ZoneInfo:
    """The IANA time zone ``name`` (``UTC``, ``Europe/Berlin``); ValidationError if unknown."""
    try:
        return ZoneInfo(name)
    except (ZoneInfoNotFoundError, ValueError, OSError):  # OSError: a name too long
        raise ValidationError(f"time zone {name[:80]!r} does not exist (use an IANA name such as "
                              "UTC or Europe/Berlin)") from None


def check(expr: str, tz: str) -> None:
    """Raise ValidationError unless ``expr`` parses and ``tz`` exists."""
    ticks_after(expr, tz, 0)


def _moments(expr: str, tz: str, at_ms: int, *, reverse: bool) -> Iterator[int]:
    start = datetime.fromtimestamp(at_ms // 1000, UTC).astimezone(zone(tz))
    try:
        moments = CronSim(expr, start, reverse=reverse)
    except (CronSimError, ValueError, KeyError, IndexError) as exc:
        raise ValidationError(f"cron expression {expr!r} does not parse: {exc} (five fields: "
                              "minute hour day month weekday; or six, seconds first)") from None
    return (int(moment.timestamp() * 1000) for moment in moments)


def ticks_after(expr: str, tz: str, after_ms: int) -> Iterator[int]:
    """The ticks of ``expr`` in zone ``tz`` strictly after ``after_ms`` (epoch ms), in order."""
    return _moments(expr, tz, after_ms, reverse=False)


def next_tick(expr: str, tz: str, after_ms: int) -> int:
    """The first tick strictly after ``after_ms``."""
    return next(ticks_after(expr, tz, after_ms))


COUNT_CAP = 100_000  # older ticks counted (for the audit) at most this far back


def ticks_between(expr: str, tz: str, after_ms: int, until_ms: int, limit: int
                  ) -> tuple[list[int], int]:
    """The newest ``limit`` ticks in (after_ms, until_ms], oldest first; and how many older
    ticks in that range were left out (counted up to ``COUNT_CAP``). Walks back from
    ``until_ms``, so a long outage costs ``limit`` steps, not one per missed tick."""
    newest: list[int] = []
    dropped = 0
    for tick in _moments(expr, tz, until_ms + 1000, reverse=True):
        if tick <= after_ms:
            break
        if tick > until_ms:
            continue
        if len(newest) < limit:
            newest.append(tick)
        else:
            dropped += 1
            if dropped >= COUNT_CAP:
                break
    newest.reverse()
    return newest, dropped
