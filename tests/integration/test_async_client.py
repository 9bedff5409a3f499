"""The async client (``raysys.aio``) and ``result()`` of both clients, on the session's real
local Ray cluster and real Redis.

- Hundreds of coroutines submit and await results at once through one ``AsyncClient``; every
  result is the task's own.
- ``result()`` raises, in the synchronous and the async client alike, the same error with the
  same fields for each way a task can end unsuccessfully: ``TaskDead`` (a handler that always
  fails, one attempt), ``TaskCancelled``, ``TaskQuarantined`` (a queued record an attacker
  rewrote in Redis: never run); ``TimeoutError`` when not final in time, ``NotFound`` for an
  unknown id, and an error raised inside the Coordinator as itself.
- ``raysys.aio.start`` runs a system from a coroutine and ``shutdown`` (``async with``) removes it.

pytest-asyncio is not a dependency: each scenario is a coroutine run by ``asyncio.run``.
"""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
import redis

import raysys
from raysys.client import AsyncClient, Client
from raysys.errors import (
    IntegrityError,
    NotFound,
    TaskCancelled,
    TaskDead,
    TaskNotSucceeded,
    TaskQuarantined,
    ValidationError,
)
from raysys.models import TaskState
from raysys.store.keyspace import Keyspace, drop_keys
from tests.support.polling import wait_until

pytestmark = [pytest.mark.integration, pytest.mark.timeout(240)]

CONCURRENT = 300


def test_hundreds_of_coroutines_submit_and_await_results_at_once(
        raysys_start: Callable[..., Client]) -> None:
    # given a running system, and an async client connected to it as an application would
    client = raysys_start(workers=2)

    async def scenario() -> dict[str, Any]:
        aclient = await raysys.aio.connect(namespace=client.namespace)
        # when 300 coroutines each submit one task, then each awaits its result
        ids = await asyncio.gather(*(aclient.submit("echo", {"i": i})
                                     for i in range(CONCURRENT)))
        results = await asyncio.gather(*(aclient.result(task_id, timeout=120)
                                         for task_id in ids))
        # and a batch is submitted and waited for as a whole
        batch = await aclient.submit_many("echo", list(range(50)))
        statuses = await aclient.wait(batch, timeout=120)
        page = await aclient.tasks(state="succeeded", kind="echo", limit=1000)
        await aclient.shutdown()  # connected: disconnects only, the actors keep running
        return {"ids": ids, "results": results, "statuses": statuses, "page": page}

    got = asyncio.run(scenario())

    # then every task got its own id and every coroutine its own task's result
    assert len(set(got["ids"])) == CONCURRENT
    assert got["results"] == [{"i": i} for i in range(CONCURRENT)]
    assert [s.state for s in got["statuses"]] == [TaskState.SUCCEEDED] * 50
    assert [s.result for s in got["statuses"]] == list(range(50))
    assert len(got["page"].tasks) == CONCURRENT + 50
    # and the synchronous client, and the actors, outlive the async client's shutdown
    assert client.counts()["succeeded"] == CONCURRENT + 50
    assert client.result(got["ids"][7], timeout=10) == {"i": 7}


def tamper(redis_conn: redis.Redis, namespace: str, task_id: str) -> None:
    """What the threat model's attacker can do: flip one hex digit of a stored record's
    signature (``RS1.<kid>.<alg>.<signature>.<payload>``)."""
    key = Keyspace(namespace).task(task_id)
    parts = bytes(redis_conn.hget(key, "rec") or b"").split(b".", 4)
    assert len(parts) == 5
    parts[3] = (b"1" if parts[3][:1] == b"0" else b"0") + parts[3][1:]
    redis_conn.hset(key, "rec", b".".join(parts))


def unsuccessful_tasks(client: Client, redis_conn: redis.Redis) -> dict[str, str]:
    """A dead, a cancelled and a quarantined task, each in its final state; their ids."""
    dead = client.submit("fail", {"message": "broken on purpose"}, max_attempts=1)
    cancelled = client.submit("echo", "never", delay_s=300)
    assert client.cancel(cancelled) == TaskState.SCHEDULED
    assert client.drain(timeout=60)  # hand-out paused: the next task stays queued
    quarantined = client.submit("echo", "forged")
    tamper(redis_conn, client.namespace, quarantined)
    client.resume()
    ids = {"dead": dead, "cancelled": cancelled, "quarantined": quarantined}
    wait_until(lambda: all(s.state == TaskState(state) for state, s in zip(
        ids, client.wait(list(ids.values()), timeout=0), strict=True)), 60,
               "a dead, a cancelled and a quarantined task")
    return ids


