"""Key rotation, revocation and replay protection against a real Redis (both binaries).

Threat model (DESIGN.md): the attacker can read and write raysys keys in Redis but holds no
signing key. Rotation must strand nothing and reject nothing wrongly; revocation must make the
old key verify nothing; a replayed message is rejected before and after a Redis restart.
"""

from __future__ import annotations

import time
import uuid
from pathlib import Path
from typing import Any

import pytest
import redis

from raysys.errors import IntegrityError
from raysys.messaging.messenger import Messenger
from raysys.models import Outcome, TaskSpec, TaskState
from raysys.rotation import count_signed_by, resign_all, revoke_in_file, rotate_keyring_file
from raysys.signing.envelope import Sealer
from raysys.signing.keyring import Keyring, generate_key, write_keyring_file
from raysys.signing.keysource import KeyringSource
from raysys.store import RetryPolicy, TaskStore
from tests.support.stores import store_over

pytestmark = pytest.mark.security


def new_store(client: redis.Redis, source: Any, namespace: str | None = None) -> TaskStore:
    return store_over(client, Sealer(source), namespace or "s" + uuid.uuid4().hex[:10],
                     retry=RetryPolicy(base_s=0.001, cap_s=0.002))


@pytest.fixture
def keyfile(tmp_path: Path) -> Path:
    path = tmp_path / "keys.json"
    write_keyring_file(path, Keyring([generate_key()]))
    return path


# ---- reload -----------------------------------------------------------------------------------
def test_keyring_file_changes_are_picked_up_within_the_interval(keyfile: Path) -> None:
    source = KeyringSource(keyfile, interval_s=0.1)
    before = source().active.kid
    new_key, old_kid = rotate_keyring_file(keyfile)
    assert old_kid == before
    deadline = time.monotonic() + 5
    while source().active.kid != new_key.kid:
        assert time.monotonic() < deadline, "reload took longer than 5 s"
        time.sleep(0.05)
    assert source().get(before) is not None and source().get(before).status == "verify-only"


def test_a_broken_keyring_file_keeps_the_last_good_keyring(keyfile: Path) -> None:
    source = KeyringSource(keyfile, interval_s=0.0)
    kid = source().active.kid
    keyfile.write_text("{ half-written")
    assert source().active.kid == kid  # still signing, error logged


# ---- rotation ---------------------------------------------------------------------------------
def test_rotation_under_queued_work_rejects_nothing_and_revocation_strands_nothing(
        redis_client: redis.Redis, keyfile: Path) -> None:
    # given: work in every non-final state, signed by the first key
    source = KeyringSource(keyfile, interval_s=0.0)
    store = new_store(redis_client, source)
    old_kid = source().active.kid
    done_id = store.submit(TaskSpec.build(kind="echo", payload="done early", priority=9))
    (early,) = store.acquire("w", 1, 30)
    store.complete("w", [(early, Outcome(ok=True, result="kept"))])
    failing = store.submit(TaskSpec.build(kind="fail", priority=8, max_attempts=3))
    (lease,) = store.acquire("w", 1, 30)
    store.complete("w", [(lease, Outcome(ok=False, error="try again"))])  # -> failed, delayed
    ids = store.submit_many([TaskSpec.build(kind="echo", payload=i) for i in range(300)])
    held = store.acquire("w-held", 20, 30)  # leased across the rotation
    stolen_copy = redis_client.hget(store.keys.task(ids[-1]), "rec")  # old-key bytes

    # when: a new key becomes active and everything is re-signed, then the old key is revoked
    new_key, previous = rotate_keyring_file(keyfile)
    assert previous == old_kid
    report = resign_all(store.core)
    assert report.resigned_records == 302 + 0 and report.unverifiable == 0
    assert report.resigned_results == 1
    assert count_signed_by(store.core, old_kid) == 0
    revoke_in_file(keyfile, old_kid)
    assert source().get(old_kid).status == "revoked"

    # then: every held lease commits, every queued task runs: no wrongful rejection
    assert all(store.complete("w-held", [(h, Outcome(ok=True)) for h in held]))
    time.sleep(0.01)
    while leases := store.acquire("w", 100, 30):
        store.complete("w", [(x, Outcome(ok=True, result=x.payload)) for x in leases])
    counts = store.counts()
    assert counts["quarantined"] == 0 and store.stats().get("signature_failures", 0) == 0
    assert counts["succeeded"] == 302 and store.status(failing).state == TaskState.SUCCEEDED
    assert store.status(done_id).result == "kept"  # a result re-signed, still verifiable

    # and: a record signed only by the revoked key is rejected when it shows up again
    victim = store.submit(TaskSpec.build(kind="echo", payload="victim"))
    redis_client.hset(store.keys.task(victim), "rec", stolen_copy)
    assert store.acquire("w", 5, 30) == []
    assert store.status(victim).state == TaskState.QUARANTINED
    reasons = [e.get("reason") for e in store.audit_tail(50) if e["ev"] == "rejected"]
    assert reasons == ["revoked_key"]
    assert new_key.kid == source().active.kid


