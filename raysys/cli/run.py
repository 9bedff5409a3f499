"""``raysys demo`` and ``raysys bench``: a workload end to end on the actor system.

Both start everything on this machine (``raysys.start``): the embedded Redis in a private data
dir (or the configured Redis, under a fresh namespace dropped afterwards), a private local Ray
cluster, the Coordinator, Distributor and workers, and the HTTP app; then submit while the
actors work, show progress on stderr, and report DESIGN's fields. Exit 0 only if the commit
ledger accounts for every task with ``lost`` and ``duplicate_commits`` 0. Each process's log
file (``agent_system-<role>-<pid>.log``) is kept under ``<RAYSYS_DATA_DIR>/logs/<namespace>``.

``demo`` starts Ray with its dashboard (127.0.0.1, a free port; ``--no-dashboard``: without),
prints its URL and puts it in the report (``dashboard_url``); ``demo --keep`` stays up after the
report, printing the console, health, metrics and dashboard URLs, until Ctrl-C (exit 130, after
a clean shutdown). ``bench`` runs without the dashboard.
"""

from __future__ import annotations

import argparse
import dataclasses
import shutil
import sys
import tempfile
import time
import uuid
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import TYPE_CHECKING, Any, NoReturn, cast

from raysys.actor_config import DEFAULT_CONCURRENCY
from raysys.cli.common import EXIT_UNACCOUNTED, add_json_flag, emit, positive_float, positive_int
from raysys.config import Settings
from raysys.errors import ValidationError
from raysys.models import TaskSpec, parse_json_payload
from raysys.redis_server.embedded import APPENDFSYNC_VALUES
from raysys.signing.keyring import (
    ALGORITHMS,
    DEFAULT_ALGORITHM,
    Algorithm,
    Keyring,
    generate_key,
    write_keyring_file,
)
from raysys.signing.keysource import load_keyring

if TYPE_CHECKING:
    from raysys.bench.cluster_run import RunOptions
    from raysys.client import Client
    from raysys.ledger import CommitLedger

WARMUP_MAX = 1000  # bench: noop tasks run (at the same rate) before the measured ones


def register(sub: Any) -> None:
    p = sub.add_parser("demo", help="run a mixed workload end to end: embedded Redis, local Ray, "
                       "every actor")
    p.add_argument("--tasks", type=positive_int, default=2000,
                   help="tasks to submit (default 2000)")
    p.add_argument("--workers", type=positive_int, default=2, help="worker actors (default 2)")
    add_concurrency_flag(p)
    p.add_argument("--json", action="store_true", help="print one JSON report on stdout")
    p.add_argument("--keep", action="store_true",
                   help="after the run, stay up (console, health, metrics and dashboard URLs "
                   "on stderr) until Ctrl-C; then shut down and exit 130")
    p.add_argument("--no-dashboard", dest="dashboard", action="store_false",
                   help="start Ray without its dashboard (default: on 127.0.0.1, a free port)")
    p.set_defaults(handler=cmd_demo)

    p = sub.add_parser("bench", help="measure tasks/s and latency (noop tasks, or any kind)")
    p.add_argument("--tasks", type=positive_int, default=20_000,
                   help="measured tasks (default 20000)")
    p.add_argument("--kind", default="noop", help="the kind to run (default noop; a kind of "
                   "yours needs RAYSYS_HANDLERS)")
    p.add_argument("--payload", default=None, help="the payload of every task, as JSON "
                   "(e.g. '{\"seconds\": 0.02}' for sleep)")
    p.add_argument("--workers", type=positive_int, default=2, help="worker actors (default 2)")
    add_concurrency_flag(p)
    p.add_argument("--rate", type=positive_float, default=None,
                   help="offered load, tasks/s (default: as fast as possible)")
    p.add_argument("--batch", type=positive_int, default=500,
                   help="leases per assignment (default 500)")
    p.add_argument("--fsync", choices=APPENDFSYNC_VALUES, default="always",
                   help="appendfsync of the embedded Redis (a configured one keeps its own)")
    p.add_argument("--signing", choices=ALGORITHMS, default=None,
                   help="algorithm of the run's own signing key (default hmac-sha256; not with "
                   "configured keys, which sign as they are)")
    add_json_flag(p)
    p.set_defaults(handler=cmd_bench)


def cmd_demo(args: argparse.Namespace, settings: Settings) -> int:
    from raysys.bench.cluster_run import RunOptions
    from raysys.bench.workload import demo_specs

    options = RunOptions(tasks=args.tasks, workers=args.workers, concurrency=args.concurrency,
                         kind="mixed")
    return run_workload(settings, demo_specs(args.tasks), options, args.json, "demo",
                        window=Window(dashboard=args.dashboard, keep=args.keep))


