"""Restoring a verified snapshot in pages under the namespace's restoring marker (a base of
:class:`~raysys.snapshots.manager.SnapshotManager`; raysys/snapshots/manager.py says how)."""

from __future__ import annotations

import logging
import os
import time
from contextlib import AbstractContextManager
from pathlib import Path
from typing import TYPE_CHECKING, BinaryIO

import redis

from raysys.errors import IntegrityError, RaysysError, ValidationError
from raysys.snapshots.format import ZSET_PART_MAGIC, iter_entries
from raysys.snapshots.info import (
    NOT_RESTORED,
    PAGE_KEYS,
    RESTORE_PAGE_BYTES,
    SCAN_COUNT,
    SNAPSHOT_ID,
    ArgList,
    IdList,
    RestoreReport,
    SnapshotInfo,
    not_copied,
    not_empty,
)
from raysys.store.records import AUDIT_MAXLEN
from raysys.store.replies import as_bytes, as_text

if TYPE_CHECKING:
    from raysys.store import Scripts, TaskStore

log = logging.getLogger(__name__)

PARTS_PER_PAGE = 2  # sorted-set parts (10,000 ZADDs each) per restore page: ~50 ms of Redis
RESTORE_QUIET_S = 30.0  # a restore marker with no page written for this long is a died one


