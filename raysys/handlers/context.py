"""What a handler knows about the attempt it runs, and how it learns to stop.

``ctx.cancelled`` is a :class:`CancelSignal`: set when the task is cancelled, when the attempt
passes its time limit, or when the worker loses the lease. A handler checks it
(``ctx.cancelled.is_set()``), sleeps on it (``ctx.cancelled.wait(5)`` returns early when set) or,
in an ``async def`` handler, awaits it (``await ctx.cancelled``). ``ctx.cancelled.reason`` says
why. Stopping is the handler's part of the deal; its result after a cancel is never committed.
"""

from __future__ import annotations

import asyncio
import threading
from collections.abc import Generator
from dataclasses import dataclass, field
from typing import Any

CANCELLED = "cancelled"
TIMED_OUT = "timed out"
LEASE_LOST = "lease lost"
SHUTTING_DOWN = "worker shutting down"


class CancelSignal:
    """A thread-safe, awaitable, one-way flag with a reason (the first ``set`` wins).

    Cheap to make (one per attempt): the event a waiter blocks on is created on first wait.
    """

    __slots__ = ("_event", "_waiters", "reason")

    def __init__(self) -> None:
        self._event: threading.Event | None = None
        self._waiters: list[tuple[asyncio.AbstractEventLoop, asyncio.Future[None]]] = []
        self.reason: str | None = None

    def set(self, reason: str = CANCELLED) -> bool:
        """Set the flag; False if it was already set (the first reason is kept)."""
        with _LOCK:
            if self.reason is not None:
                return False
            self.reason = reason
            event, waiters, self._waiters = self._event, self._waiters, []
        if event is not None:
            event.set()
        for loop, future in waiters:
            if not loop.is_closed():
                loop.call_soon_threadsafe(_resolve, future)
        return True

    def is_set(self) -> bool:
        return self.reason is not None

    def wait(self, timeout: float | None = None) -> bool:
        """Block until set or ``timeout`` s passed; True if set (``threading.Event.wait``)."""
        if self.reason is not None:
            return True
        with _LOCK:
            if self._event is None:
                self._event = threading.Event()
                if self.reason is not None:  # set between the check and the lock
                    self._event.set()
            event = self._event
        return event.wait(timeout)

    async def wait_async(self) -> None:
        """Return once set (from any thread)."""
        loop = asyncio.get_running_loop()
        future: asyncio.Future[None] = loop.create_future()
        with _LOCK:
            if self.reason is not None:
                return
            self._waiters.append((loop, future))
        await future

    def __await__(self) -> Generator[Any, None, None]:
        return self.wait_async().__await__()

    def __repr__(self) -> str:
        return f"CancelSignal({'set: ' + str(self.reason) if self.is_set() else 'clear'})"


_LOCK = threading.Lock()  # guards every signal's state: set() and first waits are rare


def _resolve(future: asyncio.Future[None]) -> None:
    if not future.done():
        future.set_result(None)


@dataclass(frozen=True, slots=True)
class TaskContext:
    """One attempt of one task: its id, attempt number, fencing token, idempotency key
    (the user's, else the task id: key side effects on it), time limit and cancel signal."""

    task_id: str
    attempt: int
    fence: int
    idempotency_key: str
    timeout_s: float = 0.0
    cancelled: CancelSignal = field(default_factory=CancelSignal, compare=False)
    # The worker's Core (None in a Ray-task lane): what built-in kinds such as raysys.snapshot
    # work through. Not part of the handler contract.
    core: Any = field(default=None, compare=False, repr=False)
