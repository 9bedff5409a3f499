"""What the clients make of what they read, without Ray: the error tree of ``result()``, the
meaning of each final status, the bookkeeping of a wait, how one actor call's errors surface,
and the async client's one polling loop for many waiters.

The clients' behaviour over real Ray and Redis is tests/integration/test_async_client.py; here
the status source of the polling loop is an in-memory table (the loop's ``fetch`` seam, as the
Coordinator's ``statuses`` answers), since what is checked is the loop's own bookkeeping.
"""

from __future__ import annotations

import asyncio
import pickle
from collections.abc import Sequence
from datetime import datetime

import pytest

import raysys
from raysys.client.calls import CallAttempts
from raysys.client.outcomes import WaitRounds, quarantine_reason, result_of
from raysys.client.requests import SUBMIT_CHUNK, listing_query, redrive_request
from raysys.client.watch import StatusWatch
from raysys.errors import (
    IntegrityError,
    NotFound,
    RaysysError,
    RayUnavailable,
    TaskCancelled,
    TaskDead,
    TaskFailed,
    TaskNotSucceeded,
    TaskQuarantined,
    ValidationError,
)
from raysys.models import TaskState, TaskStatus

pytestmark = [pytest.mark.unit, pytest.mark.timeout(30)]

TID = "0" * 32


def status(state: TaskState, task_id: str = TID, *, result: object = None,
           error: str | None = None) -> TaskStatus:
    return TaskStatus(task_id, state, 1, 0, "echo", result, error)


# ---- the error tree -----------------------------------------------------------------------------
@pytest.mark.parametrize(("cls", "state", "exit_code"), [
    (TaskDead, "dead", 1), (TaskCancelled, "cancelled", 1), (TaskQuarantined, "quarantined", 6)])
def test_each_unsuccessful_outcome_is_one_error_carrying_id_state_and_error(
        cls: type[TaskNotSucceeded], state: str, exit_code: int) -> None:
    # given an outcome error as result() raises it
    exc = cls(TID, "boom: it broke")

    # then it carries the task, its final state and the stored error, in its message too
    assert isinstance(exc, TaskNotSucceeded) and isinstance(exc, RaysysError)
    assert not isinstance(exc, TaskFailed)  # the handlers' signal is another branch
    assert (exc.task_id, exc.state, exc.error) == (TID, state, "boom: it broke")
    assert exc.state == TaskState(state)
    assert str(exc) == f"task {TID} {state}: boom: it broke"
    assert exc.exit_code == exit_code
    # and it survives pickling (Ray, multiprocessing) with every field
    back = pickle.loads(pickle.dumps(exc))
    assert type(back) is cls and vars(back) == vars(exc) and str(back) == str(exc)


def test_a_quarantined_task_is_also_an_integrity_error_with_its_reason() -> None:
    exc = TaskQuarantined(TID, "record failed verification: bad_signature", "bad_signature")
    assert isinstance(exc, IntegrityError) and exc.reason == "bad_signature"
    assert pickle.loads(pickle.dumps(exc)).reason == "bad_signature"
    assert str(TaskDead(TID)) == f"task {TID} dead: no error recorded"
    assert {"TaskNotSucceeded", "TaskDead", "TaskCancelled", "TaskQuarantined"} <= set(
        raysys.__all__)


# ---- result_of: one meaning of a final status ---------------------------------------------------
def test_result_of_each_final_state() -> None:
    # given a status in each state, when result_of reads it, then:
    assert result_of(status(TaskState.SUCCEEDED, result={"n": 1})) == {"n": 1}
    with pytest.raises(TaskDead) as dead:
        result_of(status(TaskState.DEAD, error="ValueError: no"))
    assert dead.value.error == "ValueError: no" and dead.value.task_id == TID
    with pytest.raises(TaskCancelled):
        result_of(status(TaskState.CANCELLED))
    with pytest.raises(TaskQuarantined) as quarantined:
        result_of(status(TaskState.QUARANTINED,
                         error="record failed verification: copied_record"))
    assert quarantined.value.reason == "copied_record"
    for state in (TaskState.PENDING, TaskState.LEASED, TaskState.FAILED, TaskState.SCHEDULED):
        with pytest.raises(TimeoutError, match=f"still {state.value}"):
            result_of(status(state))


def test_a_success_whose_completion_record_did_not_verify_has_no_result() -> None:
    # given a succeeded task whose completion record failed verification (store.status says so)
    tampered = status(TaskState.SUCCEEDED, result=None,
                      error="completion record failed verification (bad_signature)")
    # then its (withheld) result is never returned as if it were one
    with pytest.raises(IntegrityError) as exc:
        result_of(tampered)
    assert exc.value.reason == "unverified_result" and not isinstance(exc.value,
                                                                      TaskNotSucceeded)


def test_the_quarantine_reason_comes_from_the_stored_error() -> None:
    assert quarantine_reason("record failed verification: unknown_key") == "unknown_key"
    assert quarantine_reason("task record failed verification") == "quarantined"
    assert quarantine_reason(None) == "quarantined"


# ---- what both clients send --------------------------------------------------------------------
def test_requests_are_checked_before_anything_is_sent() -> None:
    assert listing_query(since=1.5)["since_ms"] == 1500
    with pytest.raises(ValidationError, match="time zone"):
        listing_query(since=datetime(2026, 1, 1))
    first, second = redrive_request(["a"]), redrive_request(["a"])
    assert first["request_id"] != second["request_id"]
    assert redrive_request(request_id="r1")["request_id"] == "r1"


