"""The built-in kinds, for tests, benchmarks and the demo. They are ordinary handlers: they run
through the same execution path as a user's (a thread of the worker's pool), nothing special.

``noop`` (returns null), ``echo`` (returns its payload), ``sleep`` (``{"seconds": s}``: waits,
stopping early when cancelled), ``spin`` (``{"ms": m}``: pure-Python CPU work for ``m`` ms),
``fail`` (``{"message": str}``: always fails, retried), ``flaky`` (fails its first
``fail_times`` attempts, then returns its payload).
"""

from __future__ import annotations

import time
from typing import Any

from raysys.errors import TaskFailed
from raysys.handlers.context import TaskContext
from raysys.handlers.registry import task

MAX_SLEEP_S = 3600.0


@task("noop")
def noop(payload: Any, ctx: TaskContext) -> None:
    return None


@task("echo")
def echo(payload: Any, ctx: TaskContext) -> Any:
    return payload


@task("sleep")
def sleep(payload: Any, ctx: TaskContext) -> None:
    seconds = payload.get("seconds") if isinstance(payload, dict) else None
    if isinstance(seconds, bool) or not isinstance(seconds, int | float) or not (
            0 <= seconds <= MAX_SLEEP_S):
        raise TaskFailed(f'sleep needs {{"seconds": number between 0 and {MAX_SLEEP_S:g}}}')
    if ctx.cancelled.wait(float(seconds)):
        raise TaskFailed(f"sleep stopped early: {ctx.cancelled.reason}")


@task("spin")
def spin(payload: Any, ctx: TaskContext) -> int:
    """Pure-Python work (holds the GIL) for ``ms`` milliseconds; returns the loop count."""
    ms = payload.get("ms") if isinstance(payload, dict) else None
    if isinstance(ms, bool) or not isinstance(ms, int | float) or not 0 <= ms <= 60_000:
        raise TaskFailed('spin needs {"ms": number between 0 and 60000}')
    end = time.perf_counter() + ms / 1000
    count = 0
    while time.perf_counter() < end:
        for _ in range(200):
            count += 1
    return count


@task("fail")
def fail(payload: Any, ctx: TaskContext) -> None:
    message = payload.get("message") if isinstance(payload, dict) else None
    raise TaskFailed(str(message or "failed on purpose"))


@task("flaky")
def flaky(payload: Any, ctx: TaskContext) -> Any:
    """Fails its first ``fail_times`` attempts (default 1), then returns its payload."""
    fail_times = payload.get("fail_times", 1) if isinstance(payload, dict) else 1
    if ctx.attempt <= int(fail_times):
        raise TaskFailed(f"flaky: attempt {ctx.attempt} fails on purpose")
    return payload