def test_rotation_never_launders_a_forged_record(redis_client: redis.Redis,
                                                 keyfile: Path) -> None:
    source = KeyringSource(keyfile, interval_s=0.0)
    store = new_store(redis_client, source)
    good, bad = store.submit_many([TaskSpec.build(kind="echo", payload=p) for p in ("a", "b")])
    key = store.keys.task(bad)
    redis_client.hset(key, "rec", redis_client.hget(key, "rec").replace(b'"b"', b'"x"'))
    rotate_keyring_file(keyfile)
    report = resign_all(store.core)
    assert report.resigned_records == 1 and report.unverifiable == 1
    assert [lease.task_id for lease in store.acquire("w", 5, 30)] == [good]
    assert store.status(bad).state == TaskState.QUARANTINED


def test_the_active_key_cannot_be_revoked(keyfile: Path) -> None:
    kid = KeyringSource(keyfile)().active.kid
    with pytest.raises(Exception, match="active key"):
        revoke_in_file(keyfile, kid)


# ---- replay protection for messages -----------------------------------------------------------
@pytest.fixture
def sealer() -> Sealer:
    return Sealer(Keyring([generate_key()]))


def test_a_message_opens_once_and_its_replay_is_rejected(redis_client: redis.Redis,
                                                         sealer: Sealer) -> None:
    store = new_store(redis_client, sealer.keyring)
    distributor, worker = Messenger(store.core, "distributor-1"), Messenger(store.core, "worker-3")
    data = distributor.seal("worker-3", "assign", {"tasks": ["t1"]})
    message = worker.open(data)
    assert (message.sender, message.type, message.body) == ("distributor-1", "assign",
                                                            {"tasks": ["t1"]})
    with pytest.raises(IntegrityError) as err:
        worker.open(data)
    assert err.value.reason == "replay"


def test_a_batch_with_a_replay_rejects_only_the_replay(redis_client: redis.Redis,
                                                       sealer: Sealer) -> None:
    store = new_store(redis_client, sealer.keyring)
    sender, receiver = Messenger(store.core, "a"), Messenger(store.core, "b")
    first, second = sender.seal("b", "x", 1), sender.seal("b", "x", 2)
    results = receiver.open_many([first, second, first])
    assert [getattr(r, "body", None) for r in results[:2]] == [1, 2]
    assert isinstance(results[2], IntegrityError) and results[2].reason == "replay"


@pytest.mark.parametrize(("mutate", "reason"), [
    (lambda d: d.replace(b'"recipient":"b"', b'"recipient":"c"'), "bad_signature"),
    (lambda d: d[:-2] + b"0}", "bad_signature"),
])
def test_tampered_messages_are_rejected(redis_client: redis.Redis, sealer: Sealer,
                                        mutate: Any, reason: str) -> None:
    store = new_store(redis_client, sealer.keyring)
    data = Messenger(store.core, "a").seal("b", "x", 1)
    with pytest.raises(IntegrityError) as err:
        Messenger(store.core, "b").open(mutate(data))
    assert err.value.reason == reason


def test_wrong_recipient_expired_and_non_messages_are_rejected(redis_client: redis.Redis,
                                                               sealer: Sealer) -> None:
    store = new_store(redis_client, sealer.keyring)
    data = Messenger(store.core, "a").seal("b", "x", 1)
    with pytest.raises(IntegrityError, match="delivered to") as err:
        Messenger(store.core, "c").open(data)
    assert err.value.reason == "wrong_recipient"
    short = Messenger(store.core, "a", validity_s=0.05, skew_s=0).seal("b", "x", 1)
    time.sleep(0.2)
    with pytest.raises(IntegrityError) as err:
        Messenger(store.core, "b", skew_s=0).open(short)
    assert err.value.reason == "expired"
    record = sealer.seal("task", {"id": "t"})
    with pytest.raises(IntegrityError) as err:
        Messenger(store.core, "b").open(record)
    assert err.value.reason == "purpose_mismatch"


