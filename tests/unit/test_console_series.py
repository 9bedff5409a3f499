"""The console's last-hour series (raysys.serve.series) over a real Redis and a real store:
one sample per 10 s slot whoever takes it, rates from consecutive samples, and the
submit-to-start wait of tasks that succeeded in between, from their history."""

from __future__ import annotations

import json

import pytest

from raysys.models import Outcome, TaskSpec
from raysys.serve import series
from raysys.store import TaskStore

pytestmark = pytest.mark.unit


def backdate_newest(store: TaskStore, seconds: float) -> None:
    """Move the newest sample ``seconds`` into the past (slot and time), as if taken then."""
    key = store.keys.console_samples
    newest = json.loads(store.client.lindex(key, 0))
    newest["ms"] -= int(seconds * 1000)
    newest["slot"] -= int(seconds // series.SAMPLE_EVERY_S) + 1
    store.client.lset(key, 0, json.dumps(newest))


def test_one_sample_per_slot_and_rates_between_samples(store: TaskStore) -> None:
    # given: a first sample, then a second taken in the same slot (another replica)
    assert series.take_sample(store.client, store.keys) is True
    assert series.take_sample(store.client, store.keys) is False
    assert series.series(store.client, store.keys) == []  # one sample: no interval yet

    # when: 20 tasks are submitted and 12 succeed, and the next slot's sample is taken
    backdate_newest(store, 10.0)
    ids = [store.submit(TaskSpec.build(kind="echo", payload=i)) for i in range(20)]
    leases = store.acquire("w1", 12, ttl_s=30)
    assert store.complete("w1", [(lease, Outcome(ok=True, result=None)) for lease in leases])
    assert len(ids) == 20
    assert series.take_sample(store.client, store.keys) is True

    # then: one point, its rates over the ~10 s between the samples, and the waits of the 12
    (point,) = series.series(store.client, store.keys)
    assert point["submitted_per_s"] == pytest.approx(20 / 10, rel=0.1)
    assert point["finished_per_s"] == pytest.approx(12 / 10, rel=0.1)
    assert point["wait_p50_ms"] is not None and 0 <= point["wait_p50_ms"] < 10_000
    assert point["wait_p95_ms"] >= point["wait_p50_ms"]


def test_no_finished_tasks_means_no_wait_and_samples_are_capped(store: TaskStore) -> None:
    series.take_sample(store.client, store.keys)
    for _ in range(series.KEEP + 5):
        backdate_newest(store, 10.0)
        series.take_sample(store.client, store.keys)
    assert store.client.llen(store.keys.console_samples) == series.KEEP
    points = series.series(store.client, store.keys)
    assert len(points) == series.KEEP - 1
    assert all(p["wait_p50_ms"] is None and p["finished_per_s"] == 0 for p in points)
