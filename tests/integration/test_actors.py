"""The actor system end to end on a real local Ray cluster and a real Redis.

Every run is checked against the independent commit ledger: ``lost`` and
``duplicate_commits`` must be 0 whatever was killed.
"""

from __future__ import annotations

import json
import os
import random
import signal
import subprocess
import sys
import time
from collections import Counter
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
import ray
import redis

from raysys.bench.workload import demo_specs
from raysys.client import Client, connect
from raysys.errors import ConfigurationError, NotFound, RayUnavailable, ValidationError
from raysys.ledger import LedgerReport
from raysys.models import FINAL_STATES, TaskSpec, TaskState
from raysys.store.keyspace import Keyspace
from tests.support.polling import wait_until

pytestmark = [pytest.mark.integration, pytest.mark.timeout(120)]

Report = Callable[[Client, list[str]], LedgerReport]
FAST_TTL: dict[str, Any] = {"lease_ttl_s": 2.0, "reaper_interval_s": 0.5}


def final_count(client: Client) -> int:
    counts = client.counts()
    return sum(counts[state.value] for state in FINAL_STATES)


def sleep_specs(n: int, seconds: float) -> list[TaskSpec]:
    return [TaskSpec.build(kind="sleep", payload={"seconds": seconds}) for _ in range(n)]


def test_end_to_end_mixed_workload(raysys_start: Callable[..., Client],
                                   ledger_report: Report) -> None:
    # given a pool of two workers
    client = raysys_start(workers=2)
    specs = demo_specs(500)
    # when 500 mixed tasks (echo, noop, flaky, fail) are submitted
    ids = client.submit_specs(specs)
    results = client.wait(ids, timeout=60)
    # then every task is final, in the order of ids, and the ledger accounts for each once
    assert [r.id for r in results] == ids
    states = Counter(r.state for r in results)
    expected_dead = sum(1 for s in specs if s.kind == "fail")
    assert states == {TaskState.SUCCEEDED: 500 - expected_dead, TaskState.DEAD: expected_dead}
    counts = client.counts()
    assert counts["succeeded"] == 500 - expected_dead and counts["dead"] == expected_dead
    assert counts["pending"] == counts["leased"] == counts["failed"] == 0
    report = ledger_report(client, ids)
    assert (report.lost, report.duplicate_commits, report.tasks) == (0, 0, 500)
    for spec, result in zip(specs, results, strict=True):
        if spec.kind == "echo":
            assert result.result == spec.payload and result.error is None
        elif spec.kind == "flaky":
            assert result.attempts == 2 and result.result == spec.payload
        elif spec.kind == "fail":
            assert result.attempts == 2 and "fails on purpose" in (result.error or "")
    live = [w for w in client.workers() if w["live"]]
    assert len(live) == 2


def test_client_calls_and_errors(raysys_start: Callable[..., Client]) -> None:
    # given a pool with no workers, so submitted tasks stay pending
    client = raysys_start(workers=0)
    first = client.submit("echo", {"x": 1}, priority=5, idempotency_key="once")
    # when the same idempotency key is submitted again, then the same task comes back
    assert client.submit("echo", {"x": 1}, priority=5, idempotency_key="once") == first
    status = client.status(first)
    assert (status.state, status.priority, status.kind) == (TaskState.PENDING, 5, "echo")
    # cancel takes a pending task to its final state
    assert client.cancel(first) == TaskState.PENDING
    assert client.wait([first], timeout=5)[0].state == TaskState.CANCELLED
    # bad input is a typed error raised before anything is sent
    with pytest.raises(ValidationError):
        client.submit("no spaces allowed", None)
    # an error raised inside the actor arrives as itself, not wrapped by Ray
    with pytest.raises(NotFound):
        client.status("0" * 32)
    # wait with a timeout returns the current (non-final) statuses
    pending = client.submit_many("noop", [1, 2])
    assert {r.state for r in client.wait(pending, timeout=0.2)} == {TaskState.PENDING}
    # connect() finds the same actors by namespace; an empty namespace is a clear error
    other = connect(namespace=client.namespace)
    assert other.counts()["pending"] == 2
    with pytest.raises(RayUnavailable):
        connect(namespace="it-nobody-here")
    # draining one worker names it by worker id
    with pytest.raises(RayUnavailable):
        client.drain(worker=f"{client.namespace}-worker-0")
    with pytest.raises(ConfigurationError):
        client.drain(worker="worker-0")


def test_priority_order_of_leases(raysys_start: Callable[..., Client],
                                  ledger_report: Report) -> None:
    # given 300 tasks of mixed priorities queued before any worker exists
    client = raysys_start(workers=0, batch=20)
    rng = random.Random(3)
    specs = [TaskSpec.build(kind="noop", payload=i, priority=rng.randint(-2, 5))
             for i in range(300)]
    ids = client.submit_specs(specs)
    assert client.counts()["pending"] == 300
    # when workers start
    client.scale(2)
    results = client.wait(ids, timeout=60)
    assert all(r.state == TaskState.SUCCEEDED for r in results)
    # then leases (fences) were granted by priority, FIFO within one priority
    by_fence = sorted(zip(results, range(300), strict=True), key=lambda rs: rs[0].fence)
    order = [(-r.priority, seq) for r, seq in by_fence]
    assert order == sorted(order)
    assert len({r.fence for r in results}) == 300
    report = ledger_report(client, ids)
    assert (report.lost, report.duplicate_commits) == (0, 0)


