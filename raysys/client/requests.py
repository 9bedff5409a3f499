"""What a client sends: the validated arguments of each Coordinator call, built once for the
synchronous :class:`~raysys.client.client.Client` and the :class:`~raysys.client.async_client.
AsyncClient` alike.

Every function here is pure (no Ray, no Redis): it checks user input and raises
:class:`~raysys.errors.ValidationError` naming what is wrong before anything is sent, so both
clients refuse the same input with the same message.
"""

from __future__ import annotations

import logging
import os
from collections.abc import Iterator, Sequence
from datetime import datetime
from typing import Any, TypeVar

from raysys.errors import ValidationError
from raysys.models import TaskSpec, due_ms
from raysys.schedules import ScheduleInfo, ScheduleSpec
from raysys.timespec import parse_instant

log = logging.getLogger(__name__)

T = TypeVar("T")
SUBMIT_CHUNK = 1000  # tasks (or ids) per coordinator call: keeps each actor message small

When = float | datetime | str


def task_spec(kind: str, payload: Any = None, priority: int = 0,
              idempotency_key: str | None = None, *, delay_s: float | None = None,
              run_at: When | None = None, **spec: Any) -> TaskSpec:
    """The spec ``submit`` sends (``delay_s``/``run_at`` become its signed due time)."""
    return TaskSpec.build(kind=kind, payload=payload, priority=priority,
                          idempotency_key=idempotency_key,
                          not_before_ms=due_ms(delay_s, run_at), **spec)


def task_specs(kind: str, payloads: Sequence[Any], priority: int = 0, *,
               delay_s: float | None = None, run_at: When | None = None,
               **spec: Any) -> list[TaskSpec]:
    """The specs ``submit_many`` sends, in the order of ``payloads`` (one due time for all)."""
    due = due_ms(delay_s, run_at)
    return [TaskSpec.build(kind=kind, payload=p, priority=priority, not_before_ms=due, **spec)
            for p in payloads]


def chunks(items: Sequence[T], size: int = SUBMIT_CHUNK) -> Iterator[list[T]]:
    """``items`` in consecutive lists of at most ``size``."""
    for offset in range(0, len(items), size):
        yield list(items[offset:offset + size])


def listing_query(state: str | None = None, kind: str | None = None, limit: int = 50,
                  cursor: str | None = None, since: When | None = None) -> dict[str, Any]:
    """The keyword arguments of the Coordinator's ``tasks`` (``since``: epoch seconds, an aware
    datetime, or ISO-8601 text)."""
    since_ms = None if since is None else int(epoch(since) * 1000)
    return {"state": state, "kind": kind, "since_ms": since_ms, "limit": limit,
            "cursor": cursor}


def redrive_request(ids: Sequence[str] | None = None, *, state: str | None = None,
                    kind: str | None = None, dry_run: bool = False,
                    request_id: str | None = None) -> dict[str, Any]:
    """The keyword arguments of the Coordinator's ``redrive``; a fresh request id unless one is
    given (a call resent with the same one redrives nothing twice)."""
    return {"ids": list(ids) if ids is not None else None, "state": state, "kind": kind,
            "dry_run": dry_run, "request_id": request_id or os.urandom(8).hex()}


def schedule_request(name: str, cron: str, kind: str, payload: Any = None, *, tz: str = "UTC",
                     catchup: str = "skip", priority: int = 0) -> dict[str, Any]:
    """The keyword arguments of the Coordinator's ``schedules("add", ...)``, checked here first."""
    spec = ScheduleSpec.build(name=name, cron=cron, kind=kind, payload=payload, tz=tz,
                              catchup=catchup, priority=priority)
    return {"spec": spec.model_dump()}


def schedule_list(answer: tuple[Sequence[ScheduleInfo], dict[str, str]]) -> list[ScheduleInfo]:
    """The schedules of a ``schedules("list")`` answer; each that failed verification is
    logged and left out."""
    infos, bad = answer
    for name, why in bad.items():
        log.error("schedule %s failed verification: %s", name, why)
    return list(infos)


def epoch(when: When) -> float:
    """Epoch seconds of an aware datetime, ISO-8601 text with a zone, or a number."""
    if isinstance(when, datetime):
        if when.tzinfo is None:
            raise ValidationError("since: a datetime needs a time zone")
        return when.timestamp()
    if isinstance(when, str):
        return parse_instant(when, what="since")
    return float(when)
