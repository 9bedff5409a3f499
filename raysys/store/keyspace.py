"""Redis key names: every key of a deployment lives under ``{raysys:<namespace>}:``.

The hash tag keeps a namespace in one Redis Cluster slot, so the Lua scripts (which build
per-task keys from the prefix) stay valid there. Nothing else in raysys spells a key.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    import redis


@dataclass(frozen=True, slots=True)
class Keyspace:
    """Key names for one namespace."""

    namespace: str

    @property
    def prefix(self) -> str:
        return f"{{raysys:{self.namespace}}}:"

    def task(self, task_id: str) -> str:
        """Hash: rec (signed bytes), state, sc (queue score), att, fence, holder, err, fin.

        ``holder`` names the current lease's holder and means nothing unless state is leased;
        the lease deadline lives only in the ``leases`` sorted set.
        """
        return f"{self.prefix}t:{task_id}"

    def idempotency(self, key: str) -> str:
        return f"{self.prefix}idem:{key}"

    def queue(self, kind: str) -> str:
        """Sorted set: pending tasks of one kind, scored by -priority * 2**40 + submission
        sequence (higher priority first, FIFO within one)."""
        return f"{self.prefix}q:{kind}"

    @property
    def queued_kinds(self) -> str:
        """Hash: kind -> pending tasks of that kind (no field when none)."""
        return self.prefix + "qkinds"

    @property
    def inflight(self) -> str:
        """Hash: kind -> leased tasks of that kind (no field when none): max_in_flight."""
        return self.prefix + "inflight"

    @property
    def kinds(self) -> str:
        """Hash: kind -> signed description (options, placement needs), written by workers."""
        return self.prefix + "kinds"

    @property
    def waiting(self) -> str:
        """Hash: kind -> JSON saying why its tasks are not handed out now (no node can place
        them, max_in_flight reached), written by the Distributor."""
        return self.prefix + "waiting"

    def cancels(self, holder: str) -> str:
        """List: ids of tasks cancelled while ``holder`` held their lease (it stops them)."""
        return f"{self.prefix}cancel:{holder}"

    @property
    def start_by(self) -> str:
        """Sorted set: task id scored by the server time (ms) by which it must have started
        (tasks submitted with a schedule-to-start limit)."""
        return self.prefix + "startby"

    @property
    def legacy_pending(self) -> str:
        """Sorted set of earlier versions (one queue for every kind); migrated away."""
        return self.prefix + "pending"

    @property
    def delayed(self) -> str:
        """Sorted set: failed task id scored by the server time (ms) it may run again."""
        return self.prefix + "delayed"

    @property
    def scheduled(self) -> str:
        """Sorted set: delayed task id scored by the epoch ms it is due (its signed not-before)."""
        return self.prefix + "sched"

    def schedule(self, name: str) -> str:
        """Hash: one periodic schedule (``rec`` signed definition, ``cur`` signed cursor: the
        last tick enqueued)."""
        return f"{self.prefix}sch:{name}"

    @property
    def schedules(self) -> str:
        """Sorted set: schedule name scored by the epoch ms of its next tick."""
        return self.prefix + "schedules"

    @property
    def submitted_index(self) -> str:
        """Sorted set: every task id scored by when it was submitted (server ms): listing."""
        return self.prefix + "ix:sub"

    def submitted_kind_index(self, kind: str) -> str:
        return f"{self.prefix}ix:sub:{kind}"

    def finished_index(self, state: str, kind: str | None = None) -> str:
        """Sorted set: final task id scored by when it finished (server ms); per state, and per
        state and kind. Listing reads them; retention removes what is older than its window."""
        return f"{self.prefix}ix:f:{state}" + (f":{kind}" if kind is not None else "")

    @property
    def seal_index(self) -> str:
        """Sorted set: live (not final) task id scored by when its record was sealed (server ms):
        the reaper re-seals records older than half the retention."""
        return self.prefix + "ix:seal"

    @property
    def tombstones(self) -> str:
        """Sorted set: ids of tasks purged early (``purge`` below the retention), scored by when
        they finished; their tombstone blocks a replay until the retention has passed."""
        return self.prefix + "ix:tomb"

    @property
    def leases(self) -> str:
        """Sorted set: leased task id scored by its lease deadline (server ms)."""
        return self.prefix + "leases"

    @property
    def workers(self) -> str:
        """Hash: worker id -> JSON heartbeat (server ms, pid, node, load, capacity, draining)."""
        return self.prefix + "workers"

    @property
    def control(self) -> str:
        """Hash: pool flags that outlive actors: ``paused``, ``drain:<worker id>``."""
        return self.prefix + "control"

    @property
    def acquire_log(self) -> str:
        """Hash: holder -> its last granting acquire call (request id and task ids)."""
        return self.prefix + "acqlog"

    @property
    def fence(self) -> str:
        return self.prefix + "fence"

    @property
    def seq(self) -> str:
        return self.prefix + "seq"

    @property
    def run_id(self) -> str:
        return self.prefix + "runid"

    @property
    def counts(self) -> str:
        """Hash: state -> number of tasks in it."""
        return self.prefix + "counts"

    @property
    def stats(self) -> str:
        """Hash: event counters (submitted, granted, fenced_rejected, retries, ...)."""
        return self.prefix + "stats"

    @property
    def histograms(self) -> str:
        """Hash: histogram buckets ``<metric>:<le>`` (non-cumulative), ``:sum`` and ``:count``."""
        return self.prefix + "hist"

    @property
    def wake(self) -> str:
        """List (at most one element): pushed when work is queued, so the Distributor wakes."""
        return self.prefix + "wake"

    @property
    def audit(self) -> str:
        """Stream (capped): transitions and rejections."""
        return self.prefix + "audit"

    def snapshot(self, snapshot_id: str) -> str:
        """Hash: one stored snapshot (``m`` signed manifest, ``n`` chunk count, data chunks)."""
        return f"{self.prefix}snap:{snapshot_id}"

    @property
    def snapshots(self) -> str:
        """Sorted set: stored snapshot ids scored by their server creation time (ms)."""
        return self.prefix + "snaps"

    @property
    def barrier(self) -> str:
        """String "<snapshot id>|<ms>" with an expiry: a snapshot is being copied; every
        task-state script waits while it stands (raysys/snapshots/manager.py)."""
        return self.prefix + "barrier"

    @property
    def restoring(self) -> str:
        """String "<snapshot id>|<token>|<ms of its last page>": a restore is under way; every
        task-state script waits while it stands, and a restore that died leaves it for the
        next one to take over (once quiet for 30 s) and clear."""
        return self.prefix + "restoring"

    @property
    def console_samples(self) -> str:
        """List, newest first, at most an hour of them: the HTTP app's 10 s samples of the
        counters (JSON), from which the console draws throughput and wait. Snapshots leave it
        out (``console:`` keys are the app's own, rebuilt as it runs)."""
        return self.prefix + "console:samples"

    def console_slot(self, slot: int) -> str:
        """String, kept 20 s: the HTTP app replica that takes the sample of 10 s ``slot``
        (``SET NX``), so two replicas never both append one."""
        return f"{self.prefix}console:slot:{slot}"

    def reply(self, script: str, call: str) -> str:
        """String, kept two minutes: what script ``script`` did on call ``call`` (a request id,
        a snapshot id, a restore's owner), for a script that cannot otherwise tell that call
        resent (its reply lost, or not confirmed by replicas) from a new one: the resend then
        answers as the first send and changes nothing. Snapshots leave it out."""
        return f"{self.prefix}reply:{script}:{call}"

    @property
    def upgrade(self) -> str:
        """Hash: how far tasks of earlier versions are indexed (``seeded``, ``cursor``,
        ``done``; raysys/store/upgrade.py)."""
        return self.prefix + "upgrade"

    def task_pattern(self) -> str:
        """SCAN pattern matching every task hash of the namespace."""
        return glob_escape(self.task("")) + "*"

    def pattern(self) -> str:
        """SCAN pattern matching every key of the namespace (glob characters escaped)."""
        return glob_escape(self.prefix) + "*"


def glob_escape(text: str) -> str:
    """``text`` as a literal inside a Redis glob pattern (SCAN MATCH, KEYS)."""
    return re.sub(r"([\\*?\[\]{}])", r"\\\1", text)


def drop_keys(client: redis.Redis, pattern: str, per_call: int = 1000) -> int:
    """Delete every key matching ``pattern``, ``per_call`` keys per DEL; how many were deleted.

    (One DEL per key costs a round trip, and an fsync with ``appendfsync always``, per key.)
    """
    deleted = 0
    batch: list[bytes | str] = []
    for key in client.scan_iter(match=pattern, count=per_call):
        batch.append(key)
        if len(batch) >= per_call:
            deleted += int(client.delete(*batch))
            batch = []
    if batch:
        deleted += int(client.delete(*batch))
    return deleted
