"""Every writing script answers a resend as it answered the first send (issue 18, "Pitfalls").

With ``RAYSYS_REDIS_MIN_REPLICAS`` > 0 a script that ``WAIT`` did not confirm is sent again, and
redis-py resends a call whose reply was lost: the same script, KEYS and ARGV reach Redis twice
and the caller sees only the second reply. Each test here runs one scenario through the public
API in a namespace that sends every script once and in one that resends every writing script
(``tests/support/resend.py``), and checks that the caller got the same result and that the
counts, the counters and the audit stream are those of one send. This module covers the task
store's scripts; ``test_resend_snapshots.py`` the snapshot and message ones; the last test
checks that every writing script has its test.
"""

from __future__ import annotations

import time
from collections.abc import Callable

import pytest
import redis

import tests.unit.test_resend_snapshots as snapshot_resends
from raysys.core import Core
from raysys.ledger import CommitLedger
from raysys.models import Outcome, TaskSpec
from raysys.rotation import resign_all
from raysys.schedules import ScheduleBook, ScheduleSpec, ScheduleTicker
from raysys.schedules.spec import open_cursor
from raysys.signing.envelope import Sealer
from raysys.signing.keyring import Keyring, generate_key
from raysys.store.upgrade import upgrade_step
from raysys.worker_loop import WorkerLoop
from tests.support.resend import WRITING, Pair, answer, books, same_as_one_send
from tests.support.stores import core_over

pytestmark = [pytest.mark.unit, pytest.mark.timeout(60)]
OK = Outcome(ok=True, result=1)
FAILED = Outcome(ok=False, error="boom", retryable=False)


def spec(kind: str = "noop", **fields: object) -> TaskSpec:
    return TaskSpec.build(kind=kind, **fields)


@pytest.fixture
def pair(redis_client: redis.Redis, sealer: Sealer) -> Pair:
    return Pair.over(redis_client, sealer)


# ---- submit and lease ---------------------------------------------------------------------
def test_a_resent_submit_stores_each_task_once(pair: Pair) -> None:
    def scenario(core: Core) -> object:
        # given a task submitted under an idempotency key
        first = core.store.submit(spec(idempotency_key="once"))
        # when a batch naming that key again and two new tasks is submitted
        ids = core.store.submit_many([spec(), spec(idempotency_key="once"), spec(priority=3)])
        return [task_id == first for task_id in ids], len(set(ids))

    # then the ids are those of one send: no task stored twice, nothing counted twice
    assert same_as_one_send(pair, scenario, "submit") == ([False, True, False], 3)
    assert books(pair.twice)[0]["pending"] == 3


def test_a_resent_schedule_tick_is_enqueued_once_and_not_taken_for_a_lost_race(
        pair: Pair) -> None:
    def scenario(core: Core) -> object:
        # given a schedule firing every second, its cursor two seconds behind
        ScheduleBook(core).add(ScheduleSpec.build(name="tick", cron="* * * * * *", kind="echo"))
        cursor = core.client.hget(core.keys.schedule("tick"), "cur")
        assert isinstance(cursor, bytes)
        last = open_cursor(core.sealer, cursor, "tick", core.namespace)
        # when the ticker fires it (its tasks and the cursor's move in one submit)
        fired = ScheduleTicker(core).fire("tick", last + 2_000)
        return fired.lost_race, len(fired.ticks), len(fired.task_ids)

    # then the two ticks are enqueued once and the ticker knows it fired them
    assert same_as_one_send(pair, scenario, "submit") == (False, 2, 2)


def test_a_resent_acquire_grants_once(pair: Pair) -> None:
    def scenario(core: Core) -> object:
        # given three pending tasks
        core.store.submit_many([spec(payload=i) for i in range(3)])
        # when two are leased
        leases = core.store.acquire("w", 2, 30)
        return [lease.attempt for lease in leases]

    # then two leases, granted and counted once
    assert same_as_one_send(pair, scenario, "acquire") == [1, 1]
    counts, stats, _ = books(pair.twice)
    assert (counts["pending"], counts["leased"], stats["granted"]) == (1, 2, 2)


