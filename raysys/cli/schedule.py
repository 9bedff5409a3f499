"""``raysys schedule add NAME --cron EXPR KIND [--payload JSON] [--tz ZONE] [--catchup
skip|all] | list | remove NAME | pause NAME | resume NAME``, straight against Redis.

The Coordinator's ticker enqueues the ticks; with no Coordinator running a schedule waits (its
missed ticks then follow ``--catchup``).
"""

from __future__ import annotations

import argparse
from datetime import UTC, datetime
from typing import Any

from raysys.cli.common import add_json_flag, emit
from raysys.config import Settings
from raysys.core import open_core
from raysys.models import MAX_PRIORITY, MIN_PRIORITY, parse_json_payload
from raysys.schedules import ScheduleBook, ScheduleInfo, ScheduleSpec


def register(sub: Any) -> None:
    p = sub.add_parser("schedule", help="periodic schedules: each cron tick enqueues one task")
    actions = p.add_subparsers(dest="schedule_command", required=True, metavar="ACTION")
    a = actions.add_parser("add", help="add a schedule (its first tick is the next after now)")
    a.add_argument("name", help="letters, digits, _ . : - (at most 100)")
    a.add_argument("--cron", required=True, metavar="EXPR",
                   help="five fields (minute hour day month weekday), or six with seconds first")
    a.add_argument("kind", help="the kind each tick enqueues")
    a.add_argument("--payload", help="the payload as JSON (default: null)")
    a.add_argument("--tz", default="UTC", metavar="ZONE", help="IANA time zone (default UTC)")
    a.add_argument("--catchup", choices=("skip", "all"), default="skip",
                   help="ticks missed while no Coordinator ran: skip them (default) or run "
                   "them all (the newest 1000)")
    a.add_argument("--priority", type=int, default=0,
                   help=f"of the tasks it enqueues ({MIN_PRIORITY}..{MAX_PRIORITY})")
    add_json_flag(a)
    a.set_defaults(handler=cmd_add)
    s = actions.add_parser("list", help="every schedule, its last and next tick")
    add_json_flag(s)
    s.set_defaults(handler=cmd_list)
    for action, help_text in (("remove", "delete a schedule (its tasks stay)"),
                              ("pause", "enqueue nothing until resumed (no catch-up)"),
                              ("resume", "enqueue again from the next tick")):
        s = actions.add_parser(action, help=help_text)
        s.add_argument("name", help="the schedule's name (see `raysys schedule list`)")
        add_json_flag(s)
        s.set_defaults(handler=cmd_change, action=action)


def cmd_add(args: argparse.Namespace, settings: Settings) -> int:
    payload = parse_json_payload(args.payload) if args.payload is not None else None
    spec = ScheduleSpec.build(name=args.name, cron=args.cron, kind=args.kind, payload=payload,
                              tz=args.tz, catchup=args.catchup, priority=args.priority)
    with open_core(settings) as core:
        info = ScheduleBook(core).add(spec)
    emit(info.to_json(), args.json, f"schedule {spec.name} added: {_line(info)}")
    return 0


def cmd_list(args: argparse.Namespace, settings: Settings) -> int:
    with open_core(settings) as core:
        infos, bad = ScheduleBook(core).list()
    lines = [f"{info.spec.name}: {_line(info)}" for info in infos]
    lines += [f"{name}: FAILED VERIFICATION ({why}): enqueues nothing" for name, why in
              bad.items()]
    emit({"schedules": [info.to_json() for info in infos], "rejected": bad}, args.json,
         "\n".join(lines) or f"no schedules in namespace {settings.namespace}")
    return 0 if not bad else 1


def cmd_change(args: argparse.Namespace, settings: Settings) -> int:
    with open_core(settings) as core:
        book = ScheduleBook(core)
        if args.action == "remove":
            book.remove(args.name)
            emit({"name": args.name, "removed": True}, args.json,
                 f"schedule {args.name} removed")
            return 0
        info = book.pause(args.name) if args.action == "pause" else book.resume(args.name)
    emit(info.to_json(), args.json, f"schedule {args.name} {args.action}d: {_line(info)}")
    return 0


def _line(info: ScheduleInfo) -> str:
    spec = info.spec
    state = "paused" if spec.paused else f"next {_when(info.next_ms)}"
    return (f"{spec.cron!r} ({spec.tz}) -> {spec.kind}, catchup {spec.catchup}; {state}; "
            f"last {_when(info.last_ms)}")


def _when(ms: int | None) -> str:
    if ms is None:
        return "-"
    return datetime.fromtimestamp(ms / 1000, UTC).isoformat(timespec="seconds").replace(
        "+00:00", "Z")
