"""Chaos: the Redis primary is lost and Sentinel hands its role to a replica (issue 18,
scenarios 9, 10, 11).

A primary, two replicas and three Sentinels run on loopback (``tests/support/sentinels.py``,
started with the Kubernetes manifests' own ``redis.conf`` and ``sentinel.conf`` directives, the
Sentinels' down-after window shortened to 1 s). The actors find the primary through the
Sentinels (``RAYSYS_REDIS_SENTINELS``) and run with ``RAYSYS_REDIS_MIN_REPLICAS=1``: a state
change is acknowledged only once a replica holds it (with 0, losing the writes of the last
moments before a failover is Redis's designed behaviour, and no scenario here runs with 0). The
commit ledger lives on a Redis of its own (the attempt record's server), so a failover cannot
drop store and ledger together and hide a double commit. Each run is checked like the other
scenarios (``harness.violations``) and writes its figures to the results file.
"""

from __future__ import annotations

import contextlib
import itertools
import os
import random
import signal
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import redis
from redis.sentinel import Sentinel

from raysys.models import TaskSpec
from raysys.redis_server.embedded import EmbeddedRedis
from raysys.redis_server.sentinel import failover_retry
from raysys.signing.keyring import Keyring, generate_key, write_keyring_file
from raysys.store.lua import NotReplicated
from tests.chaos.harness import (
    KIND,
    MAX_ATTEMPTS,
    DeployFn,
    Deployment,
    RunRecord,
    chaos_row,
    mid_run,
    violations,
)
from tests.support.polling import wait_until
from tests.support.results import ResultsFile, percentile
from tests.support.sentinels import MASTER, RedisGroup, running_group

pytestmark = [pytest.mark.chaos, pytest.mark.slow]

MIN_REPLICAS = 1
LEASE_TTL_S = 10.0  # longer than a failover takes: leases survive it, nothing runs twice
MAX_LAG_S = 10.0  # min-replicas-max-lag in cluster/redis/redis.conf
PROBE_S = 3.0  # writes are sent straight to a replaced primary for this long after SIGCONT
PROBE_KEY = "raysys-chaos:stale-write"
ONE_PAUSED_S = 3.0
STALL_BOUND_S = 10.0  # commits resumed after a failover may pause this long at most


@pytest.fixture
def group(tmp_path: Path) -> Iterator[RedisGroup]:
    with running_group(tmp_path / "redis", config="manifest") as group:
        yield group


def deploy_on(chaos_deploy: DeployFn, group: RedisGroup, record_server: EmbeddedRedis,
              workers: int, **settings: Any) -> Deployment:
    """raysys on ``group`` through its Sentinels, the ledger on the record server, a keyring
    of its own (a configured Redis gets no keyring made for it)."""
    data_dir = group.root / "raysys"
    data_dir.mkdir(parents=True, exist_ok=True)
    write_keyring_file(data_dir / "keys.json", Keyring([generate_key()]))
    sentinel = Sentinel([("127.0.0.1", port) for port in group.sentinel_ports])
    conn = sentinel.master_for(MASTER, redis_class=redis.Redis, socket_timeout=5,
                               retry=failover_retry())
    settings.setdefault("lease_ttl_s", LEASE_TTL_S)
    return chaos_deploy(workers, data_dir=data_dir, conn=conn, ledger_url=record_server.url,
                        redis_sentinels=group.sentinels, redis_sentinel_master=MASTER,
                        redis_min_replicas=MIN_REPLICAS, concurrency=4, max_prefetch=4,
                        **settings)


def mid_way(d: Deployment, n: int, seconds: float, share: float) -> list[str]:
    """Submit ``n`` chaos tasks of ``seconds`` each; return their ids once ``share`` of them
    are final."""
    ids = d.client.submit_specs(d.log.specs(n, seconds))
    wait_until(lambda: d.final() >= share * n, 120, f"{share:.0%} of the run to be final")
    return ids


