"""Key rotation and revocation while the actors work: nothing wrongly rejected, then the old
key verifies nothing.

A real local Ray cluster runs the Coordinator, the Distributor and two Workers on the embedded
Redis, all reading one keyring FILE (reloaded within ``RELOAD_BOUND_S``). While a driver keeps
submitting (and reading statuses back), the operator does what DESIGN.md prescribes, twice
(A -> B -> C), with the real commands: ``raysys keys rotate`` (a new active key; queued records
and results re-signed — a backlog is queued just before, so there are records to re-sign),
waits for the nodes to reload, then ``raysys keys revoke`` of the previous key. The processes
meet the new key at different moments (each re-reads the file on its own schedule, as nodes of
a cluster see a Secret update at different times), which is what rotation must survive. Then:

- no wrongful rejection during the rotation: every task submitted succeeds exactly once (commit
  ledger), nothing is quarantined, deferred or counted as a signature failure, no worker
  rejects a message, and no status read meanwhile fails to verify a record or result;
- after the revocation and the reload bound, everything signed only by the revoked key is
  rejected: task records written by a stale node (quarantined, audited ``revoked_key``) and
  assignment messages a stale distributor sends to a worker (refused, nothing run).
"""

from __future__ import annotations

import json
import threading
import time
import uuid
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest
import ray
import redis

import raysys
from raysys.client import Client
from raysys.ledger import CommitLedger, LedgerReport
from raysys.messaging.messenger import Messenger
from raysys.models import TaskSpec, TaskState, TaskStatus
from raysys.redis_server.attach import attach_or_start
from raysys.signing.envelope import Sealer
from raysys.signing.keyring import (
    Keyring,
    SigningKey,
    generate_key,
    load_keyring_file,
    write_keyring_file,
)
from raysys.store import TaskStore
from raysys.store.keyspace import Keyspace, drop_keys, glob_escape
from tests.security.security_results import security_row
from tests.support.cli import Cli, Run, make_cli
from tests.support.results import ResultsFile, environment
from tests.support.stores import read_audit, store_over

pytestmark = [pytest.mark.security, pytest.mark.slow, pytest.mark.timeout(240)]

RELOAD_BOUND_S = 5.0  # DESIGN.md: nodes reload the keyring within 5 s
ROTATIONS = 2  # A -> B -> C: each rotation is one more chance for a node to lag the others
MEASURING_SLACK_S = 1.0  # polling Redis for the new key's first artifacts, on a loaded machine
PLANTED = 100  # records a stale node writes under the revoked key
STALE_MESSAGES = 50  # assignments a stale distributor sends under the revoked key
CHUNK, PACE_S = 20, 0.1  # the driver submits 20 tasks every 0.1 s
BACKLOG = 1000  # submitted at once just before each rotation: queued records to re-sign


class Driver(threading.Thread):
    """Submits ``CHUNK`` echo tasks every ``PACE_S`` until stopped; remembers the ids. Also
    reads back the status of recent tasks, as a waiting caller would, and keeps any status
    whose signed record or result failed verification (a wrongful rejection on the read path).
    """

    def __init__(self, client: Client) -> None:
        super().__init__(name="driver", daemon=True)
        self.client = client
        self.ids: list[str] = []
        self.unreadable: dict[str, str] = {}
        self.reads = 0
        self.error: BaseException | None = None
        self.halt = threading.Event()

    def run(self) -> None:
        n = 0
        try:
            while not self.halt.is_set():
                specs = [TaskSpec.build(kind="echo", payload={"n": n + i}) for i in range(CHUNK)]
                self.ids += self.client.submit_specs(specs)
                n += CHUNK
                recent = self.ids[-4 * CHUNK:]
                for status in self.client.statuses(recent):
                    self.reads += 1
                    if status is not None and status.error and "verification" in status.error:
                        self.unreadable[status.id] = status.error
                self.halt.wait(PACE_S)
        except BaseException as exc:
            self.error = exc

    def burst(self, n: int) -> None:
        """Submit ``n`` tasks at once (from the caller's thread): a backlog."""
        self.ids += self.client.submit_specs([TaskSpec.build(kind="echo", payload={"b": i})
                                              for i in range(n)])


