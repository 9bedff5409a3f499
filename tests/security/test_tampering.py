"""10,000 mutations of stored task records: every one rejected, audited with a reason, none run.

Threat model (DESIGN.md): the attacker reads and writes raysys keys in Redis but holds no
signing key. Here the attacker rewrites the stored record of 9,600 queued tasks — bit flips,
garbling, truncation, field swaps, key-id and algorithm swaps, re-encodings that keep the JSON's
meaning, records copied under another task's key (same namespace, another namespace, a finished
task's), validly signed envelopes of another purpose, records signed with the attacker's own
key under our key ids, deleted and junk records — and re-queues 400 finished tasks (back to
``pending``, or to ``failed`` with a due retry). Then a worker (:class:`WorkerLoop` over
``TaskStore.acquire_verified``, as the actors run it) leases until the queue is empty.

Checked per task: not executed (the handler counts runs), quarantined (re-queued finished tasks:
never leased again, fence and attempts unchanged), and named in the audit stream with a reason
(``rejected`` + ``reason``; ``replay_blocked`` for a re-queued finished task), the reason
being the one each attack must produce where it is deterministic. Real Redis, both binaries.
"""

from __future__ import annotations

import base64
import json
import os
import random
import threading
import time
import uuid
from collections import Counter, defaultdict
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import orjson
import pytest
import redis

import raysys
from raysys.messaging.messenger import Messenger
from raysys.models import Outcome, TaskSpec, TaskState, record_body
from raysys.signing.envelope import Sealer
from raysys.signing.keyring import Keyring, SigningKey, generate_key
from raysys.store import RetryPolicy, TaskStore
from raysys.worker_loop import WorkerLoop
from tests.security.security_results import security_row
from tests.support.results import ResultsFile, environment
from tests.support.stores import read_audit, store_over

pytestmark = [pytest.mark.security, pytest.mark.slow, pytest.mark.timeout(240)]

KIND = "security.canary"
TOTAL = 10_000
REQUEUED = 400  # finished tasks put back in the queue (half pending, half failed-and-due)
BATCH = 100  # leases per round (the actors' batch is 50; 100 keeps 10,000 + deferrals quick)
REASONS = frozenset({"malformed", "unknown_key", "revoked_key", "algorithm_mismatch",
                     "bad_signature", "header_mismatch", "purpose_mismatch", "copied_record"})

_runs: list[str] = []
_runs_lock = threading.Lock()


@raysys.task(KIND, max_attempts=1)
def _canary(payload: Any, ctx: Any) -> str:
    """Any run of a canary task is a security failure: count it."""
    with _runs_lock:
        _runs.append(ctx.task_id)
    return "ran"


# ---- the attacker's toolbox -------------------------------------------------------------------
@dataclass
class Keys:
    active: SigningKey  # hmac, signs
    ed_verify: SigningKey  # ed25519, verify-only
    hmac_verify: SigningKey  # hmac, verify-only
    revoked: SigningKey  # hmac, revoked

    def keyring(self) -> Keyring:
        return Keyring([self.active, self.ed_verify, self.hmac_verify, self.revoked])


@dataclass
class Arsenal:
    """What the attacker can read in Redis (and make with keys of their own)."""

    rng: random.Random
    keys: Keys
    namespace: str
    records: dict[str, bytes]  # task id -> its genuine record
    ids: list[str]
    foreign: list[bytes]  # genuine records of another namespace (same keyring)
    finished_recs: list[bytes]
    finished_fins: list[bytes]  # signed completion records
    messages: list[bytes]  # genuine signed messages
    forgers: list[tuple[Sealer, str]] = field(default_factory=list)  # own keys under our kids

    def other(self, task_id: str) -> str:
        while True:
            pick = self.rng.choice(self.ids)
            if pick != task_id:
                return pick


def split(rec: bytes) -> list[bytes]:
    parts = rec.split(b".", 4)
    assert len(parts) == 5, rec[:80]
    return parts


def join(parts: list[bytes]) -> bytes:
    return b".".join(parts)


def with_payload(rec: bytes, change: Callable[[dict[str, Any]], None]) -> bytes:
    """The record with its (unverified) JSON payload changed, header and signature kept."""
    parts = split(rec)
    doc = orjson.loads(parts[4])
    change(doc)
    parts[4] = orjson.dumps(doc)
    return join(parts)


# Each attack returns (new bytes, or None to delete the field) and the reasons it may produce
# (None: any verification failure).
Attack = Callable[[Arsenal, str, bytes], tuple[bytes | None, frozenset[str] | None]]
SIG = frozenset({"bad_signature"})


