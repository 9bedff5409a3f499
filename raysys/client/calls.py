"""How a client treats the errors of one actor call — the same for ``ray.get`` (synchronous
client) and ``await ref`` (async client), so both surface errors identically:

* a :class:`~raysys.errors.RaysysError` raised in the actor is re-raised as itself (Ray wraps it
  in a ``RayTaskError``; its ``cause`` is the original);
* the actor being unavailable (``RayActorError``: restarting, or gone) or not answering within
  the call timeout is retried with a doubling pause (50 ms up to 1 s) until ``timeout_s`` has
  passed, then :class:`~raysys.errors.RayUnavailable`; without ``retry`` (a submission without
  idempotency keys, whose resend could store it twice) it is RayUnavailable at once;
* anything else propagates unchanged.

Ray is imported inside functions only (DESIGN.md, "Layers").
"""

from __future__ import annotations

import time

from raysys.errors import RaysysError, RayUnavailable

FIRST_PAUSE_S = 0.05
MAX_PAUSE_S = 1.0


class CallAttempts:
    """The attempts of one actor call: what an error means, and how long to pause before the
    next attempt. ``timeout_s``: how long the call may keep failing over before giving up."""

    def __init__(self, timeout_s: float, *, retry: bool = True) -> None:
        self.retry = retry
        self.deadline = time.monotonic() + timeout_s
        self.pause = FIRST_PAUSE_S

    def after(self, exc: Exception) -> float | None:
        """The pause before the next attempt after ``exc``; None: re-raise ``exc`` unchanged.

        Raises the actor's own RaysysError, or RayUnavailable when the actor stays unavailable.
        """
        from ray.exceptions import RayActorError, RayTaskError

        if isinstance(exc, RayTaskError):
            if isinstance(exc.cause, RaysysError):
                raise exc.cause from None
            return None
        # Ray's GetTimeoutError and asyncio's timeout are both TimeoutError
        if isinstance(exc, RayActorError | TimeoutError):
            if not self.retry or time.monotonic() > self.deadline:
                raise RayUnavailable(f"raysys actor unavailable: {first_line(exc)}") from None
            pause, self.pause = self.pause, min(self.pause * 2, MAX_PAUSE_S)
            return pause
        return None


def first_line(exc: BaseException) -> str:
    """``<type>: <first line of the message>``: one line for an error message."""
    text = str(exc)
    return f"{type(exc).__name__}: {text.splitlines()[0] if text else ''}"
