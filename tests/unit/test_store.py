"""The task store's contract on a real Redis (Debian redis 7.0 and the valkey 9 wheel).

Every test reads given / when / then. Integrity attacks here write Redis directly, the way the
threat model's attacker (who can write raysys keys but holds no signing key) would.
"""

from __future__ import annotations

import time

import pytest
import redis

from raysys.errors import IntegrityError, NotFound, ValidationError
from raysys.models import Lease, Outcome, TaskSpec, TaskState
from raysys.signing.envelope import Sealer
from raysys.signing.keyring import Keyring, generate_key
from raysys.store import FENCES_PER_MS, TaskStore
from tests.support.polling import wait_until
from tests.support.stores import store_over

pytestmark = pytest.mark.unit

OK = Outcome(ok=True)


def spec(kind: str = "noop", **fields: object) -> TaskSpec:
    return TaskSpec.build(kind=kind, **fields)


# ---- submission ---------------------------------------------------------------------------
def test_submit_is_durable_and_counted(store: TaskStore) -> None:
    task_id = store.submit(spec(payload={"a": 1}))
    assert store.status(task_id).state == TaskState.PENDING
    assert store.counts()["pending"] == 1
    assert store.stats()["submitted"] == 1


def test_idempotency_key_returns_the_existing_task(store: TaskStore) -> None:
    first = store.submit(spec(idempotency_key="order-1"))
    again = store.submit_many([spec(idempotency_key="order-1"), spec(idempotency_key="order-2")])
    assert again[0] == first and again[1] != first
    assert store.counts()["pending"] == 2


def test_idempotency_key_repeated_inside_one_batch_creates_one_task(store: TaskStore) -> None:
    ids = store.submit_many([spec(idempotency_key="k"), spec(idempotency_key="k")])
    assert ids[0] == ids[1]
    assert store.counts()["pending"] == 1


def test_oversized_batch_is_refused_and_nothing_stored(store: TaskStore) -> None:
    with pytest.raises(ValidationError):
        store.submit_many([spec()] * 10_001)
    assert store.counts()["pending"] == 0


def test_retried_submit_call_with_same_bytes_is_idempotent(store: TaskStore) -> None:
    """A client whose reply was lost resends the same ids and bytes: no duplicate."""
    task_id = store.submit(spec())
    rec = store.client.hget(store.keys.task(task_id), "rec")
    prefix = store.keys.prefix
    k = store.keys
    ids = store._run("submit", [k.seq, k.counts, k.stats, k.audit, k.wake, k.start_by,
                                k.scheduled],
                     [prefix, "1", 1000, "", "", "", task_id, rec, 0, "", "noop", 0, 0])
    assert [i.decode() for i in ids] == [task_id]
    assert store.counts()["pending"] == 1


def test_a_planted_wrong_type_key_refuses_the_batch_before_writing(store: TaskStore) -> None:
    """An attacker plants a hash where an idempotency key's string would be."""
    store.client.hset(store.keys.idempotency("late-in-batch"), "x", "y")
    specs = [spec(payload=i) for i in range(5)] + [spec(idempotency_key="late-in-batch")]
    with pytest.raises(IntegrityError, match="nothing stored"):
        store.submit_many(specs)
    assert store.counts()["pending"] == 0 and store.queued_ids() == {}
    assert not list(store.client.scan_iter(match=store.keys.pattern().replace("*", "t:*")))


def test_a_planted_non_hash_in_the_queue_is_skipped_not_fatal(store: TaskStore) -> None:
    store.submit_many([spec(priority=1), spec(priority=1)])
    junk = "ee" * 16
    store.client.set(store.keys.task(junk), "not a hash")
    store.client.zadd(store.keys.queue("noop"), {junk: -10 * 1099511627776})  # first in line
    leases = store.acquire("w", 5, 30)
    assert len(leases) == 2
    assert store.counts()["leased"] == 2 and store.client.zcard(store.keys.leases) == 2
    assert any(e["ev"] == "corrupt_skipped" for e in store.audit_tail())


