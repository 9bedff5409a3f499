"""``raysys snapshot save [--out FILE] | list | restore (ID | FILE)``."""

from __future__ import annotations

import argparse
import json
from pathlib import Path
from typing import Any

from raysys.config import Settings
from raysys.snapshots import SnapshotManager


def add_snapshot_command(subparsers: Any) -> None:
    """Register ``snapshot save [--out FILE] | list | restore (ID | FILE)``, each with --json."""
    p = subparsers.add_parser("snapshot", help="save, list and restore signed snapshots")
    actions = p.add_subparsers(dest="snapshot_command", required=True, metavar="ACTION")
    s = actions.add_parser("save", help="copy the namespace at one instant; keep it in Redis")
    s.add_argument("--out", type=Path, help="also write it to this file (mode 0600)")
    s.add_argument("--json", action="store_true", help="print one JSON object on stdout")
    s.set_defaults(handler=cmd_snapshot_save)
    s = actions.add_parser("list", help="snapshots stored in Redis, verified, oldest first")
    s.add_argument("--json", action="store_true")
    s.set_defaults(handler=cmd_snapshot_list)
    s = actions.add_parser("restore", help="verify, then restore into an empty namespace")
    s.add_argument("source", metavar="ID|FILE", help="a stored snapshot's id, or a file")
    s.add_argument("--json", action="store_true")
    s.set_defaults(handler=cmd_snapshot_restore)


def cmd_snapshot_save(args: argparse.Namespace, settings: Settings) -> int:
    from raysys.runtime import open_store

    with open_store(settings) as handle:
        info = SnapshotManager(handle.store).save(out=args.out)
    if args.json:
        print(json.dumps({**info.to_json(), "file": str(args.out) if args.out else None}))
    else:
        where = f"kept in Redis and written to {args.out}" if args.out else "kept in Redis"
        print(f"snapshot {info.id}: {info.tasks} tasks ({_states(info.counts)}), {info.keys} "
              f"keys, {info.data_bytes} bytes, fence {info.fence}; {where}")
    return 0


def cmd_snapshot_list(args: argparse.Namespace, settings: Settings) -> int:
    from raysys.runtime import open_store

    with open_store(settings) as handle:
        infos = SnapshotManager(handle.store).list()
        namespace = handle.store.namespace
    if args.json:
        print(json.dumps({"snapshots": [info.to_json() for info in infos]}))
    elif not infos:
        print(f"no snapshots stored in namespace {namespace}")
    else:
        for info in infos:
            print(f"{info.id}  {info.created}  {info.tasks:>8} tasks  {info.keys:>8} keys  "
                  f"{info.data_bytes:>12} bytes  ({_states(info.counts)})")
    return 0


def cmd_snapshot_restore(args: argparse.Namespace, settings: Settings) -> int:
    from raysys.runtime import open_store

    with open_store(settings) as handle:
        report = SnapshotManager(handle.store).restore(args.source)
    if args.json:
        print(json.dumps(report.to_json()))
    else:
        info = report.snapshot
        print(f"restored snapshot {info.id} ({info.created}) from {report.source}: {info.tasks} "
              f"tasks ({_states(info.counts)}), {report.restored_keys} keys; fences continue "
              f"above {report.fence}")
    return 0


def _states(counts: dict[str, int]) -> str:
    return ", ".join(f"{state} {n}" for state, n in counts.items() if n) or "none"
