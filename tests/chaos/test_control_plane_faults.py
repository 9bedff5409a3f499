"""Chaos: Redis crashes or stalls under the actors; the Coordinator and Distributor die
(issue 7, scenarios 3, 4, 6).

Scenarios 3 and 4 run the actors on a Redis the test owns (its own data dir; the actors attach
to it as the embedded default), so they can kill it with SIGKILL or pause it. The attempt record
lives on another server, so it sees every attempt whatever happens to the raysys Redis. Each
run is checked like the worker scenarios (``harness.violations``) and writes its figures to the
results file.
"""

from __future__ import annotations

import inspect
import os
import random
import signal
import time
from pathlib import Path
from typing import Any

import pytest
import redis

from raysys.redis_server.connection import connect_redis
from raysys.store.keyspace import Keyspace
from raysys.store.replies import as_text
from tests.chaos.harness import (
    DeployFn,
    Deployment,
    RunRecord,
    actor_pid,
    chaos_row,
    mid_run,
    violations,
)
from tests.support.polling import wait_until
from tests.support.results import ResultsFile

pytestmark = [pytest.mark.chaos, pytest.mark.slow]

# The actors' Redis client timeout (raysys.redis_conn.connect_redis's default socket timeout).
CLIENT_TIMEOUT_S = float(inspect.signature(connect_redis).parameters["socket_timeout"].default)


def own_redis(redis_server_factory: Any, data_dir: Path, appendfsync: str) -> Any:
    """A Redis serving ``data_dir`` as the embedded default does (password file, AOF, no RDB)."""
    return redis_server_factory(password="generate", appendfsync=appendfsync, data_dir=data_dir)


def task_ids_in_store(conn: redis.Redis, namespace: str) -> list[str]:
    keys = Keyspace(namespace)
    pattern = keys.pattern()[:-1] + "t:*"
    start = len(keys.task(""))
    return [as_text(k)[start:] for k in conn.scan_iter(match=pattern, count=1000)]


# ---- 3. SIGKILL Redis mid-run (AOF on, no RDB) and restart it ----------------------------------
@pytest.mark.timeout(150)
def test_sigkill_redis_mid_run(chaos_deploy: DeployFn, redis_server_factory: Any,
                               tmp_path: Path, chaos_rng: random.Random, chaos_seed: int,
                               results_file: ResultsFile) -> None:
    # given the actors on a Redis with AOF on (appendfsync always) and RDB snapshots off
    data_dir = tmp_path / "data"
    server = own_redis(redis_server_factory, data_dir, "always")
    conn = redis.Redis.from_url(server.url)
    config = conn.config_get("appendonly") | conn.config_get("save")
    assert config == {"appendonly": "yes", "save": ""}, config
    n, more, workers, seconds = 800, 200, 3, 0.03
    d = chaos_deploy(workers, data_dir=data_dir, conn=conn)
    began = time.monotonic()
    ids = d.client.submit_specs(d.log.specs(n, seconds))
    wait_until(lambda: d.final() >= chaos_rng.uniform(0.3, 0.5) * n, 60, "the run to be mid-way")
    # when Redis is killed with SIGKILL mid-run, stays down 2 s, and is started again
    run_before = str(conn.info("server")["run_id"])
    fence_before = int(conn.get(Keyspace(d.namespace).fence) or 0)
    done = d.final() / n
    at = time.time()
    server.kill()
    time.sleep(2.0)
    server.start()
    restarted = time.time()
    # (tasks accepted after the restart must run too)
    ids += d.client.submit_specs(d.log.specs(more, seconds, start=n))
    record = d.finish(ids, 120, redis_outage=(at, restarted))
    duration = time.monotonic() - began
    # then no accepted task is lost or duplicated, and every fence granted after the restart is
    # above every fence granted before it (the epoch bump on the new run_id)
    bound = workers * d.capacity
    problems, fences = _redis_crash_problems(d, record, ids, run_before, fence_before,
                                            restarted)
    problems += violations(record, extra_bound=bound) + mid_run(done, "Redis was killed")
    results_file.put(chaos_row(
        "3", "SIGKILL Redis (AOF always, no RDB) mid-run, restart after 2 s", record,
        seed=chaos_seed, size=f"{n} + {more} tasks, {workers} workers",
        faults=f"1 Redis kill at {done:.0%}", duration_s=duration, problems=problems,
        extra_bound=bound, env=d.environment(),
        notes=f"{fences}; the store holds exactly the {len(ids)} accepted ids; {more} tasks "
        f"accepted after the restart ran too; {len(record.ledger_gaps)} ledger gaps"))
    assert not problems, f"seed {chaos_seed}: " + "\n".join(problems)