def test_taken_id_is_reissued_and_nothing_half_written(store: TaskStore,
                                                        monkeypatch: pytest.MonkeyPatch) -> None:
    """An attacker who guessed the next id and wrote it first cannot hijack the task."""
    import raysys.store.task_store as store_module

    taken = "ab" * 16
    store.client.hset(store.keys.task(taken), mapping={"rec": b"attacker bytes", "state": "x"})
    issued = iter([taken, "cd" * 16, "ef" * 16])
    monkeypatch.setattr(store_module, "new_task_id", lambda: next(issued))
    (task_id,) = store.submit_many([spec("echo", payload="mine")])
    assert task_id == "cd" * 16
    assert store.client.hget(store.keys.task(taken), "rec") == b"attacker bytes"
    (lease,) = store.acquire("w", 5, 30)
    assert (lease.task_id, lease.payload) == (task_id, "mine")
    assert store.counts()["pending"] == 0 and store.stats()["submitted"] == 1


# ---- leasing order and fences ---------------------------------------------------------------
def test_acquire_is_priority_order_then_fifo(store: TaskStore) -> None:
    low = store.submit_many([spec(priority=0, payload=i) for i in range(3)])
    high = store.submit_many([spec(priority=5, payload=i) for i in range(3)])
    neg = store.submit(spec(priority=-3))
    leases = store.acquire("w", 10, 30)
    assert [lease.task_id for lease in leases] == [*high, *low, neg]


def test_fences_strictly_increase_across_batches(store: TaskStore) -> None:
    store.submit_many([spec() for _ in range(6)])
    fences = [lease.fence for lease in store.acquire("a", 3, 30) + store.acquire("b", 3, 30)]
    assert fences == sorted(fences) and len(set(fences)) == 6


def test_lease_carries_verified_record_fields(store: TaskStore) -> None:
    task_id = store.submit(spec("echo", payload={"x": [1, 2]}, priority=7, max_attempts=4,
                                idempotency_key="idem"))
    (lease,) = store.acquire("w", 1, 30)
    assert (lease.task_id, lease.kind, lease.payload, lease.priority, lease.max_attempts) == (
        task_id, "echo", {"x": [1, 2]}, 7, 4)
    assert lease.attempt == 1 and lease.effective_idempotency_key == "idem"


def test_deadline_is_by_redis_server_time(store: TaskStore) -> None:
    store.submit(spec())
    server_ms = int(store.client.time()[0]) * 1000
    (lease,) = store.acquire("w", 1, 10)
    assert server_ms + 9_000 <= lease.deadline_ms <= server_ms + 12_000


# ---- commits ------------------------------------------------------------------------------
def test_complete_stores_signed_result(store: TaskStore) -> None:
    task_id = store.submit(spec("echo", payload=[1]))
    (lease,) = store.acquire("w", 1, 30)
    assert store.complete("w", [(lease, Outcome(ok=True, result={"r": 1}))]) == [True]
    status = store.status(task_id)
    assert (status.state, status.result, status.attempts) == (TaskState.SUCCEEDED, {"r": 1}, 1)


def test_stale_fence_is_rejected_and_counted(store: TaskStore) -> None:
    task_id = store.submit(spec())
    (first,) = store.acquire("old", 1, 0.1)
    wait_until(lambda: store.reap().requeued == 1, 5, "the expired lease to be requeued")
    (second,) = store.acquire("new", 1, 30)
    assert second.fence > first.fence
    assert store.complete("old", [(first, OK)]) == [False]
    assert store.stats()["fenced_rejected"] == 1
    assert store.status(task_id).state == TaskState.LEASED
    assert store.complete("new", [(second, OK)]) == [True]
    assert any(e["ev"] == "fence_rejected" for e in store.audit_tail())


def test_second_commit_of_a_final_task_is_rejected(store: TaskStore) -> None:
    store.submit(spec())
    (lease,) = store.acquire("w", 1, 30)
    assert store.complete("w", [(lease, OK)]) == [True]
    assert store.complete("w", [(lease, Outcome(ok=False, error="late"))]) == [False]
    assert store.counts()["succeeded"] == 1