def kids_in_use(conn: redis.Redis, keys: Keyspace, since_ids: list[str]) -> dict[str, set[str]]:
    """Key ids seen on the newest records, completions and message nonces of the namespace."""
    out: dict[str, set[str]] = {"records": set(), "completions": set(), "messages": set()}
    pipe = conn.pipeline(transaction=False)
    for task_id in since_ids:
        pipe.hmget(keys.task(task_id), ["rec", "fin"])
    for rec, fin in pipe.execute():
        if rec:
            out["records"].add(rec.split(b".", 2)[1].decode())
        if fin:
            out["completions"].add(fin.split(b".", 2)[1].decode())
    for key in conn.scan_iter(match=glob_escape(keys.prefix + "nonce:") + "*", count=5000):
        out["messages"].add(key.decode()[len(keys.prefix + "nonce:"):].split(":", 1)[0])
    return out


@pytest.fixture
def deployment(security_ray: str | None, security_data_dir: Path,
               tmp_path: Path) -> Iterator[tuple[Client, redis.Redis, Path]]:
    keyfile = tmp_path / "keys.json"
    write_keyring_file(keyfile, Keyring([generate_key()]))
    namespace = "rot" + uuid.uuid4().hex[:8]
    conn = redis.Redis.from_url(attach_or_start(security_data_dir)[0])
    client = raysys.start(2, data_dir=security_data_dir, namespace=namespace, batch=20,
                          ledger=True, signing_key_file=str(keyfile), lease_ttl_s=5.0,
                          reaper_interval_s=0.5)
    yield client, conn, keyfile
    client.shutdown()
    drop_keys(conn, Keyspace(namespace).pattern())
    CommitLedger(conn, namespace).clear()
    conn.close()


# ---- the operator: rotate, wait for the reload, revoke ----------------------------------------
@dataclass
class Rotations:
    """What the operator's rotations did: the keys revoked, when each role was first seen on
    the new key (s after the keyring file changed), and each rotation's report."""

    revoked: list[SigningKey] = field(default_factory=list)
    switched: list[dict[str, float]] = field(default_factory=list)
    reports: list[dict[str, Any]] = field(default_factory=list)


def first_seen_on(active: str, conn: redis.Redis, keys: Keyspace, driver: Driver,
                  changed: float) -> dict[str, float]:
    """When every role switched to key ``active`` (records: Coordinator; messages:
    Distributor; completions: Workers), timed from the keyring file's change ``changed``;
    watched for the reload bound (and the measuring slack while a role is missing)."""
    seen_at: dict[str, float] = {}
    while time.time() - changed < RELOAD_BOUND_S + MEASURING_SLACK_S:
        for role, kids in kids_in_use(conn, keys, driver.ids[-CHUNK * 3:]).items():
            if active in kids and role not in seen_at:
                seen_at[role] = round(time.time() - changed, 2)
        if len(seen_at) == 3 and time.time() - changed >= RELOAD_BOUND_S:
            break
        time.sleep(0.1)
    return seen_at


