"""Where an attempt runs: a thread of the worker's pool (plain handlers), the worker's event
loop (``async def`` handlers), or a Ray task placed by Ray's scheduler (kinds with Ray
options; :class:`RemoteLane` is implemented in ``raysys.actors``, the only place with Ray).

A lane starts an attempt, calls ``report(outcome)`` exactly once when it ends (from whatever
thread it ends on: the runner only queues it), and gives back a way to stop it early.
"""

from __future__ import annotations

import asyncio
import queue
import threading
from collections.abc import Callable
from concurrent.futures import Future
from typing import Any, Protocol

from raysys.execution.outcomes import call_async, call_sync
from raysys.handlers import Handler, TaskContext
from raysys.models import Lease, Outcome

Stop = Callable[[], None]
Report = Callable[[Outcome], None]
MAX_ERROR_CHARS = 2_000


class RemoteLane(Protocol):
    """Runs a kind as a Ray task with its Ray options (``max_retries=0``)."""

    def start(self, handler: Handler, lease: Lease, ctx: TaskContext, report: Report) -> Stop:
        """Submit the task; ``report`` its outcome; return a force-cancel (the task's process
        is killed)."""
        ...


class ThreadLane:
    """Plain handlers on ``size`` threads (started as needed), fed through one queue.

    The runner never hands it more attempts than it has free threads, so an attempt starts at
    once; a thread whose handler overran its limit stays busy (stuck) until the handler
    returns, and the runner counts it as taken.
    """

    def __init__(self, size: int, name: str = "raysys-task") -> None:
        self.size = size
        self.name = name
        self._ready: queue.SimpleQueue[tuple[Handler, Any, TaskContext, Report] | None] = (
            queue.SimpleQueue())
        self._threads: list[threading.Thread] = []
        self._lock = threading.Lock()

    def start(self, handler: Handler, payload: Any, ctx: TaskContext, report: Report) -> Stop:
        if len(self._threads) < self.size:
            self._add_thread()
        self._ready.put((handler, payload, ctx, report))
        # Python cannot stop a thread: the handler is told (ctx.cancelled) and its result,
        # whenever it comes, is not committed.
        return _nothing

    def _add_thread(self) -> None:
        with self._lock:
            if len(self._threads) < self.size:
                thread = threading.Thread(target=self._serve, name=f"{self.name}-"
                                          f"{len(self._threads)}", daemon=True)
                self._threads.append(thread)
                thread.start()

    def _serve(self) -> None:
        while True:
            item = self._ready.get()
            if item is None:
                return
            handler, payload, ctx, report = item
            report(call_sync(handler, payload, ctx))

    def close(self) -> None:
        for _ in self._threads:
            self._ready.put(None)


class AsyncLane:
    """``async def`` handlers on one event loop, in its own thread (started on first use)."""

    def __init__(self) -> None:
        self._loop: asyncio.AbstractEventLoop | None = None
        self._lock = threading.Lock()

    def start(self, handler: Handler, payload: Any, ctx: TaskContext, report: Report) -> Stop:
        loop = self._running_loop()
        future = asyncio.run_coroutine_threadsafe(call_async(handler, payload, ctx), loop)
        future.add_done_callback(lambda done: report(outcome_of(done)))
        # CancelledError inside the handler at its next await
        return lambda: _cancel(future)

    def _running_loop(self) -> asyncio.AbstractEventLoop:
        with self._lock:
            if self._loop is None:
                loop = asyncio.new_event_loop()
                threading.Thread(target=_serve, args=(loop,), name="raysys-async",
                                 daemon=True).start()
                self._loop = loop
            return self._loop

    def close(self) -> None:
        with self._lock:
            if self._loop is not None:
                self._loop.call_soon_threadsafe(self._loop.stop)
                self._loop = None


def outcome_of(future: Future[Outcome]) -> Outcome:
    """The outcome a finished future holds; a cancelled or failed one is a failed attempt."""
    if future.cancelled():
        return Outcome(ok=False, error="cancelled")
    exc = future.exception()
    if exc is not None:
        return Outcome(ok=False, error=f"{type(exc).__name__}: {exc}"[:MAX_ERROR_CHARS])
    return future.result()


def _serve(loop: asyncio.AbstractEventLoop) -> None:
    """Run ``loop`` until stopped, then cancel what is left on it and close it."""
    asyncio.set_event_loop(loop)
    try:
        loop.run_forever()
        for task in asyncio.all_tasks(loop):
            task.cancel()
        loop.run_until_complete(loop.shutdown_asyncgens())
    finally:
        loop.close()


def _nothing() -> None:
    return None


def _cancel(future: Future[Outcome]) -> None:
    future.cancel()