EXPECTED: dict[str, type[TaskNotSucceeded]] = {
    "dead": TaskDead, "cancelled": TaskCancelled, "quarantined": TaskQuarantined}


def test_result_raises_the_same_error_for_each_unsuccessful_end_in_both_clients(
        raysys_start: Callable[..., Client], redis_conn: redis.Redis) -> None:
    # given a dead, a cancelled and a quarantined task, and a task not due for minutes
    client = raysys_start(workers=1)
    ids = unsuccessful_tasks(client, redis_conn)
    later = client.submit("echo", "later", delay_s=300)
    unknown = uuid.uuid4().hex

    # when the synchronous client asks for each result
    sync_errors: dict[str, TaskNotSucceeded] = {}
    for state, task_id in ids.items():
        with pytest.raises(EXPECTED[state]) as caught:
            client.result(task_id, timeout=30)
        sync_errors[state] = caught.value
    with pytest.raises(TimeoutError, match="still scheduled"):
        client.result(later, timeout=0.3)
    with pytest.raises(NotFound):
        client.result(unknown, timeout=5)
    with pytest.raises(ValidationError):  # raised inside the Coordinator, re-raised as itself
        client.status("not-a-task-id")

    # and the async client asks for the same
    async def scenario() -> dict[str, BaseException]:
        aclient = AsyncClient(client)
        seen: dict[str, BaseException] = {}
        for name, call in [*((state, aclient.result(i, timeout=30)) for state, i in ids.items()),
                           ("later", aclient.result(later, timeout=0.3)),
                           ("unknown", aclient.result(unknown, timeout=5)),
                           ("invalid", aclient.status("not-a-task-id"))]:
            try:
                await call
            except Exception as exc:
                seen[name] = exc
        return seen

    async_errors = asyncio.run(scenario())

    # then each end is its own error, carrying the task, its state and the stored error
    dead = sync_errors["dead"]
    assert dead.task_id == ids["dead"] and dead.state == TaskState.DEAD
    assert dead.error is not None and "broken on purpose" in dead.error
    assert sync_errors["cancelled"].state == TaskState.CANCELLED
    quarantined = sync_errors["quarantined"]
    assert isinstance(quarantined, TaskQuarantined) and isinstance(quarantined, IntegrityError)
    assert quarantined.reason == "bad_signature" and quarantined.exit_code == 6
    # and the async client raises exactly the same errors
    for state, error in sync_errors.items():
        twin = async_errors[state]
        assert type(twin) is type(error)
        assert (str(twin), vars(twin)) == (str(error), vars(error))
    assert isinstance(async_errors["later"], TimeoutError)
    assert "still scheduled" in str(async_errors["later"])
    assert type(async_errors["unknown"]) is NotFound
    assert isinstance(async_errors["invalid"], ValidationError)
    # and the forged task never ran: quarantined on its first lease, no attempt spent on it
    assert client.status(ids["quarantined"]).attempts <= 1
    assert client.history(ids["quarantined"])[-1]["event"] == "quarantined"


def test_aio_start_runs_a_system_that_shutdown_removes(
        ray_cluster: None, data_dir: Path, redis_conn: redis.Redis) -> None:
    # given no system in a fresh namespace
    from raysys.actors.factory import find

    namespace = f"it-{uuid.uuid4().hex[:10]}"

    async def scenario() -> Any:
        # when a coroutine starts one, uses it and leaves it
        async with await raysys.aio.start(1, data_dir=data_dir, namespace=namespace) as aclient:
            assert find(namespace) is not None
            return await aclient.result(await aclient.submit("echo", "started"), timeout=60)

    try:
        assert asyncio.run(scenario()) == "started"
        # then its actors are gone (Redis keeps the tasks)
        wait_until(lambda: find(namespace) is None, 30, "the actors to be removed")
    finally:
        drop_keys(redis_conn, Keyspace(namespace).pattern())
