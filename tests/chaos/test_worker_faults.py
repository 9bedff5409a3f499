"""Chaos: workers die, stall, lose their network, or drain under load (issue 7: 1, 2, 5, 7).

Every run is a real raysys deployment (Ray actors, real Redis) executing ``chaos.work`` tasks,
each attempt recorded by the handler itself (see ``harness.py``). After the run the invariants
are checked over the record, the commit ledger and the audit stream: 0 lost, exactly one
committed result per task, fences unique and rising per task, extra attempts bounded, and
leases of a dead or stalled worker taken back within the lease TTL plus the reaper interval.
Each scenario writes its figures to the results file (``--chaos-results``).
"""

from __future__ import annotations

import dataclasses
import os
import random
import signal
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
import ray
import redis

from raysys.actors.factory import start_worker
from raysys.signing.keyring import Keyring, generate_key, write_keyring_file
from tests.chaos.harness import (
    DeployFn,
    Deployment,
    RunRecord,
    chaos_row,
    collect,
    late_reclaims,
    mid_run,
    reclaim_latencies,
    violations,
)
from tests.chaos.tcp_proxy import TcpProxy
from tests.support.polling import wait_until
from tests.support.results import ResultsFile
from tests.support.stores import AuditEvent, read_audit

pytestmark = [pytest.mark.chaos, pytest.mark.slow]

# ---- 1. kill -9 a random worker every few seconds -----------------------------------------------
@pytest.mark.timeout(180)
def test_sigkill_random_workers_every_few_seconds(
        chaos_deploy: DeployFn, chaos_rng: random.Random, chaos_seed: int,
        results_file: ResultsFile) -> None:
    # given 2,000 tasks on four workers (lease TTL 2 s, reaper every 0.5 s)
    n, workers, seconds = 2000, 4, 0.03
    d = chaos_deploy(workers, batch=10)
    began = time.monotonic()
    ids = d.client.submit_specs(d.log.specs(n, seconds))
    # when a random worker is killed with SIGKILL every 2-4 s while 10-90 % are committed
    kills: list[tuple[float, float, dict[str, int], int]] = []  # (when, done, held, pid)
    wait_until(lambda: d.final() >= 0.1 * n, 60, "10 % of the run to commit")
    while True:
        time.sleep(chaos_rng.uniform(2.0, 4.0))
        done = d.final() / n
        if done >= 0.9:
            break
        victim = chaos_rng.randrange(workers)
        pid = d.pid(victim)
        held = d.held(victim)
        at = time.time()
        os.kill(pid, signal.SIGKILL)
        kills.append((at, done, held, pid))
    record = d.finish(ids, 120, killed={pid: at for at, _, _, pid in kills})
    duration = time.monotonic() - began
    # then nothing is lost or committed twice, and the extra attempts stay within what the
    # killed workers could hold (kills x per-worker capacity)
    bound = len(kills) * d.capacity
    problems = violations(record, extra_bound=bound)
    latencies: list[float] = []
    for at, _, held, _ in kills:
        got, missing = reclaim_latencies(record, held, at)
        latencies += got
        problems += missing
    problems += late_reclaims(latencies, d.ttl_s + d.reaper_s)
    killed = {pid for _, _, _, pid in kills}
    alive = {d.pid(i) for i in range(workers)}  # every worker answers, in a new process
    if alive & killed:
        problems.append(f"workers still report killed pids {sorted(alive & killed)}")
    if len(kills) < 3:
        problems.append(f"only {len(kills)} kills landed mid-run: the run is too short")
    results_file.put(chaos_row(
        "1", "SIGKILL a random worker every 2–4 s", record, seed=chaos_seed,
        size=f"{n} tasks, {workers} workers",
        faults=f"{len(kills)} kills at {kills[0][1]:.0%}–{kills[-1][1]:.0%}" if kills else "none",
        duration_s=duration, problems=problems, extra_bound=bound, reclaims=latencies,
        reclaim_bound_s=d.ttl_s + d.reaper_s, env=d.environment(),
        notes=f"{len(kills)} SIGKILLs; the reaper took back the {len(latencies)} leases the "
        "victims held; Ray restarted every victim in a new process; ledger gaps: "
        f"{len(record.ledger_gaps)} (a commit acknowledged to a worker killed before it wrote "
        "the ledger; the task is final in the store under that attempt's fence)"))
    assert not problems, f"seed {chaos_seed}: " + "\n".join(problems)


