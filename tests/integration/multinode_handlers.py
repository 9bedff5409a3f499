"""Task kinds for the multi-node scenarios (imported by every worker through RAYSYS_HANDLERS).

Each returns where it ran (the Ray node id), so a scenario can check placement.
"""

from __future__ import annotations

import os
import time
from typing import Any

import ray

import raysys
from raysys.handlers import TaskContext


def here() -> str:
    return str(ray.get_runtime_context().get_node_id())


@raysys.task("mn.inline")
def inline(payload: Any, ctx: TaskContext) -> dict[str, Any]:
    """Runs in the worker actor's process (no Ray options)."""
    ctx.cancelled.wait(float(payload.get("s", 0)))
    return {"node": here(), "pid": os.getpid()}


@raysys.task("mn.special", resources={"special": 1}, num_cpus=0)
def special(payload: Any, ctx: TaskContext) -> dict[str, Any]:
    """A Ray task that only the node with the ``special`` resource can run."""
    time.sleep(float(payload.get("s", 0)))
    return {"node": here(), "pid": os.getpid()}


@raysys.task("mn.nowhere", resources={"nowhere": 1}, num_cpus=0)
def nowhere(payload: Any, ctx: TaskContext) -> dict[str, Any]:
    """Needs a resource no node has until the scenario adds one."""
    return {"node": here()}


@raysys.task("mn.hang", resources={"special": 1}, num_cpus=0, timeout_s=1.0, max_attempts=1)
def hang(payload: Any, ctx: TaskContext) -> None:
    """A Ray task that overruns its 1 s limit; it writes its pid first."""
    with open(payload["pidfile"], "w") as fh:
        fh.write(str(os.getpid()))
    time.sleep(60)


@raysys.task("mn.stubborn", timeout_s=0.5, max_attempts=1)
def stubborn(payload: Any, ctx: TaskContext) -> None:
    """Overruns its limit and ignores the cancel signal: its thread stays stuck."""
    time.sleep(float(payload.get("s", 8)))