def test_kill_9_worker_mid_run(raysys_start: Callable[..., Client],
                               ledger_report: Report) -> None:
    # given two workers, a 2 s lease TTL and a run of 2,000 short sleeps
    client = raysys_start(workers=2, batch=20, **FAST_TTL)
    ids = client.submit_specs(sleep_specs(2000, 0.005))
    victim = client.worker(0)
    old_pid = ray.get(victim.pid.remote(), timeout=30)
    wait_until(lambda: final_count(client) >= 500, 60, "25% of the run")
    wait_until(lambda: ray.get(victim.info.remote(), timeout=10)["held"] > 0, 30,
               "worker 0 to hold leases")
    # when worker 0's process is killed with SIGKILL mid-run (25-75% committed), holding leases
    at_kill = final_count(client)
    assert at_kill <= 1500, f"{at_kill} of 2000 done: too late to be mid-run"
    os.kill(old_pid, signal.SIGKILL)
    # then Ray restarts it, the reaper returns its leases after the TTL, and the run completes
    results = client.wait(ids, timeout=120)
    assert Counter(r.state for r in results) == {TaskState.SUCCEEDED: 2000}
    report = ledger_report(client, ids)
    assert (report.lost, report.duplicate_commits) == (0, 0)
    assert client.stats().get("expired", 0) > 0  # its leases came back through the reaper
    new_pid = ray.get(victim.pid.remote(), timeout=30)
    assert new_pid != old_pid


def test_kill_distributor_then_coordinator(raysys_start: Callable[..., Client],
                                           ledger_report: Report) -> None:
    # given a run of 2,000 short sleeps on two workers
    client = raysys_start(workers=2, batch=20, **FAST_TTL)
    ids = client.submit_specs(sleep_specs(2000, 0.005))
    distributor_pid = ray.get(client.distributor.pid.remote(), timeout=30)
    coordinator_pid = ray.get(client.coordinator.pid.remote(), timeout=30)
    wait_until(lambda: final_count(client) >= 500, 60, "25% of the run")
    # when the distributor is killed (Ray restarts it) ...
    ray.kill(client.distributor, no_restart=False)
    done = final_count(client)
    wait_until(lambda: final_count(client) >= done + 100, 60, "progress after the distributor")
    # ... and then the coordinator, both mid-run
    assert final_count(client) <= 1500, "too late to be mid-run"
    ray.kill(client.coordinator, no_restart=False)
    # then both come back and the run completes with every task accounted for once
    results = client.wait(ids, timeout=120)
    assert Counter(r.state for r in results) == {TaskState.SUCCEEDED: 2000}
    report = ledger_report(client, ids)
    assert (report.lost, report.duplicate_commits) == (0, 0)
    assert ray.get(client.distributor.pid.remote(), timeout=30) != distributor_pid
    assert ray.get(client.coordinator.pid.remote(), timeout=30) != coordinator_pid


def test_keyed_submit_is_retried_across_a_coordinator_restart(
        raysys_start: Callable[..., Client]) -> None:
    # given a running system
    client = raysys_start(workers=1)
    # when the coordinator is killed and a keyed submission is made at once
    ray.kill(client.coordinator, no_restart=False)
    first = client.submit("echo", {"k": 1}, idempotency_key="survives-restart")
    # then the client retried until the restarted coordinator stored it, exactly once
    assert client.submit("echo", {"k": 1}, idempotency_key="survives-restart") == first
    assert client.wait([first], timeout=30)[0].state == TaskState.SUCCEEDED
    assert client.stats()["submitted"] == 1


def test_drain_hands_back_queued_leases_unspent(raysys_start: Callable[..., Client],
                                                 ledger_report: Report) -> None:
    # given one worker running one task at a time (0.02 s each), fed in batches of 5: as its
    # rate builds up it holds a few leases queued beyond its slot (its prefetch)
    client = raysys_start(workers=1, batch=5, concurrency=1)
    ids = client.submit_specs(sleep_specs(300, 0.02))
    worker = client.worker(0)
    wait_until(lambda: ray.get(worker.load.remote(), timeout=10)["queued"] >= 5, 30,
               "leases queued at the worker")
    # when it drains
    assert client.drain(timeout=30, worker=f"{client.namespace}-worker-0") is True
    # then its queued leases went straight back to the queue, not waiting for the TTL
    counts = client.counts()
    assert counts["leased"] == 0
    assert client.stats().get("released", 0) >= 1  # what it held queued then
    assert client.stats().get("expired", 0) == 0
    # and after resume everything runs once, on its first attempt: a hand-back costs none
    client.resume()
    results = client.wait(ids, timeout=60)
    assert Counter(r.state for r in results) == {TaskState.SUCCEEDED: 300}
    assert {r.attempts for r in results} == {1}
    report = ledger_report(client, ids)
    assert (report.lost, report.duplicate_commits) == (0, 0)


