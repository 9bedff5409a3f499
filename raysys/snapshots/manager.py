"""Snapshots: a signed, consistent point-in-time copy of one namespace, and its restore.

``SnapshotManager(core).save()`` copies every key under the namespace prefix in one Lua script
(``snapshot_read.lua``: a full SCAN plus DUMP and PTTL of each key, so nothing changes between
the first key and the last) and signs a manifest with the store's keyring (envelope purpose
``snapshot``): namespace, id, server time, key and task counts, counts by state, the fence
counter, and the sha256 and length of the data. ``restore`` checks the manifest signature and
then the data digest before it writes anything; one script (``snapshot_write.lua``) then
RESTOREs every key into the empty namespace, all or nothing.

Where snapshots live: in Redis inside the namespace they copy, in the same hash slot,

* ``{raysys:<ns>}:snap:<id>``: hash, ``m`` = the signed manifest, ``n`` = number of data chunks,
  ``0``, ``1``, ... = the data in chunks of at most ``CHUNK_BYTES``;
* ``{raysys:<ns>}:snaps``: sorted set, snapshot id scored by its server creation time (ms);

and, with ``out``, in one file (mode 0600, replaced atomically)::

    RAYSYS-SNAPSHOT 1\\n<signed manifest envelope>\\n<data: exactly data_bytes bytes>

A snapshot never contains snapshot keys. Dropping or flushing the namespace drops its stored
snapshots too: the file is the backup; the copies in Redis undo mistakes (a bad deploy, deleted
tasks) on a Redis that is still there. Restore by id reads the snapshot from the store's own
namespace, so it works once the other keys are gone (the snapshot keys may stay).

A snapshot restores only into the namespace it was taken from: task and completion records are
signed for their namespace, so anywhere else they would be quarantined. Restore needs an empty
namespace (its snapshot keys, fence counter and run id aside); the fence counter continues at
max(current, the snapshot's), and the run id is dropped so the next grant raises fences to the
server-clock floor: above every fence handed out, even after the snapshot was taken. Leases in
flight at snapshot time come back with their deadlines; the reaper takes them back once expired.

Data: per key, ordered by name, ``>I`` name length, the name after the prefix, ``>q`` PTTL in ms
(-1: none), ``>I`` payload length, the DUMP payload. A DUMP restores only into a server that
reads its RDB version (same or newer); the manifest names the server it came from.
"""

from __future__ import annotations

import hashlib
import hmac
import logging
import re
import time
from dataclasses import asdict, dataclass
from datetime import UTC, datetime
from importlib import metadata
from pathlib import Path
from typing import TYPE_CHECKING, Any

import redis

from raysys.errors import IntegrityError, NotFound, RaysysError, ValidationError
from raysys.models import TaskState
from raysys.signing.envelope import Opened
from raysys.snapshots.format import (
    Entry,
    decode_entries,
    encode_entries,
    new_snapshot_id,
    read_snapshot_file,
    write_snapshot_file,
)
from raysys.store.records import AUDIT_MAXLEN
from raysys.store.replies import as_bytes, as_text

if TYPE_CHECKING:
    from raysys.core import Core

log = logging.getLogger(__name__)

SNAPSHOT = "snapshot"  # envelope purpose of a manifest
FORMAT = 1
CHUNK_BYTES = 4 << 20
SCAN_COUNT = 1000
BLOCK_S_PER_TASK = 17e-6  # measured: Redis is blocked about this long per task by save
BLOCK_WARN_S = 2.0
SNAPSHOT_ID_PATTERN = r"^[0-9]{8}T[0-9]{6}Z-[0-9a-f]{8}$"
_SNAPSHOT_ID = re.compile(SNAPSHOT_ID_PATTERN)


class NamespaceNotEmpty(ValidationError):
    """Restore refused: the namespace already holds keys (exit 3). Nothing was written."""

    def __init__(self, message: str, *, tasks: int, others: int) -> None:
        super().__init__(message)
        self.tasks = tasks
        self.others = others


@dataclass(frozen=True, slots=True)
class SnapshotInfo:
    """What a verified manifest says. ``signed_by`` is the key id that signed it."""

    id: str
    namespace: str
    created_ms: int
    keys: int
    tasks: int
    counts: dict[str, int]
    fence: int
    sha256: str
    data_bytes: int
    raysys_version: str
    server: str
    signed_by: str

    @property
    def created(self) -> str:
        """Server creation time, ISO 8601 UTC (millisecond precision)."""
        return datetime.fromtimestamp(self.created_ms / 1000, UTC).isoformat(
            timespec="milliseconds").replace("+00:00", "Z")

    def to_json(self) -> dict[str, Any]:
        return {**asdict(self), "created": self.created}