def settled(group: RedisGroup, old: EmbeddedRedis, timeout: float = 60.0) -> EmbeddedRedis:
    """Wait until every Sentinel names the same new primary, and it takes writes; that primary.

    A lost primary restarted before the failover has settled on every Sentinel (here it would
    be within a second; a Kubernetes pod takes longer) can make a Sentinel that has not heard
    of the promotion yet run a second one, promoting the other replica: correct, as nothing is
    acknowledged without a replica, but it makes the run's figures about Sentinel, not raysys.
    """
    def agreed() -> bool:
        named = set()
        for port in group.sentinel_ports:
            with redis.Redis(port=port, decode_responses=True) as sentinel:
                named.add(int(sentinel.execute_command(
                    "SENTINEL", "get-master-addr-by-name", MASTER)[1]))
        return len(named) == 1 and old.port not in named

    group.wait_new_primary(old, timeout)
    wait_until(agreed, timeout, "every Sentinel to name the new primary")
    return group.wait_new_primary(old, timeout)


def first_commit_after(record: RunRecord, at: float) -> float | None:
    """Seconds from ``at`` (wall clock) to the first commit the audit stream holds after it."""
    later = [e.ts for e in record.events("committed") if e.ts > at]
    return min(later) - at if later else None


def longest_stall(record: RunRecord, at: float, window_s: float = 20.0) -> float:
    """The longest gap between commits from the first commit after ``at`` to ``window_s``
    later (0 when fewer than two): a failover that completed must not leave calls stuck."""
    times = sorted(e.ts for e in record.events("committed") if at < e.ts < at + window_s)
    return max((b - a for a, b in itertools.pairwise(times)), default=0.0)


def errors_of(server: EmbeddedRedis, code: str) -> int:
    """How many replies with error ``code`` (e.g. NOREPLICAS) ``server`` sent."""
    with redis.Redis(port=server.port) as conn:
        stats = conn.info("errorstats")
    return int(stats.get(f"errorstat_{code}", {}).get("count", 0))


# ---- 9. kill -9 the primary mid-run, three times ------------------------------------------------
@pytest.mark.timeout(400)
def test_sigkill_the_primary_mid_run(chaos_deploy: DeployFn, group: RedisGroup,
                                     record_server: EmbeddedRedis, chaos_rng: random.Random,
                                     chaos_seed: int, results_file: ResultsFile) -> None:
    # given 2,000 tasks running on three busy workers, through the Sentinels
    n, workers, seconds, kills = 2000, 3, 0.2, 3
    d = deploy_on(chaos_deploy, group, record_server, workers)
    began = time.monotonic()
    ids = d.client.submit_specs(d.log.specs(n, seconds))
    # when the primary is killed with SIGKILL, three times (each time the killed server is
    # started again and rejoins as a replica before the next kill)
    killed_at: list[float] = []
    shares: list[float] = []
    for step in range(kills):
        share = 0.3 + 0.2 * step + chaos_rng.uniform(-0.03, 0.03)
        wait_until(lambda s=share: d.final() >= s * n, 240, f"{share:.0%} of the run")
        shares.append(d.final() / n)
        old = group.primary()
        killed_at.append(time.time())
        old.kill()
        group.rejoin(old, settled(group, old))
        group.wait_replicas(2)
    record = d.finish(ids, 240)
    duration = time.monotonic() - began
    # then the run completed on the promoted replicas: nothing lost, nothing committed twice,
    # and every failover let commits resume
    firsts = [first_commit_after(record, at) for at in killed_at]
    stall = max(longest_stall(record, at) for at in killed_at)
    epochs = len(record.events("fence_epoch"))
    problems = violations(record, extra_bound=kills * workers * d.capacity)
    problems += mid_run(shares[0], "the first kill landed")
    if None in firsts:
        problems.append(f"no commit after a kill: {firsts}")
    if stall > STALL_BOUND_S:
        problems.append(f"commits stopped for {stall:.1f} s after a failover had completed")
    if epochs < kills + 1:
        problems.append(f"{epochs} fence epochs for {kills} failovers (expected one per primary)")
    times = [t for t in firsts if t is not None]
    results_file.put(chaos_row(
        "9", f"SIGKILL the Redis primary (Sentinel failover, MIN_REPLICAS={MIN_REPLICAS})",
        record, seed=chaos_seed, size=f"{n} tasks, {workers} workers x 4",
        faults=f"{kills} primary kills at " + ", ".join(f"{s:.0%}" for s in shares),
        duration_s=duration, problems=problems, extra_bound=kills * workers * d.capacity,
        env=d.environment(), failover_p50_s=_r(percentile(times, 50)),
        failover_max_s=_r(max(times) if times else None),
        notes=f"kill to the first commit on the new primary: p50 {_fmt(percentile(times, 50))} "
        f"s, max {_fmt(max(times) if times else None)} s over {len(times)} failovers "
        f"(Sentinel down-after 1 s); longest pause between commits once they resumed "
        f"{stall:.2f} s; fences raised on each new primary's run_id ({epochs} epochs); each "
        f"killed primary came back as a replica; ledger on a Redis of its own"))
    assert not problems, f"seed {chaos_seed}: " + "\n".join(problems)


