"""Namespaces as shards: one Redis primary each, tasks routed by key, run side by side.

The design of docs/SCALING.md, measured at the scale of this machine: ``--shards K`` Redis
servers (AOF ``appendfsync always``), one namespace on each, and one driver process per shard
running the store's pipelined submit + lease + commit (``store_bench``). Every task's key (its
idempotency key) is routed to a shard by CRC32, the way a routing client would; the aggregate
tasks/s and each server's Redis CPU per task are reported. Run it with 1 and 2 shards to see what
a second primary adds (on two cores the drivers and servers share the same two cores: the
aggregate shows this machine's ceiling, not Redis's).

Usage: python benchmarks/shards_bench.py [--shards 2] [--tasks 100000] [--batch 500] [--json]
"""

from __future__ import annotations

import argparse
import json
import multiprocessing
import sys
import tempfile
import time
import zlib
from pathlib import Path
from typing import Any

import redis

from raysys.core import Core
from raysys.models import TaskSpec
from raysys.redis_server.embedded import EmbeddedRedis
from raysys.signing.envelope import Sealer
from raysys.signing.keyring import Keyring, generate_key

sys.path.insert(0, str(Path(__file__).resolve().parent))
from store_bench import _pipelined  # a sibling script, not a package

NO_AOF_REWRITE = ("--auto-aof-rewrite-percentage", "0")  # the AOF's growth is one figure


def shard_of(key: str, shards: int) -> int:
    """The shard a task's key routes to (the routing client's whole rule)."""
    return zlib.crc32(key.encode()) % shards


def drive(url: str, tasks: int, batch: int, out: Any) -> None:
    """One shard's driver process: ``tasks`` through the store on ``url``; (tasks, seconds)."""
    sealer = Sealer(Keyring([generate_key()]))

    def make() -> Any:
        return Core.assemble(redis.Redis.from_url(url), sealer, "shard").store

    specs = [TaskSpec.build(kind="noop", payload={"i": i}) for i in range(batch)]
    stage = {"submit": 0.0, "acquire": 0.0, "complete": 0.0}
    began = time.perf_counter()
    _pipelined(make, specs, tasks, batch, stage)
    out.put((tasks, time.perf_counter() - began))


def cpu_s(port: int) -> float:
    with redis.Redis(port=port) as conn:
        info = conn.info("cpu")
    return float(info["used_cpu_user"]) + float(info["used_cpu_sys"])


def aof_bytes(port: int) -> int:
    with redis.Redis(port=port) as conn:
        return int(conn.info("persistence")["aof_current_size"])


def run(shards: int, tasks: int, batch: int) -> dict[str, Any]:
    keys = [f"task-{i}" for i in range(tasks)]
    share = [0] * shards
    for key in keys:
        share[shard_of(key, shards)] += 1
    with tempfile.TemporaryDirectory() as tmp:
        servers = [EmbeddedRedis(Path(tmp) / f"shard-{i}", password=None, appendfsync="always",
                                 extra_args=NO_AOF_REWRITE) for i in range(shards)]
        for server in servers:
            server.start()
        try:
            cpu = [cpu_s(s.port) for s in servers]
            aof = [aof_bytes(s.port) for s in servers]
            out: Any = multiprocessing.get_context("spawn").Queue()
            procs = [multiprocessing.get_context("spawn").Process(
                target=drive, args=(s.url, n, batch, out)) for s, n in zip(servers, share,
                                                                         strict=True)]
            began = time.perf_counter()
            for proc in procs:
                proc.start()
            results = [out.get(timeout=1800) for _ in procs]
            wall = time.perf_counter() - began
            for proc in procs:
                proc.join()
            cpu = [cpu_s(s.port) - c for s, c in zip(servers, cpu, strict=True)]
            aof = [aof_bytes(s.port) - a for s, a in zip(servers, aof, strict=True)]
        finally:
            for server in servers:
                server.stop()
    return {"shards": shards, "tasks": tasks, "batch": batch, "per_shard": share,
            "tasks_per_s": round(tasks / wall),
            "per_shard_tasks_per_s": [round(n / s) for n, s in results],
            "redis_cpu_us_per_task": [round(c / n * 1e6, 1) for c, n in zip(cpu, share,
                                                                           strict=True)],
            "aof_bytes_per_task": round(sum(aof) / tasks)}


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--shards", type=int, default=2)
    parser.add_argument("--tasks", type=int, default=100_000)
    parser.add_argument("--batch", type=int, default=500)
    parser.add_argument("--json", action="store_true")
    args = parser.parse_args()
    if args.shards < 1:
        print("--shards must be 1 or more", file=sys.stderr)
        return 2
    report = run(args.shards, args.tasks, args.batch)
    print(json.dumps(report, indent=None if args.json else 2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
