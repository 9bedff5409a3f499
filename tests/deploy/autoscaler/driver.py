"""Run as a client of the fake autoscaling cluster: start raysys, submit tasks of a kind no node
can place, and report what happened as one JSON line (tests/deploy/test_autoscaler.py)."""

from __future__ import annotations

import json
import sys
import tempfile
import time

import ray

import raysys
from raysys.models import TaskSpec


def alive_nodes() -> list[dict[str, float]]:
    return [n["Resources"] for n in ray.nodes() if n["Alive"]]


def main() -> int:
    ray.init(address="auto", namespace="autoscaled", log_to_driver=False)
    before = alive_nodes()
    client = raysys.start(1, data_dir=tempfile.mkdtemp(), namespace="autoscaled",
                          handlers="autoscaled_handlers")
    ids = client.submit_specs([TaskSpec.build(kind="autoscaled.special", payload=i)
                               for i in range(4)])
    seen_waiting, began = False, time.monotonic()
    while time.monotonic() - began < 150:
        seen_waiting = seen_waiting or "autoscaled.special" in client.waiting()
        states = [s.state.value for s in client.wait(ids, timeout=0)]
        if all(state == "succeeded" for state in states):
            break
        time.sleep(1)
    report = {"before": before, "after": alive_nodes(), "seen_waiting": seen_waiting,
              "states": states, "seconds": round(time.monotonic() - began, 1),
              "ran_on": sorted({s.result for s in client.wait(ids, timeout=0)
                                if s.result is not None})}
    client.shutdown()
    print(json.dumps(report))
    return 0


if __name__ == "__main__":
    sys.exit(main())