def bit_flip(a: Arsenal, task_id: str, rec: bytes) -> tuple[bytes | None, frozenset[str] | None]:
    data = bytearray(rec)
    bit = a.rng.randrange(len(data) * 8)
    data[bit // 8] ^= 1 << (bit % 8)
    return bytes(data), None


def garble(a: Arsenal, task_id: str, rec: bytes) -> tuple[bytes | None, frozenset[str] | None]:
    data = bytearray(rec)
    for _ in range(a.rng.randint(2, 8)):
        i = a.rng.randrange(len(data))
        data[i] = (data[i] + a.rng.randint(1, 255)) % 256
    return bytes(data), None


def truncate(a: Arsenal, task_id: str, rec: bytes) -> tuple[bytes | None, frozenset[str] | None]:
    return rec[:a.rng.randrange(len(rec))], None


def extend(a: Arsenal, task_id: str, rec: bytes) -> tuple[bytes | None, frozenset[str] | None]:
    suffix = a.rng.choice([b" ", b"\n", b"}", b',"kind":"echo"}', b"\x00", os.urandom(9)])
    return rec + suffix, SIG


def field_swap(a: Arsenal, task_id: str,
               rec: bytes) -> tuple[bytes | None, frozenset[str] | None]:
    other = orjson.loads(split(a.records[a.other(task_id)])[4])["body"]

    def change(doc: dict[str, Any]) -> None:
        body = doc["body"]
        op = a.rng.randrange(6)
        if op == 0:  # swap two fields' values
            x, y = a.rng.sample(["kind", "payload", "priority", "max_attempts", "timeout_s",
                                 "idempotency_key", "id", "ns"], 2)
            body[x], body[y] = body[y], body[x]
        elif op == 1:
            body["kind"] = a.rng.choice(["echo", "noop", "fail", "sleep"])
        elif op == 2:
            body["payload"] = other["payload"]
        elif op == 3:
            body["priority"], body["max_attempts"] = 1000, 100
        elif op == 4:
            body["id"] = other["id"]  # claim to be the task it is stored under... of another
        else:
            body["payload"] = {"cmd": "rm -rf /"}

    new = with_payload(rec, change)
    if new == rec:  # a swap of equal values: change something for sure
        new = with_payload(rec, lambda d: d["body"].update(kind="echo"))
    return new, SIG


def envelope_swap(a: Arsenal, task_id: str,
                  rec: bytes) -> tuple[bytes | None, frozenset[str] | None]:
    other = orjson.loads(split(a.records[a.other(task_id)])[4])

    def change(doc: dict[str, Any]) -> None:
        op = a.rng.randrange(5)
        if op == 0:
            doc["purpose"] = a.rng.choice(["completion", "message", "snapshot"])
        elif op == 1:
            doc["iat"] = doc["iat"] - 3600
        elif op == 2:
            doc["nonce"] = other["nonce"]
        elif op == 3:
            doc["v"] = 2
        else:
            doc["kid"] = a.keys.hmac_verify.kid  # payload only: the header still names ours

    return with_payload(rec, change), SIG


def set_header(rec: bytes, kid: bytes | None = None, alg: bytes | None = None,
               payload_too: bool = False) -> bytes:
    parts = split(rec)
    if kid is not None:
        parts[1] = kid
    if alg is not None:
        parts[2] = alg
    if payload_too:
        doc = orjson.loads(parts[4])
        if kid is not None:
            doc["kid"] = kid.decode("latin-1")
        if alg is not None:
            doc["alg"] = alg.decode("latin-1")
        parts[4] = orjson.dumps(doc)
    return join(parts)


def kid_same_alg(a: Arsenal, task_id: str,
                 rec: bytes) -> tuple[bytes | None, frozenset[str] | None]:
    kid = a.keys.hmac_verify.kid.encode()
    return set_header(rec, kid=kid, payload_too=a.rng.random() < 0.5), SIG


def kid_other_alg(a: Arsenal, task_id: str,
                  rec: bytes) -> tuple[bytes | None, frozenset[str] | None]:
    return set_header(rec, kid=a.keys.ed_verify.kid.encode()), frozenset({"algorithm_mismatch"})


def kid_and_alg(a: Arsenal, task_id: str,
                rec: bytes) -> tuple[bytes | None, frozenset[str] | None]:
    return set_header(rec, kid=a.keys.ed_verify.kid.encode(), alg=b"ed25519",
                      payload_too=a.rng.random() < 0.5), SIG


def kid_revoked(a: Arsenal, task_id: str,
                rec: bytes) -> tuple[bytes | None, frozenset[str] | None]:
    return set_header(rec, kid=a.keys.revoked.kid.encode(),
                      payload_too=a.rng.random() < 0.5), frozenset({"revoked_key"})


def kid_unknown(a: Arsenal, task_id: str,
                rec: bytes) -> tuple[bytes | None, frozenset[str] | None]:
    kid = a.rng.choice([b"k" + os.urandom(6).hex().encode(), b"../keys", b"k\xff\xfe",
                        b"", b"K" + a.keys.active.kid[1:].encode()])
    return set_header(rec, kid=kid), frozenset({"unknown_key"})


def alg_swap(a: Arsenal, task_id: str, rec: bytes) -> tuple[bytes | None, frozenset[str] | None]:
    alg = a.rng.choice([b"ed25519", b"none", b"HS256", b"hmac-sha512", b"HMAC-SHA256", b""])
    return set_header(rec, alg=alg, payload_too=a.rng.random() < 0.5), frozenset(
        {"algorithm_mismatch"})


def reencode(a: Arsenal, task_id: str, rec: bytes) -> tuple[bytes | None, frozenset[str] | None]:
    parts = split(rec)
    doc = orjson.loads(parts[4])
    op = a.rng.randrange(11)
    if op == 0 and parts[3].upper() != parts[3]:
        parts[3] = parts[3].upper()  # the same signature in upper-case hex
    elif op == 1:
        parts[3] = base64.b64encode(bytes.fromhex(parts[3].decode()))  # ... in base64
    elif op == 2:
        parts[4] = json.dumps(doc).encode()  # the same JSON with spaces
    elif op == 3:
        parts[4] = json.dumps(doc, ensure_ascii=True, separators=(",", ":")).encode()  # \u00e9
    elif op == 4:
        parts[4] = orjson.dumps(dict(reversed(list(doc.items()))))  # keys in another order
    elif op == 5:
        parts[4] = orjson.dumps(doc, option=orjson.OPT_INDENT_2)
    elif op == 6:
        parts[4] = parts[4].replace(b'"kind"', b'"\\u006bind"', 1)  # an escaped letter
    elif op == 7:
        parts[4] = parts[4].replace(b'"priority":0', b'"priority":0.0', 1)
    elif op == 8:
        return base64.b64encode(rec), frozenset({"malformed"})
    elif op == 9:
        return rec.decode("latin-1").encode("utf-16"), frozenset({"malformed"})
    else:
        parts[0] = a.rng.choice([b"rs1", b" RS1", b"RS2"])
        return join(parts), frozenset({"malformed"})
    new = join(parts)
    if new == rec:
        parts[4] = json.dumps(doc).encode()
        new = join(parts)
    return new, SIG


def copied(a: Arsenal, task_id: str, rec: bytes) -> tuple[bytes | None, frozenset[str] | None]:
    return a.records[a.other(task_id)], frozenset({"copied_record"})


def copied_foreign(a: Arsenal, task_id: str,
                   rec: bytes) -> tuple[bytes | None, frozenset[str] | None]:
    return a.rng.choice(a.foreign), frozenset({"copied_record"})


def copied_finished(a: Arsenal, task_id: str,
                    rec: bytes) -> tuple[bytes | None, frozenset[str] | None]:
    return a.rng.choice(a.finished_recs), frozenset({"copied_record"})


def other_purpose(a: Arsenal, task_id: str,
                  rec: bytes) -> tuple[bytes | None, frozenset[str] | None]:
    pool = a.finished_fins if a.rng.random() < 0.5 else a.messages
    return a.rng.choice(pool), frozenset({"purpose_mismatch"})


def forged(a: Arsenal, task_id: str, rec: bytes) -> tuple[bytes | None, frozenset[str] | None]:
    sealer, _ = a.rng.choice(a.forgers)
    spec = TaskSpec.build(kind="echo", payload={"pwned": True}, priority=1000)
    return sealer.seal("task", record_body(task_id, spec, a.namespace)), SIG


def deleted(a: Arsenal, task_id: str, rec: bytes) -> tuple[bytes | None, frozenset[str] | None]:
    return None, frozenset({"malformed"})


def junk(a: Arsenal, task_id: str, rec: bytes) -> tuple[bytes | None, frozenset[str] | None]:
    return os.urandom(a.rng.randint(1, 400)), None


# (name, attack, share of the 9,600 record mutations)
ATTACKS: list[tuple[str, Attack, int]] = [
    ("bit flip", bit_flip, 1600), ("garbled bytes", garble, 400), ("truncation", truncate, 700),
    ("bytes appended", extend, 200), ("body field swap", field_swap, 1000),
    ("envelope field swap", envelope_swap, 300),
    ("key-id swap (known hmac key)", kid_same_alg, 500),
    ("key-id swap (ed25519 key)", kid_other_alg, 300),
    ("key-id + algorithm swap", kid_and_alg, 300), ("key-id swap (revoked key)", kid_revoked, 300),
    ("key-id swap (unknown key)", kid_unknown, 200), ("algorithm swap", alg_swap, 500),
    ("re-encoding", reencode, 1000), ("copied under another task's key", copied, 900),
    ("copied from another namespace", copied_foreign, 300),
    ("finished task's record copied", copied_finished, 200),
    ("signed envelope of another purpose", other_purpose, 300),
    ("forged with the attacker's key under our key id", forged, 400),
    ("record deleted", deleted, 100), ("random junk", junk, 100),
]
assert sum(n for _, _, n in ATTACKS) + REQUEUED == TOTAL


# ---- the run ----------------------------------------------------------------------------------
def make_keys() -> Keys:
    return Keys(generate_key("hmac-sha256"), generate_key("ed25519", status="verify-only"),
                generate_key("hmac-sha256", status="verify-only"),
                generate_key("hmac-sha256", status="revoked"))


def forgers(keys: Keys) -> list[tuple[Sealer, str]]:
    """Keys the attacker made, given our key ids (they cannot know our secrets)."""
    own_hmac = SigningKey(keys.active.kid, "hmac-sha256", "active", secret=os.urandom(32))
    own_ed = generate_key("ed25519")
    own_ed = SigningKey(keys.ed_verify.kid, "ed25519", "active", private=own_ed.private,
                        public=own_ed.public)
    return [(Sealer(Keyring([own_hmac])), "hmac"), (Sealer(Keyring([own_ed])), "ed25519")]


@dataclass
class Scene:
    """The store under attack before the attack: 10,000 queued canary tasks, the first
    ``REQUEUED`` of them run legitimately and finished."""

    store: TaskStore
    ids: list[str]
    finished: list[str]  # ran and finished (their signed completions exist)
    targets: list[str]  # still queued: their records get rewritten
    rows: dict[str, list[Any]]  # task id -> its rec, fin, sc, fence, att as stored
    arsenal: Arsenal


def queue_canaries(client: redis.Redis, keys: Keys, namespace: str,
                   rng: random.Random) -> Scene:
    store = store_over(client, Sealer(keys.keyring()), namespace,
                       retry=RetryPolicy(base_s=0.001, cap_s=0.002))
    foreign_store = store_over(client, Sealer(keys.keyring()), namespace + "-other")
    # payloads hold a non-ASCII letter for re-encodings
    specs = [TaskSpec.build(kind=KIND, payload={"i": i, "s": "café-" + "x" * rng.randrange(40)},
                            idempotency_key=f"k{i}" if i % 3 == 0 else None)
             for i in range(TOTAL)]
    ids = store.submit_many(specs)
    legit = store.acquire("legit-worker", REQUEUED, 30)
    assert [x.task_id for x in legit] == ids[:REQUEUED]
    assert all(store.complete("legit-worker", [(x, Outcome(ok=True, result="done"))
                                               for x in legit]))
    finished, targets = ids[:REQUEUED], ids[REQUEUED:]
    pipe = client.pipeline(transaction=False)
    for task_id in ids:
        pipe.hmget(store.keys.task(task_id), ["rec", "fin", "sc", "fence", "att"])
    rows = dict(zip(ids, pipe.execute(), strict=True))
    messenger = Messenger(store.core, "distributor-1")
    arsenal = Arsenal(
        rng, keys, namespace, {t: bytes(rows[t][0]) for t in ids}, ids,
        [foreign_store.sealer.seal("task", record_body(uuid.uuid4().hex, specs[0],
                                                       foreign_store.namespace))
         for _ in range(50)],
        [bytes(rows[t][0]) for t in finished], [bytes(rows[t][1]) for t in finished],
        [messenger.seal(f"{namespace}-worker-{i}", "assign", {"leases": []}) for i in range(20)],
        forgers(keys))
    return Scene(store, ids, finished, targets, rows, arsenal)


Plan = dict[str, tuple[str, frozenset[str] | None]]  # task id -> (attack, reasons it may give)


def tamper(client: redis.Redis, scene: Scene, rng: random.Random) -> Plan:
    """The attacker rewrites the 9,600 queued records (each kind of attack its share, in a
    random order), and re-queues the finished tasks: half pending again, half failed with a
    due retry."""
    keys = scene.store.keys
    plan: Plan = {}
    order = [name for name, _, n in ATTACKS for _ in range(n)]
    rng.shuffle(order)
    by_name = {name: attack for name, attack, _ in ATTACKS}
    pipe = client.pipeline(transaction=False)
    for task_id, name in zip(scene.targets, order, strict=True):
        original = scene.arsenal.records[task_id]
        new, expected = by_name[name](scene.arsenal, task_id, original)
        assert new != original, name
        plan[task_id] = (name, expected)
        if new is None:
            pipe.hdel(keys.task(task_id), "rec")
        else:
            pipe.hset(keys.task(task_id), "rec", new)
    for n, task_id in enumerate(scene.finished):
        if n % 2 == 0:
            pipe.hset(keys.task(task_id), "state", "pending")
            pipe.zadd(keys.queue(KIND), {task_id: float(scene.rows[task_id][2])})
            pipe.hincrby(keys.queued_kinds, KIND, 1)
        else:
            pipe.hset(keys.task(task_id), "state", "failed")
            pipe.zadd(keys.delayed, {task_id: 0})
    pipe.execute()
    return plan


@dataclass
class Drained:
    """A worker leasing until the queue is empty, as the actors do."""

    leases: list[str]  # every lease handed out to be run (any is a failure)
    latency: dict[str, float]  # task id -> the lease round that quarantined it, s
    rounds: int
    seconds: float


def lease_until_empty(client: redis.Redis, store: TaskStore) -> Drained:
    """``acquire_verified`` + run, round after round, until nothing is pending or due."""
    handed_out: list[str] = []
    loop = WorkerLoop(store, "victim-worker", batch=BATCH, ttl_s=30, concurrency=2)
    latency: dict[str, float] = {}
    rounds = 0
    with _runs_lock:
        _runs.clear()
    began = time.monotonic()
    while any(store.queued_ids().values()) or client.zcard(store.keys.delayed):
        rounds += 1
        assert rounds < 2_000, "the queue does not drain"
        t0 = time.perf_counter()
        leases, quarantined = store.acquire_verified(loop.holder, loop.batch, loop.ttl_s)
        handed_out += [lease.task_id for lease in leases]
        loop.process(leases)  # must be empty; anything here is run (and counted)
        took = time.perf_counter() - t0
        for task_id, _fence in quarantined:
            latency[task_id] = took
    seconds = time.monotonic() - began
    loop.close()
    return Drained(handed_out, latency, rounds, seconds)


@dataclass
class Verdict:
    """Per task: rejected (quarantined, or never leased again), audited with a reason; and
    anything that broke the rules."""

    rejected: int = 0
    audited: int = 0
    reasons: dict[str, Counter[str]] = field(default_factory=lambda: defaultdict(Counter))
    problems: list[str] = field(default_factory=list)


def judge(client: redis.Redis, scene: Scene, plan: Plan, verdict: Verdict) -> None:
    """Each tampered task quarantined with exactly one ``rejected`` audit entry whose reason is
    one its attack may produce, and named in its error; each re-queued finished task never
    leased again (fence and attempts unchanged, completion kept) and audited
    ``replay_blocked``."""
    keys = scene.store.keys
    rejected_by: dict[str, list[str]] = defaultdict(list)
    blocked: Counter[str] = Counter()
    for event in read_audit(client, scene.store.namespace):
        if event.ev == "rejected":
            rejected_by[event.fields["id"]].append(event.fields.get("reason", ""))
        elif event.ev == "replay_blocked":
            blocked[event.fields["id"]] += 1
    pipe = client.pipeline(transaction=False)
    for task_id in scene.ids:
        pipe.hmget(keys.task(task_id), ["state", "err", "fence", "att", "fin"])
    after = dict(zip(scene.ids, pipe.execute(), strict=True))
    for task_id, (name, expected) in plan.items():
        state, err, _fence, _att, _fin = after[task_id]
        got = rejected_by.get(task_id, [])
        ok_state = state == b"quarantined"
        verdict.rejected += ok_state
        reason = got[0] if len(got) == 1 else ""
        if len(got) == 1 and reason in REASONS:
            verdict.audited += 1
        verdict.reasons[name][reason or "-"] += 1
        allowed = expected if expected is not None else REASONS
        if not ok_state or len(got) != 1 or reason not in allowed:
            verdict.problems.append(f"{name}: task {task_id} state {state!r}, audit reasons "
                                    f"{got}, expected one of {sorted(allowed)}")
        elif err != f"record failed verification: {reason}".encode():
            verdict.problems.append(f"{name}: task {task_id} error {err!r} does not name "
                                    f"{reason}")
    for task_id in scene.finished:
        state, _err, fence, att, fin = after[task_id]
        before = scene.rows[task_id]
        never_leased = (fence, att) == (before[3], before[4]) and state != b"leased"
        ok = never_leased and fin == before[1] and blocked[task_id] >= 1
        verdict.rejected += never_leased
        verdict.audited += blocked[task_id] >= 1
        verdict.reasons["finished task re-queued"][
            "replay_blocked" if blocked[task_id] else "-"] += 1
        if not ok:
            verdict.problems.append(f"re-queued finished task {task_id}: state {state!r}, fence "
                                    f"{before[3]!r}->{fence!r}, audited {blocked[task_id]} times")


def test_ten_thousand_mutations_are_rejected_audited_and_never_run(
        redis_client: redis.Redis, security_results: ResultsFile,
        security_seed: int, request: pytest.FixtureRequest) -> None:
    began = time.monotonic()
    rng = random.Random(f"{security_seed}/tampering")
    # given: 10,000 queued canary tasks, of which the first 400 ran legitimately and finished
    scene = queue_canaries(redis_client, make_keys(), "tamper" + uuid.uuid4().hex[:8], rng)
    store = scene.store

    # when: the attacker rewrites 9,600 stored records and re-queues the 400 finished tasks
    plan = tamper(redis_client, scene, rng)
    # and a worker leases until the queue is empty (as the actors do: acquire_verified + run)
    drained = lease_until_empty(redis_client, store)

    # then: per task, nothing ran, and each was rejected and audited with the expected reason
    verdict = Verdict()
    executed = sorted(set(_runs) | set(drained.leases))
    if executed:
        verdict.problems.append(f"{len(executed)} tampered or re-queued tasks were executed: "
                                f"{executed[:3]}")
    judge(redis_client, scene, plan, verdict)
    stats = store.stats()
    if stats.get("signature_failures") != TOTAL - REQUEUED:
        verdict.problems.append(f"signature_failures counts {stats.get('signature_failures')}, "
                                f"expected {TOTAL - REQUEUED}")
    if store.status(scene.finished[0]).result != "done":
        verdict.problems.append("a finished task's result changed")

    summary = "; ".join(f"{name}: " + ", ".join(f"{r} {n}" for r, n in c.most_common())
                        for name, c in verdict.reasons.items())
    binary = request.node.callspec.params.get("redis_server", "redis")
    security_results.put(security_row(
        f"1-{binary}", "stored records tampered with (bit flips, garbling, truncation, field, "
        "key-id and algorithm swaps, re-encodings, copies under other keys, other purposes, "
        "forged signatures, deletions, junk) and finished tasks re-queued; a worker leases "
        "until the queue is empty",
        size=f"{TOTAL} attacks, {len(ATTACKS) + 1} kinds", seed=security_seed, attempted=TOTAL,
        executed=len(executed), rejected=verdict.rejected, audited=verdict.audited,
        problems=verdict.problems, latencies_s=list(drained.latency.values()),
        latency_what=f"lease round that quarantined the record (acquire, verify, quarantine; "
                     f"batch {BATCH})",
        duration_s=time.monotonic() - began, env=environment(redis_client),
        notes=f"{drained.rounds} lease rounds in {drained.seconds:.1f} s; reasons: {summary}",
        reasons={name: dict(c) for name, c in verdict.reasons.items()},
        signature_failures=stats.get("signature_failures", 0),
        replays_blocked=stats.get("replays_blocked", 0)))
    assert not verdict.problems, "\n".join(verdict.problems[:20])
    assert verdict.rejected == verdict.audited == TOTAL
    assert store.counts()[TaskState.QUARANTINED.value] == TOTAL - REQUEUED
    assert stats.get("replays_blocked") == REQUEUED
    assert drained.seconds < 60, f"rejecting {TOTAL} mutations took {drained.seconds:.1f} s"
