"""Purging many finished tasks, and what it costs the rest of the system.

Runs raysys end to end on this machine (``raysys.start``), fills a second namespace on the same
Redis with ``--tasks`` succeeded tasks, then runs the no-op workload twice: once alone, and once
while ``raysys purge`` empties that namespace (in pages of 500, as retention does). Reports the
purge time and rate, the memory it gave back, and the no-op throughput in both runs.

Usage: python benchmarks/purge_bench.py [--tasks 1000000] [--noop 100000] [--json]
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
import threading
import time
from pathlib import Path
from typing import Any

import raysys
from raysys.bench.cluster_run import RunOptions, run_on_cluster
from raysys.bench.workload import noop_specs
from raysys.config import load_settings
from raysys.core import open_core
from raysys.ledger import CommitLedger

try:
    from fill import fill
except ImportError:  # run as benchmarks.purge_bench
    from benchmarks.fill import fill


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--tasks", type=int, default=1_000_000, help="finished tasks to purge")
    p.add_argument("--noop", type=int, default=100_000, help="tasks of each no-op run")
    p.add_argument("--workers", type=int, default=2)
    p.add_argument("--json", action="store_true")
    args = p.parse_args(argv)
    result = run(args.tasks, args.noop, args.workers)
    print(json.dumps(result, indent=None if args.json else 2))
    return 0 if result["purged"] == args.tasks and result["noop_during_purge"]["lost"] == 0 else 1


def run(tasks: int, noop: int, workers: int) -> dict[str, Any]:
    with tempfile.TemporaryDirectory(prefix="raysys-purgebench-") as tmp:
        data = str(Path(tmp) / "data")
        client = raysys.start(workers=workers, ledger=True, data_dir=data, dashboard=False)
        try:
            settings = load_settings(data_dir=data, namespace=client.namespace)
            core = open_core(settings)
            other = open_core(load_settings(data_dir=data, namespace="purgebench"))
            try:
                fill_s = fill(other.store, tasks, finished=True, label="finished: ")
                ledger = CommitLedger(core.client, client.namespace)
                options = RunOptions(tasks=noop, workers=workers)
                alone = run_on_cluster(client, ledger, noop_specs(noop), options)
                ledger.clear()
                memory_before = int(core.client.info("memory")["used_memory"])
                purge: dict[str, Any] = {}

                def purge_all() -> None:
                    began = time.perf_counter()
                    report = other.store.purge(0.0)
                    purge["end"] = time.perf_counter()
                    purge["seconds"] = purge["end"] - began
                    purge["removed"] = report.total

                purger = threading.Thread(target=purge_all)
                purger.start()
                during = run_on_cluster(client, ledger, noop_specs(noop), options)
                noop_end = time.perf_counter()
                purger.join()
                print(file=sys.stderr)
                memory_after = int(core.client.info("memory")["used_memory"])
                return {
                    "tasks": tasks, "fill_s": round(fill_s, 1),
                    "purged": purge["removed"], "purge_s": round(purge["seconds"], 1),
                    "purge_per_s": round(purge["removed"] / purge["seconds"]),
                    "memory_freed_mib": round((memory_before - memory_after) / 2**20, 1),
                    "noop_alone": _brief(alone),
                    "noop_during_purge": _brief(during),
                    # True: the whole second no-op run happened while the purge ran
                    "noop_inside_purge": noop_end <= purge["end"],
                }
            finally:
                other.close()
                core.close()
        finally:
            client.shutdown()


def _brief(report: dict[str, Any]) -> dict[str, Any]:
    return {k: report[k] for k in ("tasks", "tasks_per_s", "latency_ms", "lost",
                                   "duplicate_commits")}


if __name__ == "__main__":
    raise SystemExit(main())