class SnapshotRestore:
    """Restore, page by page, under the restoring marker."""

    store: TaskStore
    client: redis.Redis
    prefix: str
    _pattern: str
    _scripts: Scripts
    last_timing: dict[str, float]

    def _verified(self, source: str | Path
                  ) -> AbstractContextManager[tuple[SnapshotInfo, BinaryIO]]:
        raise NotImplementedError

    def _server_version(self) -> str:
        raise NotImplementedError

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
            owner = f"{info.id}|{os.urandom(8).hex()}"  # this one call: its marker
            self._clear_interrupted_restore(owner)
            self._require_empty()  # every key; restore_begin checks the anchors atomically
            self._begin(info, owner)
            restored, longest = self._restore_pages(info, data, owner)
            k = self.store.keys
            reply = self._scripts.run(
                "restore_finish",
                [k.restoring, k.fence, k.run_id, k.audit, k.reply("restore_finish", owner)],
                [owner, info.fence, len(restored), "1" if self.store.audit_enabled else "0",
                 AUDIT_MAXLEN])
            if int(reply[0]) != 1:
                raise RaysysError(f"restore of {info.id}: its marker was taken by another "
                                  "restore; run it again")
        where = "redis" if isinstance(source, str) and SNAPSHOT_ID.match(source) else str(source)
        report = RestoreReport(info, where, len(restored), int(reply[1]))
        self.last_timing = {"total_s": time.perf_counter() - started,
                            "longest_script_s": longest}
        log.warning("restored snapshot %s from %s into namespace %s: %d keys, %d tasks, in "
                    "%.3f s (longest script %.1f ms); fences continue above %d", info.id, where,
                    info.namespace, report.restored_keys, info.tasks,
                    self.last_timing["total_s"], longest * 1000, report.fence)
        return report

    def _begin(self, info: SnapshotInfo, owner: str) -> None:
        k = self.store.keys
        reply = self._scripts.run("restore_begin", [k.restoring, k.barrier], [self.prefix, owner])
        status = int(reply[0])
        if status == 0:
            raise not_empty(self.store.namespace, 0, len(reply) - 1,
                            [as_text(x, errors="replace") for x in reply[1:]])
        if status < 0:
            what = "a restore" if status == -1 else "a snapshot save"
            raise RaysysError(f"{what} ({as_text(reply[1]).split('|')[0]}) holds namespace "
                              f"{self.store.namespace}; try again when it is done")

    def _restore_pages(self, info: SnapshotInfo, data: BinaryIO, owner: str
                       ) -> tuple[IdList, float]:
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
                                      [self.prefix, owner, *page])
            longest = max(longest, time.perf_counter() - began)
            status = int(reply[0])
            if status == 1:
                restored.extend(as_text(page[i], errors="surrogateescape")
                                for i in range(0, len(page), 3))
                page, size = [], 0
                return
            self._undo(restored, owner)
            if status == 0:
                raise RaysysError(f"restore of {info.id}: another restore took the marker")
            key, reason = as_text(reply[1], errors="replace"), as_text(reply[2], errors="replace")
            raise ValidationError(
                f"Redis refused key {key!r} of snapshot {info.id}: {reason}; nothing was "
                f"restored (the snapshot comes from {info.server}, this server is "
                f"{self._server_version()}: a DUMP restores only into the same or a newer one)")

        count = parts = 0
        try:
            for name, pttl, payload in iter_entries(data, info.data_bytes):
                count += 1
                suffix = name.decode("utf-8", "surrogateescape")
                if not_copied(suffix) or suffix in NOT_RESTORED:
                    continue
                page += [name, max(pttl, 1) if pttl >= 0 else 0, payload]
                size += len(payload)
                parts += payload.startswith(ZSET_PART_MAGIC)
                if (len(page) >= 3 * PAGE_KEYS or size >= RESTORE_PAGE_BYTES
                        or parts >= PARTS_PER_PAGE):
                    flush()
                    parts = 0
            flush()
        except IntegrityError:
            self._undo(restored, owner)
            raise
        if count != info.keys:
            self._undo(restored, owner)
            raise IntegrityError(f"snapshot {info.id}: {count} keys, manifest says {info.keys}",
                                 reason="malformed")
        return restored, longest

    def _undo(self, restored: IdList, owner: str) -> None:
        """Delete what this failed restore wrote, then take its marker down: only while the
        marker is still this restore's (another may have taken over and restored the same
        names)."""
        k = self.store.keys
        pages = [restored[i:i + 1000] for i in range(0, len(restored), 1000)] or [[]]
        for index, names in enumerate(pages):
            last = "1" if index == len(pages) - 1 else "0"
            if not int(self._scripts.run("restore_undo", [k.restoring],
                                         [self.prefix, owner, last, *names])):
                log.warning("restore %s lost its marker to another restore: left its keys to "
                            "that one", owner.split("|")[0])
                return

    def _clear_interrupted_restore(self, owner: str) -> None:
        """A marker left by a restore that died: take it over, then delete what that one wrote
        (the namespace was empty when it began, and every writer has waited since), so this
        one starts clean. A marker whose restore wrote a page less than ``RESTORE_QUIET_S``
        ago belongs to a live restore: refused."""
        k = self.store.keys
        left = self.client.get(k.restoring)
        if left is None:
            return
        snapshot, _, rest = as_text(left).partition("|")
        _, _, last_ms = rest.partition("|")
        quiet_s = (self.store.server_ms() - int(last_ms or 0)) / 1000
        if quiet_s < RESTORE_QUIET_S:
            raise RaysysError(
                f"a restore of {snapshot} is running in namespace {self.store.namespace} (its "
                f"last page {quiet_s:.0f} s ago); if it died, run this again once it has been "
                f"quiet for {RESTORE_QUIET_S:.0f} s")
        if not self._take_marker(as_bytes(left), owner):
            raise RaysysError(f"another restore took namespace {self.store.namespace} over; "
                              "try again when it is done")
        log.warning("namespace %s holds the marker of an interrupted restore of %s: clearing "
                    "what it wrote before restoring again", self.store.namespace, snapshot)
        doomed = []
        for raw in self.client.scan_iter(match=self._pattern, count=SCAN_COUNT):
            key = as_text(raw, errors="surrogateescape")
            suffix = key[len(self.prefix):]
            if not not_copied(suffix) and suffix not in ("fence", "runid"):
                doomed.append(key)
                if len(doomed) >= 1000:
                    self.client.delete(*doomed)
                    doomed = []
        if doomed:
            self.client.delete(*doomed)

    def _take_marker(self, left: bytes, owner: str) -> bool:
        """Replace the marker ``left`` by this restore's, only if it is still ``left``."""
        key = self.store.keys.restoring
        with self.client.pipeline() as pipe:
            try:
                pipe.watch(key)  # type: ignore[no-untyped-call]  # redis-py: untyped
                if pipe.get(key) != left:
                    return False
                pipe.multi()
                pipe.set(key, f"{owner}|{self.store.server_ms()}")
                pipe.execute()
            except redis.WatchError:
                return False
        return True

    def _require_empty(self) -> None:
        keys = self.store.keys
        ignored = {keys.fence, keys.run_id}
        tasks, others, sample = 0, 0, IdList()
        for raw in self.client.scan_iter(match=self._pattern, count=SCAN_COUNT):
            key = as_text(raw, errors="replace")
            if key in ignored or not_copied(key[len(self.prefix):]):
                continue
            name = key[len(self.prefix):]
            if name.startswith("t:"):
                tasks += 1
            else:
                others += 1
            if len(sample) < 3:
                sample.append(name)
        if tasks or others:
            raise not_empty(self.store.namespace, tasks, others, sample)

