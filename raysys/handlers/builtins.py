"""The built-in kinds, for tests, benchmarks and the demo. They are ordinary handlers: they run
through the same execution path as a user's (a thread of the worker's pool), nothing special.

``noop`` (returns null), ``echo`` (returns its payload), ``sleep`` (``{"seconds": s}``: waits,
stopping early when cancelled), ``spin`` (``{"ms": m}``: pure-Python CPU work for ``m`` ms),
``fail`` (``{"message": str}``: always fails, retried), ``flaky`` (fails its first
``fail_times`` attempts, then returns its payload), ``raysys.snapshot`` (``{"dir": path,
"keep": n}``: saves a snapshot file into ``dir`` on the worker's node and keeps the newest ``n``
there; what ``raysys snapshot save --every`` schedules).
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


@task("raysys.snapshot", max_attempts=3, timeout_s=6 * 3600.0)
def snapshot(payload: Any, ctx: TaskContext) -> dict[str, Any]:
    """Save a snapshot of the worker's namespace to ``dir`` (a file, not Redis); prune."""
    from raysys.errors import RaysysError, Retry
    from raysys.snapshots.files import save_to_dir

    if not isinstance(payload, dict) or not isinstance(payload.get("dir"), str):
        raise TaskFailed('raysys.snapshot needs {"dir": "/path", "keep": 24}')
    keep = payload.get("keep", 24)
    if isinstance(keep, bool) or not isinstance(keep, int) or keep < 1:
        raise TaskFailed("raysys.snapshot: keep must be a whole number >= 1")
    if ctx.core is None:
        raise TaskFailed("raysys.snapshot runs on a raysys worker (it needs its Redis)")
    try:
        return save_to_dir(ctx.core, payload["dir"], keep)
    except RaysysError as exc:
        if "another snapshot" in str(exc):
            raise Retry(str(exc), delay_s=10.0) from None
        raise TaskFailed(f"snapshot failed: {exc}") from None
