"""Task handlers: the ``@raysys.task`` registry, built-in kinds, and running one lease.

A handler is ``fn(payload, ctx) -> result`` (JSON-serialisable). ``ctx`` carries the task id,
the attempt, the fencing token and an idempotency key so the handler can fence its own side
effects. Only registered kinds run; an unknown kind fails without retry.
"""

from __future__ import annotations

import importlib
import logging
import threading
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from concurrent.futures import TimeoutError as FutureTimeout
from dataclasses import dataclass
from typing import Any

from raysys.errors import ConfigurationError, TaskFailed
from raysys.models import KIND_PATTERN, Lease, Outcome, check_payload

log = logging.getLogger(__name__)


@dataclass(frozen=True, slots=True)
class TaskContext:
    """What a handler knows about the attempt it runs."""

    task_id: str
    attempt: int
    fence: int
    idempotency_key: str


HandlerFn = Callable[[Any, TaskContext], Any]


@dataclass(frozen=True, slots=True)
class Handler:
    name: str
    fn: HandlerFn
    max_attempts: int = 3
    timeout_s: float = 300.0


_REGISTRY: dict[str, Handler] = {}
_LOCK = threading.Lock()


def task(name: str | None = None, *, max_attempts: int = 3,
         timeout_s: float = 300.0) -> Callable[[HandlerFn], HandlerFn]:
    """Register ``fn`` as the handler of kind ``name`` (default: the function's name)."""
    import re

    def decorate(fn: HandlerFn) -> HandlerFn:
        kind = name or fn.__name__
        if not re.match(KIND_PATTERN, kind):
            raise ConfigurationError(f"task name {kind!r} must match {KIND_PATTERN}")
        if not 1 <= max_attempts <= 100 or timeout_s <= 0:
            raise ConfigurationError(f"task {kind}: max_attempts 1..100 and timeout_s > 0")
        with _LOCK:
            _REGISTRY[kind] = Handler(kind, fn, max_attempts, timeout_s)
        return fn

    return decorate


def get_handler(kind: str) -> Handler | None:
    return _REGISTRY.get(kind)


def registered_kinds() -> list[str]:
    return sorted(_REGISTRY)


def import_handler_modules(modules: list[str]) -> None:
    """Import the modules named in RAYSYS_HANDLERS; a missing one is a configuration error."""
    for module in modules:
        try:
            importlib.import_module(module)
        except ImportError as exc:
            raise ConfigurationError(
                f"RAYSYS_HANDLERS names {module!r}, which cannot be imported: {exc}") from None


# ---- built-in kinds (tests, benchmarks, the demo) ---------------------------------------------
@task("noop")
def _noop(payload: Any, ctx: TaskContext) -> None:
    return None


@task("echo")
def _echo(payload: Any, ctx: TaskContext) -> Any:
    return payload


@task("sleep")
def _sleep(payload: Any, ctx: TaskContext) -> None:
    seconds = payload.get("seconds") if isinstance(payload, dict) else None
    if not isinstance(seconds, int | float) or not 0 <= seconds <= 3600:
        raise TaskFailed('sleep needs {"seconds": number between 0 and 3600}')
    time.sleep(float(seconds))


@task("fail")
def _fail(payload: Any, ctx: TaskContext) -> None:
    message = payload.get("message") if isinstance(payload, dict) else None
    raise TaskFailed(str(message or "failed on purpose"))


@task("flaky")
def _flaky(payload: Any, ctx: TaskContext) -> Any:
    """Fails its first ``fail_times`` attempts (default 1), then returns its payload."""
    fail_times = payload.get("fail_times", 1) if isinstance(payload, dict) else 1
    if ctx.attempt <= int(fail_times):
        raise TaskFailed(f"flaky: attempt {ctx.attempt} fails on purpose")
    return payload


class Executor:
    """Runs leases through their handlers with a per-task timeout.

    A handler that overruns its timeout is reported as a failed attempt; Python cannot kill
    its thread, so it is abandoned (its late result is ignored, and its lease's fence would
    reject a commit anyway).
    """

    def __init__(self, max_threads: int = 8) -> None:
        self._pool = ThreadPoolExecutor(max_workers=max_threads, thread_name_prefix="raysys-task")

    def run(self, lease: Lease) -> Outcome:
        handler = get_handler(lease.kind)
        if handler is None:
            return Outcome(ok=False, error=f"no handler registered for kind {lease.kind!r}",
                           retryable=False)
        ctx = TaskContext(lease.task_id, lease.attempt, lease.fence,
                          lease.effective_idempotency_key)
        timeout = min(lease.timeout_s, handler.timeout_s)
        began = time.perf_counter()
        if lease.kind in ("noop", "echo"):  # trivial built-ins run inline: no thread hop
            outcome = _call(handler, lease.payload, ctx)
        else:
            future = self._pool.submit(_call, handler, lease.payload, ctx)
            try:
                outcome = future.result(timeout=timeout)
            except FutureTimeout:
                outcome = Outcome(ok=False, error=f"timed out after {timeout:g} s")
        return outcome._replace(seconds=time.perf_counter() - began)

    def shutdown(self) -> None:
        self._pool.shutdown(wait=False, cancel_futures=True)


def _call(handler: Handler, payload: Any, ctx: TaskContext) -> Outcome:
    try:
        result = handler.fn(payload, ctx)
        check_payload(result, what="result")
        return Outcome(ok=True, result=result)
    except Exception as exc:  # a handler's error is the task's failure, never the worker's
        log.debug("task %s attempt %d failed: %r", ctx.task_id, ctx.attempt, exc)
        return Outcome(ok=False, error=f"{type(exc).__name__}: {exc}"[:2000])
