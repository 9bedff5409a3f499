"""Task kinds for the console's browser tests (imported by every worker through RAYSYS_HANDLERS).

``fixable`` fails until the operator "fixes" it: it raises ``TaskFailed`` unless the file named
by ``payload["fixed_if"]`` exists, so a test can let it die, create the file, and redrive it.
"""

from __future__ import annotations

import os
from typing import Any

import raysys
from raysys.errors import TaskFailed
from raysys.handlers import TaskContext


@raysys.task("fixable")
def fixable(payload: Any, ctx: TaskContext) -> dict[str, Any]:
    marker = payload.get("fixed_if") if isinstance(payload, dict) else None
    if not isinstance(marker, str) or not os.path.exists(marker):
        raise TaskFailed(f"not fixed yet: {marker} does not exist")
    return {"fixed": True, "attempt": ctx.attempt}
