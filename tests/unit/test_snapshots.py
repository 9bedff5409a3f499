"""Snapshots on a real Redis (Debian redis 7.0 and the valkey 9 wheel): save, list, restore.

Every test reads given / when / then. Tampering writes files and Redis keys directly, the way the
threat model's attacker (who can write raysys keys but holds no signing key) would.
"""

from __future__ import annotations

import argparse
import json
import logging
import stat
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
from pydantic import SecretStr

from raysys.cli import snapshot as snapshot_commands
from raysys.config import Settings
from raysys.errors import IntegrityError, NotFound, RaysysError, ValidationError
from raysys.models import Lease, Outcome, TaskSpec, TaskState, TaskStatus
from raysys.signing.envelope import Sealer
from raysys.signing.keyring import Keyring, generate_key
from raysys.snapshots import NamespaceNotEmpty, SnapshotManager
from raysys.snapshots import manager as manager_module
from raysys.snapshots import restoring as restoring_module
from raysys.snapshots.format import (
    FILE_MAGIC,
    read_snapshot_file,
)
from raysys.store import FENCES_PER_MS, RetryPolicy, TaskStore
from raysys.store import lua as lua_module
from tests.support.polling import wait_until
from tests.support.snapshot_files import refused_snapshot

pytestmark = [pytest.mark.unit, pytest.mark.timeout(60)]

StoreFactory = Callable[..., TaskStore]
OK = Outcome(ok=True)
LEASE_TTL_S = 0.5
BACKOFF = RetryPolicy(base_s=1.0, cap_s=1.0, jitter=0)


def spec(kind: str = "noop", **fields: Any) -> TaskSpec:
    return TaskSpec.build(kind=kind, **fields)


def lease_one(store: TaskStore, task_id: str, holder: str = "w1", ttl_s: float = 30.0) -> Lease:
    leases = store.acquire(holder, 1, ttl_s)
    assert [lease.task_id for lease in leases] == [task_id]
    return leases[0]


def make_mix(store: TaskStore) -> dict[str, list[str]]:
    """One task per interesting state, plus three pending ones. Returns ids by state."""
    ids: dict[str, list[str]] = {s.value: [] for s in TaskState}
    done = store.submit(spec("echo", payload={"answer": 42}))
    assert store.complete("w1", [(lease_one(store, done), Outcome(ok=True, result={"a": 42}))])
    dead = store.submit(spec("fail", payload={"message": "boom"}, max_attempts=1))
    assert store.complete("w1", [(lease_one(store, dead), Outcome(ok=False, error="boom"))])
    backoff = store.submit(spec("flaky", max_attempts=3))
    assert store.complete("w1", [(lease_one(store, backoff), Outcome(ok=False, error="once"))])
    cancelled = store.submit(spec())
    store.cancel(cancelled)
    leased = store.submit(spec("sleep", payload={"seconds": 1}, max_attempts=3))
    lease_one(store, leased, holder="w-old", ttl_s=LEASE_TTL_S)
    pending = store.submit_many([spec(priority=5), spec(idempotency_key="order-1"),
                                 spec(payload=[1, 2, 3])])
    ids["succeeded"], ids["dead"], ids["failed"] = [done], [dead], [backoff]
    ids["cancelled"], ids["leased"], ids["pending"] = [cancelled], [leased], pending
    return ids


def all_statuses(store: TaskStore, ids: dict[str, list[str]]) -> dict[str, TaskStatus]:
    return {task_id: store.status(task_id) for group in ids.values() for task_id in group}


def namespace_dump(store: TaskStore, *, snapshots: bool = True) -> dict[bytes, bytes]:
    """Every key of the namespace with its DUMP payload (snapshot keys optional)."""
    out: dict[bytes, bytes] = {}
    for key in store.client.scan_iter(match=store.keys.pattern(), count=1000):
        if not snapshots and (key.endswith(b":snaps") or b":snap:" in key):
            continue
        out[key] = store.client.dump(key)  # type: ignore[assignment]
    return out


