"""System-wide Prometheus metrics, read from Redis (no Ray): what ``/metrics`` serves.

Every counter here is kept in Redis by the Lua script that makes the transition (or, for
messages, by the receiving actor), so a scrape is the sum over every actor that ever ran,
survives actor restarts, and counts tasks, not attempts, unless the name says so. Gauges are
read at scrape time. One pipelined round trip per scrape.

Names (``cluster/prometheus/alerts.yaml`` and the Grafana dashboard query these):

* counters: ``agent_messages_total{type,outcome}``, ``agent_failures_total`` (tasks that ended
  ``dead`` or ``quarantined``), ``raysys_tasks_created_total``,
  ``raysys_tasks_completed_total{status}``, ``raysys_task_attempt_failures_total``,
  ``raysys_leases_granted_total``, ``raysys_leases_renewed_total``,
  ``raysys_leases_expired_total``, ``raysys_fenced_writes_rejected_total``,
  ``raysys_signature_failures_total``, ``raysys_replays_rejected_total``,
  ``raysys_state_conflict_retries_total``, ``raysys_tasks_purged_total`` (removed by retention
  or ``purge``), ``raysys_tasks_redriven_total``; every counter is monotonic: a purge or a
  redrive lowers ``raysys_tasks{state}`` but never a ``_total``;
* histograms: ``task_duration_seconds`` (handler time of the attempt that made a task final),
  ``raysys_message_latency_seconds`` (actor message, sealed to opened);
* gauges: ``redis_connected``, ``pending_tasks`` (pending plus failed awaiting retry; not
  ``scheduled`` tasks, which are not due), ``raysys_redis_used_memory_bytes`` and
  ``raysys_redis_maxmemory_bytes`` (0: no limit),
  ``raysys_tasks{state}``, ``raysys_live_workers``, ``raysys_reaper_lag_seconds`` (how long
  the oldest expired lease has waited for the reaper), ``raysys_redis_pool_connections{state}``
  (summed over the workers' heartbeats and the scraping process), ``raysys_actor_up{actor}``,
  ``raysys_tasks_waiting{kind,reason}`` (pending tasks of kinds held back: no live node can
  place them, or ``max_in_flight`` reached).
"""

from __future__ import annotations

import json
from collections.abc import Iterable, Iterator, Mapping
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

import redis
from prometheus_client.core import (
    CounterMetricFamily,
    GaugeMetricFamily,
    HistogramMetricFamily,
    Metric,
)
from prometheus_client.exposition import generate_latest
from prometheus_client.registry import Collector, CollectorRegistry

from raysys.models import TaskState
from raysys.redis_server.connection import pool_state
from raysys.store.histograms import MESSAGE_LATENCY, TASK_DURATION, cumulative
from raysys.store.replies import as_text

if TYPE_CHECKING:
    from raysys.core import Core

FINAL = ("succeeded", "dead", "cancelled", "quarantined")
# stats hash field -> (metric name without _total, help)
SIMPLE_COUNTERS: dict[str, tuple[str, str]] = {
    "submitted": ("raysys_tasks_created", "Tasks accepted (stored, signed)"),
    "attempt_failures": ("raysys_task_attempt_failures",
                         "Attempts that failed (handler error or timeout)"),
    "granted": ("raysys_leases_granted", "Leases granted"),
    "renewed": ("raysys_leases_renewed", "Lease renewals"),
    "expired": ("raysys_leases_expired", "Leases taken back by the reaper after expiry"),
    "fenced_rejected": ("raysys_fenced_writes_rejected",
                        "Commits rejected because their fencing token was stale"),
    "signature_failures": ("raysys_signature_failures",
                           "Records and messages that failed signature verification"),
    "replays_rejected": ("raysys_replays_rejected", "Replayed messages or records rejected"),
    "conflict_retries": ("raysys_state_conflict_retries",
                         "Optimistic read-modify-write retries after a version conflict"),
    "purged": ("raysys_tasks_purged", "Finished tasks removed (retention or raysys purge)"),
    "redriven": ("raysys_tasks_redriven", "Finished tasks sent to run again (raysys redrive)"),
}