def test_failure_retries_with_backoff_then_dies(store: TaskStore) -> None:
    task_id = store.submit(spec("fail", max_attempts=3))
    for attempt in (1, 2):
        failure = Outcome(ok=False, error=f"boom {attempt}")
        wait_until(lambda f=failure: len(leases := store.acquire("w", 1, 30)) == 1 and bool(
            store.complete("w", [(leases[0], f)])), 5, "the retry to be due, leased and failed")
        assert store.status(task_id).state == TaskState.FAILED
    leases: list[Lease] = []
    wait_until(lambda: bool(leases.extend(store.acquire("w", 1, 30)) or leases), 5,
               "the last retry to be due")
    assert leases[0].attempt == 3
    store.complete("w", [(leases[0], Outcome(ok=False, error="boom 3"))])
    status = store.status(task_id)
    assert (status.state, status.attempts, status.error) == (TaskState.DEAD, 3, "boom 3")
    assert store.stats()["retries"] == 2


def test_backoff_delays_the_retry(make_store) -> None:  # type: ignore[no-untyped-def]
    from raysys.store import RetryPolicy

    store = make_store(retry=RetryPolicy(base_s=0.5, cap_s=1, jitter=0))
    store.submit(spec("fail"))
    (lease,) = store.acquire("w", 1, 30)
    store.complete("w", [(lease, Outcome(ok=False, error="x"))])
    assert store.acquire("w", 1, 30) == []
    time.sleep(0.6)
    assert len(store.acquire("w", 1, 30)) == 1


def test_non_retryable_failure_is_dead_at_once(store: TaskStore) -> None:
    task_id = store.submit(spec(max_attempts=5))
    (lease,) = store.acquire("w", 1, 30)
    store.complete("w", [(lease, Outcome(ok=False, error="bad input", retryable=False))])
    assert store.status(task_id).state == TaskState.DEAD


def test_unstorable_result_is_a_failed_attempt_not_a_null_success(store: TaskStore) -> None:
    task_id = store.submit(spec(max_attempts=3))
    (lease,) = store.acquire("w", 1, 30)
    assert store.complete("w", [(lease, Outcome(ok=True, result={1, 2}))]) == [True]  # a set
    status = store.status(task_id)
    assert status.state == TaskState.DEAD  # the same result would fail every attempt
    assert status.result is None and "not storable" in (status.error or "")


def test_resent_commit_after_a_lost_reply_is_acknowledged_not_rejected(store: TaskStore) -> None:
    """redis-py resends a call whose reply was lost: the commit applied the first time is
    acknowledged again, changes nothing, and counts no rejection."""
    task_id = store.submit(spec("echo", payload=1))
    (lease,) = store.acquire("w", 1, 30)
    outcome = Outcome(ok=True, result="once")
    assert store.complete("w", [(lease, outcome)]) == [True]
    assert store.complete("w", [(lease, outcome)]) == [True]
    assert store.stats().get("fenced_rejected", 0) == 0
    assert store.counts()["succeeded"] == 1 and store.status(task_id).result == "once"


def test_resent_acquire_returns_the_same_leases_instead_of_stranding_them(
        store: TaskStore) -> None:
    store.submit_many([spec(payload=i) for i in range(5)])
    k = store.keys
    keys = [k.delayed, k.leases, k.fence, k.run_id, k.counts, k.stats, k.audit, k.acquire_log,
            k.start_by, k.scheduled]
    args = [k.prefix, "w", 3, 30_000, "1", 1000, 1000, "request-1", -1]
    first = store._run("acquire", keys, args)
    again = store._run("acquire", keys, args)  # the same call, resent
    assert again[2:] == first[2:] and len(first[2:]) == 15
    assert store.counts()["leased"] == 3 and store.counts()["pending"] == 2
    fresh = store._run("acquire", keys, [*args[:-2], "request-2", -1])
    assert len(fresh[2:]) == 10  # a new call gets the rest


