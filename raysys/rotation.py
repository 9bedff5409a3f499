"""Key rotation and revocation without stranding work.

Rotation procedure (DESIGN.md "Configuration"): add the new key to the keyring everywhere (a
file reloaded within 5 s, or the Secret behind it), make it active, then :func:`resign_all`
re-signs every record and result still signed by another key, and only then is the old key
revoked (:func:`revoke_key` refuses while anything still depends on it).

Re-signing verifies first, with every check acquire makes (signature, key, task id, namespace):
a record that does not verify is left as it is, so rotation never launders a forged record
into a validly signed one. Only the signature changes, never the body, so records of leased
tasks are re-signed too: a lease that later expires requeues bytes the new key signed.
"""

from __future__ import annotations

import logging
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from raysys.errors import IntegrityError, ValidationError
from raysys.keyring import (
    Algorithm,
    Keyring,
    SigningKey,
    generate_key,
    load_keyring_file,
    write_keyring_file,
)
from raysys.keyspace import glob_escape
from raysys.replies import as_text
from raysys.store import COMPLETION, RECORD, TaskStore

log = logging.getLogger("raysys.rotation")

SCAN_BATCH = 500


@dataclass
class SweepReport:
    """What a re-signing sweep did; ``by_key`` counts what it found per old key id."""

    scanned: int = 0
    resigned_records: int = 0
    resigned_results: int = 0
    resigned_snapshots: int = 0
    unverifiable: int = 0
    conflicts: int = 0
    by_key: dict[str, int] = field(default_factory=dict)

    def to_json(self) -> dict[str, Any]:
        return {"scanned": self.scanned, "resigned_records": self.resigned_records,
                "resigned_results": self.resigned_results,
                "resigned_snapshots": self.resigned_snapshots, "unverifiable": self.unverifiable,
                "conflicts_retried": self.conflicts, "by_key": self.by_key}


def rotate_keyring_file(path: Path, alg: Algorithm | None = None) -> tuple[SigningKey, str | None]:
    """Add a new active key to the keyring file; the old active key becomes verify-only."""
    ring = load_keyring_file(path)
    old = next((k for k in ring.keys() if k.status == "active"), None)
    new = generate_key(alg or (old.alg if old else "hmac-sha256"))
    keys = [k.with_status("verify-only") if k.status == "active" else k for k in ring.keys()]
    write_keyring_file(path, Keyring([*keys, new]))
    return new, old.kid if old else None


def revoke_in_file(path: Path, kid: str) -> None:
    """Mark ``kid`` revoked in the keyring file. The active key cannot be revoked."""
    ring = load_keyring_file(path)
    key = ring.get(kid)
    if key is None:
        raise ValidationError(f"no key {kid} in {path}")
    if key.status == "active":
        raise ValidationError(f"key {kid} is the active key: run `raysys keys rotate` first")
    write_keyring_file(path, Keyring(k.with_status("revoked") if k.kid == kid else k
                                     for k in ring.keys()))


def resign_all(store: TaskStore) -> SweepReport:
    """Re-sign, under the active key, every verifiable record and result signed by another key."""
    active = store.sealer.keyring.active.kid
    report = SweepReport()
    for task_ids in _task_batches(store):
        rows = _read(store, task_ids)
        report.scanned += len(task_ids)
        for fld, purpose in (("rec", RECORD), ("fin", COMPLETION)):
            triples = []
            for task_id, values in zip(task_ids, rows, strict=True):
                old = values[fld]
                kid = _kid_of(old)
                if old is None or kid is None or kid == active:
                    continue
                report.by_key[kid] = report.by_key.get(kid, 0) + 1
                new = _resign(store, task_id, old, purpose)
                if new is None:
                    report.unverifiable += 1
                else:
                    triples.append((task_id, old, new))
            done = store.compare_and_set(fld, "*", triples)
            for (task_id, _, _), ok in zip(triples, done, strict=True):
                if not ok:  # changed under us: one careful retry through the optimistic path
                    report.conflicts += 1
                    store.count_conflict_retries()
                    ok = store.replace_record(
                        task_id, lambda data, p=purpose, t=task_id: _resign(store, t, data, p)
                        if _kid_of(data) != active else None, field=fld, states="*")
                if ok:
                    if fld == "rec":
                        report.resigned_records += 1
                    else:
                        report.resigned_results += 1
    _resign_snapshots(store, active, report)
    log.debug("re-signed %d records and %d results under %s (%d unverifiable left as they were)",
             report.resigned_records, report.resigned_results, active, report.unverifiable)
    return report


