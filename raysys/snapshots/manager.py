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
import tempfile
import time
from collections.abc import Iterator
from contextlib import ExitStack, contextmanager
from pathlib import Path
from typing import TYPE_CHECKING, BinaryIO

import redis

from raysys.errors import IntegrityError, NotFound, RaysysError, ValidationError
from raysys.models import TaskState
from raysys.snapshots.format import (
    EntryWriter,
    encode_zset_part,
    hash_file_part,
    iter_entries,
    new_snapshot_id,
    open_snapshot_file,
    write_snapshot_file,
)
from raysys.snapshots.info import (
    BARRIER_TTL_MS,
    CHUNK_BYTES,
    FORMAT,
    PAGE_KEYS,
    SCAN_COUNT,
    SNAPSHOT,
    SNAPSHOT_ID,
    SNAPSHOT_ID_PATTERN,
    ZSET_PART,
    EntryList,
    IdList,
    InfoList,
    NamespaceNotEmpty,
    RestoreReport,
    SnapshotInfo,
    check_id,
    manifest_info,
    not_copied,
    raysys_version,
)
from raysys.snapshots.restoring import SnapshotRestore
from raysys.store.records import AUDIT_MAXLEN
from raysys.store.replies import as_bytes, as_text

if TYPE_CHECKING:
    from raysys.core import Core

log = logging.getLogger(__name__)
__all__ = ["SNAPSHOT", "SNAPSHOT_ID_PATTERN", "NamespaceNotEmpty", "RestoreReport",
           "SnapshotInfo", "SnapshotManager"]


class SnapshotManager(SnapshotRestore):
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
        barrier = [k.barrier, k.leases, k.restoring, k.reply("barrier", snapshot_id)]
        raised = self._scripts.run("barrier", barrier, ["on", snapshot_id, BARRIER_TTL_MS])
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
                lowered = self._scripts.run("barrier", barrier,
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
                "raysys_version": raysys_version(),
                "server": self._server_version(),
            }
            manifest = self.store.sealer.seal(SNAPSHOT, body)
            info = manifest_info(self.store.sealer.open(manifest, SNAPSHOT))
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
                                      [snapshot_id, BARRIER_TTL_MS, ZSET_PART])
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
                if pttl == -3:  # a large sorted set: in parts
                    longest = max(longest, self._copy_zset(snapshot_id, key, name,
                                                           int(as_text(payload)), writer))
                    continue
                writer.add(name, pttl, as_bytes(payload))
                tasks += name.startswith(b"t:")
        return tasks, longest

    def _copy_zset(self, snapshot_id: str, key: str, name: bytes, pttl: int,
                   writer: EntryWriter) -> float:
        """Copy sorted set ``key`` in parts of ``ZSET_PART`` members; the longest part (s)."""
        barrier, longest, first = self.store.keys.barrier, 0.0, 0
        while True:
            began = time.perf_counter()
            reply = self._scripts.run("snapshot_zpart", [barrier, key],
                                      [snapshot_id, BARRIER_TTL_MS, first, ZSET_PART])
            longest = max(longest, time.perf_counter() - began)
            if int(reply[0]) != 1:
                raise RaysysError(f"snapshot {snapshot_id} abandoned: its write barrier expired")
            flat = [as_bytes(x) for x in reply[1:]]
            if not flat:
                return longest
            writer.add(name, pttl, encode_zset_part(flat))
            first += len(flat) // 2

    def _pages(self) -> Iterator[list[str]]:
        """The namespace's keys (snapshot keys, the barrier, marker and wake-up list left
        out) in pages of ``PAGE_KEYS``, each once."""
        seen: set[str] = set()
        page: list[str] = []
        for raw in self.client.scan_iter(match=self._pattern, count=SCAN_COUNT):
            key = as_text(raw, errors="surrogateescape")
            if key in seen or not_copied(key[len(self.prefix):]):
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
        check_id(snapshot_id)
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
            if isinstance(source, str) and SNAPSHOT_ID.match(source):
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
        info = manifest_info(self.store.sealer.open(bytes(manifest), SNAPSHOT))
        if snapshot_id is not None and info.id != snapshot_id:
            raise IntegrityError(f"manifest of snapshot {info.id} stored as {snapshot_id}",
                                 reason="copied_record")
        return info