@dataclass(frozen=True, slots=True)
class RestoreReport:
    """A finished restore: what came back, and where the fence counter now stands."""

    snapshot: SnapshotInfo
    source: str  # "redis" or the file's path
    restored_keys: int
    fence: int

    def to_json(self) -> dict[str, Any]:
        return {"snapshot": self.snapshot.to_json(), "source": self.source,
                "restored_keys": self.restored_keys, "fence": self.fence}


InfoList = list[SnapshotInfo]  # aliases: inside SnapshotManager, `list` names its method
EntryList = list[Entry]
IdList = list[str]


class SnapshotManager:
    """Save, list and restore snapshots of one store's namespace."""

    def __init__(self, core: Core) -> None:
        self.core = core
        self.store = core.store
        self.client: redis.Redis = core.client
        self.prefix = core.keys.prefix
        self.index = core.keys.snapshots
        self._pattern = core.keys.pattern()
        self._scripts = core.scripts

    def key(self, snapshot_id: str) -> str:
        """Hash holding one stored snapshot: ``m`` manifest, ``n`` chunk count, data chunks."""
        return self.store.keys.snapshot(snapshot_id)

    # ---- save ---------------------------------------------------------------------------
    def save(self, out: Path | str | None = None, *, keep: bool = True) -> SnapshotInfo:
        """Copy the namespace at one instant; store it in Redis (``keep``) and/or in ``out``."""
        if not keep and out is None:
            raise ValidationError("a snapshot kept nowhere: give a file or keep it in Redis")
        k = self.store.keys
        blocked = sum(self.store.counts().values()) * BLOCK_S_PER_TASK
        if blocked > BLOCK_WARN_S:
            log.warning("snapshot of namespace %s blocks Redis for about %.0f s (past 5 s, other "
                        "clients get BUSY replies until it ends)", self.store.namespace, blocked)
        started = time.perf_counter()
        reply = self._scripts.run("snapshot_read", [k.counts, k.fence],
                                  [self.prefix, self._pattern, SCAN_COUNT])
        copied = time.perf_counter()
        created_ms, fence, flat_counts = int(reply[0]), int(reply[1]), reply[2]
        entries = sorted((bytes(reply[i]), int(reply[i + 1]), bytes(reply[i + 2]))
                         for i in range(3, len(reply), 3))
        data = encode_entries(entries)
        counts = {as_text(flat_counts[i], errors="replace"): int(flat_counts[i + 1])
                  for i in range(0, len(flat_counts), 2)}
        body = {
            "format": FORMAT,
            "id": new_snapshot_id(),
            "namespace": self.store.namespace,
            "created_ms": created_ms,
            "keys": len(entries),
            "tasks": sum(1 for name, _, _ in entries if name.startswith(b"t:")),
            "counts": {state.value: counts.get(state.value, 0) for state in TaskState},
            "fence": fence,
            "sha256": hashlib.sha256(data).hexdigest(),
            "data_bytes": len(data),
            "raysys_version": _raysys_version(),
            "server": self._server_version(),
        }
        manifest = self.store.sealer.seal(SNAPSHOT, body)
        info = _info(self.store.sealer.open(manifest, SNAPSHOT))
        if out is not None:
            write_snapshot_file(Path(out), manifest, data)
        if keep:
            self._keep(info, manifest, data)
        log.info("snapshot %s saved: %d keys, %d tasks, %d bytes; Redis blocked %.3f s, "
                 "total %.3f s", info.id, info.keys, info.tasks, info.data_bytes,
                 copied - started, time.perf_counter() - started)
        return info

    def _keep(self, info: SnapshotInfo, manifest: bytes, data: bytes) -> None:
        chunks = [data[i:i + CHUNK_BYTES] for i in range(0, len(data), CHUNK_BYTES)]
        fields: dict[str, bytes | int] = {"m": manifest, "n": len(chunks)}
        fields.update({str(i): chunk for i, chunk in enumerate(chunks)})
        pipe = self.client.pipeline(transaction=True)
        pipe.hset(self.key(info.id), mapping=fields)  # type: ignore[arg-type]
        pipe.zadd(self.index, {info.id: info.created_ms})
        if self.store.audit_enabled:
            pipe.xadd(self.store.keys.audit, {"ev": "snapshot_saved", "snapshot": info.id,
                                              "keys": info.keys},
                      maxlen=AUDIT_MAXLEN, approximate=True)
        try:
            pipe.execute()
        except redis.ResponseError as exc:
            raise RaysysError(f"Redis refused to store snapshot {info.id} "
                              f"({info.data_bytes} bytes): {exc}") from None

    def _server_version(self) -> str:
        server = self.client.info("server")
        if "valkey_version" in server:
            return f"valkey {server['valkey_version']}"
        return f"{server.get('server_name') or 'redis'} {server.get('redis_version', '?')}"

    # ---- list and load ------------------------------------------------------------------
    def list(self) -> InfoList:
        """The snapshots stored in Redis, oldest first; each manifest verified (failures logged)."""
        ids = [as_text(i, errors="replace") for i in self.client.zrange(self.index, 0, -1)]
        pipe = self.client.pipeline(transaction=False)
        for snapshot_id in ids:
            pipe.hget(self.key(snapshot_id), "m")
        out: InfoList = []
        for snapshot_id, manifest in zip(ids, pipe.execute(), strict=True):
            try:
                out.append(self._verify_manifest(manifest, snapshot_id))
            except IntegrityError as exc:
                log.error("stored snapshot %s failed verification (%s): %s", snapshot_id,
                          exc.reason, exc)
        return out

    def delete(self, snapshot_id: str) -> bool:
        """Drop a stored snapshot; False if there was none."""
        _check_id(snapshot_id)
        pipe = self.client.pipeline(transaction=True)
        pipe.delete(self.key(snapshot_id))
        pipe.zrem(self.index, snapshot_id)
        return bool(pipe.execute()[0])

    def prune(self, keep: int) -> IdList:
        """Drop the oldest stored snapshots beyond the newest ``keep``; their ids."""
        if keep < 0:
            raise ValidationError("keep must be >= 0")
        old = [as_text(i, errors="replace")
               for i in self.client.zrange(self.index, 0, -keep - 1)] if keep else []
        dropped: IdList = []
        for snapshot_id in old:
            try:
                if self.delete(snapshot_id):
                    dropped.append(snapshot_id)
            except ValidationError:  # not a snapshot id (written by someone else): unindex it
                self.client.zrem(self.index, snapshot_id)
        return dropped

    def load(self, source: str | Path) -> tuple[SnapshotInfo, EntryList]:
        """Read and verify a snapshot (manifest signature, then data digest); write nothing.

        ``source`` is a snapshot id (a ``str`` matching :data:`SNAPSHOT_ID_PATTERN`: stored in
        this namespace) or a file path (a ``Path``, or any other string).
        """
        if isinstance(source, str) and _SNAPSHOT_ID.match(source):
            manifest, data = self._read_stored(source)
            return self._verify(manifest, data, source)
        path = Path(source)
        manifest, data = read_snapshot_file(path)
        return self._verify(manifest, data, None)

    def _read_stored(self, snapshot_id: str) -> tuple[bytes, bytes]:
        manifest, n = self.client.hmget(self.key(snapshot_id), ["m", "n"])
        if manifest is None:
            raise NotFound(f"no snapshot {snapshot_id} in namespace {self.store.namespace}")
        try:
            fields = [str(i) for i in range(int(n or 0))]
        except ValueError:
            raise IntegrityError(f"stored snapshot {snapshot_id} is malformed",
                                 reason="malformed") from None
        chunks = self.client.hmget(self.key(snapshot_id), fields) if fields else []
        if any(chunk is None for chunk in chunks):
            raise IntegrityError(f"stored snapshot {snapshot_id} lacks data chunks",
                                 reason="malformed")
        return as_bytes(manifest), b"".join(as_bytes(chunk) for chunk in chunks)

    def _verify_manifest(self, manifest: bytes | None, snapshot_id: str | None) -> SnapshotInfo:
        if manifest is None:
            raise IntegrityError("snapshot has no manifest", reason="malformed")
        info = _info(self.store.sealer.open(bytes(manifest), SNAPSHOT))
        if snapshot_id is not None and info.id != snapshot_id:
            raise IntegrityError(f"manifest of snapshot {info.id} stored as {snapshot_id}",
                                 reason="copied_record")
        return info

    def _verify(self, manifest: bytes, data: bytes, snapshot_id: str | None
                ) -> tuple[SnapshotInfo, EntryList]:
        info = self._verify_manifest(manifest, snapshot_id)
        digest = hashlib.sha256(data).hexdigest()
        if len(data) != info.data_bytes or not hmac.compare_digest(digest, info.sha256):
            raise IntegrityError(f"snapshot {info.id}: data does not match the signed digest "
                                 "(changed or truncated)", reason="digest_mismatch")
        entries = decode_entries(data)
        if len(entries) != info.keys:
            raise IntegrityError(f"snapshot {info.id}: {len(entries)} keys, manifest says "
                                 f"{info.keys}", reason="malformed")
        return info, entries

    # ---- restore ------------------------------------------------------------------------
    def restore(self, source: str | Path) -> RestoreReport:
        """Verify a snapshot (id or file, as in :meth:`load`), then restore it, all or nothing.

        Raises IntegrityError (nothing written) if the manifest or data fails verification,
        ValidationError for another namespace's snapshot, NamespaceNotEmpty when keys exist.
        """
        info, entries = self.load(source)
        if info.namespace != self.store.namespace:
            raise ValidationError(
                f"snapshot {info.id} is of namespace {info.namespace!r}, not "
                f"{self.store.namespace!r}: its records are signed for that namespace only")
        self._require_empty()  # early and cheap; the script checks again, atomically
        k = self.store.keys
        args: list[Any] = [self.prefix, self._pattern, SCAN_COUNT, info.fence, info.id,
                           "1" if self.store.audit_enabled else "0", AUDIT_MAXLEN]
        for name, pttl, payload in entries:
            args += [name, max(pttl, 1) if pttl >= 0 else 0, payload]
        started = time.perf_counter()
        reply = self._scripts.run("snapshot_write", [k.fence, k.run_id, k.audit], args)
        status = int(reply[0])
        if status == 0:
            raise _not_empty(self.store.namespace, int(reply[1]), int(reply[2]),
                             [as_text(s, errors="replace") for s in reply[3:]])
        if status < 0:
            key, reason = as_text(reply[1], errors="replace"), as_text(reply[2], errors="replace")
            raise ValidationError(
                f"Redis refused key {key!r} of snapshot {info.id}: {reason}; "
                f"nothing was restored (the snapshot comes from {info.server}, this server is "
                f"{self._server_version()}: a DUMP restores only into the same or a newer one)")
        where = "redis" if isinstance(source, str) and _SNAPSHOT_ID.match(source) else str(source)
        report = RestoreReport(info, where, int(reply[1]), int(reply[2]))
        log.warning("restored snapshot %s from %s into namespace %s: %d keys, %d tasks, in "
                    "%.3f s; fences continue above %d", info.id, where, info.namespace,
                    report.restored_keys, info.tasks, time.perf_counter() - started, report.fence)
        return report

    def _require_empty(self) -> None:
        keys = self.store.keys
        ignored = {keys.fence, keys.run_id, keys.wake, self.index}  # wake: a hint, not state
        tasks, others, sample = 0, 0, list[str]()
        for raw in self.client.scan_iter(match=self._pattern, count=SCAN_COUNT):
            key = as_text(raw, errors="replace")
            if key in ignored or key.startswith(self.prefix + "snap:"):
                continue
            name = key[len(self.prefix):]
            if name.startswith("t:"):
                tasks += 1
            else:
                others += 1
            if len(sample) < 3:
                sample.append(name)
        if tasks or others:
            raise _not_empty(self.store.namespace, tasks, others, sample)



