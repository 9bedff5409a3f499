"""Run a workload end to end and account for every task (``raysys demo`` and ``raysys bench``).

The driver submits while workers process; each worker loop leases batches, runs handlers and
commits under fences, and a reaper takes back expired leases. The figures that prove the
guarantees (``lost``, ``duplicate_commits``) come from the independent commit ledger.

This module runs the worker loops as threads of one process (the core alone, no Ray); the
Ray actors drive the same loops on a cluster.
"""

from __future__ import annotations

import logging
import random
import sys
import threading
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any, TextIO

from raysys.ledger import CommitLedger
from raysys.models import TaskSpec
from raysys.store import TaskStore
from raysys.worker_loop import Heartbeat, WorkerLoop

log = logging.getLogger("raysys.workload")


@dataclass(frozen=True)
class RunOptions:
    tasks: int = 2000
    workers: int = 2
    batch: int = 100
    submit_batch: int = 250
    rate: float | None = None  # offered load, tasks/s; None: as fast as possible
    ttl_s: float = 10.0
    reaper_interval_s: float = 0.5
    timeout_s: float = 600.0
    fsync: str = "always"
    signing: str = "hmac-sha256"
    audit: bool = True


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
    spec = TaskSpec.build(kind="noop", payload=None)
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


def run_local(store: TaskStore, ledger: CommitLedger, specs: Sequence[TaskSpec],
              options: RunOptions, progress: Progress | None = None,
              should_stop: Callable[[], bool] | None = None) -> dict[str, Any]:
    """Submit ``specs`` while ``options.workers`` loops process them; return the report."""
    submitted: list[str] = []
    submit_at: dict[str, float] = {}
    start_at: dict[str, float] = {}
    start_lock = threading.Lock()
    stop = threading.Event()

    def on_start(lease: Any) -> None:
        with start_lock:
            start_at.setdefault(lease.task_id, time.time())

    loops = [WorkerLoop(store, f"local-worker-{i}", batch=options.batch, ttl_s=options.ttl_s,
                        ledger=ledger, on_start=on_start) for i in range(options.workers)]

    def work(loop: WorkerLoop) -> None:
        idle = 0.001
        while not stop.is_set():
            try:
                got = loop.run_once()
            except Exception:
                log.exception("%s: batch failed; retrying", loop.holder)
                got = 0
                time.sleep(0.1)
            if got:
                idle = 0.001
            else:
                time.sleep(idle)
                idle = min(idle * 2, 0.05)

    threads = [threading.Thread(target=work, args=(loop,), name=loop.holder, daemon=True)
               for loop in loops]
    beats = [Heartbeat(f"renew-{loop.holder}", options.ttl_s / 3, loop.renew_held)
             for loop in loops]
    def reap() -> None:  # the reaper's final transitions are commits the ledger must see
        report = store.reap()
        ledger.record((task_id, fence, "dead") for task_id, fence in report.dead_leases)

    beats.append(Heartbeat("reaper", options.reaper_interval_s, reap))
    final_before = _final_total(store)
    t_first = time.time()
    for thread in [*threads, *beats]:
        thread.start()
    try:
        _submit_all(store, specs, options, submitted, submit_at, stop)
        deadline = time.monotonic() + options.timeout_s
        while time.monotonic() < deadline:
            if should_stop is not None and should_stop():
                break
            done = _final_total(store) - final_before
            if progress is not None:
                progress.update(done, done / max(time.time() - t_first, 1e-6))
            if done >= len(submitted):
                break
            time.sleep(0.05)
    finally:
        stop.set()
        for beat in beats:
            beat.stop()
        for thread in threads:
            thread.join(timeout=10)
    t_last = time.time()
    report: dict[str, Any] = dict(ledger.report(submitted).to_json())
    if progress is not None:
        progress.update(report["tasks"] - report["lost"],
                        report["tasks"] / max(t_last - t_first, 1e-6), final=True)
    latencies = [(start_at[i] - submit_at[i]) * 1000 for i in submitted if i in start_at]
    report.update({
        "retries": store.stats().get("retries", 0),
        "tasks_per_s": round(len(submitted) / max(t_last - t_first, 1e-6), 1),
        "latency_ms": percentiles(latencies),
        "settings": {"fsync": options.fsync, "signing": options.signing, "serve": False,
                     "audit": options.audit, "workers": options.workers, "batch": options.batch,
                     "mode": "core-threads"},
    })
    return report


def _final_total(store: TaskStore) -> int:
    counts = store.counts()
    return counts["succeeded"] + counts["dead"] + counts["cancelled"] + counts["quarantined"]


def _submit_all(store: TaskStore, specs: Sequence[TaskSpec], options: RunOptions,
                submitted: list[str], submit_at: dict[str, float], stop: threading.Event) -> None:
    step = options.submit_batch
    if options.rate:
        step = max(1, min(step, int(options.rate / 50) or 1))  # ~50 submissions a second
    t0 = time.monotonic()
    for offset in range(0, len(specs), step):
        if stop.is_set():
            return
        if options.rate:
            due = t0 + offset / options.rate
            pause = due - time.monotonic()
            if pause > 0:
                time.sleep(pause)
        now = time.time()
        ids = store.submit_many(specs[offset:offset + step])
        submitted.extend(ids)
        for task_id in ids:
            submit_at[task_id] = now
