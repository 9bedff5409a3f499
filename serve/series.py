"""The last hour of throughput and wait, for the console's charts.

Every :data:`SAMPLE_EVERY_S` seconds the app (any replica; one sample per slot, whoever comes
first) appends to ``Keyspace.console_samples`` the monotonic counters of finished and
submitted tasks, and the submit-to-start wait (p50, p95) of up to :data:`WAIT_SAMPLE` tasks
that succeeded since the last sample (the wait of the attempt that finished them, from their
history). :func:`series` turns consecutive samples into per-interval rates. Reads only what it
needs (counters, one index range, a few task hashes): its cost does not grow with the number of
tasks stored.
"""

import itertools
import json
import logging
import threading
from typing import Any

import redis

from raysys.metrics import FINAL
from raysys.store.keyspace import Keyspace
from raysys.store.replies import as_text

log = logging.getLogger(__name__)

SAMPLE_EVERY_S = 10.0
KEEP = 361  # one hour of intervals
WAIT_SAMPLE = 200


def take_sample(client: redis.Redis, keys: Keyspace) -> bool:
    """Append this slot's sample unless one is there; True if it appended."""
    seconds, micros = client.time()
    now_ms = int(seconds) * 1000 + int(micros) // 1000
    slot = now_ms // int(SAMPLE_EVERY_S * 1000)
    newest = client.lindex(keys.console_samples, 0)
    last = json.loads(newest) if newest else None
    if last is not None and int(last["slot"]) >= slot:
        return False
    stats = {as_text(k): int(v) for k, v in client.hgetall(keys.stats).items()}
    since = int(last["ms"]) if last is not None else now_ms - int(SAMPLE_EVERY_S * 1000)
    p50, p95 = _waits(client, keys, since, now_ms)
    sample = {"slot": slot, "ms": now_ms, "submitted": stats.get("submitted", 0),
              "finished": sum(stats.get(f"completed:{s}", 0) for s in FINAL),
              "wait_p50_ms": p50, "wait_p95_ms": p95}
    pipe = client.pipeline(transaction=False)
    pipe.lpush(keys.console_samples, json.dumps(sample))
    pipe.ltrim(keys.console_samples, 0, KEEP - 1)
    pipe.execute()
    return True


def _waits(client: redis.Redis, keys: Keyspace, since_ms: int, now_ms: int
           ) -> tuple[float | None, float | None]:
    ids = client.zrevrangebyscore(keys.finished_index("succeeded"), now_ms, f"({since_ms}",
                                  start=0, num=WAIT_SAMPLE)
    if not ids:
        return None, None
    pipe = client.pipeline(transaction=False)
    for task_id in ids:
        pipe.hmget(keys.task(as_text(task_id)), "sub", "hn")
    heads = pipe.execute()
    for task_id, (_, hn) in zip(ids, heads, strict=True):
        pipe.hget(keys.task(as_text(task_id)), f"h{(int(hn or 1) - 1) % 20 + 1}")
    entries = pipe.execute()
    waits = []
    for (sub, _), entry in zip(heads, entries, strict=True):
        parts = as_text(entry or "").split("|")
        if sub and len(parts) > 4 and parts[4]:
            waits.append(max(0, int(parts[4]) - int(sub)))
    if not waits:
        return None, None
    waits.sort()
    return (float(waits[len(waits) // 2]),
            float(waits[min(len(waits) - 1, int(len(waits) * 0.95))]))


def series(client: redis.Redis, keys: Keyspace) -> list[dict[str, Any]]:
    """Per-interval rates of the stored samples, oldest first (``SamplePoint``'s fields)."""
    raw = client.lrange(keys.console_samples, 0, KEEP - 1)
    samples = sorted((json.loads(r) for r in raw), key=lambda s: int(s["ms"]))
    out = []
    for before, after in itertools.pairwise(samples):
        seconds = max(0.001, (int(after["ms"]) - int(before["ms"])) / 1000)
        out.append({"ts": int(after["ms"]) / 1000,
                    "finished_per_s": max(0, after["finished"] - before["finished"]) / seconds,
                    "submitted_per_s": max(0, after["submitted"] - before["submitted"])
                    / seconds,
                    "wait_p50_ms": after["wait_p50_ms"], "wait_p95_ms": after["wait_p95_ms"]})
    return out


class Sampler:
    """A daemon thread taking :func:`take_sample` every ``every_s`` until :meth:`stop`."""

    def __init__(self, client: redis.Redis, keys: Keyspace,
                 every_s: float = SAMPLE_EVERY_S) -> None:
        self.client = client
        self.keys = keys
        self.every_s = every_s
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="raysys-console-sampler",
                                        daemon=True)

    def start(self) -> "Sampler":
        self._thread.start()
        return self

    def stop(self) -> None:
        self._stop.set()

    def _run(self) -> None:
        while not self._stop.is_set():
            try:
                take_sample(self.client, self.keys)
            except (redis.RedisError, OSError, ValueError) as exc:  # Redis away: next time
                log.debug("console sample skipped: %s", exc)
            self._stop.wait(self.every_s)
