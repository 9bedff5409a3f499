"""Snapshot files made for tests: a validly signed snapshot whose last key Redis refuses."""

from __future__ import annotations

import hashlib
from pathlib import Path

from raysys.snapshots import SNAPSHOT, SnapshotManager
from raysys.snapshots.format import encode_entries, write_snapshot_file


def refused_snapshot(manager: SnapshotManager, directory: Path, *, keep: bool = True) -> Path:
    """Save the manager's namespace to ``directory/good.rsnap`` (``keep``: in Redis too), then
    write ``directory/bad.rsnap``: the same keys plus one whose payload Redis refuses (as a DUMP
    from a newer server is refused by an older one), signed and digested like a real one."""
    manager.save(out=directory / "good.rsnap", keep=keep)
    good, entries = manager.load(directory / "good.rsnap")
    data = encode_entries([*entries, (b"zzz", -1, b"not a dump payload")])
    body = {**good.to_json(), "keys": good.keys + 1, "data_bytes": len(data),
            "sha256": hashlib.sha256(data).hexdigest(), "format": 1}
    for derived in ("created", "signed_by"):
        del body[derived]
    path = directory / "bad.rsnap"
    write_snapshot_file(path, manager.core.sealer.seal(SNAPSHOT, body), data)
    return path