# ---- renew and reap -------------------------------------------------------------------------
def test_renew_extends_and_reports_lost_leases(store: TaskStore) -> None:
    store.submit_many([spec(), spec()])
    a, b = store.acquire("w", 2, 0.3)
    store.complete("w", [(b, OK)])
    renewed = store.renew("w", [(a.task_id, a.fence), (b.task_id, b.fence)], 30)
    assert renewed[a.task_id] > a.deadline_ms and renewed[b.task_id] == 0
    time.sleep(0.4)
    assert store.reap().requeued == 0  # renewed: not expired


def test_renew_by_another_holder_is_refused(store: TaskStore) -> None:
    store.submit(spec())
    (lease,) = store.acquire("w", 1, 30)
    assert store.renew("intruder", [(lease.task_id, lease.fence)], 30)[lease.task_id] == 0


def test_expired_lease_is_reclaimed_and_runs_again(store: TaskStore) -> None:
    task_id = store.submit(spec(max_attempts=2))
    (lease,) = store.acquire("dead-worker", 1, 0.1)
    wait_until(lambda: store.reap().requeued == 1, 5, "the expired lease to be requeued")
    assert store.status(task_id).state == TaskState.PENDING
    (again,) = store.acquire("w2", 1, 30)
    assert again.task_id == task_id and again.attempt == 2 and again.fence > lease.fence


def test_expiry_on_the_last_attempt_is_dead_and_reported(store: TaskStore) -> None:
    task_id = store.submit(spec(max_attempts=1))
    (lease,) = store.acquire("dead-worker", 1, 0.1)
    reports = []
    wait_until(lambda: bool(reports.append(store.reap()) or reports[-1].dead == 1), 5,
               "the reaper to declare the task dead")
    assert reports[-1].dead_leases == ((task_id, lease.fence),)
    assert store.status(task_id).state == TaskState.DEAD
    assert store.acquire("w", 1, 30) == []
    # the old holder's late commit of the same outcome is refused, not acknowledged
    late = Outcome(ok=False, error="late", retryable=False)
    assert store.complete("dead-worker", [(lease, late)]) == [False]


def test_reaper_takes_back_more_than_one_page(store: TaskStore) -> None:
    store.submit_many([spec() for _ in range(25)])
    store.acquire("dead-worker", 25, 0.1)
    time.sleep(0.2)
    assert store.reap(limit=10).requeued == 25


def test_stale_lease_entries_cannot_hide_expired_leases(store: TaskStore) -> None:
    """Junk in the leases set (an attacker, corruption) is cleared, not reaped forever."""
    store.client.zadd(store.keys.leases, {f"{i:032x}": 1 for i in range(5)})
    task_id = store.submit(spec())
    store.acquire("dead-worker", 1, 0.1)
    time.sleep(0.2)
    assert store.reap(limit=3).requeued == 1
    assert store.status(task_id).state == TaskState.PENDING
    assert store.client.zcard(store.keys.leases) == 0


def test_reaper_never_kills_a_task_whose_record_was_tampered_while_leased(
        store: TaskStore) -> None:
    task_id = store.submit(spec(max_attempts=1))
    store.acquire("w", 1, 0.1)
    key = store.keys.task(task_id)
    store.client.hset(key, "rec", store.client.hget(key, "rec")[:-3] + b"99}")
    time.sleep(0.2)
    assert store.reap().requeued == 1  # no dead verdict from an unverifiable record ...
    assert store.acquire("w", 1, 30) == []  # ... the acquirer quarantines and audits it
    assert store.status(task_id).state == TaskState.QUARANTINED
    assert store.stats()["signature_failures"] == 1


# ---- cancel -------------------------------------------------------------------------------
def test_cancel_pending_and_leased_but_not_final(store: TaskStore) -> None:
    pending_id, leased_id, done_id = store.submit_many([spec(priority=0), spec(priority=5),
                                                       spec(priority=9)])
    done, leased = store.acquire("w", 2, 30)
    store.complete("w", [(done, OK)])
    assert store.cancel(pending_id) == TaskState.PENDING
    assert store.cancel(leased_id) == TaskState.LEASED
    assert store.cancel(done_id) == TaskState.SUCCEEDED
    assert store.complete("w", [(leased, OK)]) == [False]
    assert store.status(leased_id).state == TaskState.CANCELLED
    assert store.status(done_id).state == TaskState.SUCCEEDED
    assert store.acquire("w", 5, 30) == []


