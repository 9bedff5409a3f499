"""Re-signing the manifests of stored snapshots under the active key (key rotation).

Snapshot files on disk keep the key that signed them: keep that key verify-only, not revoked,
while such backups matter, or save new ones after a rotation.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import TYPE_CHECKING

from raysys.errors import IntegrityError
from raysys.signing.envelope import signing_kid
from raysys.snapshots.manager import SNAPSHOT
from raysys.store.replies import as_text

if TYPE_CHECKING:
    from raysys.core import Core


@dataclass
class ManifestSweep:
    """What one pass over the stored manifests did; ``by_key``: manifests found per old key."""

    resigned: int = 0
    unverifiable: int = 0
    conflicts: int = 0
    by_key: dict[str, int] = field(default_factory=dict)


def resign_manifests(core: Core) -> ManifestSweep:
    """Re-sign every verifiable stored manifest signed by a key other than the active one.

    Compare-and-set per manifest (``cas_manifest.lua``): one replaced meanwhile is a conflict,
    left for the next sweep; one that does not verify is left as it is (never laundered).
    """
    active = core.sealer.keyring.active.kid
    sweep = ManifestSweep()
    for key, manifest in stored_manifests(core):
        kid = signing_kid(manifest)
        if kid is None or kid == active:
            continue
        sweep.by_key[kid] = sweep.by_key.get(kid, 0) + 1
        try:
            body = core.sealer.open(manifest, SNAPSHOT).body
        except IntegrityError:
            sweep.unverifiable += 1
            continue
        resealed = core.sealer.seal(SNAPSHOT, body)
        if int(core.scripts.run("cas_manifest", [key], [manifest, resealed])):
            sweep.resigned += 1
        else:
            sweep.conflicts += 1
    return sweep


def manifests_signed_by(core: Core, kid: str) -> int:
    """How many stored manifests still verify under ``kid``."""
    total = 0
    for _, manifest in stored_manifests(core):
        if signing_kid(manifest) != kid:
            continue
        try:
            core.sealer.open(manifest, SNAPSHOT)
        except IntegrityError:
            continue
        total += 1
    return total


def stored_manifests(core: Core) -> list[tuple[str, bytes]]:
    """(snapshot hash key, manifest bytes) of every snapshot stored in the namespace."""
    out: list[tuple[str, bytes]] = []
    for snapshot_id in core.client.zrange(core.keys.snapshots, 0, -1):
        key = core.keys.snapshot(as_text(snapshot_id))
        manifest = core.client.hget(key, "m")
        if isinstance(manifest, bytes):
            out.append((key, manifest))
    return out