def _refused(record: RunRecord, holder: str) -> int:
    return sum(1 for e in record.events("fence_rejected") if e.fields.get("holder") == holder)


def _named(d: Deployment, index: int) -> bool:
    """True while an actor named like worker ``index`` exists in the namespace."""
    try:
        ray.get_actor(f"raysys-worker-{index}", namespace=d.namespace)
    except ValueError:
        return False
    return True


def stale_writes_problems(d: Deployment, record: RunRecord, index: int,
                          since: float) -> tuple[list[str], int]:
    """No write of worker ``index`` under a lease taken back after ``since`` was accepted: each
    was refused (a ``fence_rejected`` audit entry naming it, and the worker's log line), or
    never sent (the worker learned from a refused renewal that the lease was lost, stopped the
    task and logged it).

    The lost leases are the ``lease_expired`` audit entries naming the worker after the fault,
    including leases delivered to it after the fault began. Returns the problems and how many
    lost leases the worker ran anyway.
    """
    holder = d.holder(index)
    lost = {(e.fields["id"], int(e.fields["fence"])) for e in record.events("lease_expired")
            if e.fields.get("holder") == holder and e.ts >= since}
    rejected = {(e.fields["id"], int(e.fields["fence"])): e.fields.get("holder")
                for e in record.events("fence_rejected")}
    logs = d.worker_logs(index)
    problems = []
    ran = [a for a in record.attempts if (a.task_id, a.fence) in lost and a.ended is not None]
    for attempt in ran:
        key = (attempt.task_id, attempt.fence)
        if attempt.outcome == "ok":
            problems.append(f"task {attempt.task_id}: the stale holder's commit under fence "
                            f"{attempt.fence} was accepted after its lease was taken back")
            continue
        refused = rejected.get(key) == holder
        stopped = f"task {attempt.task_id} fence {attempt.fence} stopped: lease lost" in logs
        if refused and (f"commit of task {attempt.task_id} under fence {attempt.fence} "
                        "rejected") not in logs:
            problems.append(f"task {attempt.task_id}: the worker did not log its rejected "
                            f"commit under fence {attempt.fence}")
        if not refused and not stopped:
            problems.append(f"task {attempt.task_id}: the stale attempt under fence "
                            f"{attempt.fence} was neither refused (no fence_rejected audit "
                            "entry) nor stopped by the worker for its lost lease")
    if not ran:
        problems.append("the stale worker ran none of the leases it lost: nothing was tested")
    return problems, len(ran)


@dataclass(frozen=True)
class Fault:
    """A fault on worker ``index``: when it struck (wall clock), the leases the worker held
    then, and the share of the run final by then."""

    index: int
    held: dict[str, int]
    done: float
    at: float

    @classmethod
    def now(cls, d: Deployment, index: int, n: int) -> Fault:
        return cls(index, d.held(index), d.final() / n, time.time())


def stale_worker_problems(d: Deployment, record: RunRecord, fault: Fault,
                          what: str) -> tuple[list[str], list[float], int]:
    """A worker lost its leases to a fault (``what`` landed): the run completed once per task,
    the leases were taken back within TTL + reaper interval, and every write the stale worker
    made under them was refused and logged. Returns the problems, the reclaim latencies and how
    many lost leases the worker ran anyway."""
    problems = violations(record, extra_bound=d.capacity)
    latencies, missing = reclaim_latencies(record, fault.held, fault.at)
    problems += missing + late_reclaims(latencies, d.ttl_s + d.reaper_s)
    stale, ran = stale_writes_problems(d, record, fault.index, fault.at)
    return problems + stale + mid_run(fault.done, what), latencies, ran


