"""Running leases concurrently for one holder: slots, lanes, deadlines, cancels, commits.

:class:`TaskRunner` is the execution engine of a worker (the Worker actor is a thin shell over
it; the core-only loop drives it too). Contract:

* Up to ``concurrency`` attempts run at once, a kind with its own ``concurrency`` at most that
  many; leases beyond that wait in a queue (the prefetch), kept small: about what the worker
  finishes in ``PREFETCH_WINDOW_S`` at its recent rate, at most ``max_prefetch`` — so short
  tasks flow in large batches while long ones are not hoarded (a worker busy with long tasks
  holds none queued that another worker could start). :meth:`load` says how many more the
  worker should be given (``room``).
* Plain handlers run on a thread of the pool, ``async def`` ones on the event loop, kinds with
  Ray options as Ray tasks (``remote``). One path for every kind, the built-in ones included.
* Each outcome is committed as it comes in (the :class:`Committer` batches what is ready).
  Lanes only queue what ended; one dispatcher thread does the bookkeeping for a whole batch
  of endings under one lock, so handler threads never queue up on it.
* Time limits count from the handler's start. At the deadline the attempt fails ("timed out")
  and follows the retry policy: ``ctx.cancelled`` is set; an async handler is cancelled; a Ray
  task is force-cancelled. A thread cannot be killed: until its handler returns it stays
  *stuck* and its slot stays taken; a worker whose slots are all stuck takes no more work
  (``room`` 0, ``stuck`` in :meth:`load`) and is replaced by the Coordinator.
* :meth:`cancel` (a task cancelled, or its lease lost) sets ``ctx.cancelled`` with the reason,
  force-cancels a Ray task, drops a queued lease, and commits nothing for it.
* :meth:`renew` renews every lease held (queued or running); a lost lease is cancelled.
"""

from __future__ import annotations

import collections
import logging
import math
import queue
import threading
import time
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from functools import partial
from typing import Any

from raysys.execution.committer import Committer, Finished
from raysys.execution.lanes import AsyncLane, RemoteLane, Report, Stop, ThreadLane
from raysys.execution.outcomes import effective_limits, unknown_kind
from raysys.execution.watchdog import Watchdog
from raysys.handlers import Handler, TaskContext, get_handler
from raysys.handlers.context import CANCELLED, LEASE_LOST, SHUTTING_DOWN, TIMED_OUT
from raysys.ledger import CommitLedger
from raysys.models import Lease, Outcome
from raysys.store import TaskStore

log = logging.getLogger(__name__)
DEFAULT_CONCURRENCY = 16
PREFETCH_WINDOW_S = 0.25  # queue about this much work per worker, to hide the hand-out latency
MAX_PREFETCH = 1000
RATE_HALF_LIFE_S = 0.5  # short: the prefetch follows a burst of short tasks within a second
DISPATCH_BATCH = 1000  # ended attempts accounted for under one lock


@dataclass(eq=False, slots=True)
class Attempt:
    """One running attempt. ``done`` once its outcome is decided (finished, timed out or
    cancelled); ``stuck``: done, but its thread still runs the handler."""

    lease: Lease
    handler: Handler
    ctx: TaskContext
    lane: str  # "thread" | "async" | "remote"
    started: float  # wall clock
    deadline: float  # monotonic
    stop: Stop = field(default=lambda: None)
    done: bool = False
    stuck: bool = False
    begun: bool = True  # False for a Ray task Ray has not started yet (its limit waits)


@dataclass
class RunnerCounters:
    started: int = 0
    finished: int = 0
    timed_out: int = 0
    cancelled: int = 0
    lost: int = 0


