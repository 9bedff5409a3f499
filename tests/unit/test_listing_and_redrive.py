"""Listing tasks (newest first, by state and kind, in pages), attempt history, and redrive on a
real Redis: a redriven task runs again under its own id, keeps its history, is audited, and a
tampered dead record is never re-signed."""

from __future__ import annotations

import time

import pytest

from raysys.errors import ValidationError
from raysys.models import Lease, Outcome, TaskSpec, TaskState
from raysys.signing.envelope import Sealer
from raysys.store import TaskStore
from raysys.store import listing as listing_module
from raysys.store.records import RECORD
from tests.unit.conftest import StoreFactory

pytestmark = pytest.mark.unit


def spec(kind: str = "noop", **fields: object) -> TaskSpec:
    return TaskSpec.build(kind=kind, **fields)


def run_all(store: TaskStore, outcome: Outcome, n: int = 100) -> list[Lease]:
    leases = store.acquire("w", n, 30)
    assert all(store.complete("w", [(lease, outcome) for lease in leases]))
    return leases


def kill(store: TaskStore, kind: str = "noop", n: int = 1) -> list[str]:
    """Submit ``n`` tasks of ``kind`` with one attempt each and fail them: dead."""
    ids = store.submit_many([spec(kind, payload=i, max_attempts=1) for i in range(n)])
    run_all(store, Outcome(ok=False, error="boom"), n)
    return ids


# ---- listing ------------------------------------------------------------------------------
def test_tasks_are_listed_newest_first_and_paged_with_a_cursor(store: TaskStore,
                                                               monkeypatch: pytest.MonkeyPatch,
                                                               ) -> None:
    monkeypatch.setattr(listing_module, "WALK_BATCH", 3)
    ids = []
    for i in range(7):  # one per millisecond at least: distinct submission times
        ids.append(store.submit(spec(payload=i)))
        time.sleep(0.002)
    ids += store.submit_many([spec(payload=i) for i in range(5)])  # five with one timestamp

    seen: list[str] = []
    cursor = None
    while True:
        page = store.tasks(limit=4, cursor=cursor)
        seen += [row.id for row in page.tasks]
        cursor = page.cursor
        if cursor is None:
            break
    assert sorted(seen) == sorted(ids) and len(seen) == len(set(seen)) == 12
    assert seen[-7:] == ids[6::-1]  # the seven single ones, newest first, at the end


def test_listing_by_final_state_and_kind(store: TaskStore) -> None:
    dead_noop = kill(store, "noop", 2)
    dead_echo = kill(store, "echo", 1)
    store.submit(spec("echo"))
    assert {r.id for r in store.tasks(state="dead").tasks} == {*dead_noop, *dead_echo}
    assert [r.id for r in store.tasks(state="dead", kind="echo").tasks] == dead_echo
    rows = store.tasks(state="pending").tasks
    assert [r.state for r in rows] == ["pending"] and rows[0].kind == "echo"
    assert store.tasks(state="dead").tasks[0].error == "boom"


def test_listing_since_keeps_only_newer_tasks(store: TaskStore) -> None:
    store.submit(spec())
    time.sleep(0.05)
    since = store.server_ms()
    newer = store.submit(spec())
    assert [r.id for r in store.tasks(since_ms=since).tasks] == [newer]


@pytest.mark.parametrize(("field", "value", "says"), [
    ("state", "finished", "unknown state"),
    ("limit", 0, "limit"),
    ("cursor", "garbage", "cursor"),
])
def test_bad_listing_input_is_one_clear_error(store: TaskStore, field: str, value: object,
                                              says: str) -> None:
    with pytest.raises(ValidationError, match=says):
        store.tasks(**{field: value})  # type: ignore[arg-type]


def test_history_keeps_every_attempt(store: TaskStore) -> None:
    (task_id,) = store.submit_many([spec(max_attempts=2)])
    run_all(store, Outcome(ok=False, error="first try"))
    time.sleep(0.01)  # the retry backoff of the test store is a millisecond or two
    run_all(store, Outcome(ok=True, result=1))
    history = store.history(task_id)
    assert [(h["event"], h["attempt"]) for h in history] == [("failed", 1), ("succeeded", 2)]
    assert history[0]["detail"] == "first try" and history[0]["holder"] == "w"
    assert all(h["started_ms"] and h["ended_ms"] >= h["started_ms"] for h in history)