def cmd_bench(args: argparse.Namespace, settings: Settings) -> int:
    from raysys.bench.cluster_run import RunOptions
    from raysys.bench.workload import kind_specs

    payload = parse_json_payload(args.payload) if args.payload is not None else None
    specs = kind_specs(args.tasks, args.kind, payload)  # validated before anything starts
    if args.signing is not None and keys_configured(settings):
        raise ValidationError("--signing picks the algorithm of the bench's own key; with "
                              "RAYSYS_SIGNING_KEYS or RAYSYS_SIGNING_KEY_FILE set, the "
                              "configured keys sign (unset them, or drop --signing)")
    options = RunOptions(tasks=args.tasks, workers=args.workers, rate=args.rate,
                         batch=args.batch, concurrency=args.concurrency, kind=args.kind,
                         fsync=args.fsync,
                         signing=cast(Algorithm, args.signing or DEFAULT_ALGORITHM),
                         warmup=min(WARMUP_MAX, max(args.tasks // 20, 1)))
    return run_workload(settings, specs, options, args.json, "bench")


@dataclasses.dataclass(frozen=True)
class Window:
    """What the operator sees of a run besides its report (``demo``; ``bench`` keeps both
    off, so nothing else competes for the CPU it measures): Ray's dashboard, and ``keep``,
    staying up after the report until Ctrl-C."""

    dashboard: bool = False
    keep: bool = False


@dataclasses.dataclass
class RunPlace:
    """Where one run lives: its namespace, a private data dir, the settings and the actors'
    overrides pointing there."""

    namespace: str
    data_dir: Path
    settings: Settings
    overrides: dict[str, Any]


def run_workload(settings: Settings, specs: list[TaskSpec], options: RunOptions, as_json: bool,
                 what: str, window: Window = Window()) -> int:
    """Start, run ``specs``, tear down, report; the CLI exit code.

    With ``window.keep`` the report comes before the tear-down, which waits for Ctrl-C: the
    KeyboardInterrupt unwinds everything (exit 130 in ``raysys.cli.main``).
    """
    place, options = _prepare_place(settings, options, what)
    keep_logs = settings.data_dir / "logs" / place.namespace

    def report_run(report: dict[str, Any]) -> int:
        return _report(report, as_json, what, keep_logs)

    try:
        report = _run_in_place(place, specs, options, what, settings, window, report_run)
    finally:
        _keep_logs(place.data_dir / "logs", keep_logs)
        shutil.rmtree(place.data_dir, ignore_errors=True)
    return report_run(report)


def _report(report: dict[str, Any], as_json: bool, what: str, keep_logs: Path) -> int:
    """Print the report; the exit code (EXIT_UNACCOUNTED when a task is not accounted for)."""
    runs = [report, report.get("warmup", {})]  # the warm-up's tasks count as much
    lost = sum(int(r.get("lost", 0)) for r in runs)
    duplicates = sum(int(r.get("duplicate_commits", 0)) for r in runs)
    emit(report, as_json, lambda: report_text(report), flush=True)
    print(f"raysys {what}: logs in {keep_logs}", file=sys.stderr, flush=True)
    if lost or duplicates:
        print(f"raysys: error: {lost} tasks lost, {duplicates} duplicate commits",
              file=sys.stderr)
        return EXIT_UNACCOUNTED
    return 0


def _prepare_place(settings: Settings, options: RunOptions, what: str
                   ) -> tuple[RunPlace, RunOptions]:
    namespace = f"{what}-{uuid.uuid4().hex[:8]}"
    tmp = Path(tempfile.mkdtemp(prefix=f"raysys-{what}-"))
    run_settings = settings.model_copy(update={"data_dir": tmp})
    overrides: dict[str, Any] = {"data_dir": str(tmp), "namespace": namespace}
    if not keys_configured(settings):
        # An ephemeral key for the run (its records never outlive it), as a file the actors read.
        key_file = tmp / "keys.json"
        write_keyring_file(key_file, Keyring([generate_key(options.signing)]))
        run_settings = run_settings.model_copy(update={"signing_key_file": key_file})
        overrides["signing_key_file"] = str(key_file)
    else:  # the configured keys sign: report their algorithm
        active = load_keyring(settings, create=False).active
        options = dataclasses.replace(options, signing=active.alg)
    return RunPlace(namespace, tmp, run_settings, overrides), options


def _run_in_place(place: RunPlace, specs: list[TaskSpec], options: RunOptions, what: str,
                  settings: Settings, window: Window,
                  report_run: Callable[[dict[str, Any]], int]) -> dict[str, Any]:
    from raysys.bench.cluster_run import run_on_cluster
    from raysys.bench.workload import Progress
    from raysys.client import start
    from raysys.core import freeze_heap

    # Redis first: an unreachable or misconfigured one is one clear line, before Ray starts.
    with _run_core(place, options) as (ledger, embedded):
        if not embedded:  # its appendfsync is the server's own; we cannot read it
            options = dataclasses.replace(options, fsync="server-configured")
        print(f"raysys {what}: {len(specs)} tasks, {options.workers} workers, "
              f"{'embedded' if embedded else 'configured'} Redis, namespace "
              f"{place.namespace}; starting Ray and the actors...", file=sys.stderr)
        with start(options.workers, batch=options.batch, concurrency=options.concurrency,
                   ledger=True, dashboard=window.dashboard, **place.overrides) as client:
            url = client.serve(settings.http_host, settings.http_port)
            options = dataclasses.replace(options, serve=url is not None)
            if url:
                print(f"raysys {what}: console at {url}/ui/, health and metrics at "
                      f"{url}/health and {url}/metrics", file=sys.stderr)
            if window.dashboard:
                print(f"raysys {what}: {dashboard_line(client.dashboard_url)}", file=sys.stderr)
            warmup = warm_up(client, ledger, options)
            freeze_heap()  # the driver's start-up heap: no 50 ms GC pass mid-run
            report = run_on_cluster(client, ledger, specs, options, Progress(len(specs)),
                                    actor_pids=client.actor_pids)
            if warmup is not None:
                report["warmup"] = warmup
            report["dashboard_url"] = client.dashboard_url
            if window.keep:
                report_run(report)
                stay_up(what, url, client.dashboard_url)
    return report


def dashboard_line(url: str | None) -> str:
    """Where the Ray dashboard is (and how to sign in), or that it did not start."""
    from raysys.client.dashboard import sign_in_hint

    if url is None:
        return "Ray dashboard not running (see the warning above)"
    hint = sign_in_hint()
    return f"Ray dashboard at {url}" + (f" ({hint})" if hint else "")


def stay_up(what: str, http: str | None, dashboard: str | None) -> NoReturn:
    """``--keep``: print where everything is, then wait for Ctrl-C (KeyboardInterrupt) or
    SIGTERM, which unwind the run: actors, Ray and the embedded Redis stop cleanly."""
    lines = [f"raysys {what}: staying up until Ctrl-C"]
    if http:
        lines += [f"  console    {http}/ui", f"  health     {http}/health",
                  f"  metrics    {http}/metrics"]
    else:
        lines.append("  HTTP app   not running (its port was in use: set RAYSYS_HTTP_PORT)")
    lines.append(f"  dashboard  {dashboard}" if dashboard else "  dashboard  not running")
    print("\n".join(lines), file=sys.stderr, flush=True)
    while True:
        time.sleep(3600)


@contextmanager
def _run_core(place: RunPlace, options: RunOptions) -> Iterator[tuple[CommitLedger, bool]]:
    """The run's ledger and whether Redis is embedded; a configured Redis keeps no trace of the
    run afterwards, even a failed one."""
    from raysys.core import open_core
    from raysys.ledger import CommitLedger
    from raysys.store import drop_keys

    with open_core(place.settings, namespace=place.namespace, appendfsync=options.fsync) as core:
        ledger = CommitLedger(core.client, place.namespace)
        try:
            yield ledger, core.embedded
        finally:
            if not core.embedded:
                drop_keys(core.client, core.keys.pattern())
            ledger.clear()


def add_concurrency_flag(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--concurrency", type=positive_int, default=DEFAULT_CONCURRENCY,
                        help=f"leases each worker runs at once (default {DEFAULT_CONCURRENCY})")


def keys_configured(settings: Settings) -> bool:
    """Signing keys come from the environment or a file (else a run makes its own)."""
    return settings.signing_keys is not None or settings.signing_key_file is not None


def warm_up(client: Client, ledger: CommitLedger, options: RunOptions) -> dict[str, int] | None:
    """Run ``options.warmup`` noop tasks first (same rate, not measured); their accounting.

    The first calls of each process load scripts and fill caches; a benchmark measures the
    steady state after them. The warm-up's tasks are accounted for like the measured ones.
    """
    from raysys.bench.cluster_run import run_on_cluster
    from raysys.bench.workload import noop_specs

    if not options.warmup:
        return None
    print(f"raysys bench: warming up with {options.warmup} tasks", file=sys.stderr)
    report = run_on_cluster(client, ledger, noop_specs(options.warmup),
                            dataclasses.replace(options, tasks=options.warmup))
    return {key: int(report[key]) for key in ("tasks", "lost", "duplicate_commits")}


def report_text(report: dict[str, Any]) -> str:
    lat = report["latency_ms"]
    lines = [
        f"tasks {report['tasks']}: succeeded {report['succeeded']}, dead {report['dead']}, "
        f"cancelled {report['cancelled']}, quarantined {report['quarantined']}, "
        f"lost {report['lost']}, duplicate commits {report['duplicate_commits']}, "
        f"retries {report['retries']}",
        f"throughput {report['tasks_per_s']:,.0f} tasks/s; submit-to-start latency p50 "
        f"{lat['p50']} ms, p95 {lat['p95']} ms, p99 {lat['p99']} ms",
        "settings " + ", ".join(f"{k}={v}" for k, v in report["settings"].items()),
    ]
    if report.get("dashboard_url"):
        lines.append(f"Ray dashboard {report['dashboard_url']}")
    return "\n".join(lines)


def _keep_logs(source: Path, target: Path) -> None:
    if not source.is_dir():
        return
    try:
        target.mkdir(parents=True, exist_ok=True)
        for path in source.iterdir():
            shutil.copy2(path, target / path.name)
    except OSError as exc:
        print(f"raysys: warning: could not keep the logs in {target}: {exc}", file=sys.stderr)