def test_replay_is_rejected_after_redis_is_killed_and_restarted(
        redis_server_factory: Any, redis_binary: str, sealer: Sealer) -> None:
    # given: a message accepted once, on a server with AOF fsync always
    server = redis_server_factory(redis_binary, appendfsync="always")
    client = redis.Redis.from_url(server.url)
    store = new_store(client, sealer.keyring, namespace="replay")
    data = Messenger(store.core, "a").seal("b", "x", {"n": 1})
    Messenger(store.core, "b").open(data)

    # when: Redis dies hard and comes back
    server.kill()
    server.start()
    client = redis.Redis.from_url(server.url)
    store = new_store(client, sealer.keyring, namespace="replay")

    # then: the nonce record survived, and the replay is rejected
    with pytest.raises(IntegrityError) as err:
        Messenger(store.core, "b").open(data)
    assert err.value.reason == "replay"
    assert client.keys("*nonce*"), "the nonce record is in Redis"


def test_a_resent_claim_does_not_turn_a_genuine_message_into_a_replay(
        redis_client: redis.Redis, sealer: Sealer) -> None:
    """redis-py resends a call whose reply was lost: the same request id claims again."""
    store = new_store(redis_client, sealer.keyring)
    data = Messenger(store.core, "a").seal("b", "x", 1)
    opened = Messenger(store.core, "b")._verify(data)
    from raysys.store.lua import Scripts

    args = [store.keys.prefix, 5000, 3_600_000, "request-1",
            f"{opened.kid}:{opened.nonce}", opened.expires_ms]
    scripts = Scripts(redis_client)
    assert scripts.run("claim_nonces", [store.keys.stats], args) == [1]
    assert scripts.run("claim_nonces", [store.keys.stats], args) == [1]  # the resend
    assert scripts.run("claim_nonces", [store.keys.stats], [*args[:3], "request-2",
                                                            *args[4:]]) == [0]  # a replay


def test_a_message_from_another_namespace_is_rejected(redis_client: redis.Redis,
                                                      sealer: Sealer) -> None:
    """Two namespaces sharing a keyring and party names: prod's grant must not run in staging."""
    prod = new_store(redis_client, sealer.keyring, namespace="prod" + uuid.uuid4().hex[:6])
    staging = new_store(redis_client, sealer.keyring, namespace="stag" + uuid.uuid4().hex[:6])
    data = Messenger(prod.core, "distributor-1").seal("worker-1", "assign", {"tasks": []})
    with pytest.raises(IntegrityError) as err:
        Messenger(staging.core, "worker-1").open(data)
    assert err.value.reason == "wrong_namespace"


def test_an_expiry_beyond_the_longest_validity_is_refused(redis_client: redis.Redis,
                                                          sealer: Sealer) -> None:
    """A sender clock a year fast must not mint year-long messages (and year-long nonces)."""
    store = new_store(redis_client, sealer.keyring)
    sender = Messenger(store.core, "a")
    data = sealer.seal("message", 1, extra={
        "ns": store.namespace, "sender": "a", "recipient": "b", "type": "x",
        "exp": int((time.time() + 365 * 86400) * 1000)})
    with pytest.raises(IntegrityError) as err:
        Messenger(store.core, "b").open(data)
    assert err.value.reason == "expired"
    assert sender.party == "a"


def test_stored_snapshots_stay_restorable_after_rotation_and_revocation(
        redis_client: redis.Redis, keyfile: Path) -> None:
    from raysys.snapshots import SnapshotManager

    # given: a snapshot stored in Redis under the first key
    source = KeyringSource(keyfile, interval_s=0.0)
    store = new_store(redis_client, source)
    task_id = store.submit(TaskSpec.build(kind="echo", payload="backed up"))
    info = SnapshotManager(store.core).save()
    old_kid = source().active.kid

    # when: the key is rotated and revoked
    rotate_keyring_file(keyfile)
    report = resign_all(store.core)
    assert report.resigned_snapshots == 1
    assert count_signed_by(store.core, old_kid) == 0
    revoke_in_file(keyfile, old_kid)

    # then: the stored snapshot still verifies and restores
    for key in redis_client.scan_iter(match=store.keys.pattern()):  # all but the snapshots
        if not (key.endswith(b":snaps") or b":snap:" in key):
            redis_client.delete(key)
    SnapshotManager(store.core).restore(info.id)
    assert store.status(task_id).state == TaskState.PENDING
