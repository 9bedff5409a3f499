"""Restoring a verified snapshot in pages under the namespace's restoring marker (a base of
:class:`~raysys.snapshots.manager.SnapshotManager`; raysys/snapshots/manager.py says how)."""

from __future__ import annotations

import logging
import time
from contextlib import AbstractContextManager
from pathlib import Path
from typing import TYPE_CHECKING, BinaryIO

import redis

from raysys.errors import IntegrityError, RaysysError, ValidationError
from raysys.snapshots.format import iter_entries
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
from raysys.store.replies import as_text

if TYPE_CHECKING:
    from raysys.store import Scripts, TaskStore

log = logging.getLogger(__name__)


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
        where = "redis" if isinstance(source, str) and SNAPSHOT_ID.match(source) else str(source)
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
            raise not_empty(self.store.namespace, int(reply[1]), int(reply[2]),
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
                if not_copied(suffix) or suffix in NOT_RESTORED:
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
            if not not_copied(suffix) and suffix not in ("fence", "runid"):
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

