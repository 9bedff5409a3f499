"""The chaos suite's task kind: every attempt writes itself down before and after it runs.

Workers import this module by name (the ``handlers`` setting, ``tests.chaos.chaos_handlers``):
Ray workers have the driver's working directory on ``sys.path``, and the chaos fixtures also
put the repository root on ``PYTHONPATH`` before ``ray.init``, so the name resolves on every
worker of the test cluster. Nothing is mocked: the handler runs in the real Worker actor under
a real lease, and its record goes to a Redis server the test owns, apart from the raysys Redis
that the scenarios crash, pause or cut off.

Kind ``chaos.work``; payload ``{"rec": "host:port", "key": str, "ns": str, "i": int,
"s": seconds}``:

- ``rec``/``key``: the record server (no password, 127.0.0.1) and the list to append to;
- ``ns``: the raysys namespace (a worker's lease holder id is ``<ns>-worker-<index>``; Ray's
  runtime context names the job's namespace, not the actor's);
- ``i``: the task's index in its run; ``s``: how long the handler sleeps (the work).

Each attempt appends two JSON events to ``key`` (RPUSH): ``{"ev": "start", "task", "att",
"fence", "worker", "pid", "t"}`` when the handler starts and ``{"ev": "end", ..., "ok"}`` when
it returns (``t`` is wall-clock seconds). An attempt killed or stopped mid-handler has a start
and no end. The result, ``{"i", "fence", "worker"}``, names the attempt that produced it, so the
committed result can be matched to exactly one recorded attempt.
"""

from __future__ import annotations

import json
import os
import threading
import time
from typing import Any

import redis

import raysys
from raysys.handlers import TaskContext

KIND = "chaos.work"
WORKER_ACTOR_PREFIX = "raysys-worker-"  # raysys.actors.factory.WORKER_PREFIX

_clients: dict[str, redis.Redis] = {}
_lock = threading.Lock()


def _record_client(address: str) -> redis.Redis:
    with _lock:
        client = _clients.get(address)
        if client is None:
            host, _, port = address.rpartition(":")
            client = redis.Redis(host=host, port=int(port), socket_timeout=5,
                                 socket_connect_timeout=5)
            _clients[address] = client
        return client


def holder_id(namespace: str) -> str:
    """The lease holder id of the Worker actor running this code (``<namespace>-worker-<i>``)."""
    import ray

    name = ray.get_runtime_context().get_actor_name() or ""
    if name.startswith(WORKER_ACTOR_PREFIX):
        return f"{namespace}-worker-{name[len(WORKER_ACTOR_PREFIX):]}"
    return f"pid-{os.getpid()}"  # not a named worker actor (a core-only loop)


def _append(payload: dict[str, Any], event: dict[str, Any]) -> None:
    _record_client(str(payload["rec"])).rpush(str(payload["key"]), json.dumps(event))


@raysys.task(KIND, max_attempts=100, timeout_s=120.0)
def work(payload: Any, ctx: TaskContext) -> dict[str, Any]:
    worker = holder_id(str(payload.get("ns", "")))
    event = {"task": ctx.task_id, "att": ctx.attempt, "fence": ctx.fence, "worker": worker,
             "pid": os.getpid()}
    _append(payload, {"ev": "start", **event, "t": time.time()})
    time.sleep(float(payload.get("s", 0.0)))
    _append(payload, {"ev": "end", **event, "t": time.time(), "ok": True})
    return {"i": payload.get("i"), "fence": ctx.fence, "worker": worker}
