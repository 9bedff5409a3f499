"""Periodic schedules on a real Redis: definitions and cursors are signed, each tick enqueues
exactly one task (also across a ticker restart, a crash between steps, and two tickers racing),
missed ticks follow the catch-up policy, bad input is refused before anything is stored."""

from __future__ import annotations

import itertools
import threading
import time
from collections import Counter

import pytest

from raysys.errors import ValidationError
from raysys.schedules import ScheduleBook, ScheduleSpec, ScheduleTicker, cron
from raysys.schedules import ticker as ticker_module
from raysys.schedules.spec import seal_cursor
from raysys.store import TaskStore
from raysys.store.replies import as_text
from tests.unit.conftest import StoreFactory

pytestmark = pytest.mark.unit
EVERY_SECOND = "* * * * * *"


@pytest.fixture
def store(make_store: StoreFactory) -> TaskStore:
    return make_store()


def book_of(store: TaskStore) -> ScheduleBook:
    return ScheduleBook(store.core)


def add(store: TaskStore, name: str = "tick", expr: str = EVERY_SECOND, **fields: object,
        ) -> ScheduleBook:
    book = book_of(store)
    book.add(ScheduleSpec.build(name=name, cron=expr, kind="echo", payload={"s": name},
                                **fields))
    return book


def ticks_enqueued(store: TaskStore, name: str = "tick") -> Counter[int]:
    """How many tasks exist per tick of schedule ``name`` (read from the idempotency keys and
    the tasks themselves: each task's record names its key)."""
    per_tick: Counter[int] = Counter()
    prefix = store.keys.idempotency(f"schedule:{name}:")
    for key in store.client.scan_iter(match=prefix.replace("{", "\\{").replace("}", "\\}")
                                      + "*", count=1000):
        per_tick[int(as_text(key).rsplit(":", 1)[1])] += 1
    tasks = sum(store.counts().values())
    assert tasks == sum(per_tick.values()), "a task without its tick key, or the reverse"
    return per_tick


def run_for(ticker: ScheduleTicker, seconds: float) -> None:
    end = time.monotonic() + seconds
    while time.monotonic() < end:
        ticker.run_once()
        time.sleep(0.05)


# ---- definitions --------------------------------------------------------------------------
def test_a_schedule_is_stored_signed_and_listed(store: TaskStore) -> None:
    book = add(store, "nightly", "0 2 * * *", tz="Europe/Berlin", catchup="all")
    (info,), bad = book.list()
    assert bad == {} and info.spec.name == "nightly" and info.spec.tz == "Europe/Berlin"
    assert info.next_ms is not None and info.next_ms > store.server_ms()
    assert info.next_ms == cron.next_tick("0 2 * * *", "Europe/Berlin", info.last_ms or 0)


@pytest.mark.parametrize(("fields", "says"), [
    ({"cron": "61 * * * *"}, "does not parse"),
    ({"cron": "every day"}, "does not parse"),
    ({"tz": "Mars/Olympus"}, "does not exist"),
    ({"catchup": "some"}, "catchup"),
    ({"name": "no spaces"}, "name"),
    ({"kind": "bad kind!"}, "kind"),
])
def test_bad_schedule_input_is_refused_and_nothing_stored(store: TaskStore,
                                                          fields: dict[str, str], says: str,
                                                          ) -> None:
    good = {"name": "x", "cron": EVERY_SECOND, "kind": "echo"}
    with pytest.raises(ValidationError, match=says):
        ScheduleSpec.build(**{**good, **fields})
    assert book_of(store).list() == ([], {})


def test_a_taken_name_is_refused(store: TaskStore) -> None:
    book = add(store, "dup")
    with pytest.raises(ValidationError, match="exists"):
        book.add(ScheduleSpec.build(name="dup", cron="0 * * * *", kind="noop"))
    assert book.get("dup").spec.cron == EVERY_SECOND


