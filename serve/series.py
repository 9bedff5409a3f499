"""The last hour of throughput and wait, for the console's charts.

Every :data:`SAMPLE_EVERY_S` seconds the app appends to ``Keyspace.console_samples`` the
monotonic counters of finished and submitted tasks, and the submit-to-start wait (p50, p95) of
up to :data:`WAIT_SAMPLE` tasks that succeeded since the last sample (``start_waits`` of the
store). One sample per slot however many replicas run: a replica first claims the slot
(``Keyspace.console_slot``, ``SET NX``). :func:`series` turns consecutive samples of the last
hour into per-interval rates, skipping entries it cannot read. Its cost does not grow with the
number of tasks stored.
"""

import itertools
import json
import logging
import threading
from typing import Any

import redis

from raysys.metrics import FINAL
from raysys.store import TaskStore
from raysys.store.replies import as_text

log = logging.getLogger(__name__)

SAMPLE_EVERY_S = 10.0
HOUR_MS = 3_600_000
KEEP = 361  # one hour of intervals
WAIT_SAMPLE = 200


def take_sample(store: TaskStore) -> bool:
    """Append this slot's sample unless another caller claimed the slot; True if it did."""
    client, keys = store.client, store.keys
    now_ms = store.server_ms()
    slot = now_ms // int(SAMPLE_EVERY_S * 1000)
    if not client.set(keys.console_slot(slot), "1", nx=True, px=int(SAMPLE_EVERY_S * 2000)):
        return False
    last = _newest(client.lindex(keys.console_samples, 0))
    stats = {as_text(k): int(v) for k, v in client.hgetall(keys.stats).items()}
    since = int(last["ms"]) if last else now_ms - int(SAMPLE_EVERY_S * 1000)
    waits = sorted(store.start_waits(since, now_ms, WAIT_SAMPLE))
    p50 = float(waits[len(waits) // 2]) if waits else None
    p95 = float(waits[min(len(waits) - 1, int(len(waits) * 0.95))]) if waits else None
    sample = {"slot": slot, "ms": now_ms, "submitted": stats.get("submitted", 0),
              "finished": sum(stats.get(f"completed:{s}", 0) for s in FINAL),
              "wait_p50_ms": p50, "wait_p95_ms": p95}
    pipe = client.pipeline(transaction=False)
    pipe.lpush(keys.console_samples, json.dumps(sample))
    pipe.ltrim(keys.console_samples, 0, KEEP - 1)
    pipe.execute()
    return True


def _newest(raw: Any) -> dict[str, Any] | None:
    """A stored sample, or None for none or one that does not read as a sample."""
    try:
        sample = json.loads(raw) if raw else None
        return sample if isinstance(sample, dict) and int(sample["ms"]) > 0 else None
    except (ValueError, TypeError, KeyError):
        return None


def series(store: TaskStore) -> list[dict[str, Any]]:
    """Per-interval rates of the last hour's samples, oldest first (``SamplePoint``'s
    fields); samples closer than half an interval to the one before are skipped."""
    now_ms = store.server_ms()
    raw = store.client.lrange(store.keys.console_samples, 0, KEEP - 1)
    samples = sorted((s for s in map(_newest, raw) if s and int(s["ms"]) > now_ms - HOUR_MS),
                     key=lambda s: int(s["ms"]))
    spaced: list[dict[str, Any]] = []
    for sample in samples:
        if not spaced or int(sample["ms"]) - int(spaced[-1]["ms"]) >= SAMPLE_EVERY_S * 500:
            spaced.append(sample)
    out = []
    for before, after in itertools.pairwise(spaced):
        try:
            out.append(_point(before, after))
        except (KeyError, TypeError, ValueError):  # an entry of another shape: left out
            continue
    return out


def _point(before: dict[str, Any], after: dict[str, Any]) -> dict[str, Any]:
    seconds = (int(after["ms"]) - int(before["ms"])) / 1000
    return {"ts": int(after["ms"]) / 1000,
            "finished_per_s": max(0, int(after["finished"]) - int(before["finished"])) / seconds,
            "submitted_per_s": max(0, int(after["submitted"]) - int(before["submitted"]))
            / seconds,
            "wait_p50_ms": after["wait_p50_ms"], "wait_p95_ms": after["wait_p95_ms"]}


class Sampler:
    """A daemon thread taking :func:`take_sample` every ``every_s`` until :meth:`stop`; an
    error (Redis away, anything else) is logged and the next slot tried."""

    def __init__(self, store: TaskStore, every_s: float = SAMPLE_EVERY_S) -> None:
        self.store = store
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
                take_sample(self.store)
            except (redis.RedisError, OSError) as exc:  # Redis away: the next slot
                log.debug("console sample skipped: %s", exc)
            except Exception:  # never let one bad sample end the charts for good
                log.exception("console sample failed")
            self._stop.wait(self.every_s)
