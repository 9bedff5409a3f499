"""The Dramatiq side of ``benchmarks/compare_dramatiq.py``: broker, Results middleware, actor.

The ``dramatiq`` CLI imports this module in each worker process (``python -m dramatiq
dramatiq_app:broker --path benchmarks``); the CLI only takes a module name, so the Redis URL
comes from the environment (``DRAMATIQ_BENCH_REDIS_URL``). Without it the import fails rather
than fall back to Dramatiq's default broker on localhost:6379. The benchmark calls
:func:`build` itself, with each round's URL.
"""

from __future__ import annotations

import os
import time
from typing import Any

import dramatiq
from dramatiq.brokers.redis import RedisBroker
from dramatiq.results import Results
from dramatiq.results.backends import RedisBackend

URL_ENV = "DRAMATIQ_BENCH_REDIS_URL"
QUEUE = "default"


def noop(i: int) -> int:
    """Does nothing; its stored result (``i``) proves that message ``i`` was processed."""
    return i


def sleep(i: int, seconds: float) -> int:
    """Waits ``seconds`` (I/O-bound work, as raysys's ``sleep`` kind), then returns ``i``."""
    time.sleep(seconds)
    return i


def spin(i: int, ms: float) -> int:
    """Pure-Python work for ``ms`` milliseconds (as raysys's ``spin`` kind), then ``i``."""
    end = time.perf_counter() + ms / 1000
    while time.perf_counter() < end:
        for _ in range(200):
            pass
    return i


WORKLOADS = {"noop": noop, "sleep": sleep, "spin": spin}


def build(url: str, workload: str = "noop"
          ) -> tuple[RedisBroker, RedisBackend, dramatiq.Actor[Any, Any]]:
    """A Redis broker with the Results middleware, and the workload's actor registered on it.

    ``max_retries=0``: a failure dead-letters the message at once, so the benchmark reports it
    (as a missing result) instead of waiting through Dramatiq's retry backoff.
    """
    backend = RedisBackend(url=url)
    redis_broker = RedisBroker(url=url)
    redis_broker.add_middleware(Results(backend=backend))
    actor = dramatiq.actor(broker=redis_broker, queue_name=QUEUE, store_results=True,
                           max_retries=0, actor_name="work")(WORKLOADS[workload])
    return redis_broker, backend, actor


_url = os.environ.get(URL_ENV)
if not _url:
    raise RuntimeError(f"{URL_ENV} is not set: the Redis URL of the Dramatiq benchmark")
broker, _, _ = build(_url, os.environ.get("DRAMATIQ_BENCH_WORKLOAD", "noop"))
dramatiq.set_broker(broker)