# ---- 2. SIGSTOP a lease holder for twice the TTL ------------------------------------------------
@pytest.mark.timeout(150)
def test_sigstop_lease_holder_past_ttl(chaos_deploy: DeployFn, chaos_rng: random.Random,
                                       chaos_seed: int, results_file: ResultsFile) -> None:
    # given 600 tasks on three workers, a 2 s lease TTL, the run 25 % committed
    n, workers, seconds = 600, 3, 0.05
    d = chaos_deploy(workers, batch=10)
    began = time.monotonic()
    ids = d.client.submit_specs(d.log.specs(n, seconds))
    victim = chaos_rng.randrange(workers)
    wait_until(lambda: d.final() >= 0.25 * n and len(d.held(victim)) >= 5, 60,
               f"25 % committed and worker {victim} holding leases")
    pid = d.pid(victim)
    # when that worker's process is stopped (SIGSTOP) for twice the TTL, then continued
    fault = Fault.now(d, victim, n)
    os.kill(pid, signal.SIGSTOP)
    try:
        time.sleep(2 * d.ttl_s)
    finally:
        os.kill(pid, signal.SIGCONT)
    record = d.finish(ids, 90)
    duration = time.monotonic() - began
    # then its leases were taken back within TTL + reaper interval, the run completed once per
    # task, and every commit the stale worker made afterwards was refused and logged
    problems, latencies, ran = stale_worker_problems(d, record, fault, "the stop landed")
    results_file.put(chaos_row(
        "2", "SIGSTOP a lease holder for 2 × TTL, then SIGCONT", record, seed=chaos_seed,
        size=f"{n} tasks, {workers} workers", faults=f"1 stop ({len(fault.held)} leases) at "
        f"{fault.done:.0%}", duration_s=duration, problems=problems, extra_bound=d.capacity,
        reclaims=latencies, reclaim_bound_s=d.ttl_s + d.reaper_s, env=d.environment(),
        notes=f"after SIGCONT the stale worker still ran {ran} leases it had lost; its "
        f"{_refused(record, d.holder(victim))} commits under them were refused (audit + its own "
        "log), and it logged its refused renewals"))
    assert not problems, f"seed {chaos_seed}: " + "\n".join(problems)


# ---- 5. a worker cut off from Redis (TCP proxy) for twice the TTL -------------------------------
CUT = 2  # the index of the worker behind the proxy


def deploy_with_a_proxied_worker(chaos_deploy: DeployFn, server: Any, data_dir: Path,
                                 proxy: TcpProxy) -> Deployment:
    """Workers 0 and 1 on ``server`` directly (the actors configured with REDIS_HOST/PORT),
    worker ``CUT`` reaching it only through ``proxy``; every worker up and answering."""
    write_keyring_file(data_dir / "keys.json", Keyring([generate_key()]))
    conn = redis.Redis(host="127.0.0.1", port=server.port)
    d = chaos_deploy(2, data_dir=data_dir, conn=conn, redis_host="127.0.0.1",
                     redis_port=server.port)
    config = d.client.config
    proxied = dataclasses.replace(config, overrides={**config.overrides,
                                                     "redis_port": proxy.port})
    handle = start_worker(proxied, CUT)  # removed with the namespace's other actors
    ray.get(handle.load.remote(), timeout=60)
    return d


def cut_off(d: Deployment, proxy: TcpProxy, n: int) -> tuple[Fault, list[AuditEvent]]:
    """The proxy holds every byte between worker ``CUT`` and Redis for twice the TTL; the fault,
    and the commits of that worker Redis saw while it was cut off."""
    fault = Fault.now(d, CUT, n)
    proxy.cut()
    try:
        time.sleep(2 * d.ttl_s)
        committed = [e for e in read_audit(d.conn, d.namespace)
                     if e.ev == "committed" and e.ts > fault.at + 0.2
                     and e.fields.get("holder") == d.holder(CUT)]
    finally:
        proxy.heal()
    return fault, committed


@pytest.mark.timeout(150)
def test_worker_cut_off_from_redis(chaos_deploy: DeployFn, redis_server_factory: Any,
                                   tmp_path: Path, chaos_seed: int,
                                   results_file: ResultsFile) -> None:
    # given a password-less Redis the actors are configured with (REDIS_HOST/PORT settings),
    # two workers connected directly and a third that reaches Redis only through a TCP proxy
    server = redis_server_factory(password=None)
    proxy = TcpProxy(("127.0.0.1", server.port))
    n, seconds = 600, 0.05
    try:
        d = deploy_with_a_proxied_worker(chaos_deploy, server, tmp_path / "data", proxy)
        began = time.monotonic()
        ids = d.client.submit_specs(d.log.specs(n, seconds))
        wait_until(lambda: d.final() >= 0.25 * n and len(d.held(CUT)) >= 5, 60,
                   "25 % committed and the proxied worker holding leases")
        # when the proxy holds every byte between that worker and Redis for twice the TTL
        fault, committed_during_cut = cut_off(d, proxy, n)
        record = d.finish(ids, 90)
        duration = time.monotonic() - began
    finally:
        proxy.close()
    # then it committed nothing while cut off, its leases were taken back within TTL + reaper
    # interval, its late commits were refused and logged, and the run completed once per task
    problems, latencies, ran = stale_worker_problems(d, record, fault, "the cut landed")
    if committed_during_cut:
        problems.append(f"the cut-off worker committed {len(committed_during_cut)} batches "
                        "while cut off")
    results_file.put(chaos_row(
        "5", "a worker cut off from Redis (TCP proxy holds its bytes) for 2 × TTL", record,
        seed=chaos_seed, size=f"{n} tasks, 3 workers (1 behind the proxy)",
        faults=f"1 cut ({len(fault.held)} leases) at {fault.done:.0%}", duration_s=duration,
        problems=problems, extra_bound=d.capacity, reclaims=latencies,
        reclaim_bound_s=d.ttl_s + d.reaper_s, env=d.environment(),
        notes="no commit of the cut-off worker reached Redis while cut; it ran "
        f"{ran} leases it had lost (handlers need no Redis), and after the link healed its "
        f"{_refused(record, d.holder(CUT))} late commits were refused (audit + its own log)"))
    assert not problems, f"seed {chaos_seed}: " + "\n".join(problems)


