"""``raysys purge --older-than DURATION [--state S] [--dry-run]``: remove finished tasks now.

Retention (``RAYSYS_RETENTION_S``) removes them on its own; this is for "now". Below the
retention a purged task leaves a tombstone, so a copy of its record cannot be replayed into a
run before the replay window has closed on it (raysys/store/retention.py).
"""

from __future__ import annotations

import argparse
from typing import Any

from raysys.cli.common import add_json_flag, emit
from raysys.config import Settings
from raysys.core import open_core
from raysys.store.retention import FINAL_STATE_NAMES, PurgeReport
from raysys.timespec import parse_duration


def register(sub: Any) -> None:
    p = sub.add_parser("purge", help="remove finished tasks (and their results, history, "
                       "idempotency keys) that finished longer ago than --older-than")
    p.add_argument("--older-than", required=True, metavar="DURATION",
                   help="e.g. 12h, 7d: tasks that finished longer ago than this")
    p.add_argument("--state", action="append", choices=FINAL_STATE_NAMES,
                   help="only this final state (repeatable; default: every final state)")
    p.add_argument("--dry-run", action="store_true", help="count what would go; remove nothing")
    add_json_flag(p)
    p.set_defaults(handler=cmd_purge)


def cmd_purge(args: argparse.Namespace, settings: Settings) -> int:
    older = parse_duration(args.older_than, what="--older-than")  # checked before connecting
    states = tuple(args.state or FINAL_STATE_NAMES)
    with open_core(settings) as core:
        report = core.store.purge(older, states=states, dry_run=args.dry_run)
    emit(report.to_json(), args.json, _text(report, args.older_than))
    return 0


def _text(report: PurgeReport, older: str) -> str:
    merged = {state: n + report.tombstoned.get(state, 0) for state, n in report.removed.items()}
    parts = ", ".join(f"{state} {n}" for state, n in merged.items() if n) or "none"
    if report.dry_run:
        return f"would remove {report.total} tasks that finished more than {older} ago ({parts})"
    tombs = sum(report.tombstoned.values())
    line = f"removed {report.total} tasks that finished more than {older} ago ({parts})"
    if tombs:
        line += (f"; {tombs} of them left a tombstone (finished inside the replay window, "
                 "RAYSYS_RETENTION_S): it goes when the window closes")
    return line
