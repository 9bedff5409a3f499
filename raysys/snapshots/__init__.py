"""Snapshots: signed, consistent point-in-time copies of one namespace, their file format, and
re-signing stored manifests under a new key (rotation calls it).

Imports the foundation, ``signing`` and ``store``.
"""

from raysys.snapshots.manager import (
    SNAPSHOT,
    NamespaceNotEmpty,
    RestoreReport,
    SnapshotInfo,
    SnapshotManager,
)

__all__ = ["SNAPSHOT", "NamespaceNotEmpty", "RestoreReport", "SnapshotInfo", "SnapshotManager"]
