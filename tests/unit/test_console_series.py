"""The console's last-hour series (raysys.serve.series) over a real Redis and a real store:
one sample per 10 s slot whoever takes it (replicas race for it), rates from consecutive
samples of the last hour, the submit-to-start wait of tasks that succeeded in between (from
their history), and entries it cannot read skipped rather than failing the charts."""

from __future__ import annotations

import json
import threading

import pytest

from raysys.models import Outcome, TaskSpec
from raysys.serve import series
from raysys.store import TaskStore

pytestmark = pytest.mark.unit


def age(store: TaskStore, seconds: float) -> None:
    """Move every stored sample ``seconds`` into the past and forget the slots' claims, as if
    the samples had been taken that much earlier."""
    key = store.keys.console_samples
    for index, raw in enumerate(store.client.lrange(key, 0, -1)):
        sample = json.loads(raw)
        sample["ms"] -= int(seconds * 1000)
        sample["slot"] -= int(seconds // series.SAMPLE_EVERY_S)
        store.client.lset(key, index, json.dumps(sample))
    claims = list(store.client.scan_iter(store.keys.prefix + "console:slot:*"))
    if claims:
        store.client.delete(*claims)


def test_rates_and_waits_between_two_samples(store: TaskStore) -> None:
    # given: a first sample; a second in the same slot is refused (already taken)
    assert series.take_sample(store) is True
    assert series.take_sample(store) is False
    assert series.series(store) == []  # one sample: no interval yet

    # when: 20 tasks are submitted and 12 succeed, and the next slot's sample is taken
    age(store, 10.0)
    for i in range(20):
        store.submit(TaskSpec.build(kind="echo", payload=i))
    leases = store.acquire("w1", 12, ttl_s=30)
    assert all(store.complete("w1", [(lease, Outcome(ok=True)) for lease in leases]))
    assert series.take_sample(store) is True

    # then: one point, its rates over the ~10 s between the samples, and the 12 tasks' waits
    (point,) = series.series(store)
    assert point["submitted_per_s"] == pytest.approx(20 / 10, rel=0.1)
    assert point["finished_per_s"] == pytest.approx(12 / 10, rel=0.1)
    waits = store.start_waits(0, store.server_ms(), 100)
    assert len(waits) == 12 and all(0 <= w < 10_000 for w in waits)
    assert point["wait_p50_ms"] == sorted(waits)[6]
    assert point["wait_p95_ms"] >= point["wait_p50_ms"]


def test_replicas_racing_for_a_slot_append_one_sample(store: TaskStore) -> None:
    taken: list[bool] = []
    gate = threading.Barrier(8)

    def replica() -> None:
        gate.wait()
        taken.append(series.take_sample(store))

    threads = [threading.Thread(target=replica) for _ in range(8)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert sorted(taken) == [False] * 7 + [True]
    assert store.client.llen(store.keys.console_samples) == 1


def test_an_hour_is_kept_and_unreadable_entries_are_skipped(
        store: TaskStore, monkeypatch: pytest.MonkeyPatch) -> None:
    # given: a sample every 10 s of the store's clock for longer than an hour
    clock = [store.server_ms()]
    monkeypatch.setattr(store, "server_ms", lambda: clock[0])
    for _ in range(series.KEEP + 6):
        assert series.take_sample(store)
        clock[0] += int(series.SAMPLE_EVERY_S * 1000)
    assert store.client.llen(store.keys.console_samples) == series.KEEP  # capped
    # and two entries of another shape
    store.client.lpush(store.keys.console_samples, b"not json", json.dumps({"ms": 5}))

    # then: the series covers the last hour only, and still reads: the clock is 10 s past the
    # newest sample, so 359 samples (10 s to 3,590 s old) make 358 intervals
    points = series.series(store)
    assert len(points) == 358
    assert points[-1]["ts"] - points[0]["ts"] == pytest.approx(3570, abs=0.01)  # 357 apart
    assert all(p["wait_p50_ms"] is None and p["finished_per_s"] == 0 for p in points)
