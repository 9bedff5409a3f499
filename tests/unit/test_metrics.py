"""/metrics read from a real Redis: counters never go backwards when retention or redrive change
the per-state counts; scheduled tasks are not pending; Redis memory is exposed."""

from __future__ import annotations

import time

import pytest
from prometheus_client.parser import text_string_to_metric_families

from raysys import metrics
from raysys.models import Outcome, TaskSpec
from raysys.store import TaskStore

pytestmark = pytest.mark.unit


def scrape(store: TaskStore) -> dict[str, float]:
    text = metrics.render(metrics.read(store.core, worker_max_age_ms=30_000)).decode()
    out: dict[str, float] = {}
    for family in text_string_to_metric_families(text):
        for sample in family.samples:
            labels = ",".join(f"{k}={v}" for k, v in sorted(sample.labels.items()))
            out[f"{sample.name}{{{labels}}}"] = sample.value
    return out


def test_counters_stay_put_through_purge_and_redrive(store: TaskStore) -> None:
    # given: 3 succeeded, 2 dead
    store.submit_many([TaskSpec.build(kind="noop") for _ in range(3)])
    store.complete("w", [(lease, Outcome(ok=True)) for lease in store.acquire("w", 3, 30)])
    store.submit_many([TaskSpec.build(kind="fail", max_attempts=1) for _ in range(2)])
    store.complete("w", [(lease, Outcome(ok=False, error="x"))
                         for lease in store.acquire("w", 2, 30)])
    before = scrape(store)
    assert before["raysys_tasks_completed_total{status=succeeded}"] == 3
    assert before["agent_failures_total{}"] == 2

    # when: the succeeded ones are purged and the dead ones redriven
    time.sleep(0.01)
    store.purge(0.0, states=("succeeded",))
    store.redrive(state="dead")
    after = scrape(store)

    # then: the per-state gauges moved, the counters did not go back
    assert after["raysys_tasks{state=succeeded}"] == 0
    assert after["raysys_tasks{state=pending}"] == 2
    assert after["raysys_tasks_completed_total{status=succeeded}"] == 3
    assert after["raysys_tasks_completed_total{status=dead}"] == 2
    assert after["agent_failures_total{}"] == 2
    assert after["raysys_tasks_purged_total{}"] == 3
    assert after["raysys_tasks_redriven_total{}"] == 2


def test_scheduled_tasks_are_not_pending_and_memory_is_exposed(store: TaskStore) -> None:
    store.submit_many([TaskSpec.build(kind="noop", not_before_ms=int(time.time() * 1000)
                                      + 60_000) for _ in range(4)])
    store.submit(TaskSpec.build(kind="noop"))
    samples = scrape(store)
    assert samples["pending_tasks{}"] == 1
    assert samples["raysys_tasks{state=scheduled}"] == 4
    assert samples["raysys_redis_used_memory_bytes{}"] > 100_000
    assert samples["raysys_redis_maxmemory_bytes{}"] >= 0
