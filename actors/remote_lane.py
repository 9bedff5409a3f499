"""Kinds with Ray options run as Ray tasks: placed by Ray's scheduler, under the worker's lease.

The Worker that holds the lease submits one Ray task per attempt with the kind's options
(``num_cpus``, ``num_gpus``, ``memory``, ``resources``, ``runtime_env``) and ``max_retries=0``:
raysys counts attempts, Ray retries nothing. The task runs the handler with the same rules as a
worker thread (:func:`raysys.execution.call_sync`), tells the worker when it starts (the time
limit counts from there), and returns the :class:`~raysys.models.Outcome`. The worker keeps
renewing the lease meanwhile and commits under its fence; a cancel, a lost lease or the time
limit force-cancels the task (``ray.cancel(force=True)`` kills the process running it).
"""

from __future__ import annotations

import asyncio
import logging
import time
from concurrent.futures import Future
from typing import Any

import ray

from raysys.execution import call_async, call_sync
from raysys.execution.lanes import Report, Stop, outcome_of
from raysys.handlers import Handler, KindOptions, TaskContext
from raysys.models import Lease, Outcome

log = logging.getLogger(__name__)


@ray.remote(max_retries=0)
def run_attempt(fn: Any, is_async: bool, kind: str, payload: Any, fields: dict[str, Any],
                worker: Any) -> Outcome:
    """One attempt inside a Ray task (options are the kind's); never raises for the handler."""
    if worker is not None:
        worker.attempt_started.remote(fields["task_id"], fields["fence"], time.time())
    handler = Handler(kind, fn, KindOptions(), is_async)
    ctx = TaskContext(fields["task_id"], fields["attempt"], fields["fence"],
                      fields["idempotency_key"], fields["timeout_s"])
    if is_async:
        return asyncio.run(call_async(handler, payload, ctx))
    return call_sync(handler, payload, ctx)


class RayRemoteLane:
    """Submits attempts as Ray tasks; ``worker`` (this actor's handle) hears when each
    starts."""

    def __init__(self, worker: Any = None) -> None:
        self.worker = worker

    def start(self, handler: Handler, lease: Lease, ctx: TaskContext, report: Report) -> Stop:
        options = {**handler.options.ray_options(), "name": f"raysys:{lease.kind}"}
        fields = {"task_id": ctx.task_id, "attempt": ctx.attempt, "fence": ctx.fence,
                  "idempotency_key": ctx.idempotency_key, "timeout_s": ctx.timeout_s}
        ref = run_attempt.options(**options).remote(handler.fn, handler.is_async, lease.kind,
                                                    lease.payload, fields, self.worker)
        future: Future[Outcome] = ref.future()
        future.add_done_callback(lambda done: report(outcome_of(done)))

        def stop() -> None:
            ray.cancel(ref, force=True)

        return stop