# ---- the wait's bookkeeping (sync client) -------------------------------------------------------
def test_wait_rounds_ask_each_unfinished_task_once_per_round_in_batches() -> None:
    # given 2,500 ids (one repeated) of which the first round finds 2,000 final
    ids = [f"{i:032x}" for i in range(2500)] + [f"{0:032x}"]
    rounds = WaitRounds(ids, "ns")
    batches = rounds.batches()
    assert [len(b) for b in batches] == [SUBMIT_CHUNK, SUBMIT_CHUNK, 500]
    for batch in batches:
        rounds.take(batch, [status(TaskState.SUCCEEDED if int(i, 16) < 2000 else
                                   TaskState.PENDING, i) for i in batch])
    # when the round is judged, then only the 500 unfinished are asked about next
    assert not rounds.over()
    assert [len(b) for b in rounds.batches()] == [500]
    # and an unknown id is NotFound
    with pytest.raises(NotFound):
        rounds.take([ids[0]], [None])


def test_wait_rounds_end_at_the_deadline_with_current_statuses() -> None:
    rounds = WaitRounds([TID], "ns", timeout=0)
    rounds.take([TID], [status(TaskState.PENDING)])
    assert rounds.over() and rounds.statuses()[0].state == TaskState.PENDING


# ---- one actor call's errors (both clients) -----------------------------------------------------
def test_call_attempts_unwrap_the_actors_own_error_and_retry_only_unavailability() -> None:
    from ray.exceptions import RayActorError, RayTaskError

    attempts = CallAttempts(60.0)
    # an actor's RaysysError comes back as itself
    cause = ValidationError("kind: bad")
    wrapped = RayTaskError("submit_many", "traceback", cause).as_instanceof_cause()
    with pytest.raises(ValidationError) as got:
        attempts.after(wrapped)
    assert got.value is cause
    # any other error inside the actor, or here, propagates unchanged
    assert attempts.after(RayTaskError("f", "tb", KeyError("x")).as_instanceof_cause()) is None
    assert attempts.after(ValueError("mine")) is None
    # an actor restarting, or a call timing out, is retried with a doubling pause
    assert [attempts.after(RayActorError()), attempts.after(TimeoutError())] == [0.05, 0.1]
    # and without retries (a submission without keys) it is RayUnavailable at once
    with pytest.raises(RayUnavailable, match="raysys actor unavailable"):
        CallAttempts(60.0, retry=False).after(TimeoutError("no answer"))
    with pytest.raises(RayUnavailable):
        CallAttempts(-1.0).after(RayActorError())  # past the deadline


# ---- the async client's one polling loop --------------------------------------------------------
class Table:
    """The statuses a Coordinator would answer, and every batch it was asked about."""

    def __init__(self, ids: Sequence[str]) -> None:
        self.states = {i: TaskState.PENDING for i in ids}
        self.calls: list[list[str]] = []

    async def fetch(self, batch: list[str]) -> list[TaskStatus | None]:
        self.calls.append(batch)
        return [status(self.states[i], i) if i in self.states else None for i in batch]


def test_many_waiters_share_one_round_per_poll() -> None:
    async def scenario() -> tuple[Table, list[TaskStatus]]:
        # given 1,500 tasks, pending, each awaited by its own coroutine
        ids = [f"{i:032x}" for i in range(1500)]
        table = Table(ids)
        watch = StatusWatch(table.fetch, "ns", poll_s=0.01)
        waiters = asyncio.gather(*(watch.final(i) for i in ids))
        await asyncio.sleep(0.05)
        # when they all finish
        table.states.update(dict.fromkeys(ids, TaskState.SUCCEEDED))
        return table, await waiters

    table, finals = asyncio.run(scenario())
    # then every waiter got its final status, and each round asked about each id once, in
    # batches of at most SUBMIT_CHUNK: calls per round = 2, not 1,500
    assert all(s.state == TaskState.SUCCEEDED for s in finals)
    assert max(len(c) for c in table.calls) == SUBMIT_CHUNK
    rounds = len(table.calls) / 2
    assert rounds == int(rounds) and rounds <= 10


def test_an_unknown_id_fails_only_its_waiter_and_a_cancelled_waiter_stops_being_asked() -> None:
    async def scenario() -> Table:
        table = Table(["a" * 32])
        watch = StatusWatch(table.fetch, "ns", poll_s=0.01)
        with pytest.raises(NotFound):
            await watch.final("b" * 32)
        pending = watch.final("a" * 32)
        await asyncio.sleep(0.03)
        pending.cancel()
        await asyncio.sleep(0.03)
        table.calls.clear()
        await asyncio.sleep(0.05)
        return table

    assert asyncio.run(scenario()).calls == []  # nobody waits: the loop has ended


def test_a_failed_round_reaches_every_waiter_and_stop_cancels_them() -> None:
    async def broken(batch: list[str]) -> list[TaskStatus | None]:
        raise RayUnavailable("raysys actor unavailable: gone")

    async def scenario() -> None:
        watch = StatusWatch(broken, "ns", poll_s=0.01)
        results = await asyncio.gather(watch.final("a" * 32), watch.final("b" * 32),
                                       return_exceptions=True)
        assert all(isinstance(r, RayUnavailable) for r in results)
        table = Table(["c" * 32])
        watch = StatusWatch(table.fetch, "ns", poll_s=0.01)
        waiting = watch.final("c" * 32)
        await asyncio.sleep(0.02)
        watch.stop()
        with pytest.raises(asyncio.CancelledError):
            await waiting

    asyncio.run(scenario())
