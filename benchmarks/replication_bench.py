"""What replicated acknowledgements cost, and the ceiling of one Redis primary.

Starts a primary and one replica (both AOF ``appendfsync always``, as the manifests run them)
in a temporary directory, then, side by side in one run (alternating, so a slow moment of the
machine does not favour one side):

- **store**: the store alone (``store_bench``'s pipelined submit + lease + commit, no Ray) at
  several batch sizes, with ``RAYSYS_REDIS_MIN_REPLICAS`` 0 and 1: tasks/s, and Redis CPU per
  task (the primary's ``used_cpu_user + used_cpu_sys`` over the run, divided by the tasks: what
  one task costs the one process every write goes through);
- **end to end**: ``raysys bench`` (Ray actors, no-op handler) against the primary, with
  ``RAYSYS_REDIS_MIN_REPLICAS`` 0 and 1: throughput, and submit-to-start latency at an offered
  1,000 tasks/s.

Usage: python benchmarks/replication_bench.py [--tasks 50000] [--batches 10,100,500]
       [--e2e-tasks 30000] [--rate-tasks 10000] [--rounds 2] [--json]
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import redis

from raysys.config import load_settings
from raysys.core import Core
from raysys.models import TaskSpec
from raysys.redis_server.embedded import EmbeddedRedis
from raysys.signing.envelope import Sealer
from raysys.signing.keyring import Keyring, generate_key

sys.path.insert(0, str(Path(__file__).resolve().parent))
from store_bench import _pipelined  # a sibling script, not a package


def start_pair(root: Path) -> tuple[EmbeddedRedis, EmbeddedRedis]:
    primary = EmbeddedRedis(root / "primary", password=None, appendfsync="always")
    primary.start()
    replica = EmbeddedRedis(root / "replica", password=None, appendfsync="always",
                            config_lines=[f"replicaof 127.0.0.1 {primary.port}"])
    replica.start()
    with redis.Redis(port=primary.port) as conn:
        deadline = time.monotonic() + 60
        while conn.info("replication").get("connected_slaves", 0) < 1:
            if time.monotonic() > deadline:
                raise SystemExit("the replica did not connect to the primary in 60 s")
            time.sleep(0.2)
    return primary, replica


def redis_cpu_s(port: int) -> float:
    with redis.Redis(port=port) as conn:
        info = conn.info("cpu")
    return float(info["used_cpu_user"]) + float(info["used_cpu_sys"])


def store_run(primary: EmbeddedRedis, tasks: int, batch: int, replicas: int
              ) -> dict[str, Any]:
    """The pipelined store benchmark on a fresh namespace of ``primary``."""
    sealer = Sealer(Keyring([generate_key()]))
    namespace = f"repl-{batch}-{replicas}-{time.monotonic_ns()}"
    settings = load_settings(namespace=namespace, redis_min_replicas=replicas)

    def make() -> Any:
        return Core.assemble(redis.Redis.from_url(primary.url), sealer, namespace,
                             settings=settings).store

    specs = [TaskSpec.build(kind="noop", payload={"i": i}) for i in range(batch)]
    stage = {"submit": 0.0, "acquire": 0.0, "complete": 0.0}
    cpu = redis_cpu_s(primary.port)
    began = time.perf_counter()
    _pipelined(make, specs, tasks, batch, stage)
    seconds = time.perf_counter() - began
    cpu = redis_cpu_s(primary.port) - cpu
    assert make().counts()["succeeded"] == tasks
    return {"batch": batch, "min_replicas": replicas, "tasks": tasks,
            "tasks_per_s": round(tasks / seconds), "redis_cpu_us_per_task":
            round(cpu / tasks * 1e6, 1), "redis_cpu_share": round(cpu / seconds, 2)}


def bench_run(primary: EmbeddedRedis, replicas: int, args: list[str]) -> dict[str, Any]:
    """``raysys bench --json ARGS`` against ``primary`` with MIN_REPLICAS ``replicas``."""
    env = {**os.environ, "RAYSYS_REDIS_URL": primary.url,
           "RAYSYS_REDIS_MIN_REPLICAS": str(replicas)}
    command = [str(Path(sys.executable).parent / "raysys"), "bench", "--json", *args]
    out = subprocess.run(command, env=env, capture_output=True, text=True, check=False,
                         timeout=1800)
    if out.returncode != 0:
        raise SystemExit(f"raysys bench failed ({out.returncode}): {out.stderr[-2000:]}")
    report = json.loads(out.stdout)
    return {"min_replicas": replicas, "tasks": report["tasks"], "lost": report["lost"],
            "duplicate_commits": report["duplicate_commits"],
            "tasks_per_s": report["tasks_per_s"], "latency_ms": report["latency_ms"]}


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--tasks", type=int, default=50_000, help="store tasks per run")
    parser.add_argument("--batches", default="10,100,500")
    parser.add_argument("--e2e-tasks", type=int, default=30_000)
    parser.add_argument("--rate-tasks", type=int, default=10_000)
    parser.add_argument("--rounds", type=int, default=2)
    parser.add_argument("--json", action="store_true")
    args = parser.parse_args()
    batches = [int(b) for b in args.batches.split(",")]
    rows: dict[str, list[dict[str, Any]]] = {"store": [], "throughput": [], "latency": []}
    with tempfile.TemporaryDirectory() as tmp:
        primary, replica = start_pair(Path(tmp))
        try:
            for _ in range(args.rounds):
                for batch in batches:
                    for replicas in (0, 1):
                        rows["store"].append(store_run(primary, args.tasks, batch, replicas))
                        _say(rows["store"][-1])
                for replicas in (0, 1):
                    rows["throughput"].append(bench_run(
                        primary, replicas, ["--tasks", str(args.e2e_tasks)]))
                    _say(rows["throughput"][-1])
                    rows["latency"].append(bench_run(
                        primary, replicas, ["--tasks", str(args.rate_tasks), "--rate", "1000"]))
                    _say(rows["latency"][-1])
        finally:
            replica.stop()
            primary.stop()
    print(json.dumps(rows, indent=2) if args.json else _table(rows))
    return 0


def _say(row: dict[str, Any]) -> None:
    print(json.dumps(row), file=sys.stderr, flush=True)


def _table(rows: dict[str, list[dict[str, Any]]]) -> str:
    lines = ["store: batch, MIN_REPLICAS, tasks/s, Redis CPU µs/task"]
    lines += [f"  {r['batch']:>5} {r['min_replicas']} {r['tasks_per_s']:>8} "
              f"{r['redis_cpu_us_per_task']:>7}" for r in rows["store"]]
    lines.append("end to end: MIN_REPLICAS, tasks/s | latency p50/p95/p99 ms at 1,000/s")
    for thr, lat in zip(rows["throughput"], rows["latency"], strict=True):
        ms = lat["latency_ms"]
        lines.append(f"  {thr['min_replicas']} {thr['tasks_per_s']:>9} | "
                     f"{ms.get('p50')}/{ms.get('p95')}/{ms.get('p99')}")
    return "\n".join(lines)


if __name__ == "__main__":
    sys.exit(main())
