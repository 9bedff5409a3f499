"""The actor classes as plain Python objects: no Ray, a real embedded Redis.

The Distributor reaches the Worker through a fake port that calls it directly, so the
hand-over protocol (signed, addressed, replay-protected messages), backpressure and the pool
flags are checked without a cluster.
"""

from __future__ import annotations

import time
import uuid
from collections.abc import Iterator, Sequence
from concurrent.futures import Future
from pathlib import Path
from typing import Any

import pytest

from raysys.actors import ActorConfig, Coordinator, Distributor, Worker
from raysys.errors import ConfigurationError
from raysys.ledger import CommitLedger
from raysys.messaging.messenger import Messenger
from raysys.models import FINAL_STATES, TaskState
from raysys.redis_server.attach import attach_or_start
from raysys.signing.keyring import Keyring, generate_key, write_keyring_file

pytestmark = [pytest.mark.unit, pytest.mark.timeout(60)]


class DirectPort:
    """Delivers to Worker objects in this process and remembers every envelope."""

    def __init__(self, workers: dict[str, Worker]) -> None:
        self.workers = workers
        self.sent: list[tuple[str, bytes]] = []
        self.load_override: dict[str, Any] | None = None

    def loads(self, worker_ids: Sequence[str]) -> dict[str, dict[str, Any]]:
        return {w: dict(self.load_override or self.workers[w].load())
                for w in worker_ids if w in self.workers}

    def send(self, worker_id: str, envelope: bytes) -> Future[int]:
        self.sent.append((worker_id, envelope))
        reply: Future[int] = Future()
        reply.set_result(self.workers[worker_id].assign(envelope))
        return reply

    def nodes(self) -> list[dict[str, float]] | None:
        return None  # no cluster: nothing is held back for resources


@pytest.fixture
def config(tmp_path: Path) -> Iterator[ActorConfig]:
    _, server = attach_or_start(tmp_path, appendfsync="everysec")
    keyfile = tmp_path / "keys.json"
    write_keyring_file(keyfile, Keyring([generate_key()]))
    yield ActorConfig(f"u{uuid.uuid4().hex[:8]}",
                      {"data_dir": str(tmp_path), "signing_key_file": str(keyfile),
                       "lease_ttl_s": 5.0},
                      batch=5, concurrency=5, ledger=True)
    if server is not None:
        server.stop()


@pytest.fixture
def pool(config: ActorConfig) -> Iterator[tuple[Coordinator, Distributor, Worker, DirectPort]]:
    coordinator = Coordinator(config, reaper=False)
    worker = Worker(f"{config.namespace}-worker-0", config)
    port = DirectPort({worker.worker_id: worker})
    distributor = Distributor(config, port, autostart=False)
    yield coordinator, distributor, worker, port
    worker.stop()
    distributor.stop()
    coordinator.stop()


def run_until_final(coordinator: Coordinator, distributor: Distributor, ids: list[str]) -> None:
    deadline = time.monotonic() + 20
    while time.monotonic() < deadline:
        distributor.cycle()
        states = [s.state for s in coordinator.statuses(ids) if s is not None]
        if len(states) == len(ids) and all(s in FINAL_STATES for s in states):
            return
        time.sleep(0.02)
    raise AssertionError("tasks did not finish")


def test_hand_over_runs_every_task_once(pool: Any, config: ActorConfig) -> None:
    coordinator, distributor, _, port = pool
    ids = coordinator.submit_many([{"kind": "echo", "payload": i} for i in range(23)])
    run_until_final(coordinator, distributor, ids)
    assert [s.result for s in coordinator.statuses(ids)] == list(range(23))
    report = CommitLedger(coordinator.core.client, config.namespace).report(ids)
    assert (report.lost, report.duplicate_commits, report.succeeded) == (0, 0, 23)
    assert all(len(chunk) > 0 for _, chunk in port.sent)


def test_replayed_or_misaddressed_assignment_is_rejected(pool: Any, config: ActorConfig) -> None:
    coordinator, distributor, worker, port = pool
    ids = coordinator.submit_many([{"kind": "noop"}])
    run_until_final(coordinator, distributor, ids)
    holder, envelope = port.sent[0]
    # a replay of a delivered message is refused (its nonce was seen)
    assert worker.assign(envelope) == 0
    # a message for another worker is refused
    other = Messenger(distributor.store.core, distributor.party).seal("someone-else", "assign",
                                                                 {"leases": []})
    assert worker.assign(other) == 0
    # a message from a party that is not the distributor is refused
    forged = Messenger(distributor.store.core, "not-the-distributor").seal(holder, "assign",
                                                                      {"leases": []})
    assert worker.assign(forged) == 0
    # bytes that are not a signed envelope are refused
    assert worker.assign(envelope.replace(b"noop", b"echo")) == 0
    assert worker.info()["messages_rejected"] == 4


def test_backpressure_pause_and_drain_hand_out_nothing(pool: Any) -> None:
    coordinator, distributor, worker, port = pool
    coordinator.submit_many([{"kind": "noop"} for _ in range(5)])
    port.load_override = {"room": 0, "concurrency": 5, "queued": 6, "running": 4,
                          "draining": False}
    assert distributor.cycle() == 0  # the only worker is full
    port.load_override = None
    distributor.pause()
    assert distributor.cycle() == 0 and distributor.info()["paused"] is True
    distributor.resume()
    assert worker.drain(timeout_s=1) is True
    assert distributor.cycle() == 0  # the only worker drains
    worker.undrain()
    assert distributor.cycle() == 5
    assert coordinator.counts()["pending"] == 0


