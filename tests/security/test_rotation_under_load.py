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
import os
import subprocess
import sys
import threading
import time
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import ray
import redis

import raysys
from raysys.client import Client
from raysys.ledger import CommitLedger
from raysys.messaging.messenger import Messenger
from raysys.models import TaskSpec, TaskState
from raysys.redis_server.attach import attach_or_start
from raysys.signing.envelope import Sealer
from raysys.signing.keyring import (
    Keyring,
    SigningKey,
    generate_key,
    load_keyring_file,
    write_keyring_file,
)
from raysys.store.keyspace import Keyspace, drop_keys, glob_escape
from tests.security.security_results import ResultsFile, environment, read_audit, security_row
from tests.support.stores import store_over

pytestmark = [pytest.mark.security, pytest.mark.slow, pytest.mark.timeout(240)]

RELOAD_BOUND_S = 5.0  # DESIGN.md: nodes reload the keyring within 5 s
ROTATIONS = 2  # A -> B -> C: each rotation is one more chance for a node to lag the others
MEASURING_SLACK_S = 1.0  # polling Redis for the new key's first artifacts, on a loaded machine
PLANTED = 100  # records a stale node writes under the revoked key
STALE_MESSAGES = 50  # assignments a stale distributor sends under the revoked key
CHUNK, PACE_S = 20, 0.1  # the driver submits 20 tasks every 0.1 s
BACKLOG = 1000  # submitted at once just before each rotation: queued records to re-sign


def raysys_cli(env: dict[str, str], *args: str) -> subprocess.CompletedProcess[str]:
    script = Path(sys.executable).with_name("raysys")
    return subprocess.run([str(script), *args], env=env, capture_output=True, text=True,
                          timeout=60, stdin=subprocess.DEVNULL, check=False)


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


