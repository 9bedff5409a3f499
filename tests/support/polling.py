"""Waiting for a condition: :func:`wait_until` polls a predicate until it holds or time runs out.

The one poller of the suites. It returns the seconds the wait took (a figure some tests assert
on) and fails with an ``AssertionError`` that names what was awaited, so a timeout reads like
any other broken expectation. The predicate may act as well as look (lease, then commit), as
long as it is safe to call again.
"""

from __future__ import annotations

import time
from collections.abc import Callable

INTERVAL_S = 0.05  # often enough for sub-second leases, rarely enough to leave the CPUs alone


def wait_until(predicate: Callable[[], object], timeout: float, what: str,
               interval: float = INTERVAL_S) -> float:
    """Call ``predicate`` every ``interval`` seconds until it returns something true; the
    seconds that took. ``AssertionError`` naming ``what`` after ``timeout`` seconds."""
    began = time.monotonic()
    while not predicate():
        if time.monotonic() - began > timeout:
            raise AssertionError(f"timed out after {timeout:g} s waiting for {what}")
        time.sleep(interval)
    return time.monotonic() - began
