"""Where an attempt runs: a thread of the worker's pool (plain handlers), the worker's event
loop (``async def`` handlers), or a Ray task placed by Ray's scheduler (kinds with Ray
options; :class:`RemoteLane` is implemented in ``raysys.actors``, the only place with Ray).

Each lane starts an attempt and gives back a :class:`~concurrent.futures.Future` of its
:class:`~raysys.models.Outcome` and a way to stop it early.
"""

from __future__ import annotations

import asyncio
import threading
from collections.abc import Callable
from concurrent.futures import Future, ThreadPoolExecutor
from typing import Any, Protocol

from raysys.execution.outcomes import call_async, call_sync
from raysys.handlers import Handler, TaskContext
from raysys.models import Lease, Outcome

Stop = Callable[[], None]


class RemoteLane(Protocol):
    """Runs a kind as a Ray task with its Ray options (``max_retries=0``)."""

    def start(self, handler: Handler, lease: Lease, ctx: TaskContext
              ) -> tuple[Future[Outcome], Stop]:
        """Submit the task; its outcome, and a force-cancel (the task's process is killed)."""
        ...


class ThreadLane:
    """Plain handlers on a pool of ``size`` threads (created as needed)."""

    def __init__(self, size: int) -> None:
        self._pool = ThreadPoolExecutor(max_workers=size, thread_name_prefix="raysys-task")

    def start(self, handler: Handler, payload: Any, ctx: TaskContext
              ) -> tuple[Future[Outcome], Stop]:
        future = self._pool.submit(call_sync, handler, payload, ctx)
        # Python cannot stop a thread: the handler is told (ctx.cancelled) and its result,
        # whenever it comes, is not committed.
        return future, _nothing

    def close(self) -> None:
        self._pool.shutdown(wait=False, cancel_futures=True)


class AsyncLane:
    """``async def`` handlers on one event loop, in its own thread (started on first use)."""

    def __init__(self) -> None:
        self._loop: asyncio.AbstractEventLoop | None = None
        self._lock = threading.Lock()

    def start(self, handler: Handler, payload: Any, ctx: TaskContext
              ) -> tuple[Future[Outcome], Stop]:
        loop = self._running_loop()
        future = asyncio.run_coroutine_threadsafe(call_async(handler, payload, ctx), loop)
        # CancelledError inside the handler at its next await
        return future, lambda: _cancel(future)

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