def drop_namespace(store: TaskStore, *, keep_snapshots: bool = True) -> None:
    for key in namespace_dump(store, snapshots=not keep_snapshots):
        if keep_snapshots and (key.endswith(b":snaps") or b":snap:" in key):
            continue
        store.client.delete(key)


def barrier_keys(store: TaskStore, holder: str) -> list[str]:
    """The keys of barrier.lua for a barrier of ``holder``."""
    k = store.keys
    return [k.barrier, k.leases, k.restoring, k.reply("barrier", holder)]


def members(store: TaskStore, zset: str) -> set[str]:
    return {bytes(m).decode() for m in store.client.zrange(zset, 0, -1)}  # type: ignore[arg-type]


def retry_store(make_store: StoreFactory, **options: Any) -> TaskStore:
    return make_store(retry=BACKOFF, **options)


# ---- the round trip ------------------------------------------------------------------------
def test_round_trip_through_flushall_restores_every_task_and_keeps_fences_ahead(
        make_store: StoreFactory, tmp_path: Path) -> None:
    # given a namespace with a task in every state, and its snapshot in a file
    store = retry_store(make_store)
    ids = make_mix(store)
    before, counts = all_statuses(store, ids), store.counts()
    old_lease = Lease(ids["leased"][0], before[ids["leased"][0]].fence, 1, 0, "sleep", None, 0, 3,
                      300.0, None)
    info = SnapshotManager(store.core).save(out=tmp_path / "snap.rsnap")
    assert info.tasks == 8 and info.counts == counts and info.fence == store.fence_value()

    # when Redis loses everything and the file is restored
    store.client.flushall()
    report = SnapshotManager(store.core).restore(tmp_path / "snap.rsnap")

    # then every task is back with its state, verified result or error, attempts and fence
    assert report.snapshot == info and report.source == str(tmp_path / "snap.rsnap")
    assert all_statuses(store, ids) == before
    assert store.status(ids["succeeded"][0]).result == {"a": 42}
    assert store.status(ids["dead"][0]).error == "boom"
    assert store.counts() == counts
    assert max(status.fence for status in before.values()) <= info.fence <= report.fence

    # and the next grant is fenced strictly above the snapshot, at the server-clock floor (the
    # run id was not restored), above any fence granted after the snapshot was taken
    assert store.client.get(store.keys.run_id) is None
    seconds, micros = store.client.time()
    fresh = store.acquire("w-new", 10, 30.0)
    assert min(lease.fence for lease in fresh) > (seconds * 1000 + micros // 1000) * FENCES_PER_MS
    assert set(ids["pending"]) <= {lease.task_id for lease in fresh}
    assert min(lease.fence for lease in fresh) > info.fence
    assert all(store.complete("w-new", [(lease, OK) for lease in fresh]))

    # and the lease in flight at snapshot time expires, is reaped and runs again, as does the
    # task that was waiting out its backoff
    rerun = [lease for lease in fresh if lease.task_id in ids["failed"]]
    wait_until(lambda: store.reap().requeued == 1, 10, "the lease in flight to be requeued")
    while len(rerun) < 2:
        rerun += store.acquire("w-new", 10, 30.0)
        time.sleep(0.02)
    assert sorted(lease.task_id for lease in rerun) == sorted(ids["leased"] + ids["failed"])
    assert all(lease.attempt == 2 and lease.fence > info.fence for lease in rerun)
    assert store.complete("w-old", [(old_lease, OK)]) == [False]  # its old holder is fenced off
    assert all(store.complete("w-new", [(lease, OK) for lease in rerun]))
    final = store.counts()
    assert (final["succeeded"], final["dead"], final["cancelled"]) == (6, 1, 1)
    assert final["pending"] == final["leased"] == final["failed"] == 0


def test_large_sorted_sets_are_copied_and_restored_in_parts_exactly(
        store: TaskStore, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    # given: 40 tasks (their queue and indexes are sorted sets of 40 members, with scores up
    # to 2^50), copied in parts of 7 members, one of the sets with an expiry
    monkeypatch.setattr(manager_module, "ZSET_PART", 7)
    store.submit_many([spec(payload=i, priority=i % 5) for i in range(40)])
    store.client.pexpire(store.keys.submitted_index, 600_000)
    sets = [key for key in store.client.scan_iter(match=store.keys.pattern())
            if store.client.type(key) == b"zset" and store.client.zcard(key) > 7]
    assert len(sets) >= 2
    before = {key: store.client.zrange(key, 0, -1, withscores=True) for key in sets}

    # when: it is saved, the namespace dropped, and the file restored
    SnapshotManager(store.core).save(out=tmp_path / "snap.rsnap")
    drop_namespace(store, keep_snapshots=False)
    SnapshotManager(store.core).restore(tmp_path / "snap.rsnap")

    # then: every set is back, member for member and score for score, with its expiry
    assert {key: store.client.zrange(key, 0, -1, withscores=True) for key in sets} == before
    assert 0 < store.client.pttl(store.keys.submitted_index) <= 600_000
    assert len(store.acquire("w", 40, 30)) == 40


def test_restore_by_id_after_the_task_keys_are_deleted(make_store: StoreFactory) -> None:
    # given a saved snapshot, then every key but the snapshot's deleted, and a fence counter that
    # moved far past the snapshot's meanwhile
    store = retry_store(make_store)
    ids = make_mix(store)
    before, counts = all_statuses(store, ids), store.counts()
    manager = SnapshotManager(store.core)
    info = manager.save()
    drop_namespace(store, keep_snapshots=True)
    store.client.set(store.keys.fence, info.fence + 10**12)

    # when the snapshot is restored by its id
    report = manager.restore(info.id)

    # then the tasks are back, the fence counter never went down, the snapshot is still listed
    # (the fence counter and run id are in the copy but not restored)
    assert report.source == "redis" and report.restored_keys == info.keys - 2
    assert all_statuses(store, ids) == before and store.counts() == counts
    assert store.fence_value() == info.fence + 10**12
    assert [i.id for i in manager.list()] == [info.id]
    assert store.audit_tail(1)[0]["ev"] == "snapshot_restored"


def test_unknown_snapshot_id_or_file_is_not_found(store: TaskStore, tmp_path: Path) -> None:
    manager = SnapshotManager(store.core)
    with pytest.raises(NotFound, match="no snapshot 20200101T000000Z-00000000"):
        manager.restore("20200101T000000Z-00000000")
    with pytest.raises(NotFound, match="no snapshot file"):
        manager.restore(tmp_path / "missing.rsnap")


# ---- integrity -----------------------------------------------------------------------------
def test_any_changed_byte_of_the_file_is_refused_and_nothing_written(
        make_store: StoreFactory, tmp_path: Path) -> None:
    # given a snapshot file, and the namespace emptied afterwards
    store = retry_store(make_store)
    make_mix(store)
    path = tmp_path / "snap.rsnap"
    SnapshotManager(store.core).save(out=path)
    raw = path.read_bytes()
    manifest, data = read_snapshot_file(path)
    drop_namespace(store, keep_snapshots=False)
    start = len(FILE_MAGIC)
    data_at = start + len(manifest) + 1
    offsets = [0, len(FILE_MAGIC) - 1, start, start + 5, start + 12, start + 80,
               start + len(manifest) // 2, data_at - 2, data_at - 1, data_at, data_at + 3,
               data_at + len(data) // 2, len(raw) - 1]

    for offset in offsets:
        # when one byte is changed (or the file is cut short, or grows by a byte)
        tampered = bytearray(raw)
        tampered[offset] ^= 0x01
        variants = [bytes(tampered)]
        if offset == len(raw) - 1:
            variants += [raw[:-1], raw + b"\x00"]
        for variant in variants:
            path.write_bytes(variant)
            # then restore refuses with a typed integrity error, and writes nothing
            with pytest.raises(IntegrityError):
                SnapshotManager(store.core).restore(path)
            assert namespace_dump(store) == {}, f"offset {offset} wrote keys"


def test_tampered_snapshot_in_redis_is_refused_and_not_listed(
        store: TaskStore, caplog: pytest.LogCaptureFixture) -> None:
    # given two stored snapshots
    store.submit_many([spec(), spec()])
    manager = SnapshotManager(store.core)
    first, second = manager.save(), manager.save()
    drop_namespace(store, keep_snapshots=True)

    # when one's data changes by a byte, and the other's manifest is swapped for the first's
    chunk = bytearray(store.client.hget(manager.key(first.id), "0"))  # type: ignore[arg-type]
    chunk[len(chunk) // 2] ^= 0x01
    store.client.hset(manager.key(first.id), "0", bytes(chunk))
    store.client.hset(manager.key(second.id), "m",
                      store.client.hget(manager.key(first.id), "m"))

    # then both are refused, nothing is written, and the swapped one drops out of the list
    with pytest.raises(IntegrityError) as changed:
        manager.restore(first.id)
    assert changed.value.reason == "digest_mismatch"
    with pytest.raises(IntegrityError) as swapped:
        manager.restore(second.id)
    assert swapped.value.reason == "copied_record"
    assert namespace_dump(store, snapshots=False) == {}
    with caplog.at_level(logging.ERROR, logger="raysys.snapshots.manager"):
        assert [i.id for i in manager.list()] == [first.id]
    assert second.id in caplog.text


@pytest.mark.parametrize("other", ["unknown", "revoked"])
def test_snapshot_signed_by_an_unknown_or_revoked_key_is_refused(
        make_store: StoreFactory, sealer: Sealer, tmp_path: Path, other: str) -> None:
    # given a snapshot file signed by this keyring
    store = make_store()
    store.submit(spec())
    SnapshotManager(store.core).save(out=tmp_path / "snap.rsnap")
    drop_namespace(store, keep_snapshots=False)

    # when a store on the same namespace holds another keyring, or has revoked that key
    signer = sealer.keyring.active
    keys = [generate_key()] + ([signer.with_status("revoked")] if other == "revoked" else [])
    elsewhere = make_store(namespace=store.namespace, sealer=Sealer(Keyring(keys)))

    # then the restore is refused before anything is written
    with pytest.raises(IntegrityError) as refused:
        SnapshotManager(elsewhere.core).restore(tmp_path / "snap.rsnap")
    assert refused.value.reason == {"unknown": "unknown_key", "revoked": "revoked_key"}[other]
    assert namespace_dump(store) == {}


def test_snapshot_of_another_namespace_is_refused(make_store: StoreFactory,
                                                  tmp_path: Path) -> None:
    # given a snapshot of one namespace
    source = make_store()
    source.submit(spec())
    SnapshotManager(source.core).save(out=tmp_path / "snap.rsnap")

    # when it is restored into another namespace, then it is refused: records are bound to theirs
    target = make_store()
    with pytest.raises(ValidationError, match="signed for that namespace only"):
        SnapshotManager(target.core).restore(tmp_path / "snap.rsnap")
    assert namespace_dump(target) == {}


def test_a_payload_redis_refuses_undoes_the_keys_restored_before_it(
        store: TaskStore, tmp_path: Path) -> None:
    # given a validly signed snapshot whose last key is a payload Redis rejects (as a DUMP from a
    # newer server is rejected by an older one)
    store.submit_many([spec(), spec()])
    manager = SnapshotManager(store.core)
    refused_snapshot(manager, tmp_path)
    drop_namespace(store, keep_snapshots=False)

    # when it is restored, then it is refused and none of the keys before the bad one remain
    with pytest.raises(ValidationError, match="Redis refused key 'zzz'"):
        manager.restore(tmp_path / "bad.rsnap")
    assert namespace_dump(store) == {}


# ---- preconditions -------------------------------------------------------------------------
@pytest.mark.parametrize("check", ["client", "script"])
def test_restore_into_a_non_empty_namespace_is_refused_and_changes_nothing(
        store: TaskStore, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, check: str) -> None:
    # given a snapshot file, and a namespace that gained tasks since
    store.submit(spec())
    manager = SnapshotManager(store.core)
    manager.save(out=tmp_path / "snap.rsnap")
    store.submit_many([spec(), spec()])
    before = namespace_dump(store)
    if check == "script":  # the script checks again, atomically with its writes
        monkeypatch.setattr(manager, "_require_empty", lambda: None)

    # when it is restored, then it is refused, naming how many tasks are there (the script's
    # own check, in constant time, names the keys every used namespace has)
    with pytest.raises(NamespaceNotEmpty) as refused:
        manager.restore(tmp_path / "snap.rsnap")
    if check == "client":
        assert "holds 3 task(s)" in str(refused.value) and refused.value.tasks == 3
    else:
        assert "e.g. seq, counts, ix:sub" in str(refused.value)
    assert refused.value.others > 0
    assert namespace_dump(store) == before


def test_snapshot_excludes_snapshot_keys_and_file_is_private(store: TaskStore,
                                                             tmp_path: Path) -> None:
    # given a namespace with a stored snapshot already
    store.submit(spec())
    manager = SnapshotManager(store.core)
    first = manager.save()

    # when another snapshot is saved to a file
    second = manager.save(out=tmp_path / "out" / "snap.rsnap")

    # then it copies the same keys (no snapshot keys), the file is 0600, no temporary is left
    _, entries = manager.load(tmp_path / "out" / "snap.rsnap")
    names = {name for name, _, _ in entries}
    assert second.keys == first.keys == len(names)
    assert not any(name == b"snaps" or name.startswith(b"snap:") for name in names)
    mode = stat.S_IMODE((tmp_path / "out" / "snap.rsnap").stat().st_mode)
    assert mode == 0o600
    assert [p.name for p in (tmp_path / "out").iterdir()] == ["snap.rsnap"]


def test_list_shows_saved_snapshots_oldest_first(store: TaskStore) -> None:
    # given an empty namespace, then two snapshots around a submission
    manager = SnapshotManager(store.core)
    assert manager.list() == []
    first = manager.save()
    store.submit(spec())
    second = manager.save()

    # when they are listed, then each comes from its verified manifest, in order
    listed = manager.list()
    assert [i.id for i in listed] == [first.id, second.id]
    assert (listed[0].tasks, listed[1].tasks) == (0, 1)
    assert listed[1].counts["pending"] == 1 and listed[1].namespace == store.namespace
    assert listed[1].signed_by == store.sealer.keyring.active.kid
    assert manager.delete(first.id) and [i.id for i in manager.list()] == [second.id]


def test_snapshot_under_load_is_one_consistent_instant(make_store: StoreFactory,
                                                       tmp_path: Path,
                                                       monkeypatch: pytest.MonkeyPatch) -> None:
    # given a producer and a worker changing the namespace continuously, and a save copied in
    # pages of 7 keys (hundreds of scripts, with writes waiting at the barrier between them)
    monkeypatch.setattr(manager_module, "PAGE_KEYS", 7)
    store = make_store()
    manager = SnapshotManager(store.core)
    stop = threading.Event()

    def churn() -> None:
        while not stop.is_set():
            store.submit_many([spec() for _ in range(20)])
            leases = store.acquire("w", 15, 30.0)
            store.complete("w", [(lease, OK) for lease in leases[::2]])

    thread = threading.Thread(target=churn, daemon=True)
    thread.start()
    try:
        # when a snapshot is taken mid-stream
        wait_until(lambda: store.counts()["succeeded"] > 100, 10, "100 commits of the churn")
        info = manager.save(out=tmp_path / "snap.rsnap")
    finally:
        stop.set()
        thread.join(10)

    # then, restored, its counts, queues and task hashes agree with one another exactly
    store.client.flushall()
    manager.restore(tmp_path / "snap.rsnap")
    states: dict[str, set[str]] = {s.value: set() for s in TaskState}
    for key in store.client.scan_iter(match=store.keys.prefix + "t:*", count=1000):
        state = bytes(store.client.hget(key, "state")).decode()  # type: ignore[arg-type]
        states[state].add(bytes(key).decode().rsplit(":", 1)[1])
    assert {s: len(v) for s, v in states.items()} == info.counts == store.counts()
    assert sum(info.counts.values()) == info.tasks
    assert set().union(*store.queued_ids().values()) == states["pending"]
    assert members(store, store.keys.leases) == states["leased"]


def test_the_barrier_holds_writes_and_gives_leases_back_the_time_it_stood(
        store: TaskStore) -> None:
    # given a leased task, and a snapshot's barrier raised
    task_id = store.submit(spec())
    (lease,) = store.acquire("w", 1, 30.0)
    deadline = store.client.zscore(store.keys.leases, task_id)
    store.core.scripts.run("barrier", barrier_keys(store, "snap-x"), ["on", "snap-x", 10_000])

    # when a submission is made while it stands, and the barrier comes down 0.5 s later
    submitted: list[str] = []
    writer = threading.Thread(target=lambda: submitted.append(store.submit(spec())))
    writer.start()
    time.sleep(0.5)
    assert submitted == [] and store.counts()["pending"] == 0  # it waits, writes nothing
    assert store.core.scripts.run("barrier", barrier_keys(store, "snap-x"),
                                  ["off", "snap-x", 10_000])[0] == 1
    writer.join(5)

    # then the submission went through, and the lease lost none of its time
    assert len(submitted) == 1 and store.counts()["pending"] == 1
    moved = store.client.zscore(store.keys.leases, task_id)
    assert moved is not None and deadline is not None and moved - deadline >= 450
    assert store.complete("w", [(lease, OK)]) == [True]


def test_a_second_save_while_one_holds_the_barrier_is_refused(store: TaskStore) -> None:
    store.core.scripts.run("barrier", barrier_keys(store, "other"), ["on", "other", 10_000])
    with pytest.raises(RaysysError, match="another snapshot"):
        SnapshotManager(store.core).save()
    store.core.scripts.run("barrier", barrier_keys(store, "other"), ["off", "other", 10_000])


def test_a_restore_is_refused_while_a_snapshot_is_saved(store: TaskStore,
                                                         tmp_path: Path) -> None:
    store.submit_many([spec(payload=i) for i in range(3)])
    manager = SnapshotManager(store.core)
    manager.save(out=tmp_path / "snap.rsnap")
    drop_namespace(store, keep_snapshots=False)
    k = store.keys
    store.core.scripts.run("barrier", barrier_keys(store, "other"), ["on", "other", 10_000])
    with pytest.raises(RaysysError, match="a snapshot save"):
        manager.restore(tmp_path / "snap.rsnap")
    assert store.client.exists(k.restoring) == 0
    store.core.scripts.run("barrier", barrier_keys(store, "other"), ["off", "other", 10_000])
    assert manager.restore(tmp_path / "snap.rsnap").restored_keys > 3


def test_a_restore_that_dies_half_way_holds_writers_off_until_restored_again(
        store: TaskStore, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    # given a snapshot of 30 tasks, restored in pages of 5 by a restore that dies after one page
    store.submit_many([spec(payload=i) for i in range(30)])
    manager = SnapshotManager(store.core)
    manager.save(out=tmp_path / "snap.rsnap")
    drop_namespace(store, keep_snapshots=False)
    monkeypatch.setattr(restoring_module, "PAGE_KEYS", 5)
    real_run = store.core.scripts.run
    calls = {"chunks": 0}

    def dying(name: str, keys: list[str], args: list[Any]) -> Any:
        if name == "restore_chunk":
            calls["chunks"] += 1
            if calls["chunks"] == 2:
                raise KeyboardInterrupt  # the process dies here
        return real_run(name, keys, args)

    monkeypatch.setattr(store.core.scripts, "run", dying)
    with pytest.raises(KeyboardInterrupt):
        manager.restore(tmp_path / "snap.rsnap")
    monkeypatch.setattr(store.core.scripts, "run", real_run)

    # then the marker stands: a writer waits, then gives up with a message that says what to do
    monkeypatch.setattr(lua_module, "BARRIER_WAIT_S", 0.3)
    with pytest.raises(RaysysError, match="restore"):
        store.submit(spec())

    # and a save, or a restore at once (the marker's last page is recent: it could be a live
    # restore), is refused and changes nothing
    with pytest.raises(RaysysError, match="holds namespace"):
        manager.save()
    with pytest.raises(RaysysError, match="is running"):
        manager.restore(tmp_path / "snap.rsnap")
    assert store.client.exists(store.keys.restoring) == 1

    # and once the marker has been quiet long enough, the next restore takes it over, clears
    # the half-written keys and finishes
    monkeypatch.setattr(restoring_module, "RESTORE_QUIET_S", 0.0)
    report = manager.restore(tmp_path / "snap.rsnap")
    assert store.counts()["pending"] == 30 and report.restored_keys > 30
    assert store.client.exists(store.keys.restoring) == 0
    store.submit(spec())  # writes flow again
    assert store.counts()["pending"] == 31


# ---- command line (handlers called directly) ----------------------------------------------
def snapshot_cli(store: TaskStore, sealer: Sealer,
                 tmp_path: Path) -> tuple[argparse.ArgumentParser, Settings]:
    """The snapshot command on a parser, and settings naming this Redis and keyring."""
    parser = argparse.ArgumentParser(prog="raysys")
    snapshot_commands.register(parser.add_subparsers(dest="command", required=True))
    port = store.client.connection_pool.connection_kwargs["port"]
    settings = Settings(redis_url=SecretStr(f"redis://127.0.0.1:{port}/0"),
                        namespace=store.namespace, data_dir=tmp_path,
                        signing_keys=SecretStr(json.dumps(sealer.keyring.to_json())))
    return parser, settings


def test_cli_save_list_restore_with_json(store: TaskStore, sealer: Sealer, tmp_path: Path,
                                         capsys: pytest.CaptureFixture[str]) -> None:
    # given the snapshot command on a parser, and settings naming this Redis and keyring
    parser, settings = snapshot_cli(store, sealer, tmp_path)
    task_id = store.submit(spec("echo", payload={"x": 1}))

    def run(*argv: str) -> dict[str, Any]:
        args = parser.parse_args(["snapshot", *argv, "--json"])
        assert args.handler(args, settings) == 0
        out = capsys.readouterr().out
        assert out.count("\n") == 1
        doc: dict[str, Any] = json.loads(out)
        return doc

    # when a snapshot is saved to a file and listed
    saved = run("save", "--out", str(tmp_path / "snap.rsnap"))
    listed = run("list")

    # then both describe it
    assert saved["file"] == str(tmp_path / "snap.rsnap") and saved["tasks"] == 1
    assert [s["id"] for s in listed["snapshots"]] == [saved["id"]]

    # and restoring the file after a flush, then the id after dropping the task keys, works
    store.client.flushall()
    assert run("restore", str(tmp_path / "snap.rsnap"))["snapshot"]["id"] == saved["id"]
    assert store.status(task_id).state == TaskState.PENDING
    stored = run("save")
    drop_namespace(store, keep_snapshots=True)
    assert run("restore", stored["id"])["source"] == "redis"
    assert store.status(task_id).state == TaskState.PENDING


def test_cli_text_output_names_the_snapshot(store: TaskStore, sealer: Sealer, tmp_path: Path,
                                            capsys: pytest.CaptureFixture[str]) -> None:
    parser, settings = snapshot_cli(store, sealer, tmp_path)
    args = parser.parse_args(["snapshot", "list"])
    assert args.handler(args, settings) == 0
    assert "no snapshots stored in namespace" in capsys.readouterr().out
    args = parser.parse_args(["snapshot", "save"])
    assert args.handler(args, settings) == 0
    line = capsys.readouterr().out
    assert line.startswith("snapshot ") and "kept in Redis" in line
