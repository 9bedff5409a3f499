"""Soak: a steady offered load for a long time with a short retention; Redis memory must level
off, and nothing may be lost, committed twice or quarantined.

Runs raysys end to end on this machine (``raysys.start``: Ray, the actors, the embedded Redis),
submits ``--rate`` ``noop`` tasks a second through the Coordinator for ``--minutes`` with
``RAYSYS_RETENTION_S=--retention`` (and the audit stream trimmed by the same age), and samples
Redis ``used_memory`` every ``--sample-s``. The commit ledger (lost / duplicate commits) lives
in a second Redis, so it does not weigh on the memory measured. Criteria (exit 1 otherwise):
after ``--warmup-min`` minutes every sample is within ``--tolerance`` (10 %) of their mean;
lost 0, duplicate commits 0, quarantined 0.

``--plot FILE.png`` draws used_memory over time (needs matplotlib: ``pip install -e .[bench]``).
The 30-minute run is by hand (docs/PERFORMANCE.md has its figures); tests/integration runs a
one-minute one.

Usage: python benchmarks/soak.py [--rate 1000] [--minutes 30] [--retention 60]
       [--workers 2] [--warmup-min 5] [--plot docs/soak-memory.png] [--json]
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import tempfile
import threading
import time
from pathlib import Path
from typing import Any

import redis

import raysys
from raysys.config import load_settings
from raysys.core import open_core
from raysys.ledger import CommitLedger
from raysys.models import TaskSpec
from raysys.redis_server.embedded import EmbeddedRedis


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--rate", type=float, default=1000.0, help="tasks offered per second")
    p.add_argument("--minutes", type=float, default=30.0)
    p.add_argument("--retention", type=float, default=60.0, help="RAYSYS_RETENTION_S")
    p.add_argument("--workers", type=int, default=2)
    p.add_argument("--sample-s", type=float, default=10.0)
    p.add_argument("--warmup-min", type=float, default=5.0)
    p.add_argument("--tolerance", type=float, default=0.10)
    p.add_argument("--plot", type=Path, help="write a PNG of used_memory over time")
    p.add_argument("--json", action="store_true")
    args = p.parse_args(argv)
    result = run(args)
    if args.plot is not None:
        plot(result["samples"], args, args.plot)
    summary = {k: v for k, v in result.items() if k != "samples"}
    print(json.dumps(result if args.json else summary, indent=None if args.json else 2))
    return 0 if result["passed"] else 1


def run(args: argparse.Namespace) -> dict[str, Any]:
    with tempfile.TemporaryDirectory(prefix="raysys-soak-") as tmp:
        ledger_server = EmbeddedRedis(Path(tmp) / "ledger", password=None, appendfsync="no")
        ledger_server.start()
        client = raysys.start(workers=args.workers, ledger=True, ledger_url=ledger_server.url,
                              data_dir=str(Path(tmp) / "data"), retention_s=args.retention,
                              audit_retention_s=args.retention, dashboard=False)
        try:
            return _soak(client, ledger_server.url, Path(tmp) / "data", args)
        finally:
            client.shutdown()
            ledger_server.stop()


def _soak(client: Any, ledger_url: str, data_dir: Path, args: argparse.Namespace,
          ) -> dict[str, Any]:
    settings = load_settings(data_dir=str(data_dir), namespace=client.namespace)
    core = open_core(settings)  # attaches to the embedded Redis the actors use
    samples: list[dict[str, float]] = []
    submitted: list[str] = []
    stop = threading.Event()
    started = time.monotonic()

    def sample() -> None:
        while not stop.wait(args.sample_s):
            info = core.client.info("memory")
            counts = core.store.counts()
            samples.append({"t_s": round(time.monotonic() - started, 1),
                            "used_memory": int(info["used_memory"]),
                            "tasks_in_redis": sum(counts.values()),
                            "submitted": len(submitted)})
            print(f"\r{samples[-1]['t_s']:7.0f} s  used_memory "
                  f"{samples[-1]['used_memory'] / 2**20:7.1f} MiB  tasks in Redis "
                  f"{samples[-1]['tasks_in_redis']:>8,}  submitted {len(submitted):>10,}",
                  end="", file=sys.stderr, flush=True)

    sampler = threading.Thread(target=sample, daemon=True)
    sampler.start()
    tick = 0.1
    per_tick = args.rate * tick
    owed = 0.0
    end = started + args.minutes * 60
    next_at = started
    while time.monotonic() < end:
        owed += per_tick
        n = int(owed)
        owed -= n
        if n:
            submitted += client.submit_specs([TaskSpec.build(kind="noop") for _ in range(n)])
        next_at += tick
        time.sleep(max(0.0, next_at - time.monotonic()))
    stop.set()
    sampler.join()
    print(file=sys.stderr)
    _drain(core, timeout_s=120)
    ledger = CommitLedger(redis.Redis.from_url(ledger_url), client.namespace)
    report = ledger.report(submitted)
    stats = core.store.stats()
    core.close()
    warm = [s["used_memory"] for s in samples if s["t_s"] >= args.warmup_min * 60]
    mean = statistics.fmean(warm) if warm else 0.0
    spread = max(abs(x - mean) / mean for x in warm) if warm and mean else float("inf")
    out = {
        "rate": args.rate, "minutes": args.minutes, "retention_s": args.retention,
        "submitted": len(submitted), "offered_per_s": round(len(submitted) / (
            args.minutes * 60), 1),
        "lost": report.lost, "duplicate_commits": report.duplicate_commits,
        "quarantined": stats.get("completed:quarantined", 0),
        "purged": stats.get("purged", 0),
        "used_memory_after_warmup_mib": {
            "mean": round(mean / 2**20, 2), "min": round(min(warm) / 2**20, 2) if warm else None,
            "max": round(max(warm) / 2**20, 2) if warm else None,
            "max_deviation": round(spread, 4)},
        "tolerance": args.tolerance,
        "samples": samples,
    }
    out["passed"] = bool(warm) and spread <= args.tolerance and report.lost == 0 and (
        report.duplicate_commits == 0) and out["quarantined"] == 0
    return out


def _drain(core: Any, timeout_s: float) -> None:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        counts = core.store.counts()
        if not any(counts.get(s, 0) for s in ("pending", "leased", "failed", "scheduled")):
            return
        time.sleep(0.5)


def plot(samples: list[dict[str, float]], args: argparse.Namespace, path: Path) -> None:
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        print("--plot needs matplotlib (pip install -e .[bench]); no plot written",
              file=sys.stderr)
        return
    t = [s["t_s"] / 60 for s in samples]
    mem = [s["used_memory"] / 2**20 for s in samples]
    fig, ax = plt.subplots(figsize=(8, 3.6), dpi=110)
    ax.plot(t, mem, color="#1f77b4", label="Redis used_memory")
    ax.axvline(args.warmup_min, color="grey", linestyle="--", linewidth=1, label="warm-up end")
    ax.set_xlabel("minutes")
    ax.set_ylabel("MiB")
    ax.set_ylim(bottom=0)
    ax.set_title(f"raysys soak: {args.rate:.0f} tasks/s, RAYSYS_RETENTION_S={args.retention:g}")
    ax.grid(alpha=0.3)
    ax.legend(loc="lower right")
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path)
    print(f"plot written to {path}", file=sys.stderr)


if __name__ == "__main__":
    raise SystemExit(main())