# ---- 10. SIGSTOP the primary past the down-after window, then SIGCONT ---------------------------
@pytest.mark.timeout(300)
def test_paused_primary_is_replaced_and_rejoins_as_replica(
        chaos_deploy: DeployFn, group: RedisGroup, record_server: EmbeddedRedis,
        chaos_rng: random.Random, chaos_seed: int, results_file: ResultsFile) -> None:
    # given 1,000 tasks mid-run, through the Sentinels
    n, workers, seconds = 1000, 3, 0.05
    d = deploy_on(chaos_deploy, group, record_server, workers)
    began = time.monotonic()
    ids = mid_way(d, n, seconds, chaos_rng.uniform(0.3, 0.5))
    # when the primary is stopped (SIGSTOP) until the Sentinels have promoted a replica and its
    # replicas' last acknowledgement is older than min-replicas-max-lag, then continued
    # (SIGCONT): for a moment it believes it is still the primary
    old = group.primary()
    assert old.pid is not None
    done = d.final() / n
    stopped = time.monotonic()
    os.kill(old.pid, signal.SIGSTOP)
    try:
        new = group.wait_new_primary(old)
        time.sleep(max(0.0, MAX_LAG_S + 1 - (time.monotonic() - stopped)))
    finally:
        os.kill(old.pid, signal.SIGCONT)
    paused_s = time.monotonic() - stopped
    probes = probe_writes(old, PROBE_S)
    group.wait_demoted(old)
    # then writes sent to it after it was replaced were refused (NOREPLICAS: its replicas follow
    # the new primary; READONLY once the Sentinels demoted it), it follows the new primary, and
    # the run completes with nothing lost or committed twice
    record = d.finish(ids, 240)
    duration = time.monotonic() - began
    problems = violations(record, extra_bound=workers * d.capacity)
    problems += mid_run(done, "the primary was stopped")
    if probes["OK"]:
        problems.append(f"the replaced primary took {probes['OK']} writes after SIGCONT")
    with redis.Redis(port=old.port) as conn:
        following = conn.info("replication").get("master_port")
        leftover = conn.exists(PROBE_KEY)
    if following != new.port or leftover:
        problems.append(f"the old primary follows port {following} (new primary {new.port}); "
                        f"probe key left: {leftover}")
    results_file.put(chaos_row(
        "10", "SIGSTOP the Redis primary past Sentinel's down-after window, then SIGCONT",
        record, seed=chaos_seed, size=f"{n} tasks, {workers} workers x 4",
        faults=f"1 stop of {paused_s:.1f} s at {done:.0%}", duration_s=duration,
        problems=problems, extra_bound=workers * d.capacity, env=d.environment(),
        notes=f"MIN_REPLICAS={MIN_REPLICAS}, min-replicas-max-lag {MAX_LAG_S:g} s (the "
        f"manifests' redis.conf); writes sent straight to the old primary in the {PROBE_S:g} s "
        f"after SIGCONT: {probes['OK']} taken, {probes['NOREPLICAS']} refused (NOREPLICAS), "
        f"{probes['READONLY']} refused once demoted (READONLY); it then followed the new "
        f"primary; {len(record.events('fence_rejected'))} stale commits refused"))
    assert not problems, f"seed {chaos_seed}: " + "\n".join(problems)


