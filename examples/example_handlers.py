"""Handlers this example brings with it: workers import this module (``RAYSYS_HANDLERS``).

Under ``ray job submit --working-dir examples`` the job's working dir is on every worker's
``sys.path``, so the worker pool the job starts can import it.
"""

from __future__ import annotations

from typing import Any

import raysys


@raysys.task(name="wordcount", max_attempts=3, timeout_s=10)
def wordcount(payload: Any, ctx: raysys.TaskContext) -> dict[str, int]:
    """Count the words of ``payload["text"]``; the result is stored with the task."""
    words = str(payload["text"]).split()
    return {"words": len(words), "attempt": ctx.attempt}
