"""A system that runs for months, on a real local Ray cluster: delayed tasks, periodic schedules,
listing, redrive and retention through the actors, the Python client and the HTTP API.

The hand-run benchmarks (30-minute soak, 100,000 delayed tasks, 10-minute schedule under
Coordinator kills, a million tasks snapshotted and purged) have one-minute variants in
tests/integration/test_benchmarks_short.py.
"""

from __future__ import annotations

import os
import signal
import time
import uuid
from collections import Counter
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
import redis

import raysys
from raysys.client import Client
from raysys.errors import ValidationError
from raysys.ledger import CommitLedger
from raysys.models import TaskState
from raysys.redis_server.attach import attach_or_start
from raysys.store.keyspace import Keyspace
from tests.support.http import get, request
from tests.support.polling import wait_until

pytestmark = [pytest.mark.integration, pytest.mark.slow, pytest.mark.timeout(240)]
HOST = "127.0.0.1"


def test_delayed_tasks_wait_run_on_time_and_can_be_cancelled(
        raysys_start: Callable[..., Client]) -> None:
    # given a running system
    client = raysys_start(workers=1)

    # when: one task is delayed 1.5 s, another until a time, a third delayed then cancelled
    later = client.submit("echo", "later", delay_s=1.5)
    at = client.submit("echo", "at", run_at=time.time() + 1.0)
    dropped = client.submit("echo", "never", delay_s=30)
    submitted = time.time()
    assert client.status(later).state == TaskState.SCHEDULED
    assert client.status(later).to_json()["run_at"].endswith("+00:00")
    assert client.cancel(dropped) == TaskState.SCHEDULED

    # then: each runs once due, not before; the cancelled one never
    assert client.result(later, timeout=30) == "later"
    assert time.time() - submitted >= 1.5
    assert client.result(at, timeout=30) == "at"
    assert client.status(dropped).state == TaskState.CANCELLED
    history = client.history(later)
    assert [h["event"] for h in history] == ["succeeded"]
    assert history[0]["started_ms"] >= int((submitted + 1.5) * 1000) - 50

    # and bad times are refused before anything is stored
    for bad in ({"delay_s": -1}, {"run_at": "2001-01-01T00:00:00Z"}, {"run_at": "tomorrow"},
                {"run_at": "2030-01-01T00:00:00"}, {"delay_s": 1, "run_at": time.time()}):
        with pytest.raises(ValidationError):
            client.submit("noop", **bad)
    assert sum(client.counts().values()) == 3


def test_a_schedule_enqueues_one_task_per_tick_through_the_coordinator(
        raysys_start: Callable[..., Client]) -> None:
    client = raysys_start(workers=1)
    info = client.schedule("every-second", "* * * * * *", "echo", {"tick": True})
    assert info.next_ms is not None
    wait_until(lambda: client.counts()["succeeded"] >= 3, 30, "three ticks to run")
    client.pause_schedule("every-second")
    paused_at = client.counts()["succeeded"] + client.counts()["pending"]
    time.sleep(2.0)
    assert client.counts()["succeeded"] + client.counts()["pending"] <= paused_at + 1
    (listed,) = client.schedules()
    assert listed.spec.paused and listed.spec.kind == "echo"
    page = client.tasks(state="succeeded", kind="echo")
    keys = [client.status(row.id) for row in page.tasks]
    assert all(k.result == {"tick": True} for k in keys)
    client.remove_schedule("every-second")
    assert client.schedules() == []