@dataclass
class Snapshot:
    """What one scrape read (all plain data, so actors can mirror it into Ray's metrics)."""

    redis_connected: bool
    counts: dict[str, int] = field(default_factory=dict)
    stats: dict[str, int] = field(default_factory=dict)
    histograms: dict[str, str] = field(default_factory=dict)
    live_workers: int = 0
    reaper_lag_s: float = 0.0
    pool: dict[str, int] = field(default_factory=dict)
    actors: dict[str, bool] = field(default_factory=dict)
    waiting: dict[str, dict[str, Any]] = field(default_factory=dict)  # kinds held back
    memory: dict[str, int] = field(default_factory=dict)  # used_memory, maxmemory (bytes)


def read(core: Core, *, worker_max_age_ms: int,
         actors: Mapping[str, bool] | None = None) -> Snapshot:
    """Read every metric of the core's namespace in one round trip; Redis down -> connected
    False."""
    client, keys = core.client, core.keys
    pipe = client.pipeline(transaction=False)
    pipe.time()
    pipe.hgetall(keys.counts)
    pipe.hgetall(keys.stats)
    pipe.hgetall(keys.histograms)
    pipe.hgetall(keys.workers)
    pipe.zrange(keys.leases, 0, 0, withscores=True)
    pipe.hgetall(keys.waiting)
    pipe.info("memory")
    try:
        now, counts, stats, hist, workers, oldest, waiting, memory = pipe.execute()
    except (redis.RedisError, OSError):
        return Snapshot(False, actors=dict(actors or {}))
    now_ms = int(now[0]) * 1000 + int(now[1]) // 1000
    live, pool = 0, dict(pool_state(client))
    for raw in workers.values():
        doc = json.loads(raw)
        if now_ms - int(doc.get("ts", 0)) <= worker_max_age_ms:
            live += 1
            for state, n in (doc.get("redis_pool") or {}).items():
                pool[state] = pool.get(state, 0) + int(n)
    lag = 0.0
    if oldest and float(oldest[0][1]) < now_ms:
        lag = (now_ms - float(oldest[0][1])) / 1000
    return Snapshot(True, _ints(counts), _ints(stats),
                    {as_text(k): as_text(v) for k, v in hist.items()}, live, lag, pool,
                    dict(actors or {}), _docs(waiting),
                    {name: int(memory.get(name, 0) or 0) for name in ("used_memory",
                                                                      "maxmemory")})


def families(snap: Snapshot) -> Iterator[Metric]:
    """The Prometheus metric families of one snapshot."""
    yield _gauge("redis_connected", "1 if Redis answered this scrape", 1 if snap.redis_connected
                 else 0)
    up = GaugeMetricFamily("raysys_actor_up", "1 if the named actor answered", labels=["actor"])
    for actor, alive in sorted(snap.actors.items()):
        up.add_metric([actor], 1 if alive else 0)
    yield up
    if not snap.redis_connected:
        return
    yield from _task_families(snap)
    stats = snap.stats
    messages = CounterMetricFamily("agent_messages", "Signed actor messages received, by type "
                                   "and outcome", labels=["type", "outcome"])
    for stat, n in sorted(stats.items()):
        parts = stat.split(":")
        if len(parts) == 3 and parts[0] == "messages":
            messages.add_metric([parts[1], parts[2]], n)
    yield messages
    for name, help_text in ((TASK_DURATION, "Handler run time of the attempt that made a task "
                             "final"),
                            (MESSAGE_LATENCY, "Actor message latency, sealed to opened")):
        buckets, total, count = cumulative(snap.histograms, name)
        family = HistogramMetricFamily(name, help_text)
        family.add_metric([], buckets=buckets, sum_value=total)
        del count  # the +Inf bucket is the count
        yield family
    yield _gauge("raysys_redis_used_memory_bytes", "Memory Redis uses (INFO used_memory), "
                 "whole server", snap.memory.get("used_memory", 0))
    yield _gauge("raysys_redis_maxmemory_bytes", "Redis maxmemory (0: no limit: it grows "
                 "until the machine runs out)", snap.memory.get("maxmemory", 0))
    yield _gauge("raysys_live_workers", "Workers whose heartbeat is younger than the lease TTL",
                 snap.live_workers)
    yield _gauge("raysys_reaper_lag_seconds", "How long the oldest expired lease has waited "
                 "for the reaper", snap.reaper_lag_s)
    waiting = GaugeMetricFamily("raysys_tasks_waiting", "Pending tasks of kinds held back, by "
                                "kind and why (resources: no live node can place them)",
                                labels=["kind", "reason"])
    for kind, doc in sorted(snap.waiting.items()):
        waiting.add_metric([kind, str(doc.get("reason", ""))], float(doc.get("pending", 0)))
    yield waiting
    pool = GaugeMetricFamily("raysys_redis_pool_connections", "Redis connections in the "
                             "workers' and this process's pools", labels=["state"])
    for pool_use in ("in_use", "available"):
        pool.add_metric([pool_use], snap.pool.get(pool_use, 0))
    yield pool