def test_a_resent_renewal_keeps_the_lease(pair: Pair) -> None:
    # given a lease in the resending namespace
    store = pair.twice.store
    store.submit(spec())
    (lease,) = store.acquire("w", 1, 30)
    # when it is renewed
    renewed = store.renew("w", [(lease.task_id, lease.fence)], 60)
    # then it is kept, its deadline a minute on (the resend's, a moment after the first's)
    assert renewed[lease.task_id] > lease.deadline_ms + 29_000
    (resend,) = pair.log.of("renew")
    assert 0 < resend.first[1] <= resend.second[1]
    # and each send counts as a renewal (it moved the deadline again): renewed is 2, nothing
    # else moved
    counts, stats, _ = books(pair.twice)
    assert (counts["leased"], stats["renewed"]) == (1, 2)


def test_a_resent_quarantine_still_reports_the_record_it_set_aside(pair: Pair) -> None:
    def scenario(core: Core) -> object:
        # given a task whose record was tampered with, and one signed by a key not known here
        bad = core.store.submit(spec())
        key = core.keys.task(bad)
        rec = core.client.hget(key, "rec")
        assert isinstance(rec, bytes)
        core.client.hset(key, "rec", rec[:-3] + b"99}")
        stranger = core_over(core.client, Sealer(Keyring([generate_key()])), core.namespace)
        stranger.store.submit(spec())
        # when an acquirer leases both
        leases, quarantined = core.store.acquire_verified("w", 5, 30)
        return len(leases), [task_id == bad for task_id, _ in quarantined]

    # then the tampered one is reported quarantined (the Distributor keeps its ledger entry),
    # counted once; the other is deferred once. A resent deferral answers 0, not 2: the
    # acquirer acts on 1 only.
    assert same_as_one_send(pair, scenario, "quarantine", unlike=("quarantine",)) == (0, [True])
    (resend,) = pair.log.of("quarantine")
    assert sorted(resend.first) == [1, 2] and resend.second.count(1) == 1
    counts, stats, _ = books(pair.twice)
    assert (counts["quarantined"], counts["pending"]) == (1, 1)
    assert (stats["signature_failures"], stats["deferred_unknown_key"]) == (1, 1)


def test_a_resent_release_hands_each_lease_back_once(pair: Pair) -> None:
    def scenario(core: Core) -> object:
        # given two leases
        core.store.submit_many([spec(), spec()])
        kept, other = core.store.acquire("w", 2, 30)
        # when one is released, and the other under a fence it does not hold
        return core.store.release("w", [(kept.task_id, kept.fence),
                                        (other.task_id, other.fence + 1000)])

    # then the first is back in the queue, the second untouched, as after one send
    assert same_as_one_send(pair, scenario, "release") == [True, False]
    counts, stats, _ = books(pair.twice)
    assert (counts["pending"], counts["leased"], stats["released"]) == (1, 1, 1)


# ---- commits --------------------------------------------------------------------------------
def test_a_resent_commit_is_acknowledged_and_a_stale_one_counted_once(pair: Pair) -> None:
    def scenario(core: Core) -> object:
        # given three leases
        core.store.submit_many([spec(), spec(), spec()])
        done, retried, stale = core.store.acquire("w", 3, 30)
        # when one succeeds, one fails for a retry, and one commits under a stale fence
        return core.store.complete("w", [(done, OK), (retried, Outcome(ok=False, error="x")),
                                         (stale._replace(fence=stale.fence + 1000), OK)])

    # then each is answered as after one send, and the stale commit counted and audited once
    assert same_as_one_send(pair, scenario, "complete") == [True, True, False]
    counts, stats, events = books(pair.twice)
    assert (counts["succeeded"], counts["failed"], counts["leased"]) == (1, 1, 1)
    assert (stats["fenced_rejected"], stats["retries"]) == (1, 1)
    assert events.count("fence_rejected") == events.count("committed") == 1


def test_a_resent_commit_with_its_ledger_intents_counts_one_commit(pair: Pair) -> None:
    def scenario(core: Core) -> object:
        # given a worker loop with a commit ledger, holding one lease
        ids = core.store.submit_many([spec()])
        (lease,) = core.store.acquire("w", 1, 30)
        loop = WorkerLoop(core.store, "w", ledger=CommitLedger(core.client, core.namespace))
        # when it commits (its intents, then the script, on one round trip)
        accepted = loop.commit([(lease, OK)])
        loop.close()
        report = CommitLedger(core.client, core.namespace).report(ids)
        return accepted, (report.succeeded, report.lost, report.duplicate_commits)

    # then the commit is acknowledged and the ledger holds one commit
    assert same_as_one_send(pair, scenario, "complete") == ([True], (1, 0, 0))


