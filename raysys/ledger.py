"""The commit ledger: an independent record of every transition the store acknowledged.

It lives outside the raysys keys (``{raysys-ledger:<namespace>}:``) and is written only by the
parties that received an acknowledgement (a worker's commit, the acquirer's quarantine, a
cancel), one entry per (task, fence). Comparing it with the ids the driver submitted gives
``lost`` and ``duplicate_commits`` without trusting the store's own counters, so a store bug
shows up as a non-zero figure.

* An entry is keyed by (task, fence): a recording call resent after a lost reply (redis-py
  retries) counts once; two fences for one task are two commits.
* A worker writes an *intent* (task, fence -> the time its handler started) on the commit's
  own round trip, ahead of it, and the entry after the store acknowledges; the intents also give
  each task's start, for the submit-to-start latency figures. A worker killed between the
  commit and the entry leaves an intent and no entry; the report then reads that one task's
  state and fence in the store and counts the commit if the store holds the task final under
  exactly that fence (``recovered``). A task with no intent and no entry
  is lost, whatever the store says.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass

import redis

from raysys.store.keyspace import Keyspace, drop_keys, glob_escape
from raysys.store.replies import as_text

FINAL = ("succeeded", "dead", "cancelled", "quarantined")

HSET_CHUNK = 1000  # fields per HSET command: bounded argument lists, whatever the batch


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
    lost_ids: tuple[str, ...] = ()  # the ids counted in ``lost``

    def to_json(self) -> dict[str, int]:
        return {"tasks": self.tasks, "succeeded": self.succeeded, "dead": self.dead,
                "cancelled": self.cancelled, "quarantined": self.quarantined, "lost": self.lost,
                "duplicate_commits": self.duplicate_commits}


class CommitLedger:
    """Append acknowledged final transitions; report against the submitted ids."""

    def __init__(self, client: redis.Redis, namespace: str, *,
                 store: redis.Redis | None = None) -> None:
        """``client``: the ledger's Redis; ``store``: the raysys Redis, when apart from it
        (the report reads task states there to confirm cut-off commits)."""
        self.client = client
        self.store = store if store is not None else client
        self.namespace = namespace
        self.prefix = f"{{raysys-ledger:{namespace}}}:"
        self.commits_key = self.prefix + "commits"
        self.intents_key = self.prefix + "intents"

    def record(self, entries: Iterable[tuple[str, int, str]]) -> None:
        """Record (task id, fence, final state) triples the store acknowledged.

        One round trip (one HSET per ``HSET_CHUNK`` entries), whatever the batch size; safe to
        resend (an entry is keyed by task and fence).
        """
        fields = {f"{task_id}|{fence}": state for task_id, fence, state in entries}
        if fields:
            pipe = self.client.pipeline(transaction=False)
            self.queue_hset(pipe, self.commits_key, fields)
            pipe.execute()

    def queue_intents(self, pipe: redis.client.Pipeline,
                      intents: Iterable[tuple[str, int, float]]) -> None:
        """Queue on ``pipe`` the intents (task id, fence, handler start time) of a commit.

        Queued ahead of the commit on the same pipeline, so Redis applies them first: one round
        trip for both, and a crash after the commit's ack still leaves the intent behind.
        """
        fields = {f"{task_id}|{fence}": f"{started:.6f}" for task_id, fence, started in intents}
        self.queue_hset(pipe, self.intents_key, fields)

    def write_intents(self, intents: Iterable[tuple[str, int, float]]) -> None:
        """Write intents now, in their own round trip (a ledger on a Redis of its own: the
        commit that follows cannot carry them)."""
        pipe = self.client.pipeline(transaction=False)
        self.queue_intents(pipe, intents)
        pipe.execute()

    @staticmethod
    def queue_hset(pipe: redis.client.Pipeline, key: str, fields: dict[str, str]) -> None:
        items = list(fields.items())
        for offset in range(0, len(items), HSET_CHUNK):
            pipe.hset(key, mapping=dict(items[offset:offset + HSET_CHUNK]))

    def starts(self) -> dict[str, float]:
        """Task id -> the earliest handler start among its attempts that reached a commit."""
        out: dict[str, float] = {}
        for field, value in self.client.hgetall(self.intents_key).items():
            task_id = as_text(field).rpartition("|")[0]
            started = float(value)
            if started < out.get(task_id, float("inf")):
                out[task_id] = started
        return out

    def commits(self) -> dict[str, dict[int, str]]:
        """Task id -> {fence: final state} of every acknowledged commit."""
        out: dict[str, dict[int, str]] = {}
        for field, state in self.client.hgetall(self.commits_key).items():
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
        lost: list[str] = []
        duplicates = 0
        for task_id in unique:
            fences = commits.get(task_id) or recovered.get(task_id)
            if not fences:
                lost.append(task_id)
                continue
            duplicates += len(fences) - 1
            state = fences[max(fences)]
            by_state[state] = by_state.get(state, 0) + 1
        return LedgerReport(len(unique), by_state["succeeded"], by_state["dead"],
                            by_state["cancelled"], by_state["quarantined"], len(lost),
                            duplicates, len(recovered), tuple(lost))

    def _recover(self, task_ids: list[str]) -> dict[str, dict[int, str]]:
        """Commits of ``task_ids`` cut off between the store's ack and the ledger entry."""
        if not task_ids:
            return {}
        intents: dict[str, set[int]] = {}
        for field in self.client.hkeys(self.intents_key):
            task_id, _, fence = as_text(field).rpartition("|")
            intents.setdefault(task_id, set()).add(int(fence))
        candidates = [task_id for task_id in task_ids if task_id in intents]
        if not candidates:
            return {}
        keys = Keyspace(self.namespace)
        pipe = self.store.pipeline(transaction=False)
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
        drop_keys(self.client, glob_escape(self.prefix) + "*")


def open_ledger(client: redis.Redis, namespace: str, url: str | None) -> CommitLedger:
    """The ledger of ``namespace``: on ``url``'s Redis when given, else on ``client``'s."""
    if not url:
        return CommitLedger(client, namespace)
    return CommitLedger(redis.Redis.from_url(url), namespace, store=client)