def test_malformed_task_id_is_bad_input(store: TaskStore) -> None:
    with pytest.raises(ValidationError, match="not a task id"):
        store.status("nope")


def test_unknown_task_is_not_found(store: TaskStore) -> None:
    with pytest.raises(NotFound):
        store.status("0" * 32)
    with pytest.raises(NotFound):
        store.cancel("0" * 32)


# ---- integrity (threat model: attacker writes Redis, holds no key) ---------------------------
def test_record_under_a_key_not_yet_known_here_is_deferred_not_quarantined(
        make_store) -> None:  # type: ignore[no-untyped-def]
    """A rotation still propagating: the new key signed a record this node cannot check yet."""
    new_key = generate_key()
    ahead = make_store(sealer=Sealer(Keyring([new_key])))
    behind = store_over(ahead.client, Sealer(Keyring([generate_key()])), ahead.namespace,
                       retry=ahead.retry)
    task_id = ahead.submit(spec("echo", payload="wait for me", max_attempts=1))
    assert behind.acquire("w", 5, 30) == []
    status = ahead.status(task_id)
    assert (status.state, status.attempts) == (TaskState.PENDING, 0)  # no attempt spent
    assert ahead.stats()["deferred_unknown_key"] == 1
    (lease,) = ahead.acquire("w", 5, 30)  # a node that knows the key runs it
    assert lease.payload == "wait for me"


def test_a_bogus_key_id_cannot_cycle_forever(make_store) -> None:  # type: ignore[no-untyped-def]
    from raysys.store import MAX_KEY_DEFERRALS

    stranger = make_store(sealer=Sealer(Keyring([generate_key()])))
    task_id = stranger.submit(spec())
    here = store_over(stranger.client, Sealer(Keyring([generate_key()])), stranger.namespace)
    for _ in range(MAX_KEY_DEFERRALS + 1):
        here.acquire("w", 1, 30)
    assert here.client.hget(here.keys.task(task_id), "state") == b"quarantined"
def acquire_until_settled(store: TaskStore) -> list[Lease]:
    """Acquire as often as a record under an unknown key may be deferred, plus one."""
    from raysys.store import MAX_KEY_DEFERRALS

    handed_out: list[Lease] = []
    for _ in range(MAX_KEY_DEFERRALS + 1):
        handed_out += store.acquire("w", 5, 30)
    return handed_out


@pytest.mark.parametrize("offset", [0, 5, 40, -1, -10])
def test_any_changed_byte_is_rejected_audited_and_never_handed_out(store: TaskStore,
                                                                   offset: int) -> None:
    task_id = store.submit(spec("echo", payload={"cmd": "safe"}))
    key = store.keys.task(task_id)
    rec = bytearray(store.client.hget(key, "rec"))
    rec[offset] = (rec[offset] + 1) % 256  # offset 5 changes the key id: deferred, then out
    store.client.hset(key, "rec", bytes(rec))
    assert acquire_until_settled(store) == []
    assert store.status(task_id).state == TaskState.QUARANTINED
    assert store.stats()["signature_failures"] == 1
    assert store.counts()["quarantined"] == 1
    assert any(e["ev"] == "rejected" and e["id"] == task_id for e in store.audit_tail())


def test_record_copied_under_another_tasks_key_is_rejected(store: TaskStore) -> None:
    victim, other = store.submit_many([spec("echo", payload="v", priority=1), spec("noop")])
    rec = store.client.hget(store.keys.task(victim), "rec")
    store.client.hset(store.keys.task(other), "rec", rec)
    leases = store.acquire("w", 5, 30)
    assert [lease.task_id for lease in leases] == [victim]
    assert store.status(other).state == TaskState.QUARANTINED
    audit = [e for e in store.audit_tail() if e["ev"] == "rejected"]
    assert audit[0]["reason"] == "copied_record"


