"""Snapshot, restore, rotation and message scripts answer a resend as the first send.

As ``test_resend_scripts.py`` (which checks that every writing script has a test, from
``RESEND_TESTS`` here too): each scenario runs through the public API in a namespace that sends
every script once and in one that resends every writing script, and the results, counts,
counters and audit events must be those of one send.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
import redis

from raysys.core import Core
from raysys.errors import IntegrityError, ValidationError
from raysys.messaging.messenger import Messenger
from raysys.models import TaskSpec
from raysys.signing.envelope import Sealer
from raysys.signing.keyring import Keyring, generate_key
from raysys.snapshots import SnapshotManager
from raysys.snapshots.resign import resign_manifests
from tests.support.resend import Pair, books, same_as_one_send
from tests.support.snapshot_files import refused_snapshot

pytestmark = [pytest.mark.unit, pytest.mark.timeout(60)]
PAUSE_S = 0.3  # how long the test holds a snapshot's barrier up


def spec(**fields: object) -> TaskSpec:
    return TaskSpec.build(kind="noop", **fields)


@pytest.fixture
def pair(redis_client: redis.Redis, sealer: Sealer) -> Pair:
    return Pair.over(redis_client, sealer)


def drop_namespace(core: Core) -> None:
    for key in core.client.scan_iter(match=core.keys.pattern()):
        core.client.delete(key)


def slow_to_copy(manager: SnapshotManager) -> SnapshotManager:
    """``manager``, its copy under the barrier taking ``PAUSE_S`` longer."""
    copy = manager._copy

    def copying(*args: Any) -> tuple[int, float]:
        time.sleep(PAUSE_S)
        return copy(*args)

    manager._copy = copying  # type: ignore[method-assign]
    return manager


# ---- saving: the write barrier ------------------------------------------------------------
def test_a_resent_barrier_is_raised_and_lowered_once(pair: Pair, tmp_path: Path) -> None:
    def scenario(core: Core) -> object:
        # given a lease, and a save whose copy takes PAUSE_S
        core.store.submit(spec())
        (lease,) = core.store.acquire("w", 1, 30)
        manager = slow_to_copy(SnapshotManager(core))
        # when the namespace is saved
        began = time.monotonic()
        info = manager.save(out=tmp_path / f"{core.namespace}.rsnap", keep=False)
        took_ms = (time.monotonic() - began) * 1000
        moved = core.client.zscore(core.keys.leases, lease.task_id) - lease.deadline_ms
        # then the barrier is down, and the lease got back the time it stood, once
        assert core.client.exists(core.keys.barrier) == 0
        assert PAUSE_S * 1000 - 20 <= moved <= took_ms + 10, (moved, took_ms)
        return info.tasks, info.counts

    # (the save does not fail as "held by another snapshot", nor as "abandoned")
    tasks, counts = same_as_one_send(pair, scenario, "barrier")
    assert tasks == 1 and counts["leased"] == 1
    assert [resend.first[0] for resend in pair.log.of("barrier")] == [1, 1]


# ---- restoring ------------------------------------------------------------------------------
def test_a_resent_restore_begins_restores_and_finishes_once(pair: Pair, tmp_path: Path) -> None:
    def scenario(core: Core) -> object:
        # given a snapshot of three tasks in a file, and the namespace emptied
        core.store.submit_many([spec(payload=i) for i in range(3)])
        core.store.acquire("w", 1, 30)
        out = tmp_path / f"{core.namespace}.rsnap"
        SnapshotManager(core).save(out=out, keep=False)
        drop_namespace(core)
        # when it is restored
        report = SnapshotManager(core).restore(out)
        return report.restored_keys, report.snapshot.tasks, core.client.exists(core.keys.restoring)

    # then the restore reports success (not "its marker was taken by another restore") and the
    # tasks are back, counted and audited once
    keys, tasks, marker = same_as_one_send(pair, scenario, "restore_begin", "restore_chunk",
                                           "restore_finish")
    assert keys > 3 and (tasks, marker) == (3, 0)
    counts, _, events = books(pair.twice)
    assert (counts["pending"], counts["leased"], events.count("snapshot_restored")) == (2, 1, 1)


def test_a_resent_undo_of_a_refused_restore_clears_it_quietly(
        pair: Pair, tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    def scenario(core: Core) -> object:
        # given a validly signed snapshot whose last key is a payload Redis refuses
        core.store.submit_many([spec(), spec()])
        manager = SnapshotManager(core)
        refused_snapshot(manager, tmp_path, keep=False)
        drop_namespace(core)
        # when it is restored
        with pytest.raises(ValidationError, match="Redis refused key 'zzz'") as refused:
            manager.restore(tmp_path / "bad.rsnap")
        return refused.type.__name__, sorted(core.client.scan_iter(match=core.keys.pattern()))

    # then everything it wrote is deleted again, the marker too, and the undo does not take its
    # own resend for "another restore took the marker"
    with caplog.at_level(logging.WARNING, logger="raysys.snapshots.restoring"):
        assert same_as_one_send(pair, scenario, "restore_undo") == ("ValidationError", [])
    assert "lost its marker" not in caplog.text


# ---- rotation: stored manifests ------------------------------------------------------------
def test_a_resent_manifest_compare_and_set_is_no_conflict(redis_client: redis.Redis) -> None:
    # given a keyring whose active key the test rotates
    old = generate_key()
    ring = {"now": Keyring([old])}
    pair = Pair.over(redis_client, lambda: ring["now"])

    def scenario(core: Core) -> object:
        # given a snapshot stored in Redis, its manifest signed by the old key
        ring["now"] = Keyring([old])
        core.store.submit(spec())
        SnapshotManager(core).save()
        # when the key is rotated and the stored manifests re-signed
        ring["now"] = Keyring([generate_key(), old.with_status("verify-only")])
        sweep = resign_manifests(core)
        return sweep.resigned, sweep.conflicts, sweep.unverifiable

    # then the manifest is re-signed, with no conflict
    assert same_as_one_send(pair, scenario, "cas_manifest") == (1, 0, 0)


# ---- messages -------------------------------------------------------------------------------
def test_a_resent_nonce_claim_accepts_each_message_and_counts_a_replay_once(pair: Pair) -> None:
    def scenario(core: Core) -> object:
        # given two messages to "b", the first delivered twice in one batch
        sender, receiver = Messenger(core, "a"), Messenger(core, "b")
        first, second = sender.seal("b", "x", 1), sender.seal("b", "x", 2)
        # when "b" opens the batch
        results = receiver.open_many([first, second, first])
        return [result.reason if isinstance(result, IntegrityError) else "ok"
                for result in results]

    # then both messages are accepted (the resend is no replay), the copy refused, and the
    # replay counted and audited once
    assert same_as_one_send(pair, scenario, "claim_nonces") == ["ok", "ok", "replay"]
    _, stats, events = books(pair.twice)
    assert (stats["replays_rejected"], events.count("message_rejected")) == (1, 1)


RESEND_TESTS: dict[str, Callable[..., None]] = {
    "barrier": test_a_resent_barrier_is_raised_and_lowered_once,
    "restore_begin": test_a_resent_restore_begins_restores_and_finishes_once,
    "restore_chunk": test_a_resent_restore_begins_restores_and_finishes_once,
    "restore_finish": test_a_resent_restore_begins_restores_and_finishes_once,
    "restore_undo": test_a_resent_undo_of_a_refused_restore_clears_it_quietly,
    "cas_manifest": test_a_resent_manifest_compare_and_set_is_no_conflict,
    "claim_nonces": test_a_resent_nonce_claim_accepts_each_message_and_counts_a_replay_once,
}
"""Script -> the test that resends it (collected with the store's in test_resend_scripts)."""
