"""The wire format of what actors send each other inside signed messages.

An assignment (type :data:`ASSIGN`, Distributor -> Worker) carries ``{"leases": [doc, ...]}``,
each ``doc`` a lease's fields by name (:meth:`Lease._asdict`), read back with
:meth:`Lease.from_doc` — the same mapping a verified task record goes through, so a lease has
one field list, in ``raysys.models``. Messages stay under the envelope's 1 MiB limit:
:func:`assignment_chunks` splits a batch by size.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import orjson

from raysys.models import Lease

ASSIGN = "assign"
MESSAGE_BUDGET = 768 * 1024  # bytes of lease JSON per message (the envelope limit is 1 MiB)


def lease_to_wire(lease: Lease) -> dict[str, Any]:
    return lease._asdict()


def leases_from_assignment(body: Any) -> list[Lease]:
    """The leases of an assignment's body; KeyError, TypeError or ValueError if malformed."""
    return [Lease.from_doc(doc) for doc in body["leases"]]


def assignment_chunks(leases: Sequence[Lease], budget: int = MESSAGE_BUDGET
                      ) -> list[list[dict[str, Any]]]:
    """Lease documents in messages of at most ``budget`` bytes each (one lease at least)."""
    out: list[list[dict[str, Any]]] = [[]]
    size = 0
    for lease in leases:
        doc = lease_to_wire(lease)
        n = len(orjson.dumps(doc))
        if out[-1] and size + n > budget:
            out.append([])
            size = 0
        out[-1].append(doc)
        size += n
    return out