def test_cancel_and_registry(pool: Any) -> None:
    coordinator, _, worker, _ = pool
    [task_id] = coordinator.submit_many([{"kind": "noop"}])
    assert coordinator.cancel(task_id) == TaskState.PENDING
    assert coordinator.status(task_id).state == TaskState.CANCELLED
    assert [w["id"] for w in coordinator.workers()] == [worker.worker_id]


def test_a_cancel_reaches_the_running_handler_within_a_second(pool: Any) -> None:
    # given: a running sleep task on the worker
    coordinator, distributor, worker, _ = pool
    [task_id] = coordinator.submit_many([{"kind": "sleep", "payload": {"seconds": 30}}])
    assert distributor.cycle() == 1
    deadline = time.monotonic() + 5
    while worker.load()["running"] != 1:
        assert time.monotonic() < deadline, "the task did not start"
        time.sleep(0.02)
    # when: it is cancelled through the Coordinator
    asked = time.monotonic()
    assert coordinator.cancel(task_id) == TaskState.LEASED
    # then: the worker's watcher stops the handler within a second; nothing is committed
    while worker.load()["running"] != 0:
        assert time.monotonic() - asked < 1.0, "the handler was not told within a second"
        time.sleep(0.01)
    assert worker.runner.counters.cancelled == 1
    assert coordinator.status(task_id).state == TaskState.CANCELLED
    assert coordinator.stats().get("fenced_rejected", 0) == 0


def test_secrets_never_become_actor_arguments() -> None:
    with pytest.raises(ConfigurationError, match="redis_password"):
        ActorConfig("ns", {"redis_password": "x" * 40})


class SilentPort(DirectPort):
    """Delivers nothing: every reply stays pending (a stopped worker) or fails (a dead one)."""

    def __init__(self, workers: dict[str, Worker], *, fail: bool) -> None:
        super().__init__(workers)
        self.fail = fail

    def send(self, worker_id: str, envelope: bytes) -> Future[int]:
        self.sent.append((worker_id, envelope))
        reply: Future[int] = Future()
        if self.fail:
            reply.set_exception(RuntimeError("actor died"))
        return reply


@pytest.mark.parametrize("fail", [False, True], ids=["unanswered", "failed"])
def test_an_unanswered_or_failed_delivery_is_counted_and_its_worker_asked_afresh(
        pool: Any, config: ActorConfig, monkeypatch: pytest.MonkeyPatch, fail: bool) -> None:
    # given: a distributor whose deliveries are never answered, or fail
    coordinator, _, worker, _ = pool
    monkeypatch.setattr("raysys.actors.distributor.REPLY_TIMEOUT_S", 0.2)
    port = SilentPort({worker.worker_id: worker}, fail=fail)
    distributor = Distributor(config, port, autostart=False)
    coordinator.submit_many([{"kind": "noop"} for _ in range(12)])

    # when: it hands out work while the replies stay out (or fail)
    granted = distributor.cycle() + distributor.cycle()
    time.sleep(0.3)
    distributor.cycle()

    # then: leases in an unanswered message count against the room (5 idle slots): one round
    # of 5 and none after it; a failed delivery is settled and the worker asked afresh, so
    # the second round offers its room again. Nothing is counted delivered
    assert granted == (10 if fail else 5)
    info = distributor.info()
    assert info["delivered"] == 0 and info["failed_deliveries"] >= 1
    distributor.stop()


def test_accepted_message_metrics_are_written_off_the_delivery_path(pool: Any) -> None:
    # given: a worker that accepted assignments
    coordinator, distributor, worker, _ = pool
    stats_key = worker.messenger._stats
    client = coordinator.core.client
    before = int(client.hget(stats_key, "messages:assign:accepted") or 0)
    worker._stop.set()  # hold the worker's own flushing thread back
    worker._watcher.join(timeout=5)
    coordinator.submit_many([{"kind": "noop"} for _ in range(5)])
    assert distributor.cycle() == 5

    # then: counted in memory first, written by one flush
    assert int(client.hget(stats_key, "messages:assign:accepted") or 0) == before
    worker.messenger.flush_metrics()
    assert int(client.hget(stats_key, "messages:assign:accepted") or 0) == before + 1


def test_worker_id_names_the_workers(monkeypatch: pytest.MonkeyPatch) -> None:
    # given WORKER_ID set for a deployment
    from raysys.actor_config import ActorConfig
    from raysys.config import load_settings
    from raysys.errors import ConfigurationError

    monkeypatch.setenv("WORKER_ID", "gpu")
    config = ActorConfig.build("prod", {}, worker_prefix=load_settings().worker_id)

    # then the worker ids carry it, and only those ids parse as this deployment's
    assert config.worker_id(3) == "prod-gpu-3"
    assert config.worker_index("prod-gpu-3") == 3
    assert config.worker_index("prod-worker-3") is None
    assert config.worker_index("prod-gpu-x") is None
    monkeypatch.setenv("WORKER_ID", "bad id!")
    with pytest.raises(ConfigurationError, match="WORKER_ID"):
        load_settings()
