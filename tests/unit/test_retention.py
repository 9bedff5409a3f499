"""Retention on a real Redis: finished tasks go, live ones never do, and a purged task's record
cannot be replayed into a run (the replay window, tombstones, no laundering by re-signing).

The window is shortened (``retention_ms`` of a few seconds, no clock-skew margin) so real time
passes in the tests; the attacker writes Redis directly, as the threat model allows.
"""

from __future__ import annotations

import time
import uuid

import pytest
import redis

from raysys.config import load_settings
from raysys.errors import ValidationError
from raysys.models import Outcome, TaskSpec, TaskState
from raysys.rotation import resign_all
from raysys.signing.envelope import Sealer, signing_kid
from raysys.signing.keyring import Keyring, generate_key
from raysys.store import TaskStore
from raysys.store import retention as retention_module
from raysys.store.records import RECORD
from tests.support.stores import core_over
from tests.unit.conftest import StoreFactory

pytestmark = pytest.mark.unit
OK = Outcome(ok=True)
WINDOW_MS = 2_000


@pytest.fixture
def short(make_store: StoreFactory, monkeypatch: pytest.MonkeyPatch) -> TaskStore:
    """A store whose replay window (retention) is 2 s, with no clock-skew margin."""
    monkeypatch.setattr(retention_module, "CLOCK_SKEW_MS", 0)
    store = make_store()
    store.retention_ms = WINDOW_MS
    return store


def spec(kind: str = "noop", **fields: object) -> TaskSpec:
    return TaskSpec.build(kind=kind, **fields)


def finish(store: TaskStore, n: int = 1, **fields: object) -> list[str]:
    """Submit ``n`` tasks and run them to succeeded; their ids."""
    ids = store.submit_many([spec(payload=i, **fields) for i in range(n)])
    leases = store.acquire("w", n, 30)
    assert store.complete("w", [(lease, Outcome(ok=True, result=lease.payload))
                                for lease in leases]) == [True] * n
    return ids


def replay(store: TaskStore, task_id: str, record: bytes) -> None:
    """The attacker writes a copied record back as a pending task and queues it."""
    store.client.hset(store.keys.task(task_id), mapping={"rec": record, "state": "pending",
                                                        "k": "noop"})
    store.client.zadd(store.keys.queue("noop"), {task_id: 1})
    store.client.hincrby(store.keys.queued_kinds, "noop", 1)


# ---- purge --------------------------------------------------------------------------------
def test_purge_removes_a_finished_task_and_everything_that_belongs_to_it(store: TaskStore,
                                                                         ) -> None:
    # given: one task finished, one pending, both with idempotency keys
    (done,) = finish(store, idempotency_key="order-1")
    waiting = store.submit(spec(idempotency_key="order-2"))
    time.sleep(0.01)

    # when
    report = store.purge(0.0)

    # then: the finished one is gone with its key and index entries; the pending one is not
    assert report.removed["succeeded"] + report.tombstoned["succeeded"] == 1
    k = store.keys
    assert store.client.hget(k.task(done), "rec") is None
    assert store.client.get(k.idempotency("order-1")) is None
    assert store.client.zscore(k.finished_index("succeeded"), done) is None
    assert store.client.zscore(k.finished_index("succeeded", "noop"), done) is None
    assert store.client.zscore(k.submitted_index, done) is None
    assert store.status(waiting).state == TaskState.PENDING
    assert store.client.get(k.idempotency("order-2")) is not None
    # and the per-state count fell, the monotonic counters did not
    assert store.counts()["succeeded"] == 0 and store.counts()["pending"] == 1
    stats = store.stats()
    assert stats["completed:succeeded"] == 1 and stats["purged"] == 1


def test_an_idempotency_key_is_free_again_once_its_task_is_purged(store: TaskStore) -> None:
    (first,) = finish(store, idempotency_key="nightly")
    time.sleep(0.01)
    store.purge(0.0)
    again = store.submit(spec(idempotency_key="nightly"))
    assert again != first and store.status(again).state == TaskState.PENDING


def test_dry_run_counts_and_removes_nothing(store: TaskStore) -> None:
    finish(store, 3)
    time.sleep(0.01)
    report = store.purge(0.0, dry_run=True)
    assert report.dry_run and report.removed["succeeded"] == 3
    assert store.counts()["succeeded"] == 3


def test_purge_respects_older_than(store: TaskStore) -> None:
    finish(store, 2)
    report = store.purge(3600.0)
    assert report.total == 0 and store.counts()["succeeded"] == 2


@pytest.mark.parametrize("state", ["pending", "leased", "scheduled", "bogus"])
def test_purge_of_a_state_that_is_not_final_is_refused(store: TaskStore, state: str) -> None:
    store.submit(spec())
    with pytest.raises(ValidationError, match="only final states"):
        store.purge(0.0, states=(state,))
    assert store.counts()["pending"] == 1


