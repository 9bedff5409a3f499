"""What a snapshot is made of, without Redis: its constants, the verified manifest
(:class:`SnapshotInfo`), a restore's report, and the keys a snapshot leaves out."""

from __future__ import annotations

import re
from dataclasses import asdict, dataclass
from datetime import UTC, datetime
from importlib import metadata
from typing import Any

from raysys.errors import IntegrityError, ValidationError
from raysys.signing.envelope import Opened
from raysys.snapshots.format import Entry

SNAPSHOT = "snapshot"  # envelope purpose of a manifest
FORMAT = 1
CHUNK_BYTES = 4 << 20
SCAN_COUNT = 1000
PAGE_KEYS = 1000  # keys one snapshot_chunk / restore_chunk script copies (~10 ms of Redis time)
RESTORE_PAGE_BYTES = 8 << 20  # and at most this many payload bytes per restore page
ZSET_PART = 10_000  # a sorted set with more members is copied (and restored) in parts this size
BARRIER_TTL_MS = 30_000  # a save that dies holds writes off at most this long
NOT_COPIED = frozenset({"snaps", "wake", "barrier", "restoring"})
# In the copy but never restored: the fence counter only rises (restore_finish.lua takes the
# larger), and the run id is dropped so the next grant raises fences to the clock floor.
NOT_RESTORED = frozenset({"fence", "runid"})
SNAPSHOT_ID_PATTERN = r"^[0-9]{8}T[0-9]{6}Z-[0-9a-f]{8}$"
SNAPSHOT_ID = re.compile(SNAPSHOT_ID_PATTERN)


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



def not_copied(suffix: str) -> bool:
    """Keys a snapshot leaves out: stored snapshots, the wake-up hint, barrier and marker, and
    the replies kept for resent scripts (``Keyspace.reply``) and the HTTP app's samples."""
    return suffix in NOT_COPIED or suffix.startswith(("snap:", "reply:", "console:"))


# ---- helpers ------------------------------------------------------------------------------
_FIELDS: dict[str, type] = {
    "format": int, "id": str, "namespace": str, "created_ms": int, "keys": int, "tasks": int,
    "counts": dict, "fence": int, "sha256": str, "data_bytes": int, "raysys_version": str,
    "server": str,
}


def manifest_info(opened: Opened) -> SnapshotInfo:
    body = opened.body
    if not isinstance(body, dict) or any(not isinstance(body.get(f), t) for f, t in
                                         _FIELDS.items()):
        raise IntegrityError("snapshot manifest lacks required fields", reason="malformed")
    if body["format"] != FORMAT:
        raise IntegrityError(f"unsupported snapshot format {body['format']}", reason="malformed")
    if not SNAPSHOT_ID.match(body["id"]):
        raise IntegrityError("snapshot manifest names a malformed id", reason="malformed")
    counts = {str(k): int(v) for k, v in body["counts"].items()}
    return SnapshotInfo(body["id"], body["namespace"], body["created_ms"], body["keys"],
                        body["tasks"], counts, body["fence"], body["sha256"], body["data_bytes"],
                        body["raysys_version"], body["server"], opened.kid)


def not_empty(namespace: str, tasks: int, others: int, sample: list[str]) -> NamespaceNotEmpty:
    return NamespaceNotEmpty(
        f"namespace {namespace} is not empty: it holds {tasks} task(s) and {others} other "
        f"key(s) (e.g. {', '.join(sample)}); restore needs an empty namespace: delete its keys "
        "first (stored snapshots may stay)", tasks=tasks, others=others)


def check_id(snapshot_id: str) -> None:
    if not SNAPSHOT_ID.match(snapshot_id):
        raise ValidationError(f"{snapshot_id!r} is not a snapshot id (like 20250101T120000Z-"
                              "0a1b2c3d)")


def raysys_version() -> str:
    try:
        return metadata.version("raysys")
    except metadata.PackageNotFoundError:
        return "unknown"
