"""Snapshots: a signed, consistent point-in-time copy of one namespace, and its restore.

``SnapshotManager(core).save()`` copies every key under the namespace prefix in pages of
``PAGE_KEYS`` keys (``snapshot_chunk.lua``: DUMP and PTTL of each), so no script runs long:
about 10 ms per page, for any size. Consistency: a **write barrier**. Before the first page the
save raises the namespace's barrier (``barrier.lua``); every script that changes task state
checks it first and, while it stands, changes nothing and is sent again by its caller
(``raysys/store/lua.py``). So nothing a task depends on changes between the first page and the
last: the copy is one instant (that of raising the barrier). Writes pause for the length of the
save (measured: docs/PERFORMANCE.md); lowering the barrier moves every lease deadline on by the
pause, so no lease expires because of it. Heartbeats and other soft state (worker beats, the
kinds book, schedule definitions) are not held back. A save that dies leaves a barrier that
expires after ``BARRIER_TTL_MS``; a page finding its barrier gone abandons the save.

The data streams through a temporary file (never whole in memory), and the manifest is signed
with the store's keyring (envelope purpose ``snapshot``): namespace, id, server time, key and
task counts, counts by state, the fence counter, and the sha256 and length of the data.
``restore`` checks the manifest signature and then the data digest before it writes anything;
it then raises the **restoring marker** (``restore_begin.lua``, only on an empty namespace),
RESTOREs page by page under it, and takes it down at the end (``restore_finish.lua``). While
the marker stands every task-state script waits, so nobody works on a half-restored namespace;
a restore that dies leaves the marker, and the next ``restore`` clears what the dead one wrote
and starts over.

Where snapshots live: in Redis inside the namespace they copy, in the same hash slot,

* ``{raysys:<ns>}:snap:<id>``: hash, ``m`` = the signed manifest, ``n`` = number of data chunks,
  ``0``, ``1``, ... = the data in chunks of at most ``CHUNK_BYTES``;
* ``{raysys:<ns>}:snaps``: sorted set, snapshot id scored by its server creation time (ms);

and, with ``out``, in one file (mode 0600, replaced atomically)::

    RAYSYS-SNAPSHOT 1\\n<signed manifest envelope>\\n<data: exactly data_bytes bytes>

Periodic snapshots (``raysys snapshot save --every``) go to files only. A snapshot never
contains snapshot keys. Dropping or flushing the namespace drops its stored snapshots too: the
file is the backup; the copies in Redis undo mistakes (a bad deploy, deleted tasks) on a Redis
that is still there. Restore by id reads the snapshot from the store's own namespace, so it
works once the other keys are gone (the snapshot keys may stay).

A snapshot restores only into the namespace it was taken from: task and completion records are
signed for their namespace, so anywhere else they would be quarantined. Restore needs an empty
namespace (its snapshot keys, fence counter and run id aside); the fence counter continues at
max(current, the snapshot's), and the run id is dropped so the next grant raises fences to the
server-clock floor: above every fence handed out, even after the snapshot was taken. Leases in
flight at snapshot time come back with their deadlines; the reaper takes them back once expired.

Data: per key, ``>I`` name length, the name after the prefix, ``>q`` PTTL in ms (-1: none),
``>I`` payload length, the DUMP payload. A DUMP restores only into a server that reads its RDB
version (same or newer); the manifest names the server it came from.
"""

from __future__ import annotations

import hmac
import logging
import re
import tempfile
import time
from collections.abc import Iterator
from contextlib import ExitStack, contextmanager
from dataclasses import asdict, dataclass
from datetime import UTC, datetime
from importlib import metadata
from pathlib import Path
from typing import TYPE_CHECKING, Any, BinaryIO

import redis