def test_rotation_while_tasks_flow_rejects_nothing_and_revocation_rejects_all_old_signatures(
        deployment: tuple[Client, redis.Redis, Path], security_data_dir: Path, tmp_path: Path,
        security_results: ResultsFile, security_seed: int) -> None:
    began = time.monotonic()
    client, conn, keyfile = deployment
    keys = Keyspace(client.namespace)
    home = tmp_path / "home"
    home.mkdir()
    cli_env = {k: v for k, v in os.environ.items()
               if not k.startswith(("RAYSYS_", "REDIS_")) and k not in ("LOG_LEVEL", "TMPDIR")}
    cli_env.update(HOME=str(home), RAYSYS_DATA_DIR=str(security_data_dir),
                   RAYSYS_NAMESPACE=client.namespace, RAYSYS_SIGNING_KEY_FILE=str(keyfile))
    problems: list[str] = []

    # given: the pool at work, a driver submitting 200 tasks/s
    driver = Driver(client)
    driver.start()
    time.sleep(2.0)

    # when: the operator rotates twice (A -> B -> C), each time as DESIGN.md says: the real
    # `raysys keys rotate`, the reload bound, then `raysys keys revoke` of the previous key
    revoked_keys: list[SigningKey] = []
    switched: list[dict[str, float]] = []
    rotations: list[dict[str, Any]] = []
    for _cycle in range(ROTATIONS):
        previous = load_keyring_file(keyfile).active
        driver.burst(BACKLOG)  # a queue to re-sign: nodes meet the new key at different times
        rotate = raysys_cli(cli_env, "keys", "rotate", "--json")
        assert rotate.returncode == 0, rotate.stderr
        rotation = json.loads(rotate.stdout)
        assert rotation["previous"] == previous.kid and rotation["unverifiable"] == 0, rotation
        rotations.append(rotation)
        # every role switches to the new key (records: Coordinator; messages: Distributor;
        # completions: Workers), timed from the keyring file's change (the command writes it
        # first, then re-signs) ...
        changed = keyfile.stat().st_mtime
        seen_at: dict[str, float] = {}
        while time.time() - changed < RELOAD_BOUND_S + MEASURING_SLACK_S:
            for role, kids in kids_in_use(conn, keys, driver.ids[-CHUNK * 3:]).items():
                if rotation["active"] in kids and role not in seen_at:
                    seen_at[role] = round(time.time() - changed, 2)
            if len(seen_at) == 3 and time.time() - changed >= RELOAD_BOUND_S:
                break
            time.sleep(0.1)
        switched.append(seen_at)
        # ... then the previous key is revoked (the command re-signs first and refuses while
        # anything still depends on the key: exit 6, run it again)
        for _ in range(3):
            revoke = raysys_cli(cli_env, "keys", "revoke", previous.kid, "--json")
            if revoke.returncode != 6:
                break
        assert revoke.returncode == 0, revoke.stderr
        revoked_keys.append(previous)
    time.sleep(RELOAD_BOUND_S)  # every node has reloaded the keyring by now

    # and stale nodes, each holding only a revoked key, write records and send assignments
    stales = [store_over(conn, Sealer(Keyring([k.with_status("active")])), client.namespace)
              for k in revoked_keys]
    planted = [task_id for n, stale in enumerate(stales) for task_id in stale.submit_many(
        [TaskSpec.build(kind="echo", payload={"stale": i, "key": n})
         for i in range(PLANTED // len(stales))])]
    party = client.config.overrides.get("distributor_id", "distributor-1")
    stale_distributors = [Messenger(stale.core, party) for stale in stales]
    fake = [uuid.uuid4().hex for _ in range(STALE_MESSAGES)]
    before = [ray.get(client.worker(i).info.remote(), timeout=30)["messages_rejected"]
              for i in (0, 1)]
    refused = 0
    for n, task_id in enumerate(fake):
        worker = n % 2
        sender = stale_distributors[n % len(stale_distributors)]
        envelope = sender.seal(f"{client.namespace}-worker-{worker}", "assign", {
            "leases": [{"task_id": task_id, "fence": 1, "attempt": 1, "deadline_ms": 0,
                        "kind": "echo", "payload": {"stale": True}, "priority": 0,
                        "max_attempts": 1, "timeout_s": 10.0, "idempotency_key": None}]})
        refused += ray.get(client.worker(worker).assign.remote(envelope), timeout=30) == 0
    time.sleep(2.0)  # the driver keeps going under the new key alone
    driver.halt.set()
    driver.join(timeout=60)
    assert driver.error is None, driver.error
    ids = driver.ids

    # then: every genuine task succeeded once; nothing of it was rejected, deferred or refused
    deadline = time.monotonic() + 120
    while True:
        statuses = client.wait(ids + planted, timeout=30)
        if all(s.state in (TaskState.SUCCEEDED, TaskState.QUARANTINED) for s in statuses):
            break
        assert time.monotonic() < deadline, "tasks did not finish"
    genuine, stale_states = statuses[:len(ids)], statuses[len(ids):]
    ledger = CommitLedger(conn, client.namespace).report(ids)
    infos = [ray.get(client.worker(i).info.remote(), timeout=30) for i in (0, 1)]
    stats = client.stats()
    wrong = [s.id for s in genuine if s.state != TaskState.SUCCEEDED]
    if wrong:
        problems.append(f"{len(wrong)} genuine tasks did not succeed: {wrong[:3]}")
    if ledger.lost or ledger.duplicate_commits:
        problems.append(f"ledger: {ledger.lost} lost, {ledger.duplicate_commits} duplicates")
    messages_rejected = sum(i["messages_rejected"] for i in infos) - sum(before)
    wrongful_messages = sum(before)
    if wrongful_messages:
        problems.append(f"workers rejected {wrongful_messages} genuine assignments during the "
                        "rotation")
    if stats.get("deferred_unknown_key", 0):
        problems.append(f"{stats['deferred_unknown_key']} records were deferred (unknown key)")
    if ledger.quarantined:
        problems.append(f"{ledger.quarantined} genuine tasks quarantined")
    if driver.unreadable:
        problems.append(f"{len(driver.unreadable)} of {driver.reads} status reads during the "
                        f"rotations could not verify a genuine record or result, e.g. "
                        f"{next(iter(driver.unreadable.values()))!r}")

    # ... and everything signed only by the revoked key was rejected
    audit = {e.fields["id"]: e.fields.get("reason") for e in read_audit(conn, client.namespace)
             if e.ev == "rejected"}
    rejected_records = sum(1 for s in stale_states if s.state == TaskState.QUARANTINED)
    audited = sum(1 for task_id in planted if audit.get(task_id) == "revoked_key")
    if rejected_records != PLANTED or audited != PLANTED:
        problems.append(f"records under the revoked key: {rejected_records}/{PLANTED} "
                        f"quarantined, {audited} audited revoked_key")
    if stats.get("signature_failures", 0) != PLANTED + STALE_MESSAGES:
        problems.append(f"signature_failures {stats.get('signature_failures')} (expected only "
                        f"the {PLANTED} stale records and {STALE_MESSAGES} stale messages)")
    if refused != STALE_MESSAGES or messages_rejected != STALE_MESSAGES:
        problems.append(f"assignments under the revoked key: {refused}/{STALE_MESSAGES} "
                        f"refused, workers counted {messages_rejected}")
    late = [{role: seen.get(role) for role in ("records", "completions", "messages")
             if seen.get(role) is None or seen[role] > RELOAD_BOUND_S + MEASURING_SLACK_S}
            for seen in switched]
    if any(late):
        problems.append(f"not on the new key within the reload bound ({RELOAD_BOUND_S:g} s + "
                        f"{MEASURING_SLACK_S:g} s measuring slack): {late}")
    ran = set(CommitLedger(conn, client.namespace).starts()) & (set(fake) | set(planted))
    if ran:
        problems.append(f"{len(ran)} tasks signed by the revoked key ran: {sorted(ran)[:3]}")

    security_results.put(security_row(
        "3-rotation",
        f"{ROTATIONS} key rotations (`raysys keys rotate`, the reload bound, `raysys keys "
        "revoke` of the previous key) while the actors run tasks; then stale nodes write "
        "records and send assignments signed only by a revoked key",
        size=f"{len(ids)} tasks during the rotations, 2 workers; {PLANTED} records and "
             f"{STALE_MESSAGES} messages under revoked keys", seed=security_seed,
        attempted=PLANTED + STALE_MESSAGES, executed=len(ran),
        rejected=rejected_records + refused, audited=audited + messages_rejected,
        problems=problems, duration_s=time.monotonic() - began, env=environment(conn),
        notes=f"wrongful rejections (0 expected): {len(wrong)} genuine tasks failed, "
              f"{wrongful_messages} genuine assignments refused, {len(driver.unreadable)} of "
              f"{driver.reads} status reads unverifiable, "
              f"{stats.get('deferred_unknown_key', 0)} records deferred; the rotations re-signed "
              + ", ".join(f"{r['resigned_records']} records and {r['resigned_results']} results"
                          for r in rotations)
              + f"; new key first seen (s after the keyring file changed): {switched}",
        wrongful_rejections=len(wrong) + wrongful_messages + len(driver.unreadable),
        switch_s=switched,
        tasks_during_rotation=len(ids)))
    assert not problems, "\n".join(problems)
