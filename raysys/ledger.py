"""The commit ledger: an independent record of every transition the store acknowledged.

It lives outside the raysys keys (``{raysys-ledger:<namespace>}:``) and is written only by the
parties that received an acknowledgement (a worker's commit, the acquirer's quarantine, a
cancel), one entry per (task, fence). Comparing it with the ids the driver submitted gives
``lost`` and ``duplicate_commits`` without trusting the store's own counters, so a store bug
shows up as a non-zero figure.

* An entry is keyed by (task, fence): a recording call resent after a lost reply (redis-py
  retries) counts once; two fences for one task are two commits.
* A worker writes an *intent* (task, fence) before it commits and the entry after the store
  acknowledges. A worker killed between the two leaves an intent and no entry; the report then
  reads that one task's state and fence in the store and counts the commit if the store holds
  the task final under exactly that fence (``recovered``). A task with no intent and no entry
  is lost, whatever the store says.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass

import redis

from raysys.keyspace import Keyspace, glob_escape
from raysys.replies import as_text

FINAL = ("succeeded", "dead", "cancelled", "quarantined")

# KEYS: commits hash ("<id>|<fence>" -> state), starts hash (id -> first start), intents hash
# ("<id>|<fence>" -> "1"). ARGV[1] = n commits, ARGV[2] = m starts, then n triples
# (id, fence, state), m pairs (id, start), and the rest pairs (id, fence) of intents.
_RECORD = """
local n, m = tonumber(ARGV[1]), tonumber(ARGV[2])
local i = 3
for _ = 1, n do
  redis.call("HSET", KEYS[1], ARGV[i] .. "|" .. ARGV[i + 1], ARGV[i + 2])
  i = i + 3
end
for _ = 1, m do
  redis.call("HSETNX", KEYS[2], ARGV[i], ARGV[i + 1])
  i = i + 2
end
while i < #ARGV do
  redis.call("HSET", KEYS[3], ARGV[i] .. "|" .. ARGV[i + 1], "1")
  i = i + 2
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
    recovered: int = 0  # commits whose entry a crash cut off, confirmed by intent + store

    def to_json(self) -> dict[str, int]:
        return {"tasks": self.tasks, "succeeded": self.succeeded, "dead": self.dead,
                "cancelled": self.cancelled, "quarantined": self.quarantined, "lost": self.lost,
                "duplicate_commits": self.duplicate_commits}


class CommitLedger:
    """Append acknowledged final transitions; report against the submitted ids."""

    def __init__(self, client: redis.Redis, namespace: str) -> None:
        self.client = client
        self.namespace = namespace
        self.prefix = f"{{raysys-ledger:{namespace}}}:"
        self._record = client.register_script(_RECORD)
        self._keys = [self.prefix + "commits", self.prefix + "starts", self.prefix + "intents"]

    def record(self, entries: Iterable[tuple[str, int, str]],
               starts: Iterable[tuple[str, float]] = (),
               intents: Iterable[tuple[str, int]] = ()) -> None:
        """Record (task id, fence, final state) triples the store acknowledged.

        ``starts``: (task id, wall-clock time its handler first started), kept once per task,
        for the submit-to-start latency figures. ``intents``: (task id, fence) commits about to
        be attempted. One script call, whatever the batch size; safe to resend.
        """
        commits = [str(x) for task_id, fence, state in entries for x in (task_id, fence, state)]
        times = [x for task_id, when in starts for x in (task_id, f"{when:.6f}")]
        planned = [str(x) for task_id, fence in intents for x in (task_id, fence)]
        if commits or times or planned:
            self._record(keys=self._keys, args=[len(commits) // 3, len(times) // 2, *commits,
                                                *times, *planned])

    def starts(self) -> dict[str, float]:
        """Task id -> the wall-clock time its handler first started."""
        return {as_text(k): float(v)
                for k, v in self.client.hgetall(self.prefix + "starts").items()}

    def commits(self) -> dict[str, dict[int, str]]:
        """Task id -> {fence: final state} of every acknowledged commit."""
        out: dict[str, dict[int, str]] = {}
        for field, state in self.client.hgetall(self.prefix + "commits").items():
            task_id, _, fence = as_text(field).rpartition("|")
            out.setdefault(task_id, {})[int(fence)] = as_text(state)
        return out

    def commit_counts(self) -> dict[str, int]:
        """Task id -> number of acknowledged commits (distinct fences)."""
        return {task_id: len(fences) for task_id, fences in self.commits().items()}

    def report(self, submitted: Sequence[str]) -> LedgerReport:
        """Account for every submitted id: final state, lost, or committed more than once."""
        commits = self.commits()
        unique = list(dict.fromkeys(submitted))
        missing = [task_id for task_id in unique if task_id not in commits]
        recovered = self._recover(missing)
        by_state = dict.fromkeys(FINAL, 0)
        lost = duplicates = 0
        for task_id in unique:
            fences = commits.get(task_id) or recovered.get(task_id)
            if not fences:
                lost += 1
                continue
            duplicates += len(fences) - 1
            state = fences[max(fences)]
            by_state[state] = by_state.get(state, 0) + 1
        return LedgerReport(len(unique), by_state["succeeded"], by_state["dead"],
                            by_state["cancelled"], by_state["quarantined"], lost, duplicates,
                            len(recovered))

    def _recover(self, task_ids: list[str]) -> dict[str, dict[int, str]]:
        """Commits of ``task_ids`` cut off between the store's ack and the ledger entry."""
        if not task_ids:
            return {}
        intents: dict[str, set[int]] = {}
        for field in self.client.hkeys(self.prefix + "intents"):
            task_id, _, fence = as_text(field).rpartition("|")
            intents.setdefault(task_id, set()).add(int(fence))
        candidates = [task_id for task_id in task_ids if task_id in intents]
        if not candidates:
            return {}
        keys = Keyspace(self.namespace)
        pipe = self.client.pipeline(transaction=False)
        for task_id in candidates:
            pipe.hmget(keys.task(task_id), "state", "fence")
        out: dict[str, dict[int, str]] = {}
        for task_id, (state, fence) in zip(candidates, pipe.execute(), strict=True):
            if state is None or fence is None or as_text(state) not in FINAL:
                continue
            if int(fence) in intents[task_id]:
                out[task_id] = {int(fence): as_text(state)}
        return out

    def clear(self) -> None:
        for key in self.client.scan_iter(match=glob_escape(self.prefix) + "*"):
            self.client.delete(key)
