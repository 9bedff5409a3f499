"""Store alone, one process, batched: submit + acquire + complete N tasks; tasks/s per stage.

Starts its own Redis (the embedded default: AOF on, ``appendfsync always`` unless --fsync says
otherwise) in a temporary directory, so the figure includes durable writes.

Default mode is pipelined: one thread submits while another leases and commits (each with its
own connection), so Python work overlaps Redis work as it does across processes in production.
``--sequential`` runs the three stages one after another and gives each stage's cost alone.

Usage: python benchmarks/store_bench.py [--tasks 100000] [--batch 500] [--fsync always]
       [--alg hmac-sha256] [--no-audit] [--sequential] [--json]
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
import threading
import time
from collections.abc import Callable
from pathlib import Path

import redis

from raysys.core import Core
from raysys.models import Outcome, TaskSpec
from raysys.redis_server.embedded import EmbeddedRedis
from raysys.signing.envelope import Sealer
from raysys.signing.keyring import ALGORITHMS, Keyring, generate_key
from raysys.store import TaskStore


def run(tasks: int, batch: int, fsync: str, alg: str, audit: bool, pipelined: bool
        ) -> dict[str, object]:
    with tempfile.TemporaryDirectory() as tmp:
        server = EmbeddedRedis(Path(tmp), password=None, appendfsync=fsync)
        server.start()
        try:
            sealer = Sealer(Keyring([generate_key(alg)]))  # type: ignore[arg-type]
            def make() -> TaskStore:
                return Core.assemble(redis.Redis.from_url(server.url), sealer, "bench",
                                     audit=audit).store

            specs = [TaskSpec.build(kind="noop", payload={"i": i}, priority=i % 3)
                     for i in range(batch)]
            stage = {"submit": 0.0, "acquire": 0.0, "complete": 0.0}
            start = time.perf_counter()
            if pipelined:
                _pipelined(make, specs, tasks, batch, stage)
            else:
                _sequential(make(), specs, tasks, batch, stage)
            total = time.perf_counter() - start
            counts = make().counts()
            assert counts["succeeded"] == tasks, counts
            return {
                "tasks": tasks, "batch": batch, "fsync": fsync, "signing": alg, "audit": audit,
                "mode": "pipelined" if pipelined else "sequential",
                "tasks_per_s": round(tasks / total),
                "stage_us_per_task": {k: round(v / tasks * 1e6, 1) for k, v in stage.items()},
                "seconds": round(total, 2),
            }
        finally:
            server.stop()


def _sequential(store: TaskStore, specs: list[TaskSpec], tasks: int, batch: int,
                stage: dict[str, float]) -> None:
    """One thread: submit a batch, lease it, commit it. Stages do not overlap."""
    ok = Outcome(ok=True)
    done = 0
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


def _pipelined(make: Callable[[], TaskStore], specs: list[TaskSpec], tasks: int, batch: int,
               stage: dict[str, float]) -> None:
    """A submitting thread and a leasing/committing thread, each with its own connection:
    Python work in one overlaps Redis work for the other (two cores). A 0.5 ms GIL switch
    interval (CPython's default is 5 ms) lets a thread whose Redis reply has arrived resume
    promptly instead of waiting behind the other thread's Python work."""
    failure: list[BaseException] = []
    previous_interval = sys.getswitchinterval()
    sys.setswitchinterval(0.0005)

    def submitter() -> None:
        store, sent = make(), 0
        try:
            while sent < tasks:
                n = min(batch, tasks - sent)
                t0 = time.perf_counter()
                store.submit_many(specs[:n])
                stage["submit"] += time.perf_counter() - t0
                sent += n
        except BaseException as exc:  # reported by the main thread
            failure.append(exc)

    thread = threading.Thread(target=submitter)
    thread.start()
    store, ok, done = make(), Outcome(ok=True), 0
    while done < tasks and not failure:
        t0 = time.perf_counter()
        leases = store.acquire("bench", batch, 60)
        t1 = time.perf_counter()
        if leases:
            assert all(store.complete("bench", [(lease, ok) for lease in leases]))
            stage["complete"] += time.perf_counter() - t1
            stage["acquire"] += t1 - t0
            done += len(leases)
        else:
            time.sleep(0.0005)
    thread.join()
    sys.setswitchinterval(previous_interval)
    if failure:
        raise failure[0]


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--tasks", type=int, default=100_000)
    parser.add_argument("--batch", type=int, default=500)
    parser.add_argument("--fsync", choices=["always", "everysec", "no"], default="always")
    parser.add_argument("--alg", choices=ALGORITHMS, default="hmac-sha256")
    parser.add_argument("--no-audit", action="store_true")
    parser.add_argument("--sequential", action="store_true",
                        help="one thread, stage after stage (per-stage costs without overlap)")
    parser.add_argument("--json", action="store_true")
    args = parser.parse_args()
    report = run(args.tasks, args.batch, args.fsync, args.alg, not args.no_audit,
                 not args.sequential)
    if args.json:
        print(json.dumps(report))
    else:
        print(json.dumps(report, indent=2), file=sys.stdout)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