def probe_writes(server: EmbeddedRedis, seconds: float) -> dict[str, int]:
    """Send a write straight to ``server`` every 50 ms for ``seconds``: how many were taken
    (``OK``) and refused, by error code."""
    out = {"OK": 0, "NOREPLICAS": 0, "READONLY": 0, "other": 0}
    end = time.monotonic() + seconds
    with redis.Redis(port=server.port, socket_timeout=5) as conn:
        while time.monotonic() < end:
            try:
                conn.set(PROBE_KEY, "stale")
                out["OK"] += 1
            except redis.ResponseError as exc:
                code = str(exc).split(" ", 1)[0]
                out[code if code in out else "other"] += 1
            except redis.ReadOnlyError:
                out["READONLY"] += 1
            time.sleep(0.05)
    return out


# ---- 11. replicas lagging while MIN_REPLICAS=1 --------------------------------------------------
@pytest.mark.timeout(300)
def test_lagging_replicas_hold_acknowledgements_back(
        chaos_deploy: DeployFn, group: RedisGroup, record_server: EmbeddedRedis,
        chaos_rng: random.Random, chaos_seed: int, results_file: ResultsFile) -> None:
    # given 1,000 tasks mid-run, through the Sentinels, every state change waiting for a replica
    n, workers, seconds = 1000, 3, 0.05
    d = deploy_on(chaos_deploy, group, record_server, workers)
    began = time.monotonic()
    ids = mid_way(d, n, seconds, chaos_rng.uniform(0.25, 0.35))
    done = d.final() / n
    primary, (first, second) = group.primary(), group.replicas()
    # when one replica stops (SIGSTOP): the other still confirms every write, the run goes on
    with paused(first):
        before = d.final()
        time.sleep(ONE_PAUSED_S)
        during_one = d.final() - before
    # and then both stop: no write can be confirmed; a submission waits, then fails clearly
    with paused(first), paused(second):
        spec = TaskSpec.build(kind=KIND, payload=d.log.payload(n, seconds),
                              idempotency_key="lagging-replicas", max_attempts=MAX_ATTEMPTS)
        asked = time.monotonic()
        with pytest.raises(NotReplicated) as refused:
            d.client.submit_specs([spec])
        waited = time.monotonic() - asked
        # and the primary, holding writes no replica has, is killed before they resume
        primary.kill()
    group.rejoin(primary, settled(group, primary))
    # then what raysys acknowledged was on a replica: nothing lost, nothing committed twice
    # (the ledger is apart), and the refused submission, sent again, is stored once
    ids += d.client.submit_specs([spec])
    record = d.finish(ids, 240)
    duration = time.monotonic() - began
    problems = violations(record, extra_bound=2 * workers * d.capacity)
    problems += mid_run(done, "the replicas were stopped")
    message = str(refused.value)
    if "RAYSYS_REDIS_MIN_REPLICAS" not in message or "safe to retry" not in message:
        problems.append(f"the refusal does not say what to do: {message!r}")
    if during_one == 0:
        problems.append("no commit while one replica of two was stopped")
    results_file.put(chaos_row(
        "11", f"replicas stopped (SIGSTOP) while MIN_REPLICAS={MIN_REPLICAS}; the primary "
        "killed before they resume", record, seed=chaos_seed,
        size=f"{n} + 1 tasks, {workers} workers x 4", faults=f"1 replica stopped "
        f"{ONE_PAUSED_S:g} s, then both, then the primary killed, at {done:.0%}",
        duration_s=duration, problems=problems, extra_bound=2 * workers * d.capacity,
        env=d.environment(), notes=f"one replica stopped: {during_one} tasks committed in "
        f"{ONE_PAUSED_S:g} s; both stopped: a submission waited {waited:.1f} s, then failed "
        f"with NotReplicated ({message.split(':', 1)[0]}: '... "
        f"{'not acknowledged (safe to retry)' if 'safe to retry' in message else message}'); "
        f"the primary, killed holding writes no replica had, lost nothing acknowledged; the "
        f"submission sent again was stored once"))
    assert not problems, f"seed {chaos_seed}: " + "\n".join(problems)


@contextlib.contextmanager
def paused(server: EmbeddedRedis) -> Iterator[None]:
    """``server`` stopped (SIGSTOP) inside the block, continued after it."""
    assert server.pid is not None
    os.kill(server.pid, signal.SIGSTOP)
    try:
        yield
    finally:
        os.kill(server.pid, signal.SIGCONT)


def _r(value: float | None) -> float | None:
    return None if value is None else round(value, 2)


def _fmt(value: float | None) -> str:
    return "—" if value is None else f"{value:.2f}"