def test_record_from_another_namespace_is_rejected(make_store, sealer: Sealer) -> None:  # type: ignore[no-untyped-def]
    a, b = make_store(sealer=sealer), make_store(sealer=sealer)
    task_a = a.submit(spec())
    task_b = b.submit(spec())
    b.client.hset(b.keys.task(task_b), "rec", a.client.hget(a.keys.task(task_a), "rec"))
    assert b.acquire("w", 1, 30) == []
    assert b.status(task_b).state == TaskState.QUARANTINED


def test_forged_record_signed_with_another_key_is_rejected(store: TaskStore) -> None:
    task_id = store.submit(spec())
    attacker = store_over(store.client, Sealer(Keyring([generate_key()])), store.namespace)
    forged_id = attacker.submit(spec("echo", payload="evil"))
    store.client.hset(store.keys.task(task_id), "rec",
                      store.client.hget(store.keys.task(forged_id), "rec"))
    assert acquire_until_settled(store) == []
    assert store.counts()["quarantined"] == 2


def test_finished_task_put_back_in_queue_is_not_run_again(store: TaskStore) -> None:
    task_id = store.submit(spec())
    (lease,) = store.acquire("w", 1, 30)
    store.complete("w", [(lease, OK)])
    # The attacker re-queues it and even rewrites its state.
    store.client.hset(store.keys.task(task_id), "state", "pending")
    store.client.zadd(store.keys.queue("noop"), {task_id: 0})
    store.client.hincrby(store.keys.queued_kinds, "noop", 1)
    assert store.acquire("w", 5, 30) == []
    assert store.stats()["replays_blocked"] == 1
    assert any(e["ev"] == "replay_blocked" for e in store.audit_tail())


def test_tampered_completion_record_is_reported_not_trusted(store: TaskStore) -> None:
    task_id = store.submit(spec())
    (lease,) = store.acquire("w", 1, 30)
    store.complete("w", [(lease, Outcome(ok=True, result="genuine"))])
    key = store.keys.task(task_id)
    store.client.hset(key, "fin", store.client.hget(key, "fin").replace(b"genuine", b"forged!"))
    status = store.status(task_id)
    assert status.result is None and "failed verification" in (status.error or "")
    assert status.integrity == "failed: bad_signature (completion record)"
    assert status.to_json()["integrity"] == status.integrity


def test_status_names_each_integrity_failure_of_the_task_record(  # type: ignore[no-untyped-def]
        make_store, sealer: Sealer) -> None:
    # given: a genuine task, a garbled one, and one holding another namespace's genuine record
    store, other = make_store(sealer=sealer), make_store(sealer=sealer)
    genuine, garbled, copied = store.submit_many([spec(payload=i) for i in range(3)])
    key = store.keys.task
    store.client.hset(key(garbled), "rec", b"RS1.not-a-key.hmac-sha256.00.{}")
    store.client.hset(key(copied), "rec",
                      other.client.hget(other.keys.task(other.submit(spec())), "rec"))

    # when / then: the genuine one verifies; the others say why not, and that they never run
    assert store.status(genuine).integrity is None
    assert "integrity" not in store.status(genuine).to_json()
    for task_id, reason in ((garbled, "unknown_key"), (copied, "copied_record")):
        status = store.status(task_id)
        assert status.state == TaskState.PENDING
        assert status.integrity == f"failed: {reason} (task record)"
        assert "will never run" in (status.error or "")

    # when: they are leased, then they are quarantined, and status says so with the reason
    assert [lease.task_id for lease in acquire_until_settled(store)] == [genuine]
    for task_id, reason in ((garbled, "unknown_key"), (copied, "copied_record")):
        status = store.status(task_id)
        assert status.state == TaskState.QUARANTINED
        assert status.integrity == f"failed: {reason} (task record)"


# ---- fences across Redis restarts -------------------------------------------------------------
def test_first_grant_starts_at_the_server_clock_floor(store: TaskStore) -> None:
    store.submit(spec())
    server_ms = int(store.client.time()[0]) * 1000
    (lease,) = store.acquire("w", 1, 30)
    assert lease.fence > server_ms * FENCES_PER_MS


