"""Store alone, one process, batched: submit + acquire + complete N tasks; tasks/s per stage.

Starts its own Redis (the embedded default: AOF on, ``appendfsync always`` unless --fsync says
otherwise) in a temporary directory, so the figure includes durable writes.

Usage: python benchmarks/store_bench.py [--tasks 100000] [--batch 500] [--fsync always]
       [--alg hmac-sha256] [--no-audit] [--json]
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
import time
from pathlib import Path

import redis

from raysys.embedded import EmbeddedRedis
from raysys.envelope import Sealer
from raysys.keyring import ALGORITHMS, Keyring, generate_key
from raysys.models import Outcome, TaskSpec
from raysys.store import TaskStore


def run(tasks: int, batch: int, fsync: str, alg: str, audit: bool) -> dict[str, object]:
    with tempfile.TemporaryDirectory() as tmp:
        server = EmbeddedRedis(Path(tmp), password=None, appendfsync=fsync)
        server.start()
        try:
            client = redis.Redis.from_url(server.url)
            store = TaskStore(client, Sealer(Keyring([generate_key(alg)])), "bench", audit=audit)  # type: ignore[arg-type]
            specs = [TaskSpec.build(kind="noop", payload={"i": i}, priority=i % 3)
                     for i in range(batch)]
            ok = Outcome(ok=True)
            stage = {"submit": 0.0, "acquire": 0.0, "complete": 0.0}
            done = 0
            start = time.perf_counter()
            while done < tasks:
                n = min(batch, tasks - done)
                t0 = time.perf_counter()
                store.submit_many(specs[:n])
                t1 = time.perf_counter()
                leases = store.acquire("bench", n, 60)
                t2 = time.perf_counter()
                accepted = store.complete("bench", [(lease, ok) for lease in leases])
                t3 = time.perf_counter()
                assert len(leases) == n and all(accepted), "store lost or refused work"
                stage["submit"] += t1 - t0
                stage["acquire"] += t2 - t1
                stage["complete"] += t3 - t2
                done += n
            total = time.perf_counter() - start
            counts = store.counts()
            assert counts["succeeded"] == tasks, counts
            return {
                "tasks": tasks, "batch": batch, "fsync": fsync, "signing": alg, "audit": audit,
                "tasks_per_s": round(tasks / total),
                "stage_tasks_per_s": {k: round(tasks / v) for k, v in stage.items()},
                "stage_us_per_task": {k: round(v / tasks * 1e6, 1) for k, v in stage.items()},
                "seconds": round(total, 2),
            }
        finally:
            server.stop()


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--tasks", type=int, default=100_000)
    parser.add_argument("--batch", type=int, default=500)
    parser.add_argument("--fsync", choices=["always", "everysec", "no"], default="always")
    parser.add_argument("--alg", choices=ALGORITHMS, default="hmac-sha256")
    parser.add_argument("--no-audit", action="store_true")
    parser.add_argument("--json", action="store_true")
    args = parser.parse_args()
    report = run(args.tasks, args.batch, args.fsync, args.alg, not args.no_audit)
    if args.json:
        print(json.dumps(report))
    else:
        print(json.dumps(report, indent=2), file=sys.stdout)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
