"""Snapshots as files in a folder: ``<namespace>-<snapshot id>.rsnap``, the newest ``keep``
kept (``raysys snapshot save --dir DIR --keep N``; the periodic ``--every`` form and the KubeRay
RayCronJob run the same)."""

from __future__ import annotations

import logging
from pathlib import Path
from typing import TYPE_CHECKING, Any

from raysys.errors import ValidationError
from raysys.snapshots.manager import SnapshotManager

if TYPE_CHECKING:
    from raysys.core import Core

log = logging.getLogger(__name__)
SUFFIX = ".rsnap"


def save_to_dir(core: Core, folder: str | Path, keep: int) -> dict[str, Any]:
    """Save one snapshot file into ``folder`` (made if missing) and delete this namespace's
    older files there beyond the newest ``keep``; what was saved and dropped."""
    if keep < 1:
        raise ValidationError("--keep must be at least 1")
    where = Path(folder)
    try:
        where.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise ValidationError(f"cannot use snapshot folder {where}: {exc.strerror}") from None
    manager = SnapshotManager(core)
    staging = where / f".{core.namespace}-saving{SUFFIX}"
    info = manager.save(out=staging, keep=False)
    final = where / f"{core.namespace}-{info.id}{SUFFIX}"
    staging.replace(final)
    dropped = prune_dir(where, core.namespace, keep)
    return {**info.to_json(), "file": str(final), "dropped": [str(p) for p in dropped],
            **{f"timing_{k}": round(v, 4) for k, v in manager.last_timing.items()}}


def prune_dir(folder: Path, namespace: str, keep: int) -> list[Path]:
    """Delete the namespace's snapshot files in ``folder`` beyond the newest ``keep`` (ids sort
    by time); the files deleted."""
    files = sorted(folder.glob(f"{namespace}-{'[0-9]' * 8}T*{SUFFIX}"))
    doomed = files[:-keep] if keep else files
    for path in doomed:
        path.unlink(missing_ok=True)
        log.info("dropped old snapshot file %s (keeping %d)", path, keep)
    return doomed