def rotate_and_revoke(cli: Cli, keyfile: Path, conn: redis.Redis, keys: Keyspace,
                      driver: Driver, rotations: Rotations) -> None:
    """One rotation as DESIGN.md says: a backlog queued just before (nodes meet the new key at
    different times), the real `raysys keys rotate`, the reload bound, then `raysys keys
    revoke` of the previous key (it re-signs first and refuses while anything still depends
    on the key: exit 6, run it again)."""
    previous = load_keyring_file(keyfile).active
    driver.burst(BACKLOG)
    rotate = cli.run("keys", "rotate", "--json", timeout=60)
    assert rotate.returncode == 0, rotate.stderr
    report = json.loads(rotate.stdout)
    assert report["previous"] == previous.kid and report["unverifiable"] == 0, report
    rotations.reports.append(report)
    # the command writes the keyring file first, then re-signs
    changed = keyfile.stat().st_mtime
    rotations.switched.append(first_seen_on(report["active"], conn, keys, driver, changed))
    revoke: Run | None = None
    for _ in range(3):
        revoke = cli.run("keys", "revoke", previous.kid, "--json", timeout=60)
        if revoke.returncode != 6:
            break
    assert revoke is not None and revoke.returncode == 0, revoke
    rotations.revoked.append(previous)