# ---- ticks --------------------------------------------------------------------------------
def test_each_tick_enqueues_exactly_one_task(store: TaskStore) -> None:
    add(store)
    ticker = ScheduleTicker(store.core)
    run_for(ticker, 3.3)
    per_tick = ticks_enqueued(store)
    assert len(per_tick) >= 3 and set(per_tick.values()) == {1}
    ticks = sorted(per_tick)
    assert all(b - a == 1000 for a, b in itertools.pairwise(ticks))  # none missing
    # and the tasks carry the schedule's kind and payload
    leases = store.acquire("w", 10, 30)
    assert {(lease.kind, str(lease.payload)) for lease in leases} == {("echo", "{'s': 'tick'}")}


def test_two_tickers_racing_enqueue_each_tick_once(store: TaskStore) -> None:
    add(store)
    tickers = [ScheduleTicker(store.core), ScheduleTicker(store.core)]
    threads = [threading.Thread(target=run_for, args=(t, 3.3)) for t in tickers]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    per_tick = ticks_enqueued(store)
    assert len(per_tick) >= 3 and set(per_tick.values()) == {1}


def test_a_crash_after_the_submit_enqueues_nothing_twice(store: TaskStore) -> None:
    # given: a pass that enqueued a tick, then "crashed" before moving the due time on
    book = add(store)
    ticker = ScheduleTicker(store.core)
    time.sleep(1.1)
    fired = [f for f in ticker.run_once() if f.ticks]
    assert len(fired) == 1
    last = fired[0].ticks[-1]
    store.client.zadd(store.keys.schedules, {"tick": last})

    # when: a new ticker (the restarted Coordinator) passes
    ScheduleTicker(store.core).run_once()

    # then: no tick is enqueued twice (a newer one may have come due meanwhile)
    assert set(ticks_enqueued(store).values()) == {1}
    assert ticks_enqueued(store)[last] == 1 and (book.get("tick").last_ms or 0) >= last


@pytest.mark.parametrize(("catchup", "expect_missed_run"), [("skip", False), ("all", True)])
def test_missed_ticks_follow_the_catchup_policy(store: TaskStore,
                                                monkeypatch: pytest.MonkeyPatch,
                                                catchup: str, expect_missed_run: bool) -> None:
    # given: a ticker that was down for 6 s (the cursor 6 s old), a grace of 2 s
    monkeypatch.setattr(ticker_module, "GRACE_MS", 2_000)
    add(store, catchup=catchup)
    now = store.server_ms()
    old = seal_cursor(store.sealer, "tick", store.namespace, now - 6_000)
    store.client.hset(store.keys.schedule("tick"), "cur", old)
    store.client.zadd(store.keys.schedules, {"tick": now - 5_000})

    # when
    (fired,) = ScheduleTicker(store.core).run_once()

    # then: skip runs the recent ticks only, all runs the missed ones too; none twice
    per_tick = ticks_enqueued(store)
    assert set(per_tick.values()) == {1}
    missed = [t for t in per_tick if t <= now - 2_000]
    assert bool(missed) is expect_missed_run
    assert len(per_tick) >= (6 if expect_missed_run else 1)
    assert (fired.skipped > 0) is (not expect_missed_run)


def test_a_paused_schedule_enqueues_nothing_until_resumed(store: TaskStore) -> None:
    book = add(store)
    book.pause("tick")
    ticker = ScheduleTicker(store.core)
    run_for(ticker, 1.5)
    assert sum(store.counts().values()) == 0
    assert book.get("tick").spec.paused and book.get("tick").next_ms is None
    book.resume("tick")
    run_for(ticker, 1.5)
    assert sum(store.counts().values()) >= 1


