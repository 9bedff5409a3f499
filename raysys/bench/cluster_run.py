"""Run a workload through the actor system and account for every task (``demo``, ``bench``).

The driver submits through the Coordinator (in chunks, optionally at an offered rate) while the
Distributor hands leases to the Worker actors; a progress bar follows the counts in Redis. The
figures that prove the guarantees come from the independent commit ledger the actors write
(``lost``, ``duplicate_commits``), never from the store's own counters. Submit-to-start latency
is the wall-clock time from just before a task's submission call to its handler's start, as the
worker recorded it in the ledger (one machine's clock for a local run); ``submit_call_ms`` is
the duration of the submission calls themselves (part of that latency).
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any, Protocol

from raysys.bench.workload import Progress, percentiles
from raysys.ledger import CommitLedger
from raysys.models import FINAL_STATES, TaskSpec
from raysys.signing.keyring import DEFAULT_ALGORITHM, Algorithm

log = logging.getLogger(__name__)


class _Client(Protocol):
    def submit_specs(self, specs: Sequence[TaskSpec]) -> list[str]: ...

    def counts(self) -> dict[str, int]: ...

    def stats(self) -> dict[str, int]: ...


@dataclass(frozen=True)
class RunOptions:
    tasks: int = 2000
    workers: int = 2
    batch: int = 50  # leases per assignment (the actors' batch)
    concurrency: int = 16  # leases each worker runs at once
    kind: str = "noop"
    submit_batch: int = 500  # tasks per submission call
    rate: float | None = None  # offered load, tasks/s; None: as fast as possible
    timeout_s: float = 900.0
    warmup: int = 0  # tasks run before the measured ones (bench), not in the figures
    fsync: str = "always"
    signing: Algorithm = DEFAULT_ALGORITHM
    audit: bool = True
    serve: bool = False


class Submitter(threading.Thread):
    """Submits ``specs`` in chunks (paced by ``rate``); records each id's submit time."""

    def __init__(self, client: _Client, specs: Sequence[TaskSpec], options: RunOptions) -> None:
        super().__init__(name="submitter", daemon=True)
        self.client = client
        self.specs = specs
        self.options = options
        self.ids: list[str] = []
        self.submitted_at: dict[str, float] = {}
        self.call_ms: list[float] = []  # duration of each submission call
        self.error: BaseException | None = None
        self.stop = threading.Event()

    def run(self) -> None:
        step = self.options.submit_batch
        rate = self.options.rate
        if rate:
            step = max(1, min(step, int(rate / 100) or 1))  # ~100 calls a second at most
        t0 = time.monotonic()
        try:
            for offset in range(0, len(self.specs), step):
                if self.stop.is_set():
                    return
                if rate:
                    pause = t0 + offset / rate - time.monotonic()
                    if pause > 0:
                        time.sleep(pause)
                began = time.time()
                got = self.client.submit_specs(self.specs[offset:offset + step])
                self.ids.extend(got)
                self.submitted_at.update(dict.fromkeys(got, began))
                self.call_ms.append((time.time() - began) * 1000)
        except BaseException as exc:  # reported by the driver, which then stops waiting
            self.error = exc


def run_on_cluster(client: _Client, ledger: CommitLedger, specs: Sequence[TaskSpec],
                   options: RunOptions, progress: Progress | None = None,
                   actor_pids: Callable[[], dict[str, int]] | None = None) -> dict[str, Any]:
    """Submit ``specs`` while the actors process them; return DESIGN's report.

    ``actor_pids``: the local actors' process ids by name; their resident memory is reported
    (``actor_rss_mb``) before the run, once a tenth of the tasks is done (buffers and caches
    warmed up) and after it, to show that none grows with the work done.
    """
    pids = actor_pids() if actor_pids is not None else {}
    rss = {"before": resident_mb(pids)}
    before = _final_total(client.counts())
    submitter = Submitter(client, specs, options)
    t_first = time.time()
    submitter.start()
    deadline = time.monotonic() + options.timeout_s
    try:
        while time.monotonic() < deadline:
            done = _final_total(client.counts()) - before
            if pids and "warm" not in rss and done >= len(specs) / 10:
                rss["warm"] = resident_mb(pids)
            if progress is not None:
                progress.update(done, done / max(time.time() - t_first, 1e-6))
            if submitter.error is not None:
                raise submitter.error
            if not submitter.is_alive() and done >= len(submitter.ids):
                break
            time.sleep(0.1)
        else:
            log.error("gave up waiting after %.0f s; unfinished tasks count as lost",
                      options.timeout_s)
    finally:
        submitter.stop.set()
        submitter.join(timeout=60)
    t_last = time.time()
    ids = submitter.ids
    report: dict[str, Any] = dict(ledger.report(ids).to_json())
    if progress is not None:
        progress.update(report["tasks"] - report["lost"],
                        report["tasks"] / max(t_last - t_first, 1e-6), final=True)
    starts = ledger.starts()
    latencies = [(starts[i] - submitter.submitted_at[i]) * 1000 for i in ids if i in starts]
    report.update({
        "retries": int(client.stats().get("retries", 0)),
        "tasks_per_s": round(len(ids) / max(t_last - t_first, 1e-6), 1),
        "latency_ms": percentiles(latencies),
        "submit_call_ms": percentiles(submitter.call_ms),
        **({"actor_rss_mb": _rss_report({**rss, "after": resident_mb(pids)})} if pids else {}),
        "settings": {"fsync": options.fsync, "signing": options.signing, "serve": options.serve,
                     "audit": options.audit, "workers": options.workers, "batch": options.batch,
                     "concurrency": options.concurrency, "kind": options.kind,
                     "mode": "ray-actors", "signed_messages": True, "heartbeats": True,
                     "ledger": True, "warmup": options.warmup},
    })
    return report


def resident_mb(pids: dict[str, int]) -> dict[str, float]:
    """Resident memory (MiB) of each local process; absent where it cannot be read."""
    import psutil  # type: ignore[import-untyped]  # a dependency of ray[default]

    out: dict[str, float] = {}
    for name, pid in pids.items():
        try:
            out[name] = round(psutil.Process(pid).memory_info().rss / 2**20, 1)
        except (psutil.Error, OSError):
            continue
    return out


def _rss_report(samples: dict[str, dict[str, float]]) -> dict[str, dict[str, float]]:
    """{actor: {sample: MiB}} from {sample: {actor: MiB}}."""
    out: dict[str, dict[str, float]] = {}
    for sample, by_actor in samples.items():
        for name, mib in by_actor.items():
            out.setdefault(name, {})[sample] = mib
    return dict(sorted(out.items()))


def _final_total(counts: dict[str, int]) -> int:
    return sum(counts.get(state.value, 0) for state in FINAL_STATES)
