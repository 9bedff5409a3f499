"""Task kinds for ``benchmarks/limits_bench.py`` (workers import them: RAYSYS_HANDLERS).

Each writes what it saw to the benchmark's record Redis (``LIMITS_BENCH_REDIS_URL``), as JSON
on a list: when it started, its pid, and when it noticed its cancel signal.
"""

from __future__ import annotations

import json
import os
import time
from typing import Any

import redis

import raysys
from raysys.handlers import TaskContext

_client: redis.Redis | None = None


def record(event: dict[str, Any]) -> None:
    global _client
    if _client is None:
        _client = redis.Redis.from_url(os.environ["LIMITS_BENCH_REDIS_URL"])
    _client.rpush("limits", json.dumps(event))


@raysys.task("limits.wait", max_attempts=1)
def wait(payload: Any, ctx: TaskContext) -> None:
    """Waits on its cancel signal (cancels, inline time limits)."""
    record({"ev": "start", "task": ctx.task_id, "t": time.time()})
    ctx.cancelled.wait(float(payload.get("s", 60)))
    record({"ev": "told", "task": ctx.task_id, "t": time.time(), "why": ctx.cancelled.reason})


@raysys.task("limits.ray", num_cpus=0.1, timeout_s=0.5, max_attempts=1)
def ray_hang(payload: Any, ctx: TaskContext) -> None:
    """A Ray task that overruns its 0.5 s limit: the worker force-cancels it."""
    record({"ev": "start", "task": ctx.task_id, "t": time.time(), "pid": os.getpid()})
    time.sleep(60)
