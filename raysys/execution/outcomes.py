"""Running one handler call and turning what it did into an :class:`~raysys.models.Outcome`.

The same rules for every lane (a thread, the event loop, a Ray task): a JSON result is a
success; ``raysys.Retry`` fails the attempt and asks for a delay; ``raysys.Fail`` ends the task
(``dead``, no retry); any other exception fails the attempt, retried while attempts remain; a
result that is not JSON (or too large) can never be stored and ends the task.
"""

from __future__ import annotations

import logging
import time
from typing import Any

from raysys.errors import Fail, Retry, ValidationError
from raysys.handlers import Handler, TaskContext
from raysys.models import DEFAULT_MAX_ATTEMPTS, DEFAULT_TIMEOUT_S, Lease, Outcome, check_payload

log = logging.getLogger(__name__)
MAX_ERROR_CHARS = 2_000


def effective_limits(lease: Lease, handler: Handler | None) -> Lease:
    """The lease with its attempt and time limits resolved: the kind's, lowered by the
    submission's (a submission never raises them)."""
    attempts = handler.max_attempts if handler is not None else DEFAULT_MAX_ATTEMPTS
    timeout = handler.timeout_s if handler is not None else DEFAULT_TIMEOUT_S
    if lease.max_attempts is not None:
        attempts = min(attempts, lease.max_attempts)
    if lease.timeout_s is not None:
        timeout = min(timeout, lease.timeout_s)
    return lease._replace(max_attempts=attempts, timeout_s=timeout)


def failure(exc: BaseException, seconds: float = 0.0) -> Outcome:
    """The outcome of a handler that raised ``exc``."""
    error = f"{type(exc).__name__}: {exc}"[:MAX_ERROR_CHARS]
    if isinstance(exc, Fail):
        return Outcome(ok=False, error=error, retryable=False, seconds=seconds)
    if isinstance(exc, Retry):
        return Outcome(ok=False, error=error, seconds=seconds, delay_s=exc.delay_s)
    return Outcome(ok=False, error=error, seconds=seconds)


def success(result: Any, seconds: float) -> Outcome:
    """The outcome of a handler that returned ``result`` (not storable: the task ends)."""
    try:
        check_payload(result, what="result")
    except ValidationError as exc:
        return Outcome(ok=False, error=f"result not storable: {exc}", retryable=False,
                       seconds=seconds)
    return Outcome(ok=True, result=result, seconds=seconds)


def call_sync(handler: Handler, payload: Any, ctx: TaskContext) -> Outcome:
    """Run a plain handler here (a thread of the worker's pool, or a Ray task)."""
    began = time.perf_counter()
    try:
        result = handler.fn(payload, ctx)
    except Exception as exc:  # a handler's error is the task's failure, never the worker's
        log.debug("task %s attempt %d failed: %r", ctx.task_id, ctx.attempt, exc)
        return failure(exc, time.perf_counter() - began)
    return success(result, time.perf_counter() - began)


async def call_async(handler: Handler, payload: Any, ctx: TaskContext) -> Outcome:
    """Run an ``async def`` handler on the running event loop."""
    began = time.perf_counter()
    try:
        result = await handler.fn(payload, ctx)
    except Exception as exc:
        log.debug("task %s attempt %d failed: %r", ctx.task_id, ctx.attempt, exc)
        return failure(exc, time.perf_counter() - began)
    return success(result, time.perf_counter() - began)


def unknown_kind(lease: Lease) -> Outcome:
    return Outcome(ok=False, error=f"no handler registered for kind {lease.kind!r}",
                   retryable=False)
