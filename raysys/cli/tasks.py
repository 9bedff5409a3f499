"""``raysys submit``, ``status`` and ``cancel``: tasks straight against Redis (no cluster needed).

Submissions go through the store's submit script, the one write path (DESIGN.md, "One
writer"): the same one the Coordinator uses.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path
from typing import Any

from raysys.cli.common import EXIT_UNACCOUNTED, add_json_flag, emit
from raysys.config import Settings
from raysys.core import open_core
from raysys.errors import IntegrityError, NotFound, ValidationError
from raysys.models import (
    FINAL_STATES,
    MAX_BATCH,
    TaskSpec,
    TaskState,
    due_ms,
    parse_json_payload,
)
from raysys.registry import Registry
from raysys.store import TaskStore
from raysys.store.records import check_task_id
from raysys.timespec import parse_duration

WAIT_POLL_S = 0.2
WATCH_EVERY_S = 1.0
UNSTARTED = (TaskState.PENDING, TaskState.SCHEDULED, TaskState.FAILED)  # will be leased again


def register(sub: Any) -> None:
    p = sub.add_parser("submit", help="submit tasks (works with no workers running)")
    p.add_argument("kind", help="a registered task kind (noop, echo, sleep, fail, or yours)")
    src = p.add_mutually_exclusive_group()
    src.add_argument("--payload", help="the payload as JSON (default: null)")
    src.add_argument("--file", type=Path, help="JSON Lines: one payload per line")
    p.add_argument("--priority", type=int, default=0, help="higher runs first (-1000..1000)")
    p.add_argument("--max-attempts", type=int, default=None,
                   help="attempts before dead (1..100; default: the kind's, 3 if it sets none)")
    p.add_argument("--schedule-to-start", type=float, default=None, metavar="SECONDS",
                   help="dead if not started this many seconds after submission (default: the "
                   "kind's)")
    p.add_argument("--idempotency-key", help="resubmitting with this key returns the same task "
                   "(with --file, line N uses KEY-N)")
    later = p.add_mutually_exclusive_group()
    later.add_argument("--delay", metavar="DURATION",
                       help="run no earlier than this from now (30s, 5m, 2h): state scheduled")
    later.add_argument("--at", metavar="ISO-8601",
                       help="run no earlier than this time (with a zone: 2026-12-24T18:00Z)")
    p.add_argument("--wait", action="store_true", help="wait until the task is final")
    p.add_argument("--timeout", type=float, default=300.0,
                   help="with --wait: seconds to wait (default 300)")
    add_json_flag(p)
    p.set_defaults(handler=cmd_submit)

    p = sub.add_parser("cancel", help="cancel tasks: pending ones at once, running ones are "
                       "told to stop (within a second) and fenced out")
    p.add_argument("task_ids", nargs="+", metavar="ID",
                   help="one or more task ids (32 hex characters each)")
    add_json_flag(p)
    p.set_defaults(handler=cmd_cancel)

    p = sub.add_parser("status", help="one task (exit 6 if a stored record of it failed "
                       "verification), or counts by state")
    p.add_argument("task_id", nargs="?", help="a task id (default: counts by state)")
    add_json_flag(p)
    p.add_argument("--watch", action="store_true", help="refresh every second until Ctrl-C")
    p.add_argument("--history", action="store_true", help="with TASK_ID: also its attempts "
                   "and events (last 20)")
    p.set_defaults(handler=cmd_status)


def cmd_submit(args: argparse.Namespace, settings: Settings) -> int:
    specs = specs_from_args(args)  # everything validated before anything is stored
    with open_core(settings) as core:
        ids: list[str] = []
        for offset in range(0, len(specs), MAX_BATCH):
            ids += core.store.submit_many(specs[offset:offset + MAX_BATCH])
        if args.wait:
            results = [wait_final(core.store, task_id, args.timeout) for task_id in ids]
            doc: dict[str, Any] = results[0] if args.file is None else {"results": results}
        else:
            doc = {"id": ids[0]} if args.file is None else {"ids": ids}
    emit(doc, args.json, json.dumps(doc, indent=2) if args.wait else "\n".join(ids))
    if args.wait:
        states = [r["state"] for r in (doc.get("results") or [doc])]
        return 0 if all(s == TaskState.SUCCEEDED for s in states) else EXIT_UNACCOUNTED
    return 0


def specs_from_args(args: argparse.Namespace) -> list[TaskSpec]:
    """The validated specs of ``submit``: one from ``--payload``, or one per ``--file`` line."""
    delay = parse_duration(args.delay, what="--delay") if args.delay is not None else None
    common = {"kind": args.kind, "priority": args.priority, "max_attempts": args.max_attempts,
              "schedule_to_start_s": args.schedule_to_start,
              "not_before_ms": due_ms(delay, args.at)}
    if args.file is None:
        payload = parse_json_payload(args.payload) if args.payload is not None else None
        return [TaskSpec.build(payload=payload, idempotency_key=args.idempotency_key, **common)]
    try:
        lines = args.file.read_text(encoding="utf-8").splitlines()
    except OSError as exc:
        raise ValidationError(f"cannot read {args.file}: {exc.strerror}") from None
    except UnicodeDecodeError:
        raise ValidationError(f"{args.file} is not UTF-8 text") from None
    specs = []
    for number, line in enumerate(lines, start=1):
        if not line.strip():
            continue
        try:
            key = f"{args.idempotency_key}-{number}" if args.idempotency_key else None
            specs.append(TaskSpec.build(payload=parse_json_payload(line), idempotency_key=key,
                                        **common))
        except ValidationError as exc:
            raise ValidationError(f"{args.file} line {number}: {exc}") from None
    if not specs:
        raise ValidationError(f"{args.file} holds no tasks")
    return specs


def wait_final(store: TaskStore, task_id: str, timeout: float) -> dict[str, Any]:
    """The task's status document once final, or as it is when ``timeout`` s have passed."""
    deadline = time.monotonic() + timeout
    while True:
        status = store.status(task_id)
        if status.state in FINAL_STATES or time.monotonic() > deadline:
            return dict(status.to_json())
        time.sleep(WAIT_POLL_S)