def test_listing_redrive_and_schedules_over_http(
        raysys_start: Callable[..., Client], api_token: str, http_port: int) -> None:
    # given the app, and two dead tasks
    client = raysys_start(workers=1)
    url = client.serve(HOST, http_port)
    assert url is not None
    wait_until(lambda: get(url + "/health")[0] == 200, 60, "the app to answer /health")
    dead = client.submit_many("fail", [{"message": "broken"}] * 2, max_attempts=1)
    client.wait(dead, timeout=60)

    # when they are listed: newest first, by state, paged
    status, page = get(f"{url}/tasks?state=dead&limit=1", token=api_token)
    assert status == 200 and len(page["tasks"]) == 1 and page["cursor"]
    status, rest = get(f"{url}/tasks?state=dead&limit=5&cursor={page['cursor']}",
                       token=api_token)
    assert {t["id"] for t in page["tasks"] + rest["tasks"]} == set(dead)
    assert rest["cursor"] is None
    assert get(f"{url}/tasks?state=finished", token=api_token)[0] == 422
    assert get(f"{url}/tasks", token=None)[0] == 401

    # and redriven (dry run first, then for real; the same request id twice changes nothing)
    status, dry = request("POST", f"{url}/tasks/redrive", token=api_token,
                          body={"state": "dead", "dry_run": True})
    assert status == 200 and sorted(dry["redriven"]) == sorted(dead)
    body: dict[str, Any] = {"ids": dead, "request_id": "http-1"}
    status, done = request("POST", f"{url}/tasks/redrive", token=api_token, body=body)
    assert status == 200 and sorted(done["redriven"]) == sorted(dead)
    client.wait(dead, timeout=60)  # they fail again: the handler is still broken
    status, again = request("POST", f"{url}/tasks/redrive", token=api_token, body=body)
    assert sorted(again["already"]) == sorted(dead) and again["redriven"] == []
    assert request("POST", f"{url}/tasks/redrive", token=api_token,
                   body={"state": "pending"})[0] == 422

    # and schedules over HTTP: add, a taken name, a bad cron, pause, list, remove
    sched = {"name": "nightly", "cron": "0 2 * * *", "kind": "noop", "tz": "Europe/Berlin"}
    status, added = request("POST", f"{url}/schedules", token=api_token, body=sched)
    assert status == 201 and added["next_ms"] > time.time() * 1000
    assert request("POST", f"{url}/schedules", token=api_token, body=sched)[0] == 409
    status, bad = request("POST", f"{url}/schedules", token=api_token,
                          body={**sched, "name": "x", "cron": "every night"})
    assert status == 422 and "does not parse" in str(bad)
    internal = {**sched, "name": "files", "kind": "raysys.snapshot", "payload": {"dir": "/tmp"}}
    status, refused = request("POST", f"{url}/schedules", token=api_token, body=internal)
    assert status == 422 and "internal" in str(refused)
    assert request("POST", f"{url}/tasks", token=api_token,
                   body={"kind": "raysys.snapshot", "payload": {"dir": "/"}})[0] == 422
    assert request("POST", f"{url}/schedules/nightly/pause", token=api_token)[1]["paused"]
    status, listed = get(f"{url}/schedules", token=api_token)
    assert [s["name"] for s in listed["schedules"]] == ["nightly"]
    assert request("DELETE", f"{url}/schedules/nightly", token=api_token)[0] == 200
    assert request("DELETE", f"{url}/schedules/nightly", token=api_token)[0] == 404



def test_delayed_tasks_and_a_schedule_survive_redis_and_actor_kills(
        ray_cluster: None, tmp_path: Path) -> None:
    # given the system on a Redis this test controls (AOF, fsync always), with delayed tasks
    # due in 4-6 s and a schedule ticking every second (catch-up all)
    _, server = attach_or_start(tmp_path / "data")
    assert server is not None
    client = raysys.start(1, data_dir=tmp_path / "data", ledger=True,
                          namespace=f"it-{uuid.uuid4().hex[:8]}")
    try:
        now = time.time()
        due = {client.submit("echo", i, run_at=now + 4 + i / 25): now + 4 + i / 25
               for i in range(50)}
        added = client.schedule("ticker", "* * * * * *", "noop", catchup="all")

        # when Redis is killed -9 and restarted, then the Coordinator and the Distributor
        pids = client.actor_pids()
        server.kill()
        time.sleep(1.0)
        server.start()
        os.kill(pids["coordinator"], signal.SIGKILL)
        os.kill(pids["distributor"], signal.SIGKILL)

        # then every delayed task runs once, none before it was due
        results = client.wait(list(due), timeout=90)
        assert {r.state for r in results} == {TaskState.SUCCEEDED}
        ledger = CommitLedger(redis.Redis.from_url(server.url), client.namespace)
        report = ledger.report(list(due))
        assert report.lost == 0 and report.duplicate_commits == 0
        starts = ledger.starts()
        assert all(starts[task_id] >= when - 0.001 for task_id, when in due.items())

        # and the schedule enqueued each tick once, the outage's included
        time.sleep(2.0)
        client.remove_schedule("ticker")
        stop = int(time.time() * 1000) - 1000
        ticks = _ticks_enqueued(redis.Redis.from_url(server.url), client.namespace, "ticker")
        expected = range((added.last_ms or 0) // 1000 * 1000 + 1000, stop, 1000)
        assert set(ticks.values()) == {1}, ticks
        assert all(ticks[t] == 1 for t in expected), sorted(set(expected) - set(ticks))
    finally:
        client.shutdown()
        server.stop()


def _ticks_enqueued(conn: redis.Redis, namespace: str, name: str) -> Counter[int]:
    """Tasks per tick of schedule ``name``, read from every task's own idempotency key (two
    tasks for one tick would both count)."""
    keys = Keyspace(namespace)
    marker = f"schedule:{name}:"
    ticks: Counter[int] = Counter()
    for raw in conn.zrange(keys.submitted_index, 0, -1):
        key = conn.hget(keys.task(raw.decode()), "ik")
        if key and key.decode().startswith(marker):
            ticks[int(key.decode()[len(marker):])] += 1
    return ticks
