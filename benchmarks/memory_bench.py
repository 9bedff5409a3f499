"""Redis memory for pending tasks: submit N ``noop`` tasks, nothing leases them, measure.

Starts its own Redis (the embedded default: AOF on, ``appendfsync always`` unless --fsync says
otherwise) in a temporary directory and stores N signed ``noop`` records through the real
submit path (``TaskStore.submit_many``: signing + ``submit.lua``). Reports Redis's
``used_memory`` growth per task and for the whole backlog, the resident size, how a task hash
is encoded, and whether 1,000,000 pending tasks fit under 1 GiB. A benchmark, not a test.

``--listpack-value BYTES`` sets ``hash-max-listpack-value`` (Redis default 64): a task hash
holds its ~450-byte signed record, so by default Redis stores it as a hash table; above the
record size it stays a compact listpack.

Usage: python benchmarks/memory_bench.py [--tasks 1000000] [--batch 5000] [--fsync always]
       [--listpack-value 1024] [--json]
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
import time
from pathlib import Path

import redis

from raysys.core import Core
from raysys.models import MAX_BATCH, TaskSpec
from raysys.redis_server.embedded import APPENDFSYNC_VALUES, EmbeddedRedis
from raysys.signing.envelope import Sealer
from raysys.signing.keyring import Keyring, generate_key

GIB = 2**30


def run(tasks: int, batch: int, fsync: str, listpack_value: int | None) -> dict[str, object]:
    config = [f"hash-max-listpack-value {listpack_value}"] if listpack_value else []
    with tempfile.TemporaryDirectory() as tmp:
        server = EmbeddedRedis(Path(tmp), password=None, appendfsync=fsync, config_lines=config)
        server.start()
        try:
            client = redis.Redis.from_url(server.url)
            store = Core.assemble(client, Sealer(Keyring([generate_key()])), "membench").store
            specs = [TaskSpec.build(kind="noop") for _ in range(batch)]
            base = _memory(client)
            started = time.perf_counter()
            done = 0
            while done < tasks:
                n = min(batch, tasks - done)
                store.submit_many(specs[:n])
                done += n
                if done % (batch * 20) == 0 or done == tasks:
                    rate = done / (time.perf_counter() - started)
                    print(f"\r{done:,}/{tasks:,} pending tasks stored ({rate:,.0f}/s)",
                          end="", file=sys.stderr, flush=True)
            print(file=sys.stderr)
            seconds = time.perf_counter() - started
            after = _memory(client)
            assert store.counts()["pending"] == tasks, "the store lost submissions"
            sample = next(client.scan_iter(match=store.keys.pattern()[:-1] + "t:*", count=100))
            grown = after["used_memory"] - base["used_memory"]
            per_task = grown / tasks
            return {
                "tasks": tasks,
                "fsync": fsync,
                "hash_max_listpack_value": listpack_value or 64,
                "task_hash_encoding": client.object("encoding", sample).decode(),
                "used_memory_mib": round(after["used_memory"] / 2**20, 1),
                "used_memory_rss_mib": round(after["used_memory_rss"] / 2**20, 1),
                "bytes_per_task": round(per_task, 1),
                "projected_1m_mib": round(per_task * 1_000_000 / 2**20, 1),
                "fits_1m_under_1gib": base["used_memory"] + per_task * 1_000_000 < GIB,
                "submit_tasks_per_s": round(tasks / seconds),
            }
        finally:
            server.stop()


def _memory(client: redis.Redis) -> dict[str, int]:
    info = client.info("memory")
    return {"used_memory": int(info["used_memory"]),
            "used_memory_rss": int(info["used_memory_rss"])}


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--tasks", type=int, default=1_000_000)
    parser.add_argument("--batch", type=int, default=5000)
    parser.add_argument("--fsync", choices=APPENDFSYNC_VALUES, default="always")
    parser.add_argument("--listpack-value", type=int, default=None,
                        help="hash-max-listpack-value for the server (default: Redis's 64)")
    parser.add_argument("--json", action="store_true")
    args = parser.parse_args()
    if not 1 <= args.batch <= MAX_BATCH or args.tasks < 1:
        parser.error(f"--tasks must be >= 1 and --batch within 1..{MAX_BATCH}")
    report = run(args.tasks, args.batch, args.fsync, args.listpack_value)
    if args.json:
        print(json.dumps(report))
    else:
        for key, value in report.items():
            print(f"{key:>24}: {value}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
