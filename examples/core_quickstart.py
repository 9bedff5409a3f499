"""The core alone, end to end: register a handler, submit, lease, run, commit, read results.

Run: python examples/core_quickstart.py   (no Redis needed: it starts the embedded one in a
temporary directory). Prints one JSON object with each task's final state and result.
"""

from __future__ import annotations

import json
import tempfile
from pathlib import Path
from typing import Any

import raysys
from raysys.config import load_settings
from raysys.core import open_core
from raysys.worker_loop import WorkerLoop


@raysys.task(name="greet", max_attempts=2, timeout_s=5)
def greet(payload: Any, ctx: raysys.TaskContext) -> str:
    """A handler gets its payload and a context (task id, attempt, fence, idempotency key)."""
    return f"hello, {payload['name']} (attempt {ctx.attempt}, fence {ctx.fence})"


def main() -> None:
    with tempfile.TemporaryDirectory() as data_dir:
        settings = load_settings(data_dir=Path(data_dir), namespace="quickstart")
        with open_core(settings) as core:
            store = core.store
            ids = store.submit_many([
                raysys.TaskSpec.build(kind="greet", payload={"name": name}, priority=p)
                for name, p in (("low", 0), ("high", 5))
            ] + [raysys.TaskSpec.build(kind="fail", payload={"message": "no"}, max_attempts=1)])
            loop = WorkerLoop(store, "quickstart-worker", batch=10)
            while loop.run_once():
                pass
            print(json.dumps({"tasks": [store.status(i).to_json() for i in ids],
                              "counts": store.counts()}))


if __name__ == "__main__":
    main()
