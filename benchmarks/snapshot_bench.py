"""Snapshots of many tasks: save and restore time, how long writes paused, the longest single
script, and what a writer waiting on the barrier saw.

Starts its own Redis (the embedded default, ``appendfsync everysec`` here: the figure is the
snapshot's, not the fsync's), fills one namespace with ``--tasks`` signed tasks (``--finished``
of them run to succeeded), saves a snapshot to a file while a writer submits a task every 20 ms
(its longest submit call is the pause it felt), deletes the namespace, restores the file and
checks the counts came back.

Usage: python benchmarks/snapshot_bench.py [--tasks 1000000] [--finished 0.5] [--json]
"""

from __future__ import annotations

import argparse
import json
import tempfile
import threading
import time
from pathlib import Path
from typing import Any

import redis

from raysys.core import Core
from raysys.models import TaskSpec
from raysys.redis_server.embedded import EmbeddedRedis
from raysys.signing.envelope import Sealer
from raysys.signing.keyring import Keyring, generate_key
from raysys.snapshots import SnapshotManager
from raysys.store.keyspace import drop_keys, glob_escape

try:
    from fill import fill
except ImportError:  # run as benchmarks.snapshot_bench
    from benchmarks.fill import fill


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--tasks", type=int, default=1_000_000)
    p.add_argument("--finished", type=float, default=0.5, help="share run to succeeded")
    p.add_argument("--json", action="store_true")
    args = p.parse_args(argv)
    result = run(args.tasks, args.finished)
    print(json.dumps(result, indent=None if args.json else 2))
    return 0 if result["restored_counts_match"] else 1


def run(tasks: int, finished_share: float) -> dict[str, Any]:
    with tempfile.TemporaryDirectory(prefix="raysys-snapbench-") as tmp:
        server = EmbeddedRedis(Path(tmp) / "redis", password=None, appendfsync="everysec")
        server.start()
        try:
            client = redis.Redis.from_url(server.url)
            core = Core.assemble(client, Sealer(Keyring([generate_key()])), "snapbench")
            store = core.store
            done = int(tasks * finished_share)
            fill_s = fill(store, done, finished=True, label="finished: ")
            fill_s += fill(store, tasks - done, finished=False, label="pending: ")
            counts = store.counts()
            memory = int(client.info("memory")["used_memory"])
            manager = SnapshotManager(core)
            writer = _Writer(store)
            writer.start()
            info = manager.save(out=Path(tmp) / "snap.rsnap", keep=False)
            saved = dict(manager.last_timing)
            writer.stop.set()
            writer.join()
            drop_keys(client, glob_escape(core.keys.prefix) + "*")
            began = time.perf_counter()
            manager.restore(Path(tmp) / "snap.rsnap")
            restored = dict(manager.last_timing)
            restored_counts = store.counts()
            return {
                "tasks": tasks, "keys": info.keys, "fill_s": round(fill_s, 1),
                "redis_used_memory_mib": round(memory / 2**20, 1),
                "file_mib": round(info.data_bytes / 2**20, 1),
                "save_s": round(saved["total_s"], 2),
                "save_writes_paused_s": round(saved["paused_s"], 2),
                "save_longest_script_ms": round(saved["longest_script_s"] * 1000, 1),
                "writer_longest_submit_ms": round(writer.longest * 1000, 1),
                "writer_submits_during_save": writer.count,
                "restore_s": round(time.perf_counter() - began, 2),
                "restore_longest_script_ms": round(restored["longest_script_s"] * 1000, 1),
                "tasks_before_save": sum(counts.values()),
                "restored_counts_match": restored_counts == info.counts,
            }
        finally:
            server.stop()


class _Writer(threading.Thread):
    """Submits one task every 20 ms; the longest call is the pause a client felt."""

    def __init__(self, store: Any) -> None:
        super().__init__(daemon=True)
        self.store = store
        self.stop = threading.Event()
        self.longest = 0.0
        self.count = 0

    def run(self) -> None:
        spec = TaskSpec.build(kind="noop")
        while not self.stop.wait(0.02):
            began = time.perf_counter()
            self.store.submit(spec)
            self.longest = max(self.longest, time.perf_counter() - began)
            self.count += 1


if __name__ == "__main__":
    raise SystemExit(main())