# ---- 7. drain each worker under load, as a rolling update does ----------------------------------
def roll(d: Deployment, index: int, *, replace: bool) -> tuple[bool, int, int, float]:
    """Drain worker ``index``, stop it and bring it back: (drained in time, leases still held
    after the drain, leases handed back, when it was back). ``replace``: a new actor under the
    same name (a new version); otherwise Ray restarts the same actor in a new process.
    """
    released = d.client.stats().get("released", 0)
    finished = d.client.drain(timeout=30, worker=d.holder(index))
    left = len(d.held(index))
    released = d.client.stats().get("released", 0) - released
    old = d.client.worker(index)
    ray.get(old.stop.remote(), timeout=30)
    if replace:
        ray.kill(old, no_restart=True)
        wait_until(lambda: not _named(d, index), 30, f"worker {index} to be gone")
        new = start_worker(d.client.config, index)
    else:
        pid = d.pid(index)
        ray.kill(old, no_restart=False)  # a new process, same actor: __init__ runs again
        wait_until(lambda: d.pid(index) != pid, 60, f"worker {index} to restart")
        new = old
    ray.get(new.undrain.remote(), timeout=60)  # the drain flag outlives the process
    return finished, left, released, time.time()


@pytest.mark.timeout(150)
def test_rolling_drain_under_load(chaos_deploy: DeployFn, chaos_rng: random.Random,
                                  chaos_seed: int, results_file: ResultsFile) -> None:
    # given 900 tasks on three workers, the run 25 % committed
    n, workers, seconds = 900, 3, 0.04
    d = chaos_deploy(workers, batch=10, lease_ttl_s=4.0)  # no lease may expire: TTL to spare
    began = time.monotonic()
    ids = d.client.submit_specs(d.log.specs(n, seconds))
    wait_until(lambda: d.final() >= 0.25 * n, 60, "25 % of the run to commit")
    # when each worker in turn is drained, stopped and restarted (a rolling update)
    order = list(range(workers))
    chaos_rng.shuffle(order)
    problems: list[str] = []
    steps = []
    for index in order:
        before = d.final() / n
        finished, left, released, back_at = roll(d, index, replace=False)
        if not finished or left:
            problems.append(f"worker {index}: drain finished={finished}, still holding "
                            f"{left} leases")
        steps.append((index, before, released, back_at))
    after = d.final() / n
    record = d.finish(ids, 90)
    duration = time.monotonic() - began
    # then drained work was handed back (never run) or finished: no attempt is wasted, nothing
    # is lost, and every restarted worker takes work again
    problems += violations(record, extra_bound=0)
    for index, _, _, back_at in steps:
        if not any(a.worker == d.holder(index) and a.started > back_at for a in record.attempts):
            late = sorted({(a.worker, a.pid) for a in record.attempts if a.started > back_at})
            problems.append(f"worker {index} never ran a task after its restart (back at "
                            f"{back_at:.2f}; ran after that: {late[:6]})")
    handed_back = sum(step[2] for step in steps)
    problems += mid_run(steps[0][1], "the first drain landed")
    results_file.put(chaos_row(
        "7", "drain, stop and restart each worker under load (rolling update)", record,
        seed=chaos_seed, size=f"{n} tasks, {workers} workers",
        faults=f"{len(steps)} drains at {steps[0][1]:.0%}–{after:.0%}, "
        f"{handed_back} leases handed back", duration_s=duration, problems=problems,
        extra_bound=0, handed_back=handed_back, env=d.environment(),
        notes=f"every drain returned in time with nothing left leased; {handed_back} queued "
        "leases went back unstarted (no attempt counted); each restarted worker took work"))
    assert not problems, f"seed {chaos_seed}: " + "\n".join(problems)