# ---- helpers ------------------------------------------------------------------------------
_FIELDS: dict[str, type] = {
    "format": int, "id": str, "namespace": str, "created_ms": int, "keys": int, "tasks": int,
    "counts": dict, "fence": int, "sha256": str, "data_bytes": int, "raysys_version": str,
    "server": str,
}


def _info(opened: Opened) -> SnapshotInfo:
    body = opened.body
    if not isinstance(body, dict) or any(not isinstance(body.get(f), t) for f, t in
                                         _FIELDS.items()):
        raise IntegrityError("snapshot manifest lacks required fields", reason="malformed")
    if body["format"] != FORMAT:
        raise IntegrityError(f"unsupported snapshot format {body['format']}", reason="malformed")
    if not _SNAPSHOT_ID.match(body["id"]):
        raise IntegrityError("snapshot manifest names a malformed id", reason="malformed")
    counts = {str(k): int(v) for k, v in body["counts"].items()}
    return SnapshotInfo(body["id"], body["namespace"], body["created_ms"], body["keys"],
                        body["tasks"], counts, body["fence"], body["sha256"], body["data_bytes"],
                        body["raysys_version"], body["server"], opened.kid)


def _not_empty(namespace: str, tasks: int, others: int, sample: list[str]) -> NamespaceNotEmpty:
    return NamespaceNotEmpty(
        f"namespace {namespace} is not empty: it holds {tasks} task(s) and {others} other "
        f"key(s) (e.g. {', '.join(sample)}); restore needs an empty namespace: delete its keys "
        "first (stored snapshots may stay)", tasks=tasks, others=others)


def _check_id(snapshot_id: str) -> None:
    if not _SNAPSHOT_ID.match(snapshot_id):
        raise ValidationError(f"{snapshot_id!r} is not a snapshot id (like 20250101T120000Z-"
                              "0a1b2c3d)")


def _raysys_version() -> str:
    try:
        return metadata.version("raysys")
    except metadata.PackageNotFoundError:
        return "unknown"