def test_a_resent_redrive_reports_the_tasks_it_queued_again(pair: Pair) -> None:
    def scenario(core: Core) -> object:
        # given a dead task
        (task_id,) = core.store.submit_many([spec()])
        (lease,) = core.store.acquire("w", 1, 30)
        core.store.complete("w", [(lease, FAILED)])
        # when it is redriven
        report = core.store.redrive(ids=[task_id])
        return report.redriven == [task_id], report.already, report.refused

    # then it is reported redriven (not "already", which means an earlier call), once
    assert same_as_one_send(pair, scenario, "redrive") == (True, [], {})
    counts, stats, _ = books(pair.twice)
    assert (counts["pending"], counts["dead"], stats["redriven"]) == (1, 0, 1)


# ---- the reaper -----------------------------------------------------------------------------
def test_a_resent_reap_reports_the_leases_it_took_back(pair: Pair) -> None:
    def scenario(core: Core) -> object:
        # given two leases that expire, one on its last attempt
        ids = core.store.submit_many([spec(), spec(max_attempts=1)])
        core.store.acquire("w", 2, 0.05)
        time.sleep(0.15)
        # when the reaper runs
        report = core.store.reap()
        return report.requeued, report.dead, [task_id == ids[1] for task_id, _ in
                                              report.dead_leases]

    # then it reports both (the dead one for the ledgers), taken back and counted once
    assert same_as_one_send(pair, scenario, "expire") == (1, 1, [True])
    counts, stats, _ = books(pair.twice)
    assert (counts["pending"], counts["dead"], stats["expired"]) == (1, 1, 2)


def test_a_resent_end_of_an_unstarted_task_is_reported(pair: Pair) -> None:
    def scenario(core: Core) -> object:
        # given a task that must start within 50 ms, and no worker
        task_id = core.store.submit(spec(schedule_to_start_s=0.05))
        time.sleep(0.15)
        # when the reaper runs
        report = core.store.reap()
        return report.unstarted == (task_id,), core.store.status(task_id).state.value

    # then it is reported ended, dead once
    assert same_as_one_send(pair, scenario, "unstarted") == (True, "dead")


def test_a_resent_queue_migration_moves_each_task_once(pair: Pair) -> None:
    def scenario(core: Core) -> object:
        # given three tasks in the single pending queue of an earlier version
        core.store.submit_many([spec("a"), spec("a"), spec("b")])
        for kind in ("a", "b"):
            queue = core.keys.queue(kind)
            core.client.zadd(core.keys.legacy_pending,
                             dict(core.client.zrange(queue, 0, -1, withscores=True)))
            core.client.delete(queue)
        core.client.delete(core.keys.queued_kinds)
        # when the reaper migrates them
        core.store.reap()
        return (core.store.queued_by_kind(), core.client.exists(core.keys.legacy_pending),
                len(core.store.acquire("w", 5, 30)))

    # then each is in its kind's queue once. The resend moves the next page of the same job (here
    # none: it answers 0, which the reaper only logs).
    result = same_as_one_send(pair, scenario, "migrate_queues", unlike=("migrate_queues",))
    assert result == ({"a": 2, "b": 1}, 0, 3)


# ---- retention, rotation, upgrade -----------------------------------------------------------
def test_a_resent_purge_reports_what_it_removed(pair: Pair) -> None:
    def scenario(core: Core) -> object:
        # given three finished tasks
        core.store.submit_many([spec(), spec(), spec()])
        core.store.complete("w", [(lease, OK) for lease in core.store.acquire("w", 3, 30)])
        # when they are purged
        report = core.store.purge(0)
        return sum(report.removed.values()) + sum(report.tombstoned.values())

    # then the report names all three (not the nothing a second page finds), purged once
    assert same_as_one_send(pair, scenario, "purge") == 3
    counts, stats, events = books(pair.twice)
    assert (counts["succeeded"], stats["purged"], events.count("purged")) == (0, 3, 1)


