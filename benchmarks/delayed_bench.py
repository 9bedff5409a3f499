"""Delayed tasks: how late do they start? ``--tasks`` ``noop`` tasks due evenly over
``--spread`` seconds, submitted (all of them) before the first is due; lateness is a task's
handler start minus its due time. Also checks that none started early.

Runs raysys end to end on this machine (``raysys.start``); the start times come from the commit
ledger (each worker records when a handler started). Goal: p99 lateness <= 100 ms at 100,000
tasks over 100 s (1,000 a second). Reports p50/p95/p99/max lateness, early starts (must be 0),
lost and duplicate commits.

Usage: python benchmarks/delayed_bench.py [--tasks 100000] [--spread 100] [--workers 2] [--json]
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import redis

import raysys
from raysys.bench.workload import percentiles
from raysys.ledger import CommitLedger
from raysys.models import MAX_BATCH, TaskSpec
from raysys.redis_server.embedded import EmbeddedRedis

LEAD_S_PER_TASK = 0.0004  # submission time to plan for before the first task is due


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--tasks", type=int, default=100_000)
    p.add_argument("--spread", type=float, default=100.0, help="seconds the due times span")
    p.add_argument("--workers", type=int, default=2)
    p.add_argument("--json", action="store_true")
    args = p.parse_args(argv)
    result = run(args.tasks, args.spread, args.workers)
    print(json.dumps(result, indent=None if args.json else 2))
    return 0 if result["early"] == 0 and result["lost"] == 0 and (
        result["duplicate_commits"] == 0) else 1


def run(tasks: int, spread: float, workers: int) -> dict[str, Any]:
    with tempfile.TemporaryDirectory(prefix="raysys-delayed-") as tmp:
        ledger_server = EmbeddedRedis(Path(tmp) / "ledger", password=None, appendfsync="no")
        ledger_server.start()
        client = raysys.start(workers=workers, ledger=True, ledger_url=ledger_server.url,
                              data_dir=str(Path(tmp) / "data"), dashboard=False)
        try:
            ledger = CommitLedger(redis.Redis.from_url(ledger_server.url), client.namespace)
            return _measure(client, ledger, tasks, spread)
        finally:
            client.shutdown()
            ledger_server.stop()


def _measure(client: Any, ledger: CommitLedger, tasks: int, spread: float) -> dict[str, Any]:
    lead = 5.0 + tasks * LEAD_S_PER_TASK
    first = time.time() + lead
    due = [int((first + spread * i / max(tasks - 1, 1)) * 1000) for i in range(tasks)]
    ids: list[str] = []
    began = time.monotonic()
    for offset in range(0, tasks, MAX_BATCH // 10):
        chunk = due[offset:offset + MAX_BATCH // 10]
        ids += client.submit_specs([TaskSpec.build(kind="noop", not_before_ms=d) for d in chunk])
    submitted_s = time.monotonic() - began
    if time.time() > first:
        print(f"warning: submitting took {submitted_s:.1f} s, past the first due time",
              file=sys.stderr)
    wait_until = first + spread + 60
    while time.time() < wait_until:
        counts = client.counts()
        if counts["succeeded"] + counts["dead"] >= tasks:
            break
        print(f"\r{counts['succeeded']:>8,} of {tasks:,} done, {counts['scheduled']:>8,} "
              "scheduled", end="", file=sys.stderr, flush=True)
        time.sleep(1.0)
    print(file=sys.stderr)
    starts = ledger.starts()
    lateness = [(starts[i] * 1000 - d) for i, d in zip(ids, due, strict=True) if i in starts]
    report = ledger.report(ids)
    return {"tasks": tasks, "spread_s": spread, "submitted_in_s": round(submitted_s, 1),
            "started": len(lateness), "early": sum(1 for x in lateness if x < 0),
            "lateness_ms": {**percentiles(lateness, (50, 95, 99)),
                            "max": round(max(lateness), 1) if lateness else None},
            "lost": report.lost, "duplicate_commits": report.duplicate_commits}


if __name__ == "__main__":
    raise SystemExit(main())
