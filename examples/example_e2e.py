"""The whole system end to end through the Python API: start, submit, wait, read results.

Run it two ways:

* ``python examples/example_e2e.py``: a private local Ray cluster and the embedded Redis,
  both stopped at the end (``raysys.start()``).
* ``ray job submit --address http://127.0.0.1:8265 --working-dir examples -- python
  example_e2e.py``: inside a job (``RAY_ADDRESS`` is set) it joins that cluster with
  ``raysys.up(address="auto", ...)`` and starts its own worker pool in its own namespace
  (``raysys-example`` unless ``RAYSYS_NAMESPACE`` says otherwise; it refuses, exit 2, a
  namespace where raysys actors already run). Actors a job starts run with the job's working
  dir, so the workers import this example's handlers (``example_handlers``); the pool is removed
  at the end (``client.down()``). Redis: ``RAYSYS_REDIS_URL``/``REDIS_*`` from the cluster's
  environment, else the embedded one in ``RAYSYS_DATA_DIR`` (a single-machine cluster):
  attached to if ``raysys up`` already runs it there, otherwise started for this run and
  stopped at its end.

Prints one JSON object on stdout (``ok``, ``mode``, ``namespace``, ``tasks``, ``states``: counts
by final state, ``unfinished``, ``first_result``, ``failed_error``) and exits 0 only if every
task reached the state it should.
"""

from __future__ import annotations

import json
import os
import sys
from collections import Counter
from typing import Any

import raysys

HANDLERS = "example_handlers"  # this folder's module; workers import it by name
TEXTS = [f"task {i} counts these words" for i in range(20)]
WAIT_S = 120.0


def run(client: Any) -> dict[str, Any]:
    """Submit 20 word counts and one task that fails on purpose; wait; report every task."""
    ids = client.submit_many("wordcount", [{"text": t} for t in TEXTS], priority=1)
    ids.append(client.submit("fail", {"message": "this one fails on purpose"}, max_attempts=1))
    results = client.wait(ids, timeout=WAIT_S)
    states = Counter(r.state.value for r in results)
    counted = all(isinstance(r.result, dict) and r.result.get("words") == 5
                  for r in results[:-1])
    ok = (counted and results[-1].state.value == "dead"
          and states == Counter({"succeeded": len(TEXTS), "dead": 1}))
    unfinished = sum(n for s, n in states.items()
                     if s not in {"succeeded", "dead", "cancelled", "quarantined"})
    return {"ok": ok, "tasks": len(ids), "states": dict(states), "unfinished": unfinished,
            "first_result": results[0].result, "failed_error": results[-1].error}


def pool_exists(namespace: str) -> bool:
    """Whether raysys actors already run in ``namespace`` (e.g. the cluster's `raysys up`)."""
    try:
        client = raysys.connect(address="auto", namespace=namespace)
    except raysys.RayUnavailable:
        return False
    client.shutdown()  # disconnects only
    return True


def run_in_job(namespace: str) -> dict[str, Any]:
    """Inside ``ray job submit``: a pool of our own on the job's cluster, removed at the end."""
    from raysys.config import load_settings
    from raysys.redis_server.attach import attach_or_start

    if pool_exists(namespace):
        # Its workers would lack this job's handlers, and client.down() would remove them.
        raise raysys.ConfigurationError(
            f"raysys actors already run in namespace {namespace!r}; this example starts and "
            "removes a pool of its own: give it another RAYSYS_NAMESPACE (or remove a pool it "
            f"left behind: RAYSYS_NAMESPACE={namespace} raysys down)")
    settings = load_settings()
    server = None
    if not settings.redis_configured:
        # None when a server (e.g. the one `raysys up` started) already serves the data dir.
        _, server = attach_or_start(settings.data_dir)
    try:
        client = raysys.up(address="auto", workers=2, namespace=namespace, handlers=HANDLERS)
        try:
            return run(client)
        finally:
            client.down()  # the detached actors this job started
            client.shutdown()  # disconnect from the cluster
    finally:
        if server is not None:
            server.stop()


def main() -> int:
    sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
    import example_handlers  # noqa: F401  (registers "wordcount" in this process too)

    namespace = os.environ.get("RAYSYS_NAMESPACE", "raysys-example")
    if os.environ.get("RAY_ADDRESS"):
        try:
            report = {"mode": "job", "namespace": namespace, **run_in_job(namespace)}
        except raysys.ConfigurationError as exc:
            print(f"example_e2e: {exc}", file=sys.stderr)
            return 2
    else:
        with raysys.start(workers=2, namespace=namespace, handlers=HANDLERS) as client:
            report = {"mode": "local", "namespace": namespace, **run(client)}
    print(json.dumps(report), flush=True)
    return 0 if report["ok"] else 1


if __name__ == "__main__":
    sys.exit(main())
