"""Schedules under Coordinator kills: a one-second cron for ``--minutes`` while the Coordinator
is killed (SIGKILL) every ``--kill-every`` seconds; Ray restarts it and its ticker goes on.

Counts the tasks of every tick (each tick's task carries the idempotency key
``schedule:<name>:<tick ms>``; every task's own key is read, so two for one tick would show),
from the first tick after the schedule was added to the last one before it was removed. Pass:
every tick has exactly one task (catch-up ``all``: the ticks of each outage are enqueued when the
Coordinator is back), none has two. Also reports how late each tick's task was enqueued (tick ->
submission).

Usage: python benchmarks/schedule_bench.py [--minutes 10] [--kill-every 120] [--catchup all]
       [--json]
"""

from __future__ import annotations

import argparse
import json
import os
import signal
import sys
import tempfile
import time
from collections import Counter
from pathlib import Path
from typing import Any

import raysys
from raysys.bench.workload import percentiles
from raysys.config import load_settings
from raysys.core import open_core
from raysys.store.replies import as_text

NAME = "bench-every-second"


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--minutes", type=float, default=10.0)
    p.add_argument("--kill-every", type=float, default=120.0)
    p.add_argument("--catchup", choices=("skip", "all"), default="all")
    p.add_argument("--workers", type=int, default=1)
    p.add_argument("--json", action="store_true")
    args = p.parse_args(argv)
    result = run(args.minutes, args.kill_every, args.catchup, args.workers)
    print(json.dumps(result, indent=None if args.json else 2))
    return 0 if result["passed"] else 1


def run(minutes: float, kill_every: float, catchup: str, workers: int) -> dict[str, Any]:
    with tempfile.TemporaryDirectory(prefix="raysys-schedbench-") as tmp:
        client = raysys.start(workers=workers, data_dir=str(Path(tmp) / "data"),
                              dashboard=False)
        try:
            core = open_core(load_settings(data_dir=str(Path(tmp) / "data"),
                                           namespace=client.namespace))
            try:
                return _measure(client, core, minutes, kill_every, catchup)
            finally:
                core.close()
        finally:
            client.shutdown()


def _measure(client: Any, core: Any, minutes: float, kill_every: float, catchup: str,
             ) -> dict[str, Any]:
    added = client.schedule(NAME, "* * * * * *", "noop", catchup=catchup)
    first_after = added.last_ms or 0
    started = time.monotonic()
    end = started + minutes * 60
    next_kill = started + kill_every
    kills: list[float] = []
    while time.monotonic() < end:
        if time.monotonic() >= next_kill:
            pid = client.actor_pids()["coordinator"]
            os.kill(pid, signal.SIGKILL)
            kills.append(round(time.monotonic() - started, 1))
            print(f"\rkilled the Coordinator (pid {pid}) at {kills[-1]:.0f} s", end="",
                  file=sys.stderr, flush=True)
            next_kill += kill_every
        time.sleep(0.2)
    stop_ms = int(time.time() * 1000)
    time.sleep(3.0)  # the last ticks before stop_ms land
    client.remove_schedule(NAME)
    print(file=sys.stderr)
    per_tick, lag = _ticks(core)
    expected = [t for t in range(first_after - first_after % 1000 + 1000, stop_ms - 2000, 1000)]
    missing = [t for t in expected if per_tick.get(t, 0) == 0]
    doubled = [t for t, n in per_tick.items() if n > 1]
    return {"minutes": minutes, "kills_at_s": kills, "catchup": catchup,
            "ticks_expected": len(expected), "ticks_with_one_task": sum(
                1 for t in expected if per_tick.get(t) == 1),
            "ticks_missing": len(missing), "ticks_twice": len(doubled),
            "enqueue_lag_ms": percentiles(lag, (50, 99)),
            "enqueue_lag_max_ms": round(max(lag), 1) if lag else None,
            "passed": not doubled and (catchup == "skip" or not missing)}


def _ticks(core: Any) -> tuple[Counter[int], list[float]]:
    """Tasks per tick, read from every noop task's own idempotency key (two tasks for one tick
    would both show), and each tick's submission lag (ms)."""
    per_tick: Counter[int] = Counter()
    lag: list[float] = []
    ids = [as_text(x) for x in core.client.zrange(core.keys.submitted_kind_index("noop"), 0, -1)]
    marker = f"schedule:{NAME}:"
    for offset in range(0, len(ids), 1000):
        pipe = core.client.pipeline(transaction=False)
        for task_id in ids[offset:offset + 1000]:
            pipe.hmget(core.keys.task(task_id), ["ik", "sub"])
        for key, submitted in pipe.execute():
            text = as_text(key or b"")
            if text.startswith(marker):
                tick = int(text[len(marker):])
                per_tick[tick] += 1
                lag.append(int(submitted) - tick)
    return per_tick, lag


if __name__ == "__main__":
    raise SystemExit(main())