def cmd_cancel(args: argparse.Namespace, settings: Settings) -> int:
    """Cancel each id; a final task is a no-op (said so); an unknown id makes the exit 8."""
    for task_id in args.task_ids:
        check_task_id(task_id)  # every id checked before anything changes
    results: list[dict[str, Any]] = []
    with open_core(settings) as core:
        for task_id in args.task_ids:
            try:
                before = core.store.cancel(task_id)
            except NotFound:
                results.append({"id": task_id, "before": None, "state": None,
                                "cancelled": False})
                continue
            done = before not in FINAL_STATES
            results.append({"id": task_id, "before": before.value, "cancelled": done,
                            "state": TaskState.CANCELLED.value if done else before.value})
    emit({"results": results}, args.json, "\n".join(_cancel_line(r) for r in results))
    return NotFound.exit_code if any(r["before"] is None for r in results) else 0


def _cancel_line(result: dict[str, Any]) -> str:
    if result["before"] is None:
        return f"{result['id']}: no such task"
    if result["cancelled"]:
        told = " (its worker is told to stop)" if result["before"] == "leased" else ""
        return f"{result['id']}: cancelled (was {result['before']}){told}"
    return f"{result['id']}: already {result['before']}: nothing to cancel"


def cmd_status(args: argparse.Namespace, settings: Settings) -> int:
    """One task, or counts by state; ``--watch`` refreshes every second with the throughput
    (tasks reaching a final state per second) until Ctrl-C (one JSON object per line).

    ``status ID`` of a task whose stored record failed verification (or that was quarantined)
    still prints its document, with ``integrity``, and exits 6 (integrity)."""
    with open_core(settings) as core:
        last: tuple[float, int] | None = None
        while True:
            if args.task_id:
                doc = core.store.status(args.task_id).to_json()
                if args.history:
                    doc["history"] = core.store.history(args.task_id)
            else:
                doc, last = _counts_doc(core.store, last if args.watch else None, args.watch)
                waiting = Registry(core).waiting()
                if waiting:
                    doc["waiting"] = waiting
            emit(doc, args.json, _status_text(doc), flush=True)
            if not args.watch:
                return _integrity_verdict(doc)
            time.sleep(WATCH_EVERY_S)


def _integrity_verdict(doc: dict[str, Any]) -> int:
    """The exit code of ``status ID``: 6 (integrity), with one line on stderr, when a stored
    record of the task failed verification or it was quarantined; else 0."""
    if "integrity" not in doc:
        return 0
    reasons, state = str(doc["integrity"]).removeprefix("failed: "), doc["state"]
    fate = ""
    if state == TaskState.QUARANTINED:
        fate = "; it never ran"
    elif state in UNSTARTED and "(task record)" in reasons:
        fate = "; it will never run (a worker that leases it quarantines it)"
    print(f"raysys: error: task {doc['id']} failed verification: {reasons}; state {state}"
          f"{fate}", file=sys.stderr)
    return IntegrityError.exit_code


def _counts_doc(store: TaskStore, last: tuple[float, int] | None, watch: bool
                ) -> tuple[dict[str, Any], tuple[float, int] | None]:
    counts = store.counts()
    doc: dict[str, Any] = {"namespace": store.namespace, "counts": counts,
                           "total": sum(counts.values())}
    if not watch:
        return doc, None
    now, final = time.monotonic(), sum(counts[s.value] for s in FINAL_STATES)
    doc["tasks_per_s"] = (round((final - last[1]) / (now - last[0]), 1)
                          if last is not None else 0.0)
    return doc, (now, final)


def _status_text(doc: dict[str, Any]) -> str:
    if "counts" not in doc:
        return "\n".join(f"{key}: {json.dumps(value)}" for key, value in doc.items())
    rate = f"  {doc['tasks_per_s']:,.1f} tasks/s" if "tasks_per_s" in doc else ""
    lines = ["  ".join(f"{state} {n}" for state, n in doc["counts"].items())
             + f"  (total {doc['total']}){rate}"]
    for kind, why in doc.get("waiting", {}).items():
        need = ", ".join(f"{k} {v:g}" for k, v in why.get("need", {}).items())
        lines.append(f"waiting: {why.get('pending', 0)} {kind} tasks ({why.get('reason')}"
                     + (f": no live node has {need}" if need else "") + ")")
    return "\n".join(lines)