def test_new_redis_run_id_raises_fences_to_the_clock_floor_even_after_rollback(
        store: TaskStore) -> None:
    """A lost AOF tail can roll the counter back; the floor comes from the clock instead."""
    store.submit_many([spec(), spec()])
    (first,) = store.acquire("w", 1, 30)
    store.client.set(store.keys.fence, 5)  # the tail holding our grants was lost ...
    store.client.set(store.keys.run_id, "0" * 40)  # ... in a restart
    time.sleep(0.01)
    (second,) = store.acquire("w", 1, 30)
    assert second.fence > first.fence
    assert any(e["ev"] == "fence_epoch" for e in store.audit_tail())


# ---- optimistic record rewrite ----------------------------------------------------------------
def test_replace_record_retries_on_conflict_and_counts(store: TaskStore) -> None:
    task_id = store.submit(spec("echo", payload=1))
    key = store.keys.task(task_id)
    calls: list[bytes] = []

    def transform(old: bytes) -> bytes:
        calls.append(old)
        if len(calls) == 1:  # someone else rewrites it between our read and our write
            store.client.hset(key, "rec", store.sealer.seal("task", {"interloper": True}))
        return store.sealer.seal("task", {"resigned": len(calls)})

    assert store.replace_record(task_id, transform)
    assert len(calls) == 2 and store.stats()["conflict_retries"] == 1


def test_replace_record_refuses_leased_tasks(store: TaskStore) -> None:
    task_id = store.submit(spec())
    store.acquire("w", 1, 30)
    assert store.replace_record(task_id, lambda old: old + b"x") is False


# ---- counts and audit -------------------------------------------------------------------------
def test_counts_add_up_after_a_mixed_run(store: TaskStore) -> None:
    store.submit_many([spec(max_attempts=1) for _ in range(10)])
    leases = store.acquire("w", 10, 30)
    store.complete("w", [(lease, OK if i % 2 else Outcome(ok=False, error="x"))
                         for i, lease in enumerate(leases)])
    counts = store.counts()
    assert counts["succeeded"] == 5 and counts["dead"] == 5
    assert sum(counts.values()) == 10


def test_audit_can_be_switched_off(make_store) -> None:  # type: ignore[no-untyped-def]
    store = make_store(audit=False)
    store.submit(spec())
    (lease,) = store.acquire("w", 1, 30)
    store.complete("w", [(lease, OK)])
    assert store.audit_tail() == []


def test_all_keys_live_under_the_namespace_prefix(store: TaskStore,
                                                  redis_client: redis.Redis) -> None:
    store.submit(spec(idempotency_key="i"))
    (lease,) = store.acquire("w", 1, 30)
    store.complete("w", [(lease, OK)])
    keys = {k.decode() for k in redis_client.scan_iter(match=store.keys.pattern())}
    assert keys and all(k.startswith(store.keys.prefix) for k in keys)
    assert len(keys) == len(list(redis_client.scan_iter(match=f"*{store.namespace}*")))


def test_a_wait_for_work_ends_when_the_next_delayed_task_is_due(store: TaskStore) -> None:
    # given: a task due in 0.3 s, and an acquire that found nothing to lease yet
    store.submit(TaskSpec.build(kind="noop", not_before_ms=int(time.time() * 1000) + 300))
    assert store.acquire("w", 1, 30) == []

    # when: the Distributor waits for work with a long timeout
    started = time.monotonic()
    assert store.wait_for_work(5.0) is False

    # then: it is back about when the task is due (not at the timeout), and the task is leased
    assert 0.1 < time.monotonic() - started < 2.0
    time.sleep(0.05)
    assert len(store.acquire("w", 1, 30)) == 1


def test_a_submission_wakes_a_waiting_distributor_at_once(store: TaskStore) -> None:
    # given: nothing queued, so a wait for work runs into its timeout
    started = time.monotonic()
    assert store.wait_for_work(0.2) is False
    assert time.monotonic() - started >= 0.15

    # when: a batch is submitted while someone waits
    store.submit_many([TaskSpec.build(kind="noop") for _ in range(3)])

    # then: the wait returns at once, and one wake-up stands for the whole batch
    started = time.monotonic()
    assert store.wait_for_work(5.0) is True
    assert time.monotonic() - started < 1.0
    assert store.wait_for_work(0.05) is False
