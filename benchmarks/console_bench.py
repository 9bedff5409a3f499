"""What the console's pages cost the server with a million tasks stored, and what /metrics and
/health cost while the system runs near full speed.

1. Fills the run's namespace (through the store's own scripts: signed records) with ``--tasks``
   tasks: 94 % succeeded (kind ``noop``), 1 % dead (kind ``report``), 5 % pending (``noop``,
   no workers to run them yet). Then serves the app and times, over one keep-alive connection
   on loopback, each request the console makes: the overview (``/stats``, ``/workers``,
   ``/health``), a filtered task page (dead of kind ``report``; succeeded; pending of kind
   ``noop``; page 2 through the cursor) and a task's page (``/tasks/{id}`` and its history).
   Times are the client's, so they include HTTP on loopback: an upper bound of server time.
2. Starts ``--workers`` workers and runs the no-op bench (as ``raysys bench``: leases in
   batches of 500) at ``--rate`` tasks/s on the same
   system while ``/metrics`` and ``/health`` are fetched every 50 ms; reports their latency and
   the run's achieved rate.

Usage: python benchmarks/console_bench.py [--tasks 1000000] [--requests 300] [--rate 10000]
"""

from __future__ import annotations

import argparse
import http.client
import json
import os
import secrets
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
from raysys.models import Outcome, TaskSpec
from raysys.redis_server.binary import free_port
from raysys.store import TaskStore

try:
    from fill import fill
except ImportError:  # run as benchmarks.console_bench
    from benchmarks.fill import fill

BATCH = 5000


def fill_dead(store: TaskStore, n: int) -> None:
    """``n`` tasks of kind ``report`` that failed their only attempt (``dead``)."""
    spec = TaskSpec.build(kind="report", payload={"day": 1}, max_attempts=1)
    for done in range(0, n, BATCH):
        k = min(BATCH, n - done)
        store.submit_many([spec] * k)
        leases = store.acquire("filler", k, 3600)
        store.complete("filler", [(lease, Outcome(ok=False, error="report failed"))
                                  for lease in leases])


def percentiles(samples: list[float]) -> dict[str, float]:
    ordered = sorted(samples)
    pick = lambda q: ordered[min(len(ordered) - 1, int(q * len(ordered)))]  # noqa: E731
    return {"n": len(ordered), "p50_ms": round(pick(0.50) * 1000, 1),
            "p95_ms": round(pick(0.95) * 1000, 1), "p99_ms": round(pick(0.99) * 1000, 1),
            "max_ms": round(ordered[-1] * 1000, 1)}


class Timer:
    """GET requests over one keep-alive connection, each timed."""

    def __init__(self, port: int, token: str) -> None:
        self.conn = http.client.HTTPConnection("127.0.0.1", port, timeout=30)
        self.headers = {"Authorization": f"Bearer {token}"}

    def get(self, path: str) -> tuple[float, Any]:
        began = time.perf_counter()
        self.conn.request("GET", path, headers=self.headers)
        resp = self.conn.getresponse()
        body = resp.read()
        took = time.perf_counter() - began
        if resp.status != 200:
            raise RuntimeError(f"GET {path}: {resp.status} {body[:200]!r}")
        ctype = resp.getheader("content-type", "")
        return took, json.loads(body) if ctype.startswith("application/json") else body

    def many(self, path: str, n: int) -> dict[str, float]:
        return percentiles([self.get(path)[0] for _ in range(n)])