def test_a_planted_index_entry_never_removes_a_live_task(store: TaskStore) -> None:
    # given: the attacker lists a pending task in the succeeded index, long finished
    task_id = store.submit(spec())
    store.client.zadd(store.keys.finished_index("succeeded"), {task_id: 1})

    # when
    report = store.purge(0.0)

    # then: the entry is dropped, the task stays
    assert report.total == 0
    assert store.status(task_id).state == TaskState.PENDING
    assert store.client.zscore(store.keys.finished_index("succeeded"), task_id) is None


def test_purge_works_in_pages(store: TaskStore, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(retention_module, "PURGE_PAGE", 7)
    finish(store, 50)
    time.sleep(0.01)
    assert store.purge(0.0).total == 50
    assert store.counts()["succeeded"] == 0


# ---- the replay window ----------------------------------------------------------------------
def test_a_replayed_record_of_a_purged_task_is_refused_as_expired(short: TaskStore) -> None:
    # given: a task finished, its record copied by the attacker, then purged by retention
    (task_id,) = finish(short)
    record = short.client.hget(short.keys.task(task_id), "rec")
    time.sleep(WINDOW_MS / 1000 + 0.3)
    report = short.expire()
    assert report.total == 1 and sum(report.tombstoned.values()) == 0
    assert short.client.exists(short.keys.task(task_id)) == 0

    # when: the attacker writes the old record back and queues it
    replay(short, task_id, bytes(record))
    leases, quarantined = short.acquire_verified("w", 10, 30)

    # then: it is never handed out: quarantined as an expired record, audited
    assert leases == [] and [tid for tid, _ in quarantined] == [task_id]
    assert short.status(task_id).state == TaskState.QUARANTINED
    assert "expired" in (short.status(task_id).error or "")
    assert any(e.get("reason") == "expired_record" for e in short.audit_tail())


def test_purging_inside_the_window_leaves_a_tombstone_that_refuses_replays(
        short: TaskStore) -> None:
    # given: a task purged at once (inside its replay window)
    (task_id,) = finish(short)
    record = short.client.hget(short.keys.task(task_id), "rec")
    report = short.purge(0.0)
    assert report.tombstoned["succeeded"] == 1
    assert short.status(task_id).error and "purged" in short.status(task_id).error

    # when: its (still fresh) record is replayed
    replay(short, task_id, bytes(record))

    # then: the tombstone's empty completion record blocks the lease
    assert short.acquire("w", 10, 30) == []
    assert short.stats().get("replays_blocked", 0) == 1

    # and once the window has closed the tombstone goes too (and the record is too old to run)
    time.sleep(WINDOW_MS / 1000 + 0.3)
    assert short.expire().tombstones_expired == 1
    assert short.client.exists(short.keys.task(task_id)) == 0


def test_a_finished_record_re_signed_by_rotation_is_tombstoned_until_its_window_closes(
        short: TaskStore) -> None:
    # given: a finished task whose record key rotation re-signed later (a fresh issue time)
    (task_id,) = finish(short)
    key = short.keys.task(task_id)
    time.sleep(WINDOW_MS / 2000 + 0.5)
    old = bytes(short.client.hget(key, "rec"))
    fresh = short.sealer.seal(RECORD, short.sealer.open(old, RECORD).body)
    assert short.compare_and_set("rec", "*", [(task_id, old, fresh)]) == [True]

    # when: retention passes once the task finished a window ago, but the new record has not
    time.sleep(WINDOW_MS / 2000 + 0.2)
    report = short.expire()

    # then: the task leaves a tombstone, not nothing: a replay of the re-signed record is
    # refused, and the tombstone stays until the window has closed on that record too
    assert report.tombstoned["succeeded"] == 1 and report.removed["succeeded"] == 0
    replay(short, task_id, fresh)
    assert short.acquire("w", 10, 30) == []
    assert short.expire().tombstones_expired == 0
    time.sleep(WINDOW_MS / 2000 + 0.3)
    assert short.expire().tombstones_expired == 1


def test_live_records_are_resealed_before_the_window_closes_on_them(short: TaskStore) -> None:
    # given: a queued task older than half the window
    task_id = short.submit(spec(payload="keep me"))
    old = short.client.hget(short.keys.task(task_id), "rec")
    time.sleep(WINDOW_MS / 2000 + 0.2)

    # when: housekeeping re-seals, and later (past the first record's window) the task runs
    assert short.reseal_stale() == 1
    fresh = short.client.hget(short.keys.task(task_id), "rec")
    assert fresh != old
    assert short.sealer.open(bytes(fresh), RECORD).body == short.sealer.open(
        bytes(old), RECORD).body
    time.sleep(WINDOW_MS / 2000 + 0.2)
    assert short.reseal_stale() == 1  # again: half a window has passed since
    time.sleep(0.4)

    # then: it is leased normally: queued work never expires
    (lease,) = short.acquire("w", 1, 30)
    assert lease.task_id == task_id and lease.payload == "keep me"


def test_a_queued_record_nobody_reseals_expires_into_quarantine(short: TaskStore) -> None:
    task_id = short.submit(spec())
    time.sleep(WINDOW_MS / 1000 + 0.3)
    leases, quarantined = short.acquire_verified("w", 1, 30)
    assert leases == [] and quarantined[0][0] == task_id


def _record(sealer: Sealer, namespace: str, task_id: str, age_s: float) -> bytes:
    body = {"id": task_id, "ns": namespace, "kind": "noop", "payload": "again", "priority": 0,
            "idempotency_key": None, "max_attempts": None, "timeout_s": None,
            "schedule_to_start_s": None}
    return sealer.seal(RECORD, body, now=time.time() - age_s)


def test_resealing_never_launders_a_replayed_record(short: TaskStore, sealer: Sealer) -> None:
    # given: an old signed record (issued before the window) planted as live and indexed to
    # be re-sealed: what a copy of a purged task's record looks like
    task_id = "ab" * 16
    record = _record(sealer, short.namespace, task_id, WINDOW_MS / 1000 + 5)
    replay(short, task_id, record)
    short.client.zadd(short.keys.seal_index, {task_id: 1})

    # when: housekeeping passes over it
    assert short.reseal_stale() == 0

    # then: the record is unchanged, and refused when handed out
    assert short.client.hget(short.keys.task(task_id), "rec") == record
    leases, quarantined = short.acquire_verified("w", 1, 30)
    assert leases == [] and [tid for tid, _ in quarantined] == [task_id]


def test_key_rotation_never_launders_a_replayed_record(redis_client: redis.Redis) -> None:
    # given: records signed by the old key: one issued before the window (a replay), one fresh
    old, new = generate_key(), generate_key()
    ring = Keyring([old.with_status("verify-only"), new])
    namespace = "rot" + uuid.uuid4().hex[:8]
    settings = load_settings(namespace=namespace, retention_s=10)
    core = core_over(redis_client, ring, namespace, settings=settings)
    signer = Sealer(Keyring([old]))
    stale, fresh = "cd" * 16, "ef" * 16
    replay(core.store, stale, _record(signer, namespace, stale, 30))
    replay(core.store, fresh, _record(signer, namespace, fresh, 0))

    # when: the old key is rotated out
    report = resign_all(core)

    # then: the fresh record moved to the new key; the replay did not, and is refused
    assert report.resigned_records == 1
    rec = {tid: bytes(core.client.hget(core.keys.task(tid), "rec")) for tid in (stale, fresh)}
    assert signing_kid(rec[fresh]) == new.kid and signing_kid(rec[stale]) == old.kid
    leases, quarantined = core.store.acquire_verified("w", 2, 30)
    assert [lease.task_id for lease in leases] == [fresh]
    assert [tid for tid, _ in quarantined] == [stale]


def test_audit_entries_are_trimmed_by_age(store: TaskStore) -> None:
    # given: entries from a second ago, and one from now
    finish(store, 3)
    before = store.client.xlen(store.keys.audit)
    time.sleep(1.2)
    store.submit(spec())

    # when
    trimmed = store.trim_audit(1.0)

    # then: exactly the old ones went
    assert trimmed == before and store.client.xlen(store.keys.audit) == 1
    assert store.trim_audit(0) == 0  # 0: by length only


# ---- delayed tasks ------------------------------------------------------------------------
def test_a_delayed_task_waits_scheduled_and_is_never_handed_out_early(store: TaskStore) -> None:
    # given: a task due in 0.6 s
    due = int((time.time() + 0.6) * 1000)
    task_id = store.submit(spec(not_before_ms=due))
    status = store.status(task_id)
    assert status.state == TaskState.SCHEDULED and status.run_at_ms == due
    assert store.counts()["scheduled"] == 1 and store.counts()["pending"] == 0

    # when / then: nothing before it is due, the task once it is
    assert store.acquire("w", 5, 30) == []
    time.sleep(0.7)
    (lease,) = store.acquire("w", 5, 30)
    server_ms = store.server_ms()
    assert lease.task_id == task_id and server_ms >= due
    assert store.counts()["scheduled"] == 0


def test_a_tampered_schedule_does_not_make_a_task_run_early(store: TaskStore) -> None:
    # given: a task due in an hour; the attacker moves its entry to "due now"
    due = int((time.time() + 3600) * 1000)
    task_id = store.submit(spec(not_before_ms=due))
    store.client.zadd(store.keys.scheduled, {task_id: 0})

    # when
    leases = store.acquire("w", 5, 30)

    # then: the signed due time wins: back to scheduled at its real time, audited
    assert leases == []
    assert store.status(task_id).state == TaskState.SCHEDULED
    assert store.client.zscore(store.keys.scheduled, task_id) == due
    assert store.stats()["not_due"] == 1
    assert any(e.get("ev") == "not_due" for e in store.audit_tail())


def test_a_scheduled_task_can_be_cancelled(store: TaskStore) -> None:
    task_id = store.submit(spec(not_before_ms=int((time.time() + 0.3) * 1000)))
    assert store.cancel(task_id) == TaskState.SCHEDULED
    time.sleep(0.4)
    assert store.acquire("w", 5, 30) == []
    assert store.status(task_id).state == TaskState.CANCELLED
    assert store.counts()["scheduled"] == 0 and store.counts()["cancelled"] == 1
