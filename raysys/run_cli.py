"""``raysys demo`` and ``raysys bench``: a workload end to end on the actor system.

Both start everything on this machine (``raysys.start``): the embedded Redis in a private data
dir (or the configured Redis, under a fresh namespace dropped afterwards), a private local Ray
cluster, the Coordinator, Distributor and workers, and the HTTP app; then submit while the
actors work, show progress on stderr, and report DESIGN's fields. Exit 0 only if the commit
ledger accounts for every task with ``lost`` and ``duplicate_commits`` 0. Each process's log
file (``agent_system-<role>-<pid>.log``) is kept under ``<RAYSYS_DATA_DIR>/logs/<namespace>``.
"""

from __future__ import annotations

import argparse
import json
import shutil
import sys
import tempfile
import uuid
from pathlib import Path
from typing import Any

from raysys.cluster_cli import positive_int
from raysys.config import Settings
from raysys.embedded import APPENDFSYNC_VALUES
from raysys.errors import ValidationError
from raysys.keyring import ALGORITHMS, DEFAULT_ALGORITHM, Keyring, generate_key, write_keyring_file
from raysys.keyspace import drop_keys
from raysys.models import TaskSpec

EXIT_UNACCOUNTED = 1
WARMUP_MAX = 1000  # bench: noop tasks run (at the same rate) before the measured ones


def add_run_commands(sub: Any, positive_float: Any) -> None:
    p = sub.add_parser("demo", help="run a mixed workload end to end: embedded Redis, local Ray, "
                       "every actor")
    p.add_argument("--tasks", type=positive_int, default=2000)
    p.add_argument("--workers", type=positive_int, default=2)
    p.add_argument("--json", action="store_true", help="print one JSON report on stdout")
    p.set_defaults(handler=cmd_demo)

    p = sub.add_parser("bench", help="measure tasks/s and latency for noop tasks")
    p.add_argument("--tasks", type=positive_int, default=20_000)
    p.add_argument("--workers", type=positive_int, default=2)
    p.add_argument("--rate", type=positive_float, default=None, help="offered load, tasks/s")
    p.add_argument("--batch", type=positive_int, default=500, help="leases per assignment")
    p.add_argument("--fsync", choices=APPENDFSYNC_VALUES, default="always",
                   help="appendfsync of the embedded Redis (a configured one keeps its own)")
    p.add_argument("--signing", choices=ALGORITHMS, default=None,
                   help="algorithm of the run's own signing key (default hmac-sha256; not with "
                   "configured keys, which sign as they are)")
    p.add_argument("--json", action="store_true")
    p.set_defaults(handler=cmd_bench)


def cmd_demo(args: argparse.Namespace, settings: Settings) -> int:
    from raysys.cluster_run import RunOptions
    from raysys.workload import demo_specs

    options = RunOptions(tasks=args.tasks, workers=args.workers)
    return run_workload(settings, demo_specs(args.tasks), options, args.json, "demo")


