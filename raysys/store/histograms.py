"""Histograms kept in Redis, so every process adds to one system-wide distribution.

A histogram ``name`` lives in the namespace's ``hist`` hash as non-cumulative bucket counters
``<name>:<le>`` (``le`` the bucket's upper bound as written in :data:`BOUNDS`, ``+Inf`` last),
plus ``<name>:sum`` and ``<name>:count``. Writers add one to the bucket an observation falls
in; readers turn the counters into Prometheus's cumulative buckets. Counters in Redis survive
an actor restart, so a scrape never goes backwards when a worker dies.
"""

from __future__ import annotations

from bisect import bisect_left
from collections.abc import Mapping

TASK_DURATION = "task_duration_seconds"
MESSAGE_LATENCY = "raysys_message_latency_seconds"

# Upper bounds in seconds, shared by both histograms: sub-millisecond no-ops to long handlers.
BOUNDS: tuple[str, ...] = ("0.0005", "0.001", "0.0025", "0.005", "0.01", "0.025", "0.05", "0.1",
                           "0.25", "0.5", "1", "2.5", "5", "10", "30", "60", "300", "+Inf")
_LIMITS = [float(b) for b in BOUNDS[:-1]]


def bucket(seconds: float) -> str:
    """The ``le`` label of the smallest bucket holding ``seconds``."""
    return BOUNDS[bisect_left(_LIMITS, seconds)]


def cumulative(raw: Mapping[str, str | bytes], name: str
               ) -> tuple[list[tuple[str, float]], float, float]:
    """(cumulative buckets [(le, count)], sum, count) of ``name`` from the ``hist`` hash."""
    buckets: list[tuple[str, float]] = []
    running = 0.0
    for le in BOUNDS:
        running += float(raw.get(f"{name}:{le}", 0) or 0)
        buckets.append((le, running))
    total = float(raw.get(f"{name}:sum", 0) or 0)
    count = float(raw.get(f"{name}:count", 0) or 0)
    return buckets, total, count