# ---- redrive ------------------------------------------------------------------------------
def test_a_dead_task_is_redriven_under_its_own_id_and_runs_again(store: TaskStore) -> None:
    # given: a dead task
    (task_id,) = kill(store)
    completed_before = store.stats()["completed:dead"]

    # when: redriven after the fix
    report = store.redrive(state="dead", request_id="fix-1")

    # then: it is pending again with fresh attempts, its history and an audit entry kept
    assert report.redriven == [task_id]
    status = store.status(task_id)
    assert status.state == TaskState.PENDING and status.attempts == 0 and status.error is None
    assert store.counts()["dead"] == 0 and store.counts()["pending"] == 1
    assert [h["event"] for h in store.history(task_id)] == ["dead", "redriven"]
    assert any(e.get("ev") == "redriven" and e.get("id") == task_id
               for e in store.audit_tail())
    assert store.client.hget(store.keys.task(task_id), "fin1") is not None  # old outcome kept
    (lease,) = store.acquire("w", 5, 30)
    assert lease.task_id == task_id and lease.attempt == 1
    assert store.complete("w", [(lease, Outcome(ok=True, result="fixed"))]) == [True]
    assert store.status(task_id).result == "fixed"
    stats = store.stats()
    assert stats["redriven"] == 1 and stats["completed:dead"] == completed_before


def test_redrive_is_idempotent_by_request_id(store: TaskStore) -> None:
    (task_id,) = kill(store)
    assert store.redrive(ids=[task_id], request_id="r-1").redriven == [task_id]
    run_all(store, Outcome(ok=False, error="still broken"))  # dead again
    again = store.redrive(ids=[task_id], request_id="r-1")  # the same request, resent
    assert again.redriven == [] and again.already == [task_id]
    assert store.status(task_id).state == TaskState.DEAD
    assert store.redrive(ids=[task_id], request_id="r-2").redriven == [task_id]


def test_a_tampered_dead_record_is_refused_and_never_resigned(store: TaskStore) -> None:
    # given: a dead task whose record the attacker rewrote (a bigger payment, say)
    (task_id,) = kill(store)
    key = store.keys.task(task_id)
    tampered = bytes(store.client.hget(key, "rec")).replace(b'"payload":0', b'"payload":9')
    store.client.hset(key, "rec", tampered)

    # when
    report = store.redrive(state="dead")

    # then: refused with the reason; the bytes stay tampered (never validly signed), still dead
    assert report.redriven == [] and "fails verification" in report.refused[task_id]
    assert store.client.hget(key, "rec") == tampered
    assert store.status(task_id).state == TaskState.DEAD


def test_a_record_copied_from_another_task_is_refused(store: TaskStore) -> None:
    first, second = kill(store, n=2)
    other = store.client.hget(store.keys.task(second), "rec")
    store.client.hset(store.keys.task(first), "rec", other)
    report = store.redrive(ids=[first])
    assert "another task" in report.refused[first]


def test_redrive_refuses_live_and_unknown_tasks(store: TaskStore) -> None:
    live = store.submit(spec())
    report = store.redrive(ids=[live, "f" * 32])
    assert "not finished" in report.refused[live] and report.missing == ["f" * 32]
    with pytest.raises(ValidationError, match="only dead, cancelled, quarantined"):
        store.redrive(state="pending")
    with pytest.raises(ValidationError, match="not both"):
        store.redrive(ids=[live], state="dead")


def test_dry_run_redrives_nothing(store: TaskStore) -> None:
    ids = kill(store, n=3)
    report = store.redrive(state="dead", dry_run=True)
    assert sorted(report.redriven) == sorted(ids) and store.counts()["dead"] == 3


def test_a_quarantined_task_whose_record_verifies_can_be_redriven(make_store: StoreFactory,
                                                                  sealer: Sealer) -> None:
    # given: a task quarantined because its key was unknown to the node at the time
    store = make_store()
    task_id = store.submit(spec(payload="x"))
    store.client.hset(store.keys.task(task_id), mapping={"state": "quarantined"})
    store.client.hincrby(store.keys.counts, "pending", -1)
    store.client.hincrby(store.keys.counts, "quarantined", 1)
    store.client.zrem(store.keys.queue("noop"), task_id)
    store.client.hdel(store.keys.queued_kinds, "noop")

    # when / then
    assert store.redrive(ids=[task_id]).redriven == [task_id]
    (lease,) = store.acquire("w", 1, 30)
    assert lease.task_id == task_id and lease.payload == "x"
    body = sealer.open(bytes(store.client.hget(store.keys.task(task_id), "rec")), RECORD).body
    assert body["id"] == task_id