def _task_families(snap: Snapshot) -> Iterator[Metric]:
    """Tasks by state, completed (monotonic) and failed, and the simple event counters."""
    counts, stats = snap.counts, snap.stats
    yield _gauge("pending_tasks", "Tasks waiting for a worker (pending, or failed and waiting "
                 "to retry)", counts.get("pending", 0) + counts.get("failed", 0))
    states = GaugeMetricFamily("raysys_tasks", "Tasks by current state", labels=["state"])
    for task_state in TaskState:
        states.add_metric([task_state.value], counts.get(task_state.value, 0))
    yield states
    completed = CounterMetricFamily("raysys_tasks_completed", "Tasks that reached a final "
                                    "state, by that state", labels=["status"])
    for state in FINAL:  # monotonic: counted when the task finished, kept through purges
        completed.add_metric([state], stats.get(f"completed:{state}", 0))
    yield completed
    yield CounterMetricFamily("agent_failures", "Tasks that failed for good (dead or "
                              "quarantined)", value=stats.get("completed:dead", 0)
                              + stats.get("completed:quarantined", 0))
    for stat, (name, help_text) in SIMPLE_COUNTERS.items():
        value = stats.get(stat, 0)
        if stat == "replays_rejected":  # replayed messages plus re-queued finished records
            value += stats.get("replays_blocked", 0)
        yield CounterMetricFamily(name, help_text, value=value)


def render(snap: Snapshot) -> bytes:
    """Prometheus text exposition (``text/plain; version=0.0.4``) of one snapshot."""
    registry = CollectorRegistry(auto_describe=False)
    registry.register(_Fixed(list(families(snap))))
    return generate_latest(registry)


def flat(snap: Snapshot) -> dict[str, tuple[float, dict[str, str]]]:
    """Every sample as ``{"name{labels}": (value, labels)}`` (mirrors into Ray's metrics)."""
    out: dict[str, tuple[float, dict[str, str]]] = {}
    for family in families(snap):
        for sample in family.samples:
            if sample.name.endswith("_created"):
                continue
            key = sample.name + json.dumps(sample.labels, sort_keys=True)
            out[key] = (float(sample.value), dict(sample.labels))
    return out


class _Fixed(Collector):
    def __init__(self, metrics: Iterable[Metric]) -> None:
        self._metrics = list(metrics)

    def collect(self) -> Iterable[Metric]:
        return self._metrics


def _gauge(name: str, help_text: str, value: float) -> GaugeMetricFamily:
    return GaugeMetricFamily(name, help_text, value=value)


def _docs(raw: Mapping[Any, Any]) -> dict[str, dict[str, Any]]:
    out: dict[str, dict[str, Any]] = {}
    for key, value in raw.items():
        try:
            doc = json.loads(value)
        except ValueError:
            continue
        if isinstance(doc, dict):
            out[as_text(key, errors="replace")] = doc
    return out


def _ints(raw: Mapping[Any, Any]) -> dict[str, int]:
    out: dict[str, int] = {}
    for key, value in raw.items():
        try:
            out[as_text(key)] = int(value)
        except ValueError:
            continue
    return out