def _redis_crash_problems(d: Deployment, record: RunRecord, ids: list[str], run_before: str,
                          fence_before: int, restarted: float) -> tuple[list[str], str]:
    """Problems, and a line on the fences before and after the restart.

    ``fence_before``: the fence counter read just before the kill. The new run's first grant
    raises the counter (audit ``fence_epoch``: ``from_fence`` as the AOF brought it back,
    ``to_fence`` the server-clock floor); every lease granted after the restart must be above
    it, so an attempt started after the restart holds either a lease granted before the crash
    (still queued on its worker) or a fence above the raise.
    """
    problems = []
    stored = task_ids_in_store(d.conn, d.namespace)
    if sorted(stored) != sorted(ids):
        problems.append(f"the store holds {len(stored)} tasks, {len(set(stored))} distinct, for "
                        f"{len(ids)} accepted ({len(set(ids) - set(stored))} missing)")
    run_after = str(d.conn.info("server")["run_id"])
    epochs = [e for e in record.events("fence_epoch") if e.fields.get("from_run") == run_before]
    if run_after == run_before or len(epochs) != 1:
        problems.append(f"{len(epochs)} fence epoch bumps from run {run_before} to {run_after}")
        return problems, "no epoch bump"
    low, high = int(epochs[0].fields["from_fence"]), int(epochs[0].fields["to_fence"])
    if low < fence_before:
        problems.append(f"the fence counter came back at {low}, below {fence_before} read "
                        "before the crash: the AOF lost acknowledged grants")
    if high <= low:
        problems.append(f"the epoch bump did not raise the fences ({low} -> {high})")
    wrong = [a for a in record.attempts if a.started > restarted and low < a.fence <= high]
    if wrong:
        problems.append(f"{len(wrong)} attempts after the restart hold fences between the old "
                        f"counter and the raise, e.g. {wrong[:2]}")
    later = [a.fence for a in record.attempts if a.fence > high]
    if not later:
        problems.append("no lease was granted above the raised fence after the restart")
    return problems, (f"new run_id; the fence counter came back at {low} and was raised to "
                      f"{high} before the first grant ({len(later)} attempts above it)")


