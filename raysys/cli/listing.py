"""``raysys tasks`` (list newest first, by state and kind, paged with a cursor) and
``raysys redrive`` (run dead tasks again after a fix), straight against Redis."""

from __future__ import annotations

import argparse
from datetime import UTC, datetime
from typing import Any

from raysys.cli.common import add_json_flag, emit, int_between
from raysys.config import Settings
from raysys.core import open_core
from raysys.errors import ValidationError
from raysys.store.listing import MAX_PAGE, TaskPage, parse_state
from raysys.store.records import check_task_id
from raysys.store.redrive import REDRIVABLE, RedriveReport
from raysys.timespec import parse_instant


def register(sub: Any) -> None:
    p = sub.add_parser("tasks", help="list tasks newest first (by state, kind, time), in pages")
    p.add_argument("--state", help="scheduled, pending, leased, failed, succeeded, dead, "
                   "cancelled or quarantined")
    p.add_argument("--kind", help="only this kind")
    p.add_argument("--since", metavar="T", help="only tasks since T: an ISO-8601 time or a "
                   "duration ago (1h); finish time for final states, else submission")
    p.add_argument("--limit", type=int_between(1, MAX_PAGE), default=50,
                   help=f"at most this many (1..{MAX_PAGE}; default 50)")
    p.add_argument("--cursor", help="continue a listing where the last page ended")
    add_json_flag(p)
    p.set_defaults(handler=cmd_tasks)

    p = sub.add_parser("redrive", help="run finished (dead) tasks again after a fix: same id, "
                       "history kept, audited; idempotent per --request-id")
    which = p.add_mutually_exclusive_group(required=True)
    which.add_argument("--state", choices=REDRIVABLE,
                       help=f"every task in this state ({', '.join(REDRIVABLE)})")
    which.add_argument("--id", dest="ids", action="append", metavar="ID",
                       help="this task (repeatable)")
    p.add_argument("--kind", help="with --state: only this kind")
    p.add_argument("--dry-run", action="store_true", help="say what would run again; change "
                   "nothing")
    p.add_argument("--request-id", help="resending with the same id redrives nothing twice")
    add_json_flag(p)
    p.set_defaults(handler=cmd_redrive)


def cmd_tasks(args: argparse.Namespace, settings: Settings) -> int:
    parse_state(args.state)  # bad input before connecting
    since = int(parse_instant(args.since, what="--since") * 1000) if args.since else None
    with open_core(settings) as core:
        page = core.store.tasks(state=args.state, kind=args.kind, since_ms=since,
                                limit=args.limit, cursor=args.cursor)
    emit(page.to_json(), args.json, lambda: _page_text(page))
    return 0


def _page_text(page: TaskPage) -> str:
    lines = [f"{'ID':32}  {'STATE':11}  {'KIND':16}  {'ATT':>3}  {'SUBMITTED':20}  "
             f"{'FINISHED':20}  ERROR"]
    for row in page.tasks:
        lines.append(f"{row.id:32}  {row.state:11}  {row.kind[:16]:16}  {row.attempts:>3}  "
                     f"{_when(row.submitted_ms):20}  {_when(row.finished_ms):20}  "
                     f"{(row.error or '')[:60]}")
    if not page.tasks:
        lines.append("(no tasks)")
    if page.cursor:
        lines.append(f"more: --cursor {page.cursor}")
    return "\n".join(lines)


def _when(ms: int | None) -> str:
    if ms is None:
        return "-"
    return datetime.fromtimestamp(ms / 1000, UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def cmd_redrive(args: argparse.Namespace, settings: Settings) -> int:
    if args.kind and not args.state:
        raise ValidationError("--kind goes with --state (ids name their tasks already)")
    for task_id in args.ids or []:
        check_task_id(task_id)
    with open_core(settings) as core:
        report = core.store.redrive(ids=args.ids, state=args.state, kind=args.kind,
                                    dry_run=args.dry_run, request_id=args.request_id)
    emit(report.to_json(), args.json, lambda: _redrive_text(report))
    return 0 if not report.refused and not report.missing else 1


def _redrive_text(report: RedriveReport) -> str:
    verb = "would run again" if report.dry_run else "run again"
    lines = [f"{len(report.redriven)} tasks {verb} (request {report.request_id})"]
    lines += [f"  {task_id}" for task_id in report.redriven]
    if report.already:
        lines.append(f"{len(report.already)} already redriven by this request")
    for task_id, why in report.refused.items():
        lines.append(f"refused {task_id}: {why}")
    for task_id in report.missing:
        lines.append(f"no task {task_id}")
    return "\n".join(lines)
