"""Kind queues on a real Redis: quotas per kind, the cluster-wide cap, schedule-to-start limits,
the kinds book, cancel pushes, and the move out of an earlier version's single queue."""

from __future__ import annotations

import time

import pytest

from raysys.handlers import KindOptions
from raysys.models import Outcome, TaskSpec, TaskState
from raysys.placement import RESOURCES, placeable, plan
from raysys.store import KindInfo, TaskStore

pytestmark = pytest.mark.unit
OK = Outcome(ok=True)


def spec(kind: str, **fields: object) -> TaskSpec:
    return TaskSpec.build(kind=kind, **fields)


def test_a_kind_held_back_stays_pending_while_others_go_in_priority_order(
        store: TaskStore) -> None:
    # given gpu tasks ahead of cpu tasks in priority
    gpu = store.submit_many([spec("gpu", priority=9) for _ in range(3)])
    cpu = store.submit_many([spec("cpu", priority=p) for p in (1, 5, 3)])
    # when the gpu kind may not be handed out
    leases = store.acquire_verified("w", 10, 10.0, quotas={"gpu": (0, -1)})[0]
    # then only cpu tasks are leased, best priority first, and the gpu tasks stay pending
    assert [lease.task_id for lease in leases] == [cpu[1], cpu[2], cpu[0]]
    assert {store.status(i).state for i in gpu} == {TaskState.PENDING}
    assert store.queued_by_kind() == {"gpu": 3}
    assert store.inflight_by_kind() == {"cpu": 3}


def test_max_in_flight_caps_a_kind_across_every_acquire(store: TaskStore) -> None:
    store.submit_many([spec("api") for _ in range(10)])
    quotas = {"api": (-1, 2)}
    first = store.acquire_verified("a", 10, 10.0, quotas=quotas)[0]
    second = store.acquire_verified("b", 10, 10.0, quotas=quotas)[0]
    assert (len(first), len(second)) == (2, 0)
    store.complete("a", [(first[0], OK)])
    third = store.acquire_verified("b", 10, 10.0, quotas=quotas)[0]
    assert len(third) == 1 and store.inflight_by_kind() == {"api": 2}


def test_counters_follow_every_transition(store: TaskStore) -> None:
    # given tasks leased, then one committed, one released, one cancelled, one expired
    ids = store.submit_many([spec("k") for _ in range(5)])
    leases = store.acquire("w", 4, ttl_s=0.3)
    store.complete("w", [(leases[0], OK)])
    store.release("w", [(leases[1].task_id, leases[1].fence)])
    store.cancel(leases[2].task_id)
    time.sleep(0.4)
    store.reap()
    # then per-kind counts match the states
    states = [store.status(i).state for i in ids]
    assert states.count(TaskState.PENDING) == 3  # released, expired, never leased
    assert store.queued_by_kind() == {"k": 3} and store.inflight_by_kind() == {}
    assert store.counts()["pending"] == 3


def test_a_cancel_of_a_leased_task_reaches_its_holder_and_a_final_one_is_unchanged(
        store: TaskStore) -> None:
    done, running = store.submit_many([spec("k"), spec("k")])
    first = store.acquire("w1", 1, ttl_s=10.0)[0]
    store.complete("w1", [(first, OK)])
    store.acquire("w2", 1, ttl_s=10.0)
    assert store.cancel(done) == TaskState.SUCCEEDED  # a no-op: the task is final
    assert store.status(done).state == TaskState.SUCCEEDED
    assert store.cancel(running) == TaskState.LEASED
    assert store.take_cancels("w2", wait_s=0.1) == [running]
    assert store.take_cancels("w1", wait_s=0.1) == []


def test_a_task_not_started_within_its_limit_ends_dead(store: TaskStore) -> None:
    # given one task with a 0.2 s schedule-to-start limit that nobody leases, and one that is
    late, started = store.submit_many([spec("slow", schedule_to_start_s=0.2),
                                       spec("fast", schedule_to_start_s=0.2)])
    store.acquire_verified("w", 1, 10.0, quotas={"slow": (0, -1)})
    time.sleep(0.3)
    report = store.reap()
    assert report.unstarted == (late,)
    assert store.status(late).state == TaskState.DEAD
    assert "schedule-to-start" in (store.status(late).error or "")
    assert store.status(started).state == TaskState.LEASED
    assert store.queued_by_kind() == {}


def test_the_kinds_book_gives_a_kinds_defaults_and_ignores_forged_entries(
        store: TaskStore) -> None:
    options = KindOptions.build("gpu", num_gpus=1, max_attempts=7, schedule_to_start_s=60)
    store.kinds.publish({"gpu": options.to_doc()})
    store.client.hset(store.keys.kinds, "forged", b"RS1.x.hmac-sha256.00.{}")
    book = store.kinds.read(fresh=True)
    assert set(book) == {"gpu"}
    assert book["gpu"].max_attempts == 7 and book["gpu"].requirement == {"CPU": 1.0, "GPU": 1.0}
    # a submission without its own limit takes the kind's schedule-to-start limit
    task_id = store.submit(spec("gpu"))
    assert store.client.zscore(store.keys.start_by, task_id) is not None


def test_tasks_queued_by_an_earlier_version_are_moved_to_their_kinds_queue(
        store: TaskStore) -> None:
    # given a task stored the way the single-queue version did (no kind field, one queue)
    task_id = store.submit(spec("legacy", priority=2))
    score = store.client.zscore(store.keys.queue("legacy"), task_id)
    store.client.delete(store.keys.queue("legacy"), store.keys.queued_kinds)
    store.client.hdel(store.keys.task(task_id), "k")
    store.client.zadd(store.keys.legacy_pending, {task_id: score})
    # when the reaper runs, then the task is in its kind's queue and can be leased
    store.reap()
    assert not store.client.exists(store.keys.legacy_pending)
    assert store.queued_by_kind() == {"legacy": 1}
    assert [lease.task_id for lease in store.acquire("w", 5, ttl_s=5.0)] == [task_id]


def test_placement_holds_back_a_kind_no_node_can_place() -> None:
    nodes = [{"CPU": 2.0, "memory": 4e9}, {"CPU": 1.0, "special": 1.0}]
    assert placeable({"CPU": 1.0, "special": 1.0}, nodes)
    assert not placeable({"CPU": 1.0, "GPU": 1.0}, nodes)
    book = {"gpu": KindInfo("gpu", remote=True, requirement={"CPU": 1.0, "GPU": 1.0}),
            "capped": KindInfo("capped", concurrency=2, max_in_flight=5)}
    out = plan(book, nodes=nodes, queued={"gpu": 4, "capped": 9}, inflight={"capped": 5},
               held_by_worker={"capped": 1})
    assert out.quotas == {"gpu": (0, -1), "capped": (3, 5)}
    assert out.waiting["gpu"]["reason"] == RESOURCES and out.waiting["gpu"]["pending"] == 4
    assert out.waiting["capped"]["reason"] == "max_in_flight"
    # without a cluster (no Ray) nothing is held back for resources
    assert "gpu" not in plan(book, nodes=None, queued={"gpu": 4}, inflight={},
                             held_by_worker={}).quotas


