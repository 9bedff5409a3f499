"""``raysys snapshot save [--out FILE | --dir DIR [--keep N] [--every DURATION]] | list |
restore (ID | FILE)``.

``--dir`` writes ``<namespace>-<id>.rsnap`` files into a folder (not into Redis) and keeps the
newest ``--keep``; ``--every`` makes that a periodic schedule (``raysys-snapshot``, kind
``raysys.snapshot``) which a worker runs, so the folder must be on the workers' nodes (a
volume; cluster/kuberay/snapshot-cronjob.yaml shows the Kubernetes form).
"""

from __future__ import annotations

import argparse
import contextlib
from pathlib import Path
from typing import Any

from raysys.cli.common import add_json_flag, emit, positive_int
from raysys.config import Settings
from raysys.core import open_core
from raysys.errors import NotFound, ValidationError
from raysys.schedules import ScheduleBook, ScheduleSpec
from raysys.snapshots import SnapshotManager
from raysys.snapshots.files import save_to_dir
from raysys.timespec import parse_duration

SNAPSHOT_SCHEDULE = "raysys-snapshot"
DEFAULT_FILES_KEPT = 24


def register(sub: Any) -> None:
    """Register ``snapshot save [--out FILE] | list | restore (ID | FILE)``, each with --json."""
    p = sub.add_parser("snapshot", help="save, list and restore signed snapshots")
    actions = p.add_subparsers(dest="snapshot_command", required=True, metavar="ACTION")
    s = actions.add_parser("save", help="copy the namespace at one instant; keep it in Redis")
    where = s.add_mutually_exclusive_group()
    where.add_argument("--out", type=Path, help="also write it to this file (mode 0600)")
    where.add_argument("--dir", type=Path, help="write <namespace>-<id>.rsnap into this folder "
                       "instead of Redis")
    s.add_argument("--keep", type=positive_int, default=None,
                   help="with --dir: keep the newest N files there (default 24)")
    s.add_argument("--every", metavar="DURATION", help="with --dir: save every DURATION (30s, "
                   "15m, 1h, 1d) as a periodic schedule a worker runs; replaces the last one")
    add_json_flag(s)
    s.set_defaults(handler=cmd_snapshot_save)
    s = actions.add_parser("list", help="snapshots stored in Redis, verified, oldest first")
    add_json_flag(s)
    s.set_defaults(handler=cmd_snapshot_list)
    s = actions.add_parser("restore", help="verify, then restore into an empty namespace")
    s.add_argument("source", metavar="ID|FILE", help="a stored snapshot's id, or a file")
    add_json_flag(s)
    s.set_defaults(handler=cmd_snapshot_restore)


def cmd_snapshot_save(args: argparse.Namespace, settings: Settings) -> int:
    if args.every is not None and args.out is not None:
        raise ValidationError("--every writes files into a folder: use --dir, not --out")
    if (args.keep is not None or args.every is not None) and args.dir is None:
        if args.every is None:
            raise ValidationError("--keep goes with --dir (Redis keeps RAYSYS_SNAPSHOT_KEEP)")
        args.dir = settings.data_dir / "snapshots"
    keep = args.keep or DEFAULT_FILES_KEPT
    if args.every is not None:
        return _schedule_saves(args, settings, keep)
    if args.dir is not None:
        with open_core(settings) as core:
            doc = save_to_dir(core, args.dir, keep)
        emit(doc, args.json, f"snapshot {doc['id']}: {doc['tasks']} tasks, {doc['keys']} keys, "
             f"{doc['data_bytes']} bytes written to {doc['file']}; writes paused "
             f"{doc.get('timing_paused_s', 0):.3f} s; {len(doc['dropped'])} older files "
             f"dropped (keeping {keep})")
        return 0
    with open_core(settings) as core:
        info = SnapshotManager(core).save(out=args.out)
    where = f"kept in Redis and written to {args.out}" if args.out else "kept in Redis"
    emit({**info.to_json(), "file": str(args.out) if args.out else None}, args.json,
         f"snapshot {info.id}: {info.tasks} tasks ({_states(info.counts)}), {info.keys} keys, "
         f"{info.data_bytes} bytes, fence {info.fence}; {where}")
    return 0


def _schedule_saves(args: argparse.Namespace, settings: Settings, keep: int) -> int:
    cron = every_to_cron(parse_duration(args.every, what="--every"))
    spec = ScheduleSpec.build(name=SNAPSHOT_SCHEDULE, cron=cron, kind="raysys.snapshot",
                              payload={"dir": str(Path(args.dir).resolve()), "keep": keep})
    with open_core(settings) as core:
        book = ScheduleBook(core)
        with contextlib.suppress(NotFound):
            book.remove(SNAPSHOT_SCHEDULE)
        info = book.add(spec)
    emit(info.to_json(), args.json,
         f"schedule {SNAPSHOT_SCHEDULE}: a snapshot file into {Path(args.dir).resolve()} "
         f"every {args.every} ({cron!r}), keeping {keep}; a worker runs it (the folder must "
         "be on the workers' nodes)")
    return 0


def every_to_cron(seconds: float) -> str:
    """A six-field cron expression (seconds first) for "every ``seconds``": a whole number of
    seconds, minutes or hours that divides the next unit, or whole days (1d: at midnight UTC,
    7d: Sundays). ValidationError otherwise."""
    whole = int(seconds)
    if whole != seconds or whole <= 0:
        raise ValidationError(f"--every {seconds:g} s: use whole seconds")
    for unit, size, field_count in ((1, 60, 0), (60, 60, 1), (3600, 24, 2)):
        if whole % unit == 0 and whole // unit < size and size % (whole // unit) == 0:
            fields = ["*"] * 6
            fields[field_count] = f"*/{whole // unit}"
            for lower in range(field_count):
                fields[lower] = "0"
            return " ".join(fields)
    if whole == 86_400:
        return "0 0 0 * * *"
    if whole == 7 * 86_400:
        return "0 0 0 * * 0"
    raise ValidationError(f"--every {seconds:g} s does not divide a minute, an hour or a day "
                          "(nor is it 1d or 7d): use raysys schedule add with --cron")


def cmd_snapshot_list(args: argparse.Namespace, settings: Settings) -> int:
    with open_core(settings) as core:
        infos = SnapshotManager(core).list()
    lines = [f"{info.id}  {info.created}  {info.tasks:>8} tasks  {info.keys:>8} keys  "
             f"{info.data_bytes:>12} bytes  ({_states(info.counts)})" for info in infos]
    emit({"snapshots": [info.to_json() for info in infos]}, args.json,
         "\n".join(lines) or f"no snapshots stored in namespace {settings.namespace}")
    return 0


def cmd_snapshot_restore(args: argparse.Namespace, settings: Settings) -> int:
    with open_core(settings) as core:
        report = SnapshotManager(core).restore(args.source)
    info = report.snapshot
    emit(report.to_json(), args.json,
         f"restored snapshot {info.id} ({info.created}) from {report.source}: {info.tasks} "
         f"tasks ({_states(info.counts)}), {report.restored_keys} keys; fences continue "
         f"above {report.fence}")
    return 0


def _states(counts: dict[str, int]) -> str:
    return ", ".join(f"{state} {n}" for state, n in counts.items() if n) or "none"
