"""A kind only an autoscaled node can run (it needs the ``special`` resource)."""

from __future__ import annotations

from typing import Any

import ray

import raysys


@raysys.task("autoscaled.special", resources={"special": 1}, num_cpus=0)
def special(payload: Any, ctx: Any) -> str:
    return str(ray.get_runtime_context().get_node_id())