class TaskRunner:
    """The execution engine of one holder (a worker id). Thread-safe."""

    def __init__(self, store: TaskStore, holder: str, *, concurrency: int = DEFAULT_CONCURRENCY,
                 ttl_s: float = 30.0, ledger: CommitLedger | None = None,
                 remote: RemoteLane | None = None, max_prefetch: int = MAX_PREFETCH) -> None:
        if concurrency < 1:
            raise ValueError("concurrency must be at least 1")
        self.store = store
        self.holder = holder
        self.concurrency = concurrency
        self.ttl_s = ttl_s
        self.max_prefetch = max_prefetch
        self.counters = RunnerCounters()
        self.committer = Committer(store, holder, ledger=ledger)
        self.committer.start()
        self._lock = threading.RLock()
        self._queue: collections.deque[Lease] = collections.deque()
        self._running: dict[str, Attempt] = {}
        self._stuck: dict[str, Attempt] = {}
        self._by_kind: collections.Counter[str] = collections.Counter()  # running, per kind
        self._threads = ThreadLane(concurrency, f"{holder}-task")
        self._async = AsyncLane()
        self._remote = remote
        self._watchdog = Watchdog(f"{holder}-deadlines", self._on_deadline)
        self._ended: queue.SimpleQueue[tuple[Attempt, Outcome] | None] = queue.SimpleQueue()
        self._dispatcher = threading.Thread(target=self._dispatch, name=f"{holder}-dispatch",
                                            daemon=True)
        self._dispatcher.start()
        self._rate = 0.0  # finished attempts per second, decaying average
        self._rate_at = time.monotonic()
        self._closed = False

    # ---- work in ------------------------------------------------------------------------
    def submit(self, leases: Iterable[Lease]) -> None:
        """Queue leases held by this holder; they start as slots free up."""
        with self._lock:
            self._queue.extend(leases)
            self._fill()

    def load(self) -> dict[str, Any]:
        """``queued``, ``running``, ``stuck``, ``concurrency``, ``by_kind`` (queued and running
        per kind) and ``room``: how many more leases this worker should be given now."""
        with self._lock:
            queued, running, stuck = len(self._queue), len(self._running), len(self._stuck)
            by_kind = collections.Counter(lease.kind for lease in self._queue)
            by_kind.update(self._by_kind)
            usable = self.concurrency - stuck
            room = 0 if usable <= 0 else max(0, usable + self._prefetch() - queued - running)
            return {"queued": queued, "running": running, "stuck": stuck,
                    "concurrency": self.concurrency, "room": room, "by_kind": dict(by_kind)}

    def _prefetch(self) -> int:
        """Leases to hold queued: what finishes within the window at the current rate."""
        idle_s = time.monotonic() - self._rate_at
        rate = self._rate * 0.5 ** (idle_s / RATE_HALF_LIFE_S)  # decays while nothing finishes
        return int(min(self.max_prefetch, math.ceil(rate * PREFETCH_WINDOW_S)))

    # ---- starting attempts --------------------------------------------------------------
    def _fill(self) -> None:
        """Start queued leases while slots are free (a kind at its own cap waits)."""
        if self._closed:
            return
        skipped: list[Lease] = []
        while self._queue and len(self._running) + len(self._stuck) < self.concurrency:
            lease = self._queue.popleft()
            handler = get_handler(lease.kind)
            cap = handler.options.concurrency if handler is not None else None
            if cap is not None and self._by_kind[lease.kind] >= cap:
                skipped.append(lease)
                continue
            self._start(lease, handler)
        self._queue.extendleft(reversed(skipped))

    def _start(self, lease: Lease, handler: Handler | None) -> None:
        lease = effective_limits(lease, handler)
        log.debug("%s runs task %s attempt %d fence %d kind %s", self.holder, lease.task_id,
                  lease.attempt, lease.fence, lease.kind)
        started = time.time()
        if handler is None:
            self.committer.put(Finished(lease, unknown_kind(lease), started))
            return
        timeout = float(lease.timeout_s or 0)
        ctx = TaskContext(lease.task_id, lease.attempt, lease.fence,
                          lease.effective_idempotency_key, timeout, core=self.store.core)
        lane = "remote" if handler.options.remote else ("async" if handler.is_async
                                                          else "thread")
        attempt = Attempt(lease, handler, ctx, lane, started, time.monotonic() + timeout)
        self._running[lease.task_id] = attempt
        self._by_kind[lease.kind] += 1
        self.counters.started += 1
        if lane == "remote":  # the limit counts from the handler's start, once Ray places it
            attempt.begun, attempt.deadline = False, math.inf
        else:
            self._watchdog.add(lease.task_id, attempt.deadline)
        report = partial(self._report, attempt)
        try:
            attempt.stop = self._launch(attempt, report)
        except Exception as exc:  # e.g. Ray refused the task's options
            log.warning("task %s could not start: %s", lease.task_id, exc)
            report(Outcome(ok=False, error=f"could not start: {exc}"[:2000]))

    def _launch(self, attempt: Attempt, report: Report) -> Stop:
        handler, lease, ctx = attempt.handler, attempt.lease, attempt.ctx
        if attempt.lane == "remote":
            if self._remote is None:
                raise RuntimeError(f"kind {lease.kind} needs Ray resources, and this worker "
                                   "runs without Ray")
            return self._remote.start(handler, lease, ctx, report)
        if attempt.lane == "async":
            return self._async.start(handler, lease.payload, ctx, report)
        return self._threads.start(handler, lease.payload, ctx, report)

    # ---- attempts ending ----------------------------------------------------------------
    def _report(self, attempt: Attempt, outcome: Outcome) -> None:
        """A lane's word that ``attempt`` ended (any thread): queued for the dispatcher."""
        self._ended.put((attempt, outcome))

    def _dispatch(self) -> None:
        """Account for ended attempts in batches, start more, hand outcomes to the committer."""
        while True:
            first = self._ended.get()
            if first is None:
                return
            batch = [first]
            while len(batch) < DISPATCH_BATCH:
                try:
                    item = self._ended.get_nowait()
                except queue.Empty:
                    break
                if item is None:
                    self._ended.put(None)  # seen after this batch
                    break
                batch.append(item)
            finished = []
            with self._lock:
                for attempt, outcome in batch:
                    if attempt.stuck:  # ended long after its deadline: its slot is free again
                        self._stuck.pop(attempt.lease.task_id, None)
                        attempt.stuck = False
                    if attempt.done:  # timed out, cancelled or handed back: nothing to commit
                        continue
                    self._end(attempt)
                    finished.append(Finished(attempt.lease, outcome, attempt.started))
                self.counters.finished += len(finished)
                self._count_rate(len(finished))
                self._fill()
            self.committer.put_many(finished)

    def _end(self, attempt: Attempt, *, stuck: bool = False) -> None:
        """Mark ``attempt`` decided and free its slot (unless its thread is stuck)."""
        attempt.done = True
        task_id = attempt.lease.task_id
        if self._running.pop(task_id, None) is not None:
            self._by_kind[attempt.lease.kind] -= 1
            if self._by_kind[attempt.lease.kind] <= 0:
                del self._by_kind[attempt.lease.kind]
        self._watchdog.remove(task_id)
        if stuck:
            attempt.stuck = True
            self._stuck[task_id] = attempt

    def _count_rate(self, n: int) -> None:
        """``n`` more attempts finished: an exponentially weighted count of events, scaled so
        that a steady rate R reads R (each event adds ln 2 / half-life, and it all decays)."""
        if not n:
            return
        now = time.monotonic()
        self._rate = (self._rate * 0.5 ** ((now - self._rate_at) / RATE_HALF_LIFE_S)
                      + n * math.log(2) / RATE_HALF_LIFE_S)
        self._rate_at = now

    def _on_deadline(self, task_id: str) -> None:
        """A running attempt passed its time limit: fail it now, stop what can be stopped."""
        with self._lock:
            attempt = self._running.get(task_id)
            if attempt is None or attempt.done:
                return
            self._stop(attempt, TIMED_OUT)
            self.counters.timed_out += 1
            self._fill()
        seconds = attempt.ctx.timeout_s
        log.warning("task %s attempt %d timed out after %g s", task_id, attempt.lease.attempt,
                    seconds)
        self.committer.put(Finished(attempt.lease, Outcome(
            ok=False, error=f"timed out after {seconds:g} s", seconds=seconds),
            attempt.started))

    def _stop(self, attempt: Attempt, reason: str) -> None:
        """Under the lock: tell the handler, stop what can be stopped, free the slot."""
        attempt.ctx.cancelled.set(reason)
        self._end(attempt, stuck=attempt.lane == "thread")
        try:
            attempt.stop()
        except Exception as exc:  # e.g. Ray already gone: the lease's fence still holds
            log.warning("could not stop task %s: %s", attempt.lease.task_id, exc)

    def attempt_started(self, task_id: str, fence: int, wall: float) -> None:
        """A Ray task began running its handler: its time limit starts now."""
        with self._lock:
            attempt = self._running.get(task_id)
            if attempt is None or attempt.done or attempt.lease.fence != fence or attempt.begun:
                return
            attempt.begun, attempt.started = True, wall
            attempt.deadline = time.monotonic() + attempt.ctx.timeout_s
            self._watchdog.add(task_id, attempt.deadline)

    def unstarted(self) -> list[Lease]:
        """Leases whose Ray task Ray has not started yet (waiting to be placed)."""
        with self._lock:
            return [a.lease for a in self._running.values() if not a.begun and not a.done]

    def hand_back(self, task_ids: Sequence[str]) -> list[Lease]:
        """Stop these queued or not-yet-started attempts without committing; their leases,
        for the caller to release (back to pending, the attempt not counted)."""
        wanted = set(task_ids)
        with self._lock:
            back = [lease for lease in self._queue if lease.task_id in wanted]
            self._queue = collections.deque(x for x in self._queue if x.task_id not in wanted)
            for task_id in wanted:
                attempt = self._running.get(task_id)
                if attempt is not None and not attempt.done and not attempt.begun:
                    self._stop(attempt, "handed back")
                    back.append(attempt.lease)
            self._fill()
        return back

    # ---- cancels, renewals, hand-back ---------------------------------------------------
    def cancel(self, task_ids: Sequence[str], reason: str = CANCELLED) -> int:
        """Stop these tasks (queued or running) and commit nothing for them; how many."""
        wanted = set(task_ids)
        stopped = 0
        with self._lock:
            kept = [lease for lease in self._queue if lease.task_id not in wanted]
            stopped += len(self._queue) - len(kept)
            self._queue = collections.deque(kept)
            for task_id in wanted:
                attempt = self._running.get(task_id)
                if attempt is not None and not attempt.done:
                    self._stop(attempt, reason)
                    stopped += 1
                    log.warning("task %s fence %d stopped: %s", task_id, attempt.lease.fence,
                                reason)
            if reason == LEASE_LOST:
                self.counters.lost += stopped
            else:
                self.counters.cancelled += stopped
            self._fill()
        if stopped:
            log.info("%s stopped %d tasks: %s", self.holder, stopped, reason)
        return stopped

    def held(self) -> list[tuple[str, int]]:
        """(task id, fence) of every lease this holder keeps alive: queued and running."""
        with self._lock:
            return ([(lease.task_id, lease.fence) for lease in self._queue]
                    + [(a.lease.task_id, a.lease.fence) for a in self._running.values()])

    def renew(self) -> int:
        """Renew every lease held; cancel those the store says are lost; how many were lost."""
        held = self.held()
        if not held:
            return 0
        lost = [task_id for task_id, deadline in
                self.store.renew(self.holder, held, self.ttl_s).items() if deadline == 0]
        if lost:
            log.warning("%s lost %d leases (expired, reaped or cancelled)", self.holder,
                        len(lost))
            self.cancel(lost, LEASE_LOST)
        return len(lost)

    def take_queued(self) -> list[Lease]:
        """Remove and return every lease not started yet (a draining worker hands them back)."""
        with self._lock:
            leases = list(self._queue)
            self._queue.clear()
            return leases

    def idle(self) -> bool:
        """Nothing queued, running or waiting to be committed."""
        with self._lock:
            busy = bool(self._queue or self._running)
        return not busy and self.committer.wait_idle(0)

    def wait_idle(self, timeout: float) -> bool:
        """Wait until :meth:`idle` (True) or ``timeout`` s passed (False)."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.idle():
                return True
            time.sleep(0.01)
        return self.idle()

    def close(self) -> None:
        """Stop taking work; running attempts are told (their leases expire and requeue)."""
        with self._lock:
            self._closed = True
            self._queue.clear()
            for attempt in list(self._running.values()):
                self._stop(attempt, SHUTTING_DOWN)
        self._watchdog.stop()
        self._ended.put(None)
        self.committer.stop()
        self._threads.close()
        self._async.close()