def test_workers_json_and_drain_by_node_from_the_cli(raysys_start: Callable[..., Client],
                                                     data_dir: Path) -> None:
    # given two workers, and the CLI pointed at this cluster and namespace
    client = raysys_start(workers=2)
    env = {**os.environ, "RAYSYS_NAMESPACE": client.namespace, "RAYSYS_DATA_DIR": str(data_dir)}
    address = ray.get_runtime_context().gcs_address
    raysys = str(Path(sys.executable).with_name("raysys"))

    def cli(*args: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run([raysys, *args, "--address", address], env=env, text=True,
                              capture_output=True, timeout=120, check=False)

    # when `raysys workers --json` runs
    run = cli("workers", "--json")
    # then one object {"workers": [...]} with DESIGN's fields for each live worker
    assert run.returncode == 0, run.stderr
    workers = json.loads(run.stdout)["workers"]
    assert len(workers) == 2
    for w in workers:
        assert {"id", "pid", "node", "inflight", "completed", "alive"} <= set(w)
        assert w["alive"] is True and w["inflight"] == 0
    # when every worker of this node drains (what a preStop hook runs) ...
    run = cli("drain", "--node", workers[0]["node_ip"])
    assert run.returncode == 0, run.stderr
    # ... then both workers are draining; an unknown node drains nothing and says so
    assert all(w["draining"] for w in client.workers())
    run = cli("drain", "--node", "10.255.255.1")
    assert run.returncode == 0 and "nothing to drain" in run.stderr


def test_drain_then_resume(raysys_start: Callable[..., Client], ledger_report: Report) -> None:
    # given a run of 300 short sleeps in progress
    client = raysys_start(workers=2, batch=10)
    ids = client.submit_specs(sleep_specs(300, 0.01))
    wait_until(lambda: final_count(client) >= 30, 30, "the run to get going")
    # when the pool drains
    assert client.drain(timeout=30) is True
    # then no worker holds a lease: every task is final or back in the queue, and nothing moves
    counts = client.counts()
    assert counts["leased"] == 0
    assert counts["pending"] + sum(counts[s.value] for s in FINAL_STATES) == 300
    assert counts["pending"] > 0, "the drain came too late to prove anything"
    time.sleep(0.5)
    assert client.counts() == counts
    report = ledger_report(client, ids)
    assert report.duplicate_commits == 0 and report.lost == counts["pending"]
    assert all(w["draining"] for w in client.workers())
    # and after resume the run completes
    client.resume()
    results = client.wait(ids, timeout=60)
    assert Counter(r.state for r in results) == {TaskState.SUCCEEDED: 300}
    report = ledger_report(client, ids)
    assert (report.lost, report.duplicate_commits) == (0, 0)


def test_long_task_keeps_its_lease_and_timeouts_fail(raysys_start: Callable[..., Client],
                                                     ledger_report: Report) -> None:
    # given a 1 s lease TTL and one worker
    client = raysys_start(workers=1, batch=5, lease_ttl_s=1.0, reaper_interval_s=0.2)
    # when a task runs 2.5 times longer than the TTL, and another overruns its own timeout
    long_ids = client.submit_many("sleep", [{"seconds": 2.5}])
    late = client.submit("sleep", {"seconds": 5}, timeout_s=0.3, max_attempts=1)
    results = client.wait([*long_ids, late], timeout=30)
    # then heartbeats renewed the long one's lease: one attempt, never reaped
    assert (results[0].state, results[0].attempts) == (TaskState.SUCCEEDED, 1)
    assert client.stats().get("expired", 0) == 0
    # and the overrun is a failed attempt that names the timeout
    assert results[1].state == TaskState.DEAD and "timed out" in (results[1].error or "")
    report = ledger_report(client, [*long_ids, late])
    assert (report.lost, report.duplicate_commits) == (0, 0)


def test_rolling_restart_of_every_actor_loses_nothing(raysys_start: Callable[..., Client],
                                                      ledger_report: Report,
                                                      redis_conn: redis.Redis) -> None:
    # given a run of 1,000 short sleeps in progress (DEPLOY.md, "Rolling updates")
    client = raysys_start(workers=2, batch=20)
    ids = client.submit_specs(sleep_specs(1000, 0.005))
    wait_until(lambda: final_count(client) >= 250, 60, "a quarter of the run")
    # when the old actors drain and go (the new version's rollout) ...
    client.down(drain=True, timeout=30)
    leased = int(redis_conn.hget(Keyspace(client.namespace).counts, "leased") or 0)
    assert leased == 0, "a drained pool holds no lease"
    assert ledger_report(client, ids).lost > 0, "the rollout came too late to prove anything"
    # ... and a new set of actors comes up in the same namespace
    new = raysys_start(workers=2, batch=20, namespace=client.namespace)
    # then the run completes with every task committed exactly once
    results = new.wait(ids, timeout=120)
    assert Counter(r.state for r in results) == {TaskState.SUCCEEDED: 1000}
    report = ledger_report(new, ids)
    assert (report.lost, report.duplicate_commits) == (0, 0)
