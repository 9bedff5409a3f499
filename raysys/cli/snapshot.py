"""``raysys snapshot save [--out FILE] | list | restore (ID | FILE)``."""

from __future__ import annotations

import argparse
from pathlib import Path
from typing import Any

from raysys.cli.common import add_json_flag, emit
from raysys.config import Settings
from raysys.core import open_core
from raysys.snapshots import SnapshotManager


def register(sub: Any) -> None:
    """Register ``snapshot save [--out FILE] | list | restore (ID | FILE)``, each with --json."""
    p = sub.add_parser("snapshot", help="save, list and restore signed snapshots")
    actions = p.add_subparsers(dest="snapshot_command", required=True, metavar="ACTION")
    s = actions.add_parser("save", help="copy the namespace at one instant; keep it in Redis")
    s.add_argument("--out", type=Path, help="also write it to this file (mode 0600)")
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
    with open_core(settings) as core:
        info = SnapshotManager(core).save(out=args.out)
    where = f"kept in Redis and written to {args.out}" if args.out else "kept in Redis"
    emit({**info.to_json(), "file": str(args.out) if args.out else None}, args.json,
         f"snapshot {info.id}: {info.tasks} tasks ({_states(info.counts)}), {info.keys} keys, "
         f"{info.data_bytes} bytes, fence {info.fence}; {where}")
    return 0


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