def test_a_tampered_definition_is_never_used(store: TaskStore) -> None:
    # given: the attacker changes what the schedule runs
    add(store)
    key = store.keys.schedule("tick")
    rec = bytes(store.client.hget(key, "rec")).replace(b'"kind":"echo"', b'"kind":"fail"')
    store.client.hset(key, "rec", rec)
    store.client.zadd(store.keys.schedules, {"tick": 0})

    # when
    ScheduleTicker(store.core).run_once()

    # then: nothing enqueued; counted and audited; the listing names it as failing
    assert sum(store.counts().values()) == 0
    assert store.stats()["signature_failures"] == 1
    assert any(e.get("ev") == "schedule_rejected" for e in store.audit_tail())
    assert "tick" in book_of(store).list()[1]


def test_an_old_cursor_written_back_is_refused(store: TaskStore) -> None:
    # given: a cursor copied long ago (signed before the replay window)
    add(store)
    store.core.store.retention_ms = 10_000  # the ticker's store (core.store)
    old = store.sealer.seal("schedule_cursor", {"name": "tick", "ns": store.namespace,
                                                "at_ms": 0}, now=time.time() - 20)
    store.client.hset(store.keys.schedule("tick"), "cur", old)
    store.client.zadd(store.keys.schedules, {"tick": 0})

    # when / then: refused, so no tick since the epoch is enqueued
    assert ScheduleTicker(store.core).run_once() == []
    assert sum(store.counts().values()) == 0


def test_a_removed_schedules_definition_written_back_without_its_cursor_is_refused(
        store: TaskStore) -> None:
    # given: a schedule's signed definition copied, the schedule removed, the copy written back
    add(store)
    key = store.keys.schedule("tick")
    rec = store.client.hget(key, "rec")
    book_of(store).remove("tick")
    store.client.hset(key, "rec", rec)
    store.client.zadd(store.keys.schedules, {"tick": 0})

    # when / then: refused (every schedule is added with a cursor), counted and audited
    assert ScheduleTicker(store.core).run_once() == []
    assert sum(store.counts().values()) == 0
    assert any(e.get("reason") == "missing_cursor" for e in store.audit_tail())


def test_a_removed_schedule_stops(store: TaskStore) -> None:
    book = add(store)
    book.remove("tick")
    run_for(ScheduleTicker(store.core), 1.3)
    assert sum(store.counts().values()) == 0
    with pytest.raises(Exception, match="no schedule"):
        book.remove("tick")


def test_cron_ticks_across_daylight_saving_changes() -> None:
    berlin = "Europe/Berlin"
    spring = 1_774_699_200_000  # 2026-03-28 12:00 UTC
    # 02:30 does not exist on 29 March 2026: the job runs once, when the clocks jump (01:00 UTC)
    assert cron.next_tick("30 2 * * *", berlin, spring) == 1_774_746_000_000
    fall = 1_792_836_000_000  # 2026-10-24 10:00 UTC
    # 02:30 happens twice on 25 October 2026: once, at the first (00:30 UTC)
    assert cron.next_tick("30 2 * * *", berlin, fall) == 1_792_888_200_000
    # interval expressions follow elapsed time: both 02:00 (00:00 and 01:00 UTC)
    ticks, _ = cron.ticks_between("0 * * * *", berlin, 1_792_886_000_000, 1_792_890_000_000,
                                  10)
    assert ticks == [1_792_886_400_000, 1_792_890_000_000]


@pytest.mark.parametrize("tz", ["Mars/Olympus", "a" * 300, "../../etc/passwd", ""])
def test_a_zone_that_is_no_zone_is_bad_input_not_an_outage(tz: str) -> None:
    # a name too long for the file system made ZoneInfo raise OSError, which the HTTP API
    # answered as a 503 "retry"; every bad name is a ValidationError, said in one line
    with pytest.raises(ValidationError) as caught:
        ScheduleSpec.build(name="n", cron="* * * * *", kind="noop", tz=tz)
    assert "\n" not in str(caught.value) and len(str(caught.value)) < 300
    if tz:
        with pytest.raises(ValidationError, match="does not exist"):
            cron.zone(tz)
