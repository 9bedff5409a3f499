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
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from raysys.errors import IntegrityError, ValidationError
from raysys.signing.envelope import signing_kid
from raysys.signing.keyring import (
    Algorithm,
    Keyring,
    SigningKey,
    generate_key,
    load_keyring_file,
    write_keyring_file,
)
from raysys.snapshots.resign import ManifestSweep, manifests_signed_by, resign_manifests
from raysys.store.keyspace import glob_escape
from raysys.store.records import COMPLETION, RECORD
from raysys.store.replies import as_text

if TYPE_CHECKING:
    from raysys.core import Core

log = logging.getLogger(__name__)

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

    def add_manifests(self, sweep: ManifestSweep) -> None:
        self.resigned_snapshots += sweep.resigned
        self.unverifiable += sweep.unverifiable
        self.conflicts += sweep.conflicts
        for kid, n in sweep.by_key.items():
            self.by_key[kid] = self.by_key.get(kid, 0) + n


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


def resign_all(core: Core) -> SweepReport:
    """Re-sign, under the active key, every verifiable record, result and stored snapshot
    manifest signed by another key."""
    active = core.sealer.keyring.active.kid
    report = SweepReport()
    for task_ids in _task_batches(core):
        rows = _read(core, task_ids)
        report.scanned += len(task_ids)
        for fld, purpose in (("rec", RECORD), ("fin", COMPLETION)):
            _resign_field(core, active, task_ids, rows, fld, purpose, report)
    report.add_manifests(resign_manifests(core))
    log.debug("re-signed %d records and %d results under %s (%d unverifiable left as they were)",
              report.resigned_records, report.resigned_results, active, report.unverifiable)
    return report


def _resign_field(core: Core, active: str, task_ids: list[str],
                  rows: list[dict[str, bytes | None]], fld: str, purpose: str,
                  report: SweepReport) -> None:
    """Re-sign field ``fld`` of one batch of tasks: one compare-and-set call, then a careful
    optimistic retry for each task whose bytes changed meanwhile."""
    store = core.store
    triples = []
    for task_id, values in zip(task_ids, rows, strict=True):
        old = values[fld]
        kid = signing_kid(old)
        if old is None or kid is None or kid == active:
            continue
        report.by_key[kid] = report.by_key.get(kid, 0) + 1
        new = _resign(core, task_id, old, purpose)
        if new is None:
            report.unverifiable += 1
        else:
            triples.append((task_id, old, new))
    done = store.compare_and_set(fld, "*", triples)
    for (task_id, _, _), ok in zip(triples, done, strict=True):
        if not ok:  # changed under us: one careful retry through the optimistic path
            report.conflicts += 1
            store.count_conflict_retries()
            ok = store.replace_record(task_id, _resigner(core, active, task_id, purpose),
                                      field=fld, states="*")
        if ok:
            if fld == "rec":
                report.resigned_records += 1
            else:
                report.resigned_results += 1


def _resigner(core: Core, active: str, task_id: str, purpose: str
              ) -> Callable[[bytes], bytes | None]:
    """``data`` re-sealed under ``active``; None when it is already or does not verify."""

    def transform(data: bytes) -> bytes | None:
        return _resign(core, task_id, data, purpose) if signing_kid(data) != active else None

    return transform


def count_signed_by(core: Core, kid: str) -> int:
    """How many verifiable records, results or stored snapshot manifests still carry ``kid``."""
    total = manifests_signed_by(core, kid)
    for task_ids in _task_batches(core):
        for task_id, values in zip(task_ids, _read(core, task_ids), strict=True):
            for fld, purpose in (("rec", RECORD), ("fin", COMPLETION)):
                data = values[fld]
                if signing_kid(data) == kid and _verifies(core, task_id, data, purpose):
                    total += 1
    return total


def _task_batches(core: Core) -> Iterator[list[str]]:
    prefix = core.keys.task("")
    batch: list[str] = []
    pattern = glob_escape(prefix) + "*"
    for key in core.client.scan_iter(match=pattern, count=SCAN_BATCH):
        batch.append(as_text(key)[len(prefix):])
        if len(batch) >= SCAN_BATCH:
            yield batch
            batch = []
    if batch:
        yield batch


def _read(core: Core, task_ids: list[str]) -> list[dict[str, bytes | None]]:
    pipe = core.client.pipeline(transaction=False)
    for task_id in task_ids:
        pipe.hmget(core.keys.task(task_id), ["rec", "fin"])
    return [{"rec": rec, "fin": fin} for rec, fin in pipe.execute()]


def _resign(core: Core, task_id: str, data: bytes, purpose: str) -> bytes | None:
    """The body re-sealed under the active key, or None when ``data`` does not verify, or is a
    task record issued before the replay window (re-signing it would launder a replay). The
    window is judged by this machine's clock: the purge margin covers the skew (retention.py).
    """
    if purpose == RECORD:
        return core.store.resealed(task_id, data, purpose, now_ms=int(time.time() * 1000))
    try:
        body = core.sealer.open(data, purpose).body
    except IntegrityError:
        return None
    if not isinstance(body, dict) or body.get("id") != task_id or body.get("ns") != core.namespace:
        return None
    return core.sealer.seal(purpose, body)


def _verifies(core: Core, task_id: str, data: bytes | None, purpose: str) -> bool:
    return data is not None and _resign(core, task_id, data, purpose) is not None