def console_pages(timer: Timer, n: int) -> dict[str, dict[str, float]]:
    _, dead = timer.get("/tasks?state=dead&kind=report&limit=50")
    task = dead["tasks"][0]["id"]
    cursor = dead["cursor"]
    return {
        "overview: GET /stats": timer.many("/stats", n),
        "overview: GET /workers": timer.many("/workers", n),
        "overview: GET /health": timer.many("/health", n),
        "tasks: dead of kind report": timer.many("/tasks?state=dead&kind=report&limit=50", n),
        "tasks: dead of kind report, page 2": timer.many(
            f"/tasks?state=dead&kind=report&limit=50&cursor={cursor}", n),
        "tasks: succeeded": timer.many("/tasks?state=succeeded&limit=50", n),
        "tasks: pending of kind noop": timer.many("/tasks?state=pending&kind=noop&limit=50", n),
        "tasks: all, newest first": timer.many("/tasks?limit=50", n),
        "task page: GET /tasks/{id}": timer.many(f"/tasks/{task}", n),
        "task page: GET /tasks/{id}/history": timer.many(f"/tasks/{task}/history", n),
    }


def probe_during(timer: Timer, stop: threading.Event, out: dict[str, list[float]]) -> None:
    while not stop.is_set():
        for path in ("/metrics", "/health"):
            out[path].append(timer.get(path)[0])
        stop.wait(0.05)


def run(tasks: int, requests: int, rate: float, load: int, workers: int) -> dict[str, Any]:
    token = secrets.token_hex(24)
    os.environ["RAYSYS_API_TOKEN"] = token  # the app's replica inherits it at ray.init
    with tempfile.TemporaryDirectory(prefix="raysys-consolebench-") as tmp:
        data = str(Path(tmp) / "data")
        client = raysys.start(workers=0, ledger=True, data_dir=data, dashboard=False)
        try:
            core = open_core(load_settings(data_dir=data, namespace=client.namespace))
            dead = max(1, tasks // 100)
            pending = tasks * 5 // 100
            fill_s = fill(core.store, tasks - dead - pending, finished=True, label="succeeded: ")
            fill_dead(core.store, dead)
            fill(core.store, pending, finished=False, label="pending: ")
            memory = int(core.client.info("memory")["used_memory"])
            port = free_port()
            client.serve("127.0.0.1", port)
            timer = Timer(port, token)
            time.sleep(12)  # the sampler's first two samples: /stats has a series to read
            pages = console_pages(timer, requests)
            probes: dict[str, list[float]] = {"/metrics": [], "/health": []}
            client.scale(workers)
            while client.counts().get("pending", 0) > 0:  # the stored pending ones run first:
                time.sleep(0.5)  # the load run counts finished tasks to know it is done
            stop = threading.Event()
            prober = threading.Thread(target=probe_during, args=(Timer(port, token), stop,
                                                                  probes))
            ledger = CommitLedger(core.client, client.namespace)
            prober.start()
            report = run_on_cluster(client, ledger, noop_specs(load),
                                    RunOptions(tasks=load, workers=workers, rate=rate,
                                               batch=500))
            stop.set()
            prober.join()
            core.close()
            return {"tasks_stored": tasks, "fill_s": round(fill_s, 1),
                    "redis_used_mib": round(memory / 2**20), "console": pages,
                    "under_load": {"offered_per_s": rate, "achieved_per_s":
                                   report["tasks_per_s"], "lost": report["lost"],
                                   "duplicate_commits": report["duplicate_commits"],
                                   **{p: percentiles(v) for p, v in probes.items()}}}
        finally:
            client.shutdown()


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--tasks", type=int, default=1_000_000, help="tasks stored (default 1e6)")
    p.add_argument("--requests", type=int, default=300, help="requests timed per page")
    p.add_argument("--rate", type=float, default=10_000, help="offered no-op load, tasks/s")
    p.add_argument("--load", type=int, default=100_000, help="no-op tasks of the load run")
    p.add_argument("--workers", type=int, default=2)
    args = p.parse_args(argv)
    result = run(args.tasks, args.requests, args.rate, args.load, args.workers)
    print(json.dumps(result, indent=2))
    worst = max(v["p99_ms"] for v in result["console"].values())
    print(f"slowest console request p99: {worst} ms (goal 200 ms)", file=sys.stderr)
    return 0 if result["under_load"]["lost"] == 0 else 1


if __name__ == "__main__":
    raise SystemExit(main())
