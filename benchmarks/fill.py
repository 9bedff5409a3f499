"""Fill a namespace with many tasks quickly, through the store's own scripts (signed records,
submit.lua; for finished ones also acquire.lua and complete.lua with signed completion
records): what the snapshot and purge benchmarks start from."""

from __future__ import annotations

import sys
import time

from raysys.models import Outcome, TaskSpec
from raysys.store import TaskStore

BATCH = 5000


def fill(store: TaskStore, n: int, *, finished: bool, label: str = "") -> float:
    """Store ``n`` ``noop`` tasks (run to ``succeeded`` if ``finished``); the seconds it took."""
    specs = [TaskSpec.build(kind="noop", payload={"i": i}) for i in range(BATCH)]
    began = time.perf_counter()
    done = 0
    while done < n:
        k = min(BATCH, n - done)
        store.submit_many(specs[:k])
        if finished:
            leases = store.acquire("filler", k, 3600)
            store.complete("filler", [(lease, Outcome(ok=True)) for lease in leases])
        done += k
        if done % (BATCH * 20) == 0 or done == n:
            rate = done / (time.perf_counter() - began)
            print(f"\r{label}{done:,}/{n:,} tasks stored ({rate:,.0f}/s)", end="",
                  file=sys.stderr, flush=True)
    print(file=sys.stderr)
    return time.perf_counter() - began