@pytest.mark.timeout(120)
def test_replaced_worker_gets_work(chaos_deploy: DeployFn) -> None:
    # given two workers busy with a run
    n = 200
    d = chaos_deploy(2, batch=10)
    ids = d.client.submit_specs(d.log.specs(n, 0.05))
    wait_until(lambda: d.final() >= 0.2 * n, 60, "20 % of the run to commit")
    # when both are drained, stopped and replaced by new actors of the same names
    back = [roll(d, index, replace=True)[3] for index in range(2)]
    # then the new workers finish the run
    wait_until(lambda: d.final() >= n, 10, "the replaced workers to finish the run")
    attempts = collect(d.namespace, d.conn, d.log, d.client.wait(ids, timeout=30)).attempts
    assert all(any(a.worker == d.holder(i) and a.started > back[i] for a in attempts)
               for i in range(2))


# ---- 8. kill -9 a worker with 16 tasks running at once ------------------------------------
@pytest.mark.timeout(150)
def test_sigkill_a_worker_with_sixteen_tasks_in_flight(
        chaos_deploy: DeployFn, chaos_rng: random.Random, chaos_seed: int,
        results_file: ResultsFile) -> None:
    # given two workers running 16 tasks at once each (tasks of 0.5 s: all 16 slots busy)
    n, workers, seconds, concurrency = 600, 2, 0.5, 16
    d = chaos_deploy(workers, batch=16, concurrency=concurrency, max_prefetch=4)
    began = time.monotonic()
    ids = d.client.submit_specs(d.log.specs(n, seconds))
    wait_until(lambda: d.final() >= chaos_rng.uniform(0.3, 0.5) * n, 60, "the run mid-way")
    victim = chaos_rng.randrange(workers)
    wait_until(lambda: len(running_now(d, victim)) >= concurrency, 30,
               "16 tasks running on the victim")
    # when that worker is killed with SIGKILL while 16 handlers run in it
    pid, held, in_flight = d.pid(victim), d.held(victim), running_now(d, victim)
    done, at = d.final() / n, time.time()
    os.kill(pid, signal.SIGKILL)
    record = d.finish(ids, 120, killed={pid: at})
    duration = time.monotonic() - began
    # then nothing is lost or committed twice; the leases it held come back within TTL plus
    # a reaper pass; only what it held runs again (its capacity, plus leases whose handler had
    # ended and whose commit had not gone out yet)
    bound = len(held)
    problems = violations(record, extra_bound=bound) + mid_run(done, "the worker was killed")
    latencies, missing = reclaim_latencies(record, held, at)
    problems += missing + late_reclaims(latencies, d.ttl_s + d.reaper_s)
    if len(in_flight) < concurrency:
        problems.append(f"only {len(in_flight)} handlers were running in the victim")
    results_file.put(chaos_row(
        "8", "SIGKILL a worker with 16 tasks in flight (concurrency 16)", record,
        seed=chaos_seed, size=f"{n} tasks of {seconds:g} s, {workers} workers x {concurrency}",
        faults=f"1 kill at {done:.0%} with {len(in_flight)} running", duration_s=duration,
        problems=problems, extra_bound=bound, reclaims=latencies,
        reclaim_bound_s=d.ttl_s + d.reaper_s, env=d.environment(),
        notes=f"{len(held)} leases held by the victim (running and queued) came back; "
        f"{len(record.ledger_gaps)} ledger gaps"))
    assert not problems, f"seed {chaos_seed}: " + "\n".join(problems)


def running_now(d: Deployment, index: int) -> set[str]:
    """Tasks whose latest attempt started in worker ``index``'s process and has not ended."""
    started: dict[str, tuple[int, int]] = {}
    ended: set[tuple[str, int]] = set()
    holder = d.holder(index)
    for event in d.log.events():
        key = (event["task"], event["fence"])
        if event["ev"] == "start" and event["worker"] == holder:
            started[event["task"]] = key[1], event["pid"]
        elif event["ev"] == "end":
            ended.add(key)
    return {task for task, (fence, _) in started.items() if (task, fence) not in ended}