def cmd_bench(args: argparse.Namespace, settings: Settings) -> int:
    from raysys.cluster_run import RunOptions
    from raysys.workload import noop_specs

    if args.signing is not None and _keys_configured(settings):
        raise ValidationError("--signing picks the algorithm of the bench's own key; with "
                              "RAYSYS_SIGNING_KEYS or RAYSYS_SIGNING_KEY_FILE set, the "
                              "configured keys sign (unset them, or drop --signing)")
    options = RunOptions(tasks=args.tasks, workers=args.workers, rate=args.rate,
                         batch=args.batch, fsync=args.fsync,
                         signing=args.signing or DEFAULT_ALGORITHM,
                         warmup=min(WARMUP_MAX, max(args.tasks // 20, 1)))
    return run_workload(settings, noop_specs(args.tasks), options, args.json, "bench")


def run_workload(settings: Settings, specs: list[TaskSpec], options: Any, as_json: bool,
                 what: str) -> int:
    """Start, run ``specs``, tear down, report; the CLI exit code."""
    import dataclasses

    from raysys.client import start
    from raysys.cluster_run import run_on_cluster
    from raysys.ledger import CommitLedger
    from raysys.runtime import freeze_heap, keyring_source, open_store
    from raysys.workload import Progress

    namespace = f"{what}-{uuid.uuid4().hex[:8]}"
    keep_logs = settings.data_dir / "logs" / namespace
    tmp = Path(tempfile.mkdtemp(prefix=f"raysys-{what}-"))
    run_settings = settings.model_copy(update={"data_dir": tmp})
    overrides: dict[str, Any] = {"data_dir": str(tmp), "namespace": namespace}
    if not _keys_configured(settings):
        # An ephemeral key for the run (its records never outlive it), as a file the actors read.
        key_file = tmp / "keys.json"
        write_keyring_file(key_file, Keyring([generate_key(options.signing)]))
        run_settings = run_settings.model_copy(update={"signing_key_file": key_file})
        overrides["signing_key_file"] = str(key_file)
    else:  # the configured keys sign: report their algorithm
        active = keyring_source(settings, create=False)().active
        options = dataclasses.replace(options, signing=active.alg)
    try:
        # Redis first: an unreachable or misconfigured one is one clear line, before Ray starts.
        with open_store(run_settings, namespace=namespace, appendfsync=options.fsync) as handle:
            if not handle.embedded:  # its appendfsync is the server's own; we cannot read it
                options = dataclasses.replace(options, fsync="server-configured")
            ledger = CommitLedger(handle.client, namespace)
            print(f"raysys {what}: {len(specs)} tasks, {options.workers} workers, "
                  f"{'embedded' if handle.embedded else 'configured'} Redis, namespace "
                  f"{namespace}; starting Ray and the actors...", file=sys.stderr)
            try:
                with start(options.workers, batch=options.batch, ledger=True,
                           **overrides) as client:
                    url = client.serve(settings.http_host, settings.http_port)
                    options = dataclasses.replace(options, serve=url is not None)
                    if url:
                        print(f"raysys {what}: health and metrics at {url}/health and "
                              f"{url}/metrics", file=sys.stderr)
                    warmup = warm_up(client, ledger, options)
                    freeze_heap()  # the driver's start-up heap: no 50 ms GC pass mid-run
                    report = run_on_cluster(client, ledger, specs, options,
                                            Progress(len(specs)),
                                            actor_pids=lambda: actor_pids(client))
                    if warmup is not None:
                        report["warmup"] = warmup
            finally:  # a configured Redis keeps no trace of the run, even a failed one
                if not handle.embedded:
                    drop_keys(handle.client, handle.store.keys.pattern())
                ledger.clear()
    finally:
        _keep_logs(tmp / "logs", keep_logs)
        shutil.rmtree(tmp, ignore_errors=True)
    runs = [report, report.get("warmup", {})]  # the warm-up's tasks count as much
    lost = sum(int(r.get("lost", 0)) for r in runs)
    duplicates = sum(int(r.get("duplicate_commits", 0)) for r in runs)
    accounted = lost == 0 and duplicates == 0
    if as_json:
        print(json.dumps(report))
    else:
        print_report(report)
    print(f"raysys {what}: logs in {keep_logs}", file=sys.stderr)
    if not accounted:
        print(f"raysys: error: {lost} tasks lost, {duplicates} duplicate commits",
              file=sys.stderr)
    return 0 if accounted else EXIT_UNACCOUNTED


def _keys_configured(settings: Settings) -> bool:
    """Signing keys come from the environment or a file (else a run makes its own)."""
    return settings.signing_keys is not None or settings.signing_key_file is not None


def warm_up(client: Any, ledger: Any, options: Any) -> dict[str, int] | None:
    """Run ``options.warmup`` noop tasks first (same rate, not measured); their accounting.

    The first calls of each process load scripts and fill caches; a benchmark measures the
    steady state after them. The warm-up's tasks are accounted for like the measured ones.
    """
    import dataclasses

    from raysys.cluster_run import run_on_cluster
    from raysys.workload import noop_specs

    if not options.warmup:
        return None
    print(f"raysys bench: warming up with {options.warmup} tasks", file=sys.stderr)
    report = run_on_cluster(client, ledger, noop_specs(options.warmup),
                            dataclasses.replace(options, tasks=options.warmup))
    return {key: int(report[key]) for key in ("tasks", "lost", "duplicate_commits")}


def actor_pids(client: Any) -> dict[str, int]:
    """Process id of the Coordinator, the Distributor and each worker (by worker id)."""
    import ray

    pids = dict(zip(("coordinator", "distributor"), ray.get(
        [client.coordinator.pid.remote(), client.distributor.pid.remote()],
        timeout=client.call_timeout_s), strict=True))
    pids.update({str(w["id"]): int(w["pid"]) for w in client.workers() if w.get("pid")})
    return pids


def print_report(report: dict[str, Any]) -> None:
    lat = report["latency_ms"]
    print(f"tasks {report['tasks']}: succeeded {report['succeeded']}, dead {report['dead']}, "
          f"cancelled {report['cancelled']}, quarantined {report['quarantined']}, "
          f"lost {report['lost']}, duplicate commits {report['duplicate_commits']}, "
          f"retries {report['retries']}")
    print(f"throughput {report['tasks_per_s']:,.0f} tasks/s; submit-to-start latency p50 "
          f"{lat['p50']} ms, p95 {lat['p95']} ms, p99 {lat['p99']} ms")
    print("settings " + ", ".join(f"{k}={v}" for k, v in report["settings"].items()))


def _keep_logs(source: Path, target: Path) -> None:
    if not source.is_dir():
        return
    try:
        target.mkdir(parents=True, exist_ok=True)
        for path in source.iterdir():
            shutil.copy2(path, target / path.name)
    except OSError as exc:
        print(f"raysys: warning: could not keep the logs in {target}: {exc}", file=sys.stderr)