# ---- 4. Redis stalls (CLIENT PAUSE) longer than the client timeout ------------------------------
@pytest.mark.timeout(150)
def test_redis_paused_past_client_timeout(chaos_deploy: DeployFn, redis_server_factory: Any,
                                          tmp_path: Path, chaos_rng: random.Random,
                                          chaos_seed: int, results_file: ResultsFile) -> None:
    # given the actors on a Redis the test owns, the run 30-50 % committed
    data_dir = tmp_path / "data"
    server = own_redis(redis_server_factory, data_dir, "everysec")
    conn = redis.Redis.from_url(server.url)
    n, workers, seconds = 600, 3, 0.03
    d = chaos_deploy(workers, data_dir=data_dir, conn=conn)
    began = time.monotonic()
    ids = d.client.submit_specs(d.log.specs(n, seconds))
    wait_until(lambda: d.final() >= chaos_rng.uniform(0.3, 0.5) * n, 60, "the run to be mid-way")
    # when every client is paused (CLIENT PAUSE ALL) for 2 s longer than the client timeout
    pause_s = CLIENT_TIMEOUT_S + 2.0
    done = d.final() / n
    d.conn.execute_command("CLIENT", "PAUSE", int(pause_s * 1000), "ALL")
    time.sleep(pause_s)
    record = d.finish(ids, 120)
    duration = time.monotonic() - began
    # then nothing is lost and nothing is committed twice
    bound = workers * d.capacity
    problems = violations(record, extra_bound=bound) + mid_run(done, "Redis paused")
    results_file.put(chaos_row(
        "4", f"CLIENT PAUSE ALL for {pause_s:g} s (client timeout {CLIENT_TIMEOUT_S:g} s)",
        record, seed=chaos_seed, size=f"{n} tasks, {workers} workers",
        faults=f"1 pause at {done:.0%}", duration_s=duration, problems=problems,
        extra_bound=bound, env=d.environment(),
        notes=f"every actor's calls stalled past their {CLIENT_TIMEOUT_S:g} s timeout; commits "
        "that reached Redis after their lease had expired during the pause: "
        f"{len(record.events('fence_rejected'))}, all refused"))
    assert not problems, f"seed {chaos_seed}: " + "\n".join(problems)


# ---- 6. kill the Coordinator and the Distributor mid-run ----------------------------------------
@pytest.mark.timeout(150)
def test_sigkill_coordinator_and_distributor(chaos_deploy: DeployFn, chaos_rng: random.Random,
                                             chaos_seed: int,
                                             results_file: ResultsFile) -> None:
    # given 1,000 tasks on three workers
    n, workers, seconds = 1000, 3, 0.03
    d = chaos_deploy(workers, batch=10, lease_ttl_s=4.0)  # no lease may expire: TTL to spare
    began = time.monotonic()
    ids = d.client.submit_specs(d.log.specs(n, seconds))
    # when the Distributor, then the Coordinator, then both are killed with SIGKILL mid-run
    # (first one in a random order)
    plan = [["distributor"], ["coordinator"], ["coordinator", "distributor"]]
    if chaos_rng.random() < 0.5:
        plan[0], plan[1] = plan[1], plan[0]
    kills: list[tuple[list[str], float]] = []
    pids_before: dict[str, set[int]] = {"coordinator": set(), "distributor": set()}
    for step, share in zip(plan, (0.25, 0.45, 0.65), strict=True):
        wait_until(lambda s=share: d.final() >= s * n, 60, f"{share:.0%} of the run to commit")
        done = d.final() / n
        for name in step:
            pid = _pid(d, name)
            pids_before[name].add(pid)
            os.kill(pid, signal.SIGKILL)
        kills.append((step, done))
    record = d.finish(ids, 120)
    duration = time.monotonic() - began
    # then both came back (new processes), the run completed, nothing lost or committed twice,
    # and no task ran twice: workers renew their own leases, whoever else dies
    problems = violations(record, extra_bound=0)
    for name, old in pids_before.items():
        if _pid(d, name) in old:
            problems.append(f"the {name} did not come back in a new process")
    problems += mid_run(kills[0][1], "the first kill landed")
    results_file.put(chaos_row(
        "6", "SIGKILL the Distributor, the Coordinator, then both", record, seed=chaos_seed,
        size=f"{n} tasks, {workers} workers",
        faults=", ".join(f"{'+'.join(step)} at {done:.0%}" for step, done in kills),
        duration_s=duration, problems=problems, extra_bound=0, env=d.environment(),
        notes="both came back in new processes (Ray restarts them); no task ran twice: "
        "workers renew their own leases in Redis"))
    assert not problems, f"seed {chaos_seed}: " + "\n".join(problems)


def _pid(d: Deployment, name: str) -> int:
    return actor_pid(d.client.coordinator if name == "coordinator" else d.client.distributor)