def _resign_snapshots(store: TaskStore, active: str, report: SweepReport) -> None:
    """Re-sign the manifests of snapshots stored in Redis (files on disk keep their key: keep
    that key verify-only, not revoked, while such backups matter, or save new ones)."""
    from raysys.lua import Scripts
    from raysys.snapshots import SNAPSHOT

    scripts = Scripts(store.client)
    for key, manifest in _stored_manifests(store):
        kid = _kid_of(manifest)
        if kid is None or kid == active:
            continue
        report.by_key[kid] = report.by_key.get(kid, 0) + 1
        try:
            body = store.sealer.open(manifest, SNAPSHOT).body
        except IntegrityError:
            report.unverifiable += 1
            continue
        if int(scripts.run("cas_manifest", [key], [manifest, store.sealer.seal(SNAPSHOT, body)])):
            report.resigned_snapshots += 1
        else:
            report.conflicts += 1


def count_signed_by(store: TaskStore, kid: str) -> int:
    """How many verifiable records, results or stored snapshot manifests still carry ``kid``."""
    from raysys.snapshots import SNAPSHOT

    total = sum(1 for _, manifest in _stored_manifests(store)
                if _kid_of(manifest) == kid and _opens(store, manifest, SNAPSHOT))
    for task_ids in _task_batches(store):
        for task_id, values in zip(task_ids, _read(store, task_ids), strict=True):
            for fld, purpose in (("rec", RECORD), ("fin", COMPLETION)):
                data = values[fld]
                if _kid_of(data) == kid and _verifies(store, task_id, data, purpose):
                    total += 1
    return total


def _task_batches(store: TaskStore) -> Iterator[list[str]]:
    prefix = store.keys.task("")
    batch: list[str] = []
    pattern = glob_escape(prefix) + "*"
    for key in store.client.scan_iter(match=pattern, count=SCAN_BATCH):
        batch.append(as_text(key)[len(prefix):])
        if len(batch) >= SCAN_BATCH:
            yield batch
            batch = []
    if batch:
        yield batch


def _read(store: TaskStore, task_ids: list[str]) -> list[dict[str, bytes | None]]:
    pipe = store.client.pipeline(transaction=False)
    for task_id in task_ids:
        pipe.hmget(store.keys.task(task_id), ["rec", "fin"])
    return [{"rec": rec, "fin": fin} for rec, fin in pipe.execute()]


def _kid_of(data: bytes | None) -> str | None:
    if not data or not data.startswith(b"RS1."):
        return None
    parts = data.split(b".", 2)
    return parts[1].decode("ascii", "replace") if len(parts) == 3 else None


def _resign(store: TaskStore, task_id: str, data: bytes, purpose: str) -> bytes | None:
    """The body re-sealed under the active key, or None when ``data`` does not verify."""
    try:
        body = store.sealer.open(data, purpose).body
    except IntegrityError:
        return None
    if not isinstance(body, dict) or body.get("id") != task_id or body.get("ns") != store.namespace:
        return None
    return store.sealer.seal(purpose, body)


def _stored_manifests(store: TaskStore) -> list[tuple[str, bytes]]:
    """(snapshot hash key, manifest bytes) of every snapshot stored in the namespace."""
    out: list[tuple[str, bytes]] = []
    for snapshot_id in store.client.zrange(store.keys.snapshots, 0, -1):
        key = store.keys.snapshot(as_text(snapshot_id))
        manifest = store.client.hget(key, "m")
        if isinstance(manifest, bytes):
            out.append((key, manifest))
    return out


def _opens(store: TaskStore, data: bytes | None, purpose: str) -> bool:
    try:
        return data is not None and store.sealer.open(data, purpose) is not None
    except IntegrityError:
        return False


def _verifies(store: TaskStore, task_id: str, data: bytes | None, purpose: str) -> bool:
    return data is not None and _resign(store, task_id, data, purpose) is not None