from raysys.errors import IntegrityError, NotFound, RaysysError, ValidationError
from raysys.models import TaskState
from raysys.signing.envelope import Opened
from raysys.snapshots.format import (
    Entry,
    EntryWriter,
    hash_file_part,
    iter_entries,
    new_snapshot_id,
    open_snapshot_file,
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
PAGE_KEYS = 1000  # keys one snapshot_chunk / restore_chunk script copies (~10 ms of Redis time)
RESTORE_PAGE_BYTES = 8 << 20  # and at most this many payload bytes per restore page
BARRIER_TTL_MS = 30_000  # a save that dies holds writes off at most this long
NOT_COPIED = frozenset({"snaps", "wake", "barrier", "restoring"})
# In the copy but never restored: the fence counter only rises (restore_finish.lua takes the
# larger), and the run id is dropped so the next grant raises fences to the clock floor.
NOT_RESTORED = frozenset({"fence", "runid"})
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
ArgList = list[Any]


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
        self.last_timing: dict[str, float] = {}  # of the last save or restore (benchmarks)

    def key(self, snapshot_id: str) -> str:
        """Hash holding one stored snapshot: ``m`` manifest, ``n`` chunk count, data chunks."""
        return self.store.keys.snapshot(snapshot_id)

    # ---- save ---------------------------------------------------------------------------
    def save(self, out: Path | str | None = None, *, keep: bool = True) -> SnapshotInfo:
        """Copy the namespace at one instant; store it in Redis (``keep``) and/or in ``out``."""
        if not keep and out is None:
            raise ValidationError("a snapshot kept nowhere: give a file or keep it in Redis")
        k = self.store.keys
        snapshot_id = new_snapshot_id()
        started = time.perf_counter()
        raised = self._scripts.run("barrier", [k.barrier, k.leases],
                                   ["on", snapshot_id, BARRIER_TTL_MS])
        if int(raised[0]) != 1:
            raise RaysysError(f"another snapshot or restore ({as_text(raised[1])}) holds "
                              f"namespace {self.store.namespace}; try again when it is done")
        created_ms = int(raised[1])
        with tempfile.TemporaryFile(prefix="raysys-snapshot-") as data:
            writer = EntryWriter(data)
            try:
                counts = self.store.counts()
                fence = self.store.fence_value()
                tasks, longest = self._copy(snapshot_id, writer)
            finally:
                lowered = self._scripts.run("barrier", [k.barrier, k.leases],
                                            ["off", snapshot_id, BARRIER_TTL_MS])
            paused = time.perf_counter() - started
            if int(lowered[0]) != 1:
                raise RaysysError(f"snapshot {snapshot_id} abandoned: its write barrier expired "
                                  "before the copy ended (writes may have happened)")
            body = {
                "format": FORMAT,
                "id": snapshot_id,
                "namespace": self.store.namespace,
                "created_ms": created_ms,
                "keys": writer.count,
                "tasks": tasks,
                "counts": {state.value: counts.get(state.value, 0) for state in TaskState},
                "fence": fence,
                "sha256": writer.digest.hexdigest(),
                "data_bytes": writer.length,
                "raysys_version": _raysys_version(),
                "server": self._server_version(),
            }
            manifest = self.store.sealer.seal(SNAPSHOT, body)
            info = _info(self.store.sealer.open(manifest, SNAPSHOT))
            if out is not None:
                data.seek(0)
                write_snapshot_file(Path(out), manifest, data)
            if keep:
                data.seek(0)
                self._keep(info, manifest, data)
        self.last_timing = {"paused_s": paused, "longest_script_s": longest,
                            "total_s": time.perf_counter() - started}
        log.info("snapshot %s saved: %d keys, %d tasks, %d bytes; writes paused %.3f s, longest "
                 "script %.1f ms, total %.3f s", info.id, info.keys, info.tasks,
                 info.data_bytes, paused, longest * 1000, self.last_timing["total_s"])
        return info

    def _copy(self, snapshot_id: str, writer: EntryWriter) -> tuple[int, float]:
        """Copy every key, page by page, under the barrier; (task keys, longest page in s)."""
        barrier = self.store.keys.barrier
        tasks, longest = 0, 0.0
        for page in self._pages():
            began = time.perf_counter()
            reply = self._scripts.run("snapshot_chunk", [barrier, *page],
                                      [snapshot_id, BARRIER_TTL_MS])
            longest = max(longest, time.perf_counter() - began)
            if int(reply[0]) != 1:
                raise RaysysError(f"snapshot {snapshot_id} abandoned: its write barrier "
                                  "expired (a page took longer than "
                                  f"{BARRIER_TTL_MS / 1000:.0f} s?)")
            for i, key in enumerate(page):
                pttl, payload = int(reply[1 + 2 * i]), reply[2 + 2 * i]
                if pttl == -2:
                    continue
                name = key[len(self.prefix):].encode()
                writer.add(name, pttl, as_bytes(payload))
                tasks += name.startswith(b"t:")
        return tasks, longest

    def _pages(self) -> Iterator[list[str]]:
        """The namespace's keys (snapshot keys, the barrier, marker and wake-up list left
        out) in pages of ``PAGE_KEYS``, each once."""
        seen: set[str] = set()
        page: list[str] = []
        for raw in self.client.scan_iter(match=self._pattern, count=SCAN_COUNT):
            key = as_text(raw, errors="surrogateescape")
            if key in seen or _not_copied(key[len(self.prefix):]):
                continue
            seen.add(key)
            page.append(key)
            if len(page) >= PAGE_KEYS:
                yield page
                page = []
        if page:
            yield page

    def _keep(self, info: SnapshotInfo, manifest: bytes, data: BinaryIO) -> None:
        """Store the snapshot in Redis in chunks; the index entry last, so a store cut short
        is never listed (and its hash is dropped)."""
        key = self.key(info.id)
        n = 0
        try:
            pipe = self.client.pipeline(transaction=False)
            pipe.hset(key, "m", manifest)
            while chunk := data.read(CHUNK_BYTES):
                pipe.hset(key, str(n), chunk)
                n += 1
                if n % 16 == 0:
                    pipe.execute()
            pipe.hset(key, "n", n)
            pipe.zadd(self.index, {info.id: info.created_ms})
            if self.store.audit_enabled:
                pipe.xadd(self.store.keys.audit, {"ev": "snapshot_saved", "snapshot": info.id,
                                                  "keys": info.keys},
                          maxlen=AUDIT_MAXLEN, approximate=True)
            pipe.execute()
        except redis.ResponseError as exc:
            self.client.delete(key)
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
        All its entries in memory: for tools and tests (``restore`` streams).

        ``source`` is a snapshot id (a ``str`` matching :data:`SNAPSHOT_ID_PATTERN`: stored in
        this namespace) or a file path (a ``Path``, or any other string).
        """
        with self._verified(source) as (info, data):
            entries = list(iter_entries(data, info.data_bytes))
        if len(entries) != info.keys:
            raise IntegrityError(f"snapshot {info.id}: {len(entries)} keys, manifest says "
                                 f"{info.keys}", reason="malformed")
        return info, entries

    @contextmanager
    def _verified(self, source: str | Path) -> Iterator[tuple[SnapshotInfo, BinaryIO]]:
        """The verified manifest, and the data as a file positioned at its start (the digest
        checked over every byte first). Nothing is trusted before both checks pass."""
        with ExitStack() as stack:
            if isinstance(source, str) and _SNAPSHOT_ID.match(source):
                manifest, data = self._stored(source, stack)
                info = self._verify_manifest(manifest, source)
            else:
                manifest, data = open_snapshot_file(Path(source))
                stack.callback(data.close)
                info = self._verify_manifest(manifest, None)
            start = data.tell()
            digest, length = hash_file_part(data, info.data_bytes + 1)
            if length != info.data_bytes or not hmac.compare_digest(digest, info.sha256):
                raise IntegrityError(f"snapshot {info.id}: data does not match the signed "
                                     "digest (changed or truncated)", reason="digest_mismatch")
            data.seek(start)
            yield info, data

    def _stored(self, snapshot_id: str, stack: ExitStack) -> tuple[bytes, BinaryIO]:
        """A stored snapshot's manifest, and its data copied chunk by chunk into a temp file."""
        manifest, n = self.client.hmget(self.key(snapshot_id), ["m", "n"])
        if manifest is None:
            raise NotFound(f"no snapshot {snapshot_id} in namespace {self.store.namespace}")
        try:
            chunks = int(n or 0)
        except ValueError:
            raise IntegrityError(f"stored snapshot {snapshot_id} is malformed",
                                 reason="malformed") from None
        data = stack.enter_context(tempfile.TemporaryFile(prefix="raysys-restore-"))  # noqa: SIM115
        for i in range(chunks):
            chunk = self.client.hget(self.key(snapshot_id), str(i))
            if chunk is None:
                raise IntegrityError(f"stored snapshot {snapshot_id} lacks data chunks",
                                     reason="malformed")
            data.write(as_bytes(chunk))
        data.seek(0)
        return as_bytes(manifest), data

    def _verify_manifest(self, manifest: bytes | None, snapshot_id: str | None) -> SnapshotInfo:
        if manifest is None:
            raise IntegrityError("snapshot has no manifest", reason="malformed")
        info = _info(self.store.sealer.open(bytes(manifest), SNAPSHOT))
        if snapshot_id is not None and info.id != snapshot_id:
            raise IntegrityError(f"manifest of snapshot {info.id} stored as {snapshot_id}",
                                 reason="copied_record")
        return info

    # ---- restore ------------------------------------------------------------------------
    def restore(self, source: str | Path) -> RestoreReport:
        """Verify a snapshot (id or file, as in :meth:`load`), then restore it, all or nothing.

        Raises IntegrityError (nothing written) if the manifest or data fails verification,
        ValidationError for another namespace's snapshot, NamespaceNotEmpty when keys exist.
        """
        with self._verified(source) as (info, data):
            if info.namespace != self.store.namespace:
                raise ValidationError(
                    f"snapshot {info.id} is of namespace {info.namespace!r}, not "
                    f"{self.store.namespace!r}: its records are signed for that namespace only")
            started = time.perf_counter()
            self._clear_interrupted_restore()
            self._require_empty()  # early and cheap; restore_begin checks again, atomically
            self._begin(info)
            restored, longest = self._restore_pages(info, data)
            k = self.store.keys
            reply = self._scripts.run(
                "restore_finish", [k.restoring, k.fence, k.run_id, k.audit],
                [info.id, info.fence, len(restored), "1" if self.store.audit_enabled else "0",
                 AUDIT_MAXLEN])
            if int(reply[0]) != 1:
                raise RaysysError(f"restore of {info.id}: its marker was taken by another "
                                  "restore; run it again")
        where = "redis" if isinstance(source, str) and _SNAPSHOT_ID.match(source) else str(source)
        report = RestoreReport(info, where, len(restored), int(reply[1]))
        self.last_timing = {"total_s": time.perf_counter() - started,
                            "longest_script_s": longest}
        log.warning("restored snapshot %s from %s into namespace %s: %d keys, %d tasks, in "
                    "%.3f s (longest script %.1f ms); fences continue above %d", info.id, where,
                    info.namespace, report.restored_keys, info.tasks,
                    self.last_timing["total_s"], longest * 1000, report.fence)
        return report

    def _begin(self, info: SnapshotInfo) -> None:
        k = self.store.keys
        reply = self._scripts.run("restore_begin", [k.restoring],
                                  [self.prefix, self._pattern, SCAN_COUNT, info.id, 10_000])
        if int(reply[0]) != 1:
            raise _not_empty(self.store.namespace, int(reply[1]), int(reply[2]),
                             [as_text(x, errors="replace") for x in reply[3:]])

    def _restore_pages(self, info: SnapshotInfo, data: BinaryIO) -> tuple[IdList, float]:
        """RESTORE every entry, page by page, under the marker; the keys restored and the
        longest page (s). On a payload Redis refuses every key restored is deleted again and
        the marker taken down: nothing half-restored stays."""
        k = self.store.keys
        restored: IdList = []
        longest = 0.0
        page: ArgList = []
        size = 0

        def flush() -> None:
            nonlocal page, size, longest
            if not page:
                return
            began = time.perf_counter()
            reply = self._scripts.run("restore_chunk", [k.restoring],
                                      [self.prefix, info.id, *page])
            longest = max(longest, time.perf_counter() - began)
            status = int(reply[0])
            if status == 1:
                restored.extend(as_text(page[i], errors="surrogateescape")
                                for i in range(0, len(page), 3))
                page, size = [], 0
                return
            self._undo(restored)
            if status == 0:
                raise RaysysError(f"restore of {info.id}: another restore took the marker")
            key, reason = as_text(reply[1], errors="replace"), as_text(reply[2], errors="replace")
            raise ValidationError(
                f"Redis refused key {key!r} of snapshot {info.id}: {reason}; nothing was "
                f"restored (the snapshot comes from {info.server}, this server is "
                f"{self._server_version()}: a DUMP restores only into the same or a newer one)")

        count = 0
        try:
            for name, pttl, payload in iter_entries(data, info.data_bytes):
                count += 1
                suffix = name.decode("utf-8", "surrogateescape")
                if _not_copied(suffix) or suffix in NOT_RESTORED:
                    continue
                page += [name, max(pttl, 1) if pttl >= 0 else 0, payload]
                size += len(payload)
                if len(page) >= 3 * PAGE_KEYS or size >= RESTORE_PAGE_BYTES:
                    flush()
            flush()
        except IntegrityError:
            self._undo(restored)
            raise
        if count != info.keys:
            self._undo(restored)
            raise IntegrityError(f"snapshot {info.id}: {count} keys, manifest says {info.keys}",
                                 reason="malformed")
        return restored, longest

    def _undo(self, restored: IdList) -> None:
        """Delete what a failed restore wrote, then take its marker down."""
        for i in range(0, len(restored), 1000):
            self.client.delete(*(self.prefix + name for name in restored[i:i + 1000]))
        self.client.delete(self.store.keys.restoring)

    def _clear_interrupted_restore(self) -> None:
        """A marker left by a restore that died: delete what it wrote (the namespace was empty
        when it began, and every writer has waited since), so this one starts clean."""
        left = self.client.get(self.store.keys.restoring)
        if left is None:
            return
        log.warning("namespace %s holds the marker of an interrupted restore of %s: clearing "
                    "what it wrote before restoring again", self.store.namespace, as_text(left))
        doomed = []
        for raw in self.client.scan_iter(match=self._pattern, count=SCAN_COUNT):
            key = as_text(raw, errors="surrogateescape")
            suffix = key[len(self.prefix):]
            if not _not_copied(suffix) and suffix not in ("fence", "runid"):
                doomed.append(key)
                if len(doomed) >= 1000:
                    self.client.delete(*doomed)
                    doomed = []
        if doomed:
            self.client.delete(*doomed)

    def _require_empty(self) -> None:
        keys = self.store.keys
        ignored = {keys.fence, keys.run_id}
        tasks, others, sample = 0, 0, IdList()
        for raw in self.client.scan_iter(match=self._pattern, count=SCAN_COUNT):
            key = as_text(raw, errors="replace")
            if key in ignored or _not_copied(key[len(self.prefix):]):
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


def _not_copied(suffix: str) -> bool:
    """Keys a snapshot leaves out: stored snapshots, the wake-up hint, barrier and marker."""
    return suffix in NOT_COPIED or suffix.startswith("snap:")


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
