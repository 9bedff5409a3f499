"""Which kinds may be handed out now, and how many: placement, per-worker caps, cluster caps.

Pure logic over what the Distributor knows: the kinds book (what each kind needs), the nodes
Ray reports (total resources of each live node), tasks queued and leased per kind, and how
many of each kind the chosen worker already holds. A kind with Ray options that no live node
can place is held back (pending, not leased: its tasks wait for a node, and say so in
``status`` and ``/health``); a kind with its own per-worker ``concurrency`` is offered to a
worker up to twice that (running plus as many queued); a kind with ``max_in_flight`` is capped
in the acquire script itself, atomically.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from raysys.store import KindInfo
from raysys.store.task_store import KindQuota

RESOURCES = "resources"  # waiting reason: no live node has what the kind needs
MAX_IN_FLIGHT = "max_in_flight"  # waiting reason: the kind's cluster-wide cap is reached


@dataclass(frozen=True)
class Plan:
    """``quotas`` for the acquire script; ``waiting``: kinds held back, and why."""

    quotas: dict[str, KindQuota] = field(default_factory=dict)
    waiting: dict[str, dict[str, Any]] = field(default_factory=dict)


def placeable(need: Mapping[str, float], nodes: Sequence[Mapping[str, float]]) -> bool:
    """Some node's total resources cover ``need`` (one task's requirement)."""
    return any(all(node.get(name, 0.0) >= amount for name, amount in need.items())
               for node in nodes)


def plan(book: Mapping[str, KindInfo], *, nodes: Sequence[Mapping[str, float]] | None,
         queued: Mapping[str, int], inflight: Mapping[str, int],
         held_by_worker: Mapping[str, int]) -> Plan:
    """The quotas for one hand-out to one worker. ``nodes`` None: placement unknown (no Ray):
    nothing is held back for resources."""
    out = Plan()
    for kind, info in book.items():
        if info.remote and nodes is not None and not placeable(info.requirement, nodes):
            out.quotas[kind] = (0, -1)
            if queued.get(kind, 0):
                out.waiting[kind] = {"reason": RESOURCES, "need": info.requirement,
                                     "pending": queued[kind]}
            continue
        take = -1
        if info.concurrency is not None:
            take = max(0, 2 * info.concurrency - held_by_worker.get(kind, 0))
        cap = info.max_in_flight if info.max_in_flight is not None else -1
        if take >= 0 or cap >= 0:
            out.quotas[kind] = (take, cap)
        if cap >= 0 and inflight.get(kind, 0) >= cap and queued.get(kind, 0):
            out.waiting[kind] = {"reason": MAX_IN_FLIGHT, "max_in_flight": cap,
                                 "pending": queued[kind]}
    return out