def test_a_resent_compare_and_set_is_no_conflict(redis_client: redis.Redis) -> None:
    # given a keyring whose active key the test rotates
    old = generate_key()
    ring = {"now": Keyring([old])}
    pair = Pair.over(redis_client, lambda: ring["now"])

    def scenario(core: Core) -> object:
        # given two tasks signed by the old key, one of them finished
        ring["now"] = Keyring([old])
        core.store.submit_many([spec(), spec()])
        core.store.complete("w", [(core.store.acquire("w", 1, 30)[0], OK)])
        # when the key is rotated and everything re-signed
        ring["now"] = Keyring([generate_key(), old.with_status("verify-only")])
        report = resign_all(core)
        return report.resigned_records, report.resigned_results, report.conflicts

    # then each record and result is re-signed once, with no conflict and no retry counted
    assert same_as_one_send(pair, scenario, "cas_record") == (2, 1, 0)
    assert "conflict_retries" not in books(pair.twice)[1]


def test_a_resent_upgrade_seed_counts_earlier_completions_once(pair: Pair) -> None:
    def scenario(core: Core) -> object:
        # given two tasks this version finished, and three an earlier version counted
        core.store.submit_many([spec(), spec()])
        core.store.complete("w", [(lease, OK) for lease in core.store.acquire("w", 2, 30)])
        core.client.hincrby(core.keys.counts, "succeeded", 3)
        # when the upgrade step runs
        upgrade_step(core.store)
        return core.client.hget(core.keys.upgrade, "seeded")

    # then the monotonic counter holds all five, once (the resend answers 0, "done before",
    # which its caller does not read)
    assert same_as_one_send(pair, scenario, "upgrade_seed", unlike=("upgrade_seed",)) == b"1"
    assert books(pair.twice)[1]["completed:succeeded"] == 5


# ---- cancel ---------------------------------------------------------------------------------
def test_a_resent_cancel_reports_the_state_the_task_was_in(pair: Pair) -> None:
    def scenario(core: Core) -> object:
        # given a pending, a leased and a delayed task
        later = int(time.time() * 1000) + 3_600_000
        pending, leased, delayed = core.store.submit_many(
            [spec(), spec(priority=5), spec(not_before_ms=later)])
        core.store.acquire("w", 1, 30)
        # when each is cancelled, and the first once more
        before = [core.store.cancel(task_id) for task_id in (pending, leased, delayed, pending)]
        return [state.value for state in before], core.store.take_cancels("w", 0.01) == [leased]

    # then each answer is the state it was in (the second call: already cancelled), and the
    # holder is told once
    assert same_as_one_send(pair, scenario, "cancel") == (
        ["pending", "leased", "scheduled", "cancelled"], True)


# ---- coverage -------------------------------------------------------------------------------
RESEND_TESTS: dict[str, Callable[..., None]] = {
    "submit": test_a_resent_submit_stores_each_task_once,
    "acquire": test_a_resent_acquire_grants_once,
    "renew": test_a_resent_renewal_keeps_the_lease,
    "complete": test_a_resent_commit_is_acknowledged_and_a_stale_one_counted_once,
    "expire": test_a_resent_reap_reports_the_leases_it_took_back,
    "cancel": test_a_resent_cancel_reports_the_state_the_task_was_in,
    "quarantine": test_a_resent_quarantine_still_reports_the_record_it_set_aside,
    "cas_record": test_a_resent_compare_and_set_is_no_conflict,
    "release": test_a_resent_release_hands_each_lease_back_once,
    "unstarted": test_a_resent_end_of_an_unstarted_task_is_reported,
    "migrate_queues": test_a_resent_queue_migration_moves_each_task_once,
    "purge": test_a_resent_purge_reports_what_it_removed,
    "redrive": test_a_resent_redrive_reports_the_tasks_it_queued_again,
    "upgrade_seed": test_a_resent_upgrade_seed_counts_earlier_completions_once,
    **snapshot_resends.RESEND_TESTS,
}


def test_every_writing_script_has_a_resend_test() -> None:
    # given the scripts that write (every script but the read-only ones)
    # then each is resent by a test of its own (each test checks it saw its script resent)
    assert set(RESEND_TESTS) == WRITING
    assert all(test.__name__.startswith("test_a_resent_") for test in RESEND_TESTS.values())


def test_an_error_reply_is_compared_by_its_text() -> None:
    # given two sends refused with the same error, then their answers compare equal
    assert answer("submit", redis.ResponseError("ERR x")) == ("error", "ERR x")
    assert answer("complete", [1, 1, 0]) == [1, 0] and answer("cas_record", [1]) == [1]
