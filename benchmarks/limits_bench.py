"""How fast a cancel reaches a running handler, and how precisely time limits stop tasks.

A benchmark, not a test: it starts raysys on this machine (``raysys.start``, embedded Redis),
runs three measurements and prints p50/p99 (ms):

- **cancel**: a running handler waits on ``ctx.cancelled``; ``client.cancel(id)`` is called;
  latency = cancel call -> the handler saw the signal (its own clock, one machine).
- **inline limit**: a handler with a 0.5 s limit waits on ``ctx.cancelled``; lateness = the
  signal's arrival - (start + 0.5 s).
- **Ray-task limit**: a Ray-task kind (``num_cpus=0.1``) with a 0.5 s limit sleeps; lateness =
  its process gone (polled every 2 ms) - (start + 0.5 s).

Usage: python benchmarks/limits_bench.py [--tasks 100] [--json]   (from the repository root)
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import redis

HANDLERS = "benchmarks.limits_handlers"


def events(client: redis.Redis) -> list[dict[str, Any]]:
    return [json.loads(raw) for raw in client.lrange("limits", 0, -1)]


def wait_for(predicate: Any, timeout: float) -> None:
    deadline = time.monotonic() + timeout
    while not predicate():
        if time.monotonic() > deadline:
            raise TimeoutError("the benchmark's tasks did not get there in time")
        time.sleep(0.005)


def pct(values: list[float]) -> dict[str, float]:
    ordered = sorted(values)
    pick = lambda q: ordered[min(len(ordered) - 1, int(q * len(ordered)))]  # noqa: E731
    return {"n": len(values), "p50": round(pick(0.5), 1), "p99": round(pick(0.99), 1),
            "max": round(ordered[-1], 1), "mean": round(statistics.fmean(values), 1)}


def cancel_latency(client: Any, rec: redis.Redis, n: int) -> dict[str, float]:
    from raysys.models import TaskSpec

    rec.delete("limits")
    ids = client.submit_specs([TaskSpec.build(kind="limits.wait", payload={"s": 60})] * n)
    wait_for(lambda: sum(e["ev"] == "start" for e in events(rec)) >= n, 120)
    asked = {}
    for task_id in ids:
        asked[task_id] = time.time()
        client.cancel(task_id)
    wait_for(lambda: sum(e["ev"] == "told" for e in events(rec)) >= n, 60)
    told = {e["task"]: e["t"] for e in events(rec) if e["ev"] == "told"}
    return pct([(told[t] - asked[t]) * 1000 for t in ids])


def inline_limit(client: Any, rec: redis.Redis, n: int) -> dict[str, float]:
    from raysys.models import TaskSpec

    rec.delete("limits")
    client.submit_specs([TaskSpec.build(kind="limits.wait", payload={"s": 60},
                                        timeout_s=0.5)] * n)
    wait_for(lambda: sum(e["ev"] == "told" for e in events(rec)) >= n, 120)
    seen = events(rec)
    start = {e["task"]: e["t"] for e in seen if e["ev"] == "start"}
    return pct([(e["t"] - start[e["task"]] - 0.5) * 1000 for e in seen if e["ev"] == "told"])


def ray_limit(client: Any, rec: redis.Redis, n: int) -> dict[str, float]:
    from raysys.models import TaskSpec

    rec.delete("limits")
    late: list[float] = []
    for _ in range(n):  # one at a time: each process is watched from its start
        client.submit_specs([TaskSpec.build(kind="limits.ray")])
        wait_for(lambda: any(e["ev"] == "start" for e in events(rec)), 60)
        start = next(e for e in events(rec) if e["ev"] == "start")
        while _alive(start["pid"]):
            time.sleep(0.002)
        late.append((time.time() - start["t"] - 0.5) * 1000)
        rec.delete("limits")
    return pct(late)


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
        return Path(f"/proc/{pid}/stat").read_text().split()[2] != "Z"
    except (ProcessLookupError, FileNotFoundError):
        return False


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--tasks", type=int, default=100)
    parser.add_argument("--json", action="store_true")
    args = parser.parse_args()
    import raysys
    from raysys.redis_server.embedded import EmbeddedRedis

    with tempfile.TemporaryDirectory(prefix="lb-") as tmp:
        record_server = EmbeddedRedis(Path(tmp) / "rec", password=None, appendfsync="no")
        record_server.start()
        os.environ["LIMITS_BENCH_REDIS_URL"] = record_server.url
        rec = redis.Redis.from_url(record_server.url)
        client = raysys.start(2, data_dir=Path(tmp) / "data", namespace="limits",
                              handlers=HANDLERS, concurrency=max(16, args.tasks // 2 + 1),
                              dashboard=False)
        try:
            report = {"cancel_ms": cancel_latency(client, rec, args.tasks),
                      "inline_limit_late_ms": inline_limit(client, rec, args.tasks),
                      "ray_limit_late_ms": ray_limit(client, rec, max(args.tasks // 5, 5))}
        finally:
            client.shutdown()
            record_server.stop()
    if args.json:
        print(json.dumps(report))
    else:
        for name, figures in report.items():
            print(f"{name:>22}: " + ", ".join(f"{k} {v}" for k, v in figures.items()))
    return 0


if __name__ == "__main__":
    sys.exit(main())
