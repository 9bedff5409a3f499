"""The commit ledger: an independent record of every transition the store acknowledged.

It lives outside the raysys keys (``{raysys-ledger:<namespace>}:``) and is written only by the
parties that received an acknowledgement (a worker's commit, the acquirer's quarantine, a
cancel), one entry per (task, fence). Comparing it with the ids the driver submitted gives
``lost`` and ``duplicate_commits`` without trusting the store's own counters, so a store bug
shows up as a non-zero figure.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass

import redis

from raysys.keyspace import glob_escape
from raysys.replies import as_text

FINAL = ("succeeded", "dead", "cancelled", "quarantined")

# KEYS: commits hash (id -> number of commits), final hash (id -> state), starts hash
# (id -> first start). ARGV[1] = n commits, then n pairs (id, state), then pairs (id, start).
_RECORD = """
local n = tonumber(ARGV[1])
for i = 2, 2 * n, 2 do
  redis.call("HINCRBY", KEYS[1], ARGV[i], 1)
  redis.call("HSET", KEYS[2], ARGV[i], ARGV[i + 1])
end
for i = 2 * n + 2, #ARGV, 2 do
  redis.call("HSETNX", KEYS[3], ARGV[i], ARGV[i + 1])
end
return n
"""


@dataclass(frozen=True, slots=True)
class LedgerReport:
    tasks: int
    succeeded: int
    dead: int
    cancelled: int
    quarantined: int
    lost: int
    duplicate_commits: int

    def to_json(self) -> dict[str, int]:
        return {"tasks": self.tasks, "succeeded": self.succeeded, "dead": self.dead,
                "cancelled": self.cancelled, "quarantined": self.quarantined, "lost": self.lost,
                "duplicate_commits": self.duplicate_commits}


class CommitLedger:
    """Append acknowledged final transitions; report against the submitted ids."""

    def __init__(self, client: redis.Redis, namespace: str) -> None:
        self.client = client
        self.prefix = f"{{raysys-ledger:{namespace}}}:"
        self._record = client.register_script(_RECORD)

    def record(self, entries: Iterable[tuple[str, int, str]],
               starts: Iterable[tuple[str, float]] = ()) -> None:
        """Record (task id, fence, final state) triples the store acknowledged.

        The fence identifies the commit; two entries for one task mean two commits.
        ``starts``: (task id, wall-clock time its handler first started), kept once per task,
        for the submit-to-start latency figures. One script call, whatever the batch size.
        """
        args: list[str] = []
        for task_id, _fence, state in entries:
            args += [task_id, state]
        n = len(args) // 2
        for task_id, when in starts:
            args += [task_id, f"{when:.6f}"]
        if args:
            self._record(keys=[self.prefix + "commits", self.prefix + "final",
                               self.prefix + "starts"], args=[n, *args])

    def starts(self) -> dict[str, float]:
        """Task id -> the wall-clock time its handler first started."""
        return {as_text(k): float(v)
                for k, v in self.client.hgetall(self.prefix + "starts").items()}

    def report(self, submitted: Sequence[str]) -> LedgerReport:
        """Account for every submitted id: final state, lost, or committed more than once."""
        commits = self.client.hgetall(self.prefix + "commits")
        finals = self.client.hgetall(self.prefix + "final")
        by_state = dict.fromkeys(FINAL, 0)
        lost = duplicates = 0
        for task_id in dict.fromkeys(submitted):  # unique, in order
            key = task_id.encode()
            n = int(commits.get(key, 0))
            if n == 0:
                lost += 1
                continue
            duplicates += n - 1
            state = as_text(finals[key])
            by_state[state] = by_state.get(state, 0) + 1
        total = len(dict.fromkeys(submitted))
        return LedgerReport(total, by_state["succeeded"], by_state["dead"],
                            by_state["cancelled"], by_state["quarantined"], lost, duplicates)

    def clear(self) -> None:
        for key in self.client.scan_iter(match=glob_escape(self.prefix) + "*"):
            self.client.delete(key)