# ---- stale nodes, holding only a revoked key --------------------------------------------------
def plant_stale_records(conn: redis.Redis, client: Client,
                        revoked: list[SigningKey]) -> tuple[list[TaskStore], list[str]]:
    """Stores of stale nodes (each holding one revoked key as its active one), and the ids of
    the records they wrote: ``PLANTED`` in all."""
    stales = [store_over(conn, Sealer(Keyring([k.with_status("active")])), client.namespace)
              for k in revoked]
    planted = [task_id for n, stale in enumerate(stales) for task_id in stale.submit_many(
        [TaskSpec.build(kind="echo", payload={"stale": i, "key": n})
         for i in range(PLANTED // len(stales))])]
    return stales, planted


def send_stale_assignments(client: Client, stales: list[TaskStore]) -> tuple[list[str], int]:
    """``STALE_MESSAGES`` assignments of made-up tasks, sealed by stale distributors, sent
    straight to the workers; the task ids, and how many the workers refused."""
    party = client.config.overrides.get("distributor_id", "distributor-1")
    stale_distributors = [Messenger(stale.core, party) for stale in stales]
    fake = [uuid.uuid4().hex for _ in range(STALE_MESSAGES)]
    refused = 0
    for n, task_id in enumerate(fake):
        worker = n % 2
        sender = stale_distributors[n % len(stale_distributors)]
        envelope = sender.seal(f"{client.namespace}-worker-{worker}", "assign", {
            "leases": [{"task_id": task_id, "fence": 1, "attempt": 1, "deadline_ms": 0,
                        "kind": "echo", "payload": {"stale": True}, "priority": 0,
                        "max_attempts": 1, "timeout_s": 10.0, "idempotency_key": None}]})
        refused += ray.get(client.worker(worker).assign.remote(envelope), timeout=30) == 0
    return fake, refused


def messages_rejected(client: Client) -> int:
    """Assignments the two workers have rejected so far."""
    return sum(ray.get(client.worker(i).info.remote(), timeout=30)["messages_rejected"]
               for i in (0, 1))


def wait_final(client: Client, ids: list[str]) -> list[TaskStatus]:
    """The statuses of ``ids`` once each succeeded or was quarantined (within 120 s)."""
    deadline = time.monotonic() + 120
    while True:
        statuses = client.wait(ids, timeout=30)
        if all(s.state in (TaskState.SUCCEEDED, TaskState.QUARANTINED) for s in statuses):
            return statuses
        assert time.monotonic() < deadline, "tasks did not finish"


# ---- the verdicts -----------------------------------------------------------------------------
@dataclass
class Wrongful:
    """Rejections of genuine work during the rotations (all must be 0)."""

    failed: list[str]  # genuine tasks that did not succeed
    messages: int  # genuine assignments the workers refused
    unreadable: int  # status reads whose signed record or result failed to verify

    @property
    def total(self) -> int:
        return len(self.failed) + self.messages + self.unreadable


def wrongful_rejections(genuine: list[TaskStatus], ledger: LedgerReport, stats: dict[str, int],
                        rejected_before: int, driver: Driver) -> tuple[list[str], Wrongful]:
    """Every genuine task succeeded exactly once; nothing of it was rejected, deferred or
    refused. The problems, and the counts of wrongful rejections."""
    problems = []
    wrong = Wrongful([s.id for s in genuine if s.state != TaskState.SUCCEEDED],
                     rejected_before, len(driver.unreadable))
    if wrong.failed:
        problems.append(f"{len(wrong.failed)} genuine tasks did not succeed: {wrong.failed[:3]}")
    if ledger.lost or ledger.duplicate_commits:
        problems.append(f"ledger: {ledger.lost} lost, {ledger.duplicate_commits} duplicates")
    if wrong.messages:
        problems.append(f"workers rejected {wrong.messages} genuine assignments during the "
                        "rotation")
    if stats.get("deferred_unknown_key", 0):
        problems.append(f"{stats['deferred_unknown_key']} records were deferred (unknown key)")
    if ledger.quarantined:
        problems.append(f"{ledger.quarantined} genuine tasks quarantined")
    if driver.unreadable:
        problems.append(f"{len(driver.unreadable)} of {driver.reads} status reads during the "
                        f"rotations could not verify a genuine record or result, e.g. "
                        f"{next(iter(driver.unreadable.values()))!r}")
    return problems, wrong


def late_switches(switched: list[dict[str, float]]) -> list[str]:
    """A problem line if a role was not seen on the new key within the reload bound."""
    late = [{role: seen.get(role) for role in ("records", "completions", "messages")
             if seen.get(role) is None or seen[role] > RELOAD_BOUND_S + MEASURING_SLACK_S}
            for seen in switched]
    return [f"not on the new key within the reload bound ({RELOAD_BOUND_S:g} s + "
            f"{MEASURING_SLACK_S:g} s measuring slack): {late}"] if any(late) else []


@dataclass
class Revoked:
    """What became of everything signed only by a revoked key."""

    quarantined: int  # planted records rejected (quarantined)
    audited: int  # planted records audited ``revoked_key``
    refused: int  # stale assignments the workers refused
    counted: int  # assignments the workers counted as rejected meanwhile
    ran: set[str]  # tasks of either kind that started anyway

    def problems(self, signature_failures: int) -> list[str]:
        problems = []
        if self.quarantined != PLANTED or self.audited != PLANTED:
            problems.append(f"records under the revoked key: {self.quarantined}/{PLANTED} "
                            f"quarantined, {self.audited} audited revoked_key")
        if signature_failures != PLANTED + STALE_MESSAGES:
            problems.append(f"signature_failures {signature_failures} (expected only the "
                            f"{PLANTED} stale records and {STALE_MESSAGES} stale messages)")
        if self.refused != STALE_MESSAGES or self.counted != STALE_MESSAGES:
            problems.append(f"assignments under the revoked key: {self.refused}/"
                            f"{STALE_MESSAGES} refused, workers counted {self.counted}")
        if self.ran:
            problems.append(f"{len(self.ran)} tasks signed by the revoked key ran: "
                            f"{sorted(self.ran)[:3]}")
        return problems


def revoked_work(conn: redis.Redis, namespace: str, stale_states: list[TaskStatus],
                 planted: list[str], fake: list[str], refused: int, counted: int) -> Revoked:
    audit = {e.fields["id"]: e.fields.get("reason") for e in read_audit(conn, namespace)
             if e.ev == "rejected"}
    ran = set(CommitLedger(conn, namespace).starts()) & (set(fake) | set(planted))
    return Revoked(sum(1 for s in stale_states if s.state == TaskState.QUARANTINED),
                   sum(1 for task_id in planted if audit.get(task_id) == "revoked_key"),
                   refused, counted, ran)


def rotation_row(tasks: int, rotations: Rotations, revoked: Revoked, wrong: Wrongful,
                 reads: int, deferred: int, **figures: Any) -> dict[str, Any]:
    """The results row; ``figures``: ``seed``, ``problems``, ``duration_s``, ``env``."""
    return security_row(
        "3-rotation",
        f"{ROTATIONS} key rotations (`raysys keys rotate`, the reload bound, `raysys keys "
        "revoke` of the previous key) while the actors run tasks; then stale nodes write "
        "records and send assignments signed only by a revoked key",
        size=f"{tasks} tasks during the rotations, 2 workers; {PLANTED} records and "
             f"{STALE_MESSAGES} messages under revoked keys",
        attempted=PLANTED + STALE_MESSAGES, executed=len(revoked.ran),
        rejected=revoked.quarantined + revoked.refused,
        audited=revoked.audited + revoked.counted,
        notes=f"wrongful rejections (0 expected): {len(wrong.failed)} genuine tasks failed, "
              f"{wrong.messages} genuine assignments refused, {wrong.unreadable} of "
              f"{reads} status reads unverifiable, {deferred} records deferred; the "
              "rotations re-signed "
              + ", ".join(f"{r['resigned_records']} records and {r['resigned_results']} results"
                          for r in rotations.reports)
              + f"; new key first seen (s after the keyring file changed): "
              f"{rotations.switched}",
        wrongful_rejections=wrong.total, switch_s=rotations.switched,
        tasks_during_rotation=tasks, **figures)


def test_rotation_while_tasks_flow_rejects_nothing_and_revocation_rejects_all_old_signatures(
        deployment: tuple[Client, redis.Redis, Path], security_data_dir: Path, tmp_path: Path,
        security_results: ResultsFile, security_seed: int) -> None:
    began = time.monotonic()
    client, conn, keyfile = deployment
    keys = Keyspace(client.namespace)
    cli = make_cli(tmp_path, client.namespace).with_env(
        RAYSYS_DATA_DIR=str(security_data_dir), RAYSYS_SIGNING_KEY_FILE=str(keyfile))

    # given: the pool at work, a driver submitting 200 tasks/s
    driver = Driver(client)
    driver.start()
    time.sleep(2.0)

    # when: the operator rotates twice (A -> B -> C), each time as DESIGN.md says: the real
    # `raysys keys rotate`, the reload bound, then `raysys keys revoke` of the previous key
    rotations = Rotations()
    for _cycle in range(ROTATIONS):
        rotate_and_revoke(cli, keyfile, conn, keys, driver, rotations)
    time.sleep(RELOAD_BOUND_S)  # every node has reloaded the keyring by now

    # and stale nodes, each holding only a revoked key, write records and send assignments
    stales, planted = plant_stale_records(conn, client, rotations.revoked)
    before = messages_rejected(client)
    fake, refused = send_stale_assignments(client, stales)
    time.sleep(2.0)  # the driver keeps going under the new key alone
    driver.halt.set()
    driver.join(timeout=60)
    assert driver.error is None, driver.error
    ids = driver.ids

    # then: every genuine task succeeded once; nothing of it was rejected, deferred or refused
    statuses = wait_final(client, ids + planted)
    genuine, stale_states = statuses[:len(ids)], statuses[len(ids):]
    stats = client.stats()
    rejected_now = messages_rejected(client) - before
    problems, wrong = wrongful_rejections(
        genuine, CommitLedger(conn, client.namespace).report(ids), stats, before, driver)

    # ... and everything signed only by the revoked key was rejected
    revoked = revoked_work(conn, client.namespace, stale_states, planted, fake, refused,
                           rejected_now)
    problems += revoked.problems(stats.get("signature_failures", 0))
    problems += late_switches(rotations.switched)
    security_results.put(rotation_row(
        len(ids), rotations, revoked, wrong, driver.reads, stats.get("deferred_unknown_key", 0),
        seed=security_seed, problems=problems, duration_s=time.monotonic() - began,
        env=environment(conn)))
    assert not problems, "\n".join(problems)
