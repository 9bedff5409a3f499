"""Workloads and their reporting for ``raysys demo`` and ``raysys bench``: the task mix, the
progress bar, percentiles. :mod:`raysys.bench.cluster_run` runs them through the actors."""

from __future__ import annotations

import logging
import random
import sys
import time
from collections.abc import Sequence
from typing import TextIO

from raysys.models import TaskSpec

log = logging.getLogger(__name__)


def demo_specs(n: int, seed: int = 7) -> list[TaskSpec]:
    """A mixed workload: priorities, payloads echoed, some flaky (retried), a few dead."""
    rng = random.Random(seed)
    specs = []
    for i in range(n):
        roll = rng.random()
        if roll < 0.05:
            spec = TaskSpec.build(kind="fail", payload={"message": f"task {i} fails on purpose"},
                                  max_attempts=2, priority=rng.randint(0, 3))
        elif roll < 0.15:
            spec = TaskSpec.build(kind="flaky", payload={"fail_times": 1, "i": i},
                                  max_attempts=3, priority=rng.randint(0, 3))
        elif roll < 0.55:
            spec = TaskSpec.build(kind="echo", payload={"i": i, "word": "hello"},
                                  priority=rng.randint(0, 3))
        else:
            spec = TaskSpec.build(kind="noop", payload={"i": i}, priority=rng.randint(0, 3))
        specs.append(spec)
    return specs


def noop_specs(n: int) -> list[TaskSpec]:
    return kind_specs(n, "noop")


def kind_specs(n: int, kind: str, payload: object = None) -> list[TaskSpec]:
    """``n`` tasks of one kind with one payload (the bench's workload)."""
    spec = TaskSpec.build(kind=kind, payload=payload)
    return [spec] * n


class Progress:
    """A one-line progress bar on stderr (a line every few seconds when not a terminal)."""

    def __init__(self, total: int, stream: TextIO | None = None, enabled: bool = True) -> None:
        self.total = total
        self.stream = stream or sys.stderr
        self.enabled = enabled
        self.tty = self.stream.isatty()
        self._last = 0.0

    def update(self, done: int, rate: float, final: bool = False) -> None:
        now = time.monotonic()
        if not self.enabled or (not final and now - self._last < (0.2 if self.tty else 3.0)):
            return
        self._last = now
        width = 30
        filled = int(width * done / max(self.total, 1))
        line = (f"[{'#' * filled}{'.' * (width - filled)}] {done}/{self.total} final"
                f"  {rate:,.0f} tasks/s")
        if self.tty:
            self.stream.write("\r" + line + ("\n" if final else ""))
        else:
            self.stream.write(line + "\n")
        self.stream.flush()


def percentiles(values: Sequence[float], points: Sequence[int] = (50, 95, 99)) -> dict[str, float]:
    if not values:
        return {f"p{p}": 0.0 for p in points}
    ordered = sorted(values)
    return {f"p{p}": round(ordered[min(len(ordered) - 1, int(len(ordered) * p / 100))], 2)
            for p in points}
