"""One exception tree for raysys, and the CLI exit code of each branch.

Every error a user can cause or meet derives from :class:`RaysysError`. Control-flow
signals (:class:`LeaseLost`) are named as such and carry no user-facing advice.
"""

from __future__ import annotations

MAX_RETRY_DELAY_S = 86_400.0  # the longest delay a handler may ask for with Retry


class RaysysError(Exception):
    """Root of every raysys error. ``exit_code`` is what the CLI exits with."""

    exit_code = 1


class ConfigurationError(RaysysError):
    """A setting is missing, malformed or inconsistent (exit 2)."""

    exit_code = 2


class ValidationError(RaysysError):
    """User input (a task, a payload, a file) is malformed or too large (exit 3)."""

    exit_code = 3


class RedisUnavailable(RaysysError):
    """Redis cannot be reached, refuses our credentials or fails the TLS handshake (exit 4)."""

    exit_code = 4


class RayUnavailable(RaysysError):
    """The Ray cluster cannot be reached or the raysys actors are not running (exit 5)."""

    exit_code = 5


class IntegrityError(RaysysError):
    """A record, result, snapshot or message failed verification (exit 6).

    ``reason`` is a short stable code (``bad_signature``, ``unknown_key``, ...) used in audit
    entries and metrics.
    """

    exit_code = 6

    def __init__(self, message: str, *, reason: str = "invalid") -> None:
        super().__init__(message)
        self.reason = reason


class KeyringError(ConfigurationError):
    """The keyring file or variable is missing or malformed, or has no signing key (exit 2)."""


class LeaseError(RaysysError):
    """A lease operation was refused: stale fence, expired or unknown lease (exit 7)."""

    exit_code = 7


class LeaseLost(LeaseError):
    """Control-flow signal: this holder's lease is gone; stop work and do not commit."""


class NotFound(RaysysError):
    """The named task, snapshot or key does not exist (exit 8)."""

    exit_code = 8


class Conflict(RaysysError):
    """Someone else changed the same thing first (a schedule's cursor moved on): re-read and
    decide again (exit 9)."""

    exit_code = 9


class TaskFailed(RaysysError):
    """Raised by handlers (or wrapped around their errors) to fail one attempt; it is retried
    (after the kind's backoff) while attempts remain. (What a client's ``result()`` raises for
    a task that did not succeed is :class:`TaskNotSucceeded`.)"""


class Retry(TaskFailed):
    """Control-flow signal a handler raises: this attempt failed, run the task again after
    ``delay_s`` seconds (default: the exponential backoff). Counts against ``max_attempts``."""

    def __init__(self, message: str = "retry requested by the handler", *,
                 delay_s: float | None = None) -> None:
        if delay_s is not None and not 0 <= delay_s <= MAX_RETRY_DELAY_S:
            raise ValueError(f"Retry delay_s must be between 0 and {MAX_RETRY_DELAY_S:g} s")
        super().__init__(message)
        self.delay_s = delay_s


class Fail(TaskFailed):
    """Control-flow signal a handler raises: the task is ``dead`` now, no further attempt."""


class TaskNotSucceeded(RaysysError):
    """``result()`` of a task that reached a final state other than ``succeeded`` (exit 1).

    ``task_id``; ``state``, the final state's name (``dead``, ``cancelled``, ``quarantined``);
    ``error``, the error text the store holds for it (None when it holds none). Catch this to
    handle every unsuccessful outcome at once, or a subclass for one of them.
    """

    exit_code = 1
    state = ""  # each subclass names its final state

    def __init__(self, task_id: str, error: str | None = None) -> None:
        super().__init__(f"task {task_id} {self.state}: {error or 'no error recorded'}")
        self.task_id = task_id
        self.error = error

    def __reduce__(self) -> tuple[type[TaskNotSucceeded], tuple[str | None, ...]]:
        """Pickled (Ray, multiprocessing) by its fields, not its message."""
        return type(self), (self.task_id, self.error)


class TaskDead(TaskNotSucceeded):
    """``result()`` of a task that ended ``dead`` (its attempts failed, or it failed for good);
    ``error`` says why."""

    state = "dead"


class TaskCancelled(TaskNotSucceeded):
    """``result()`` of a task that was cancelled before it succeeded."""

    state = "cancelled"


class TaskQuarantined(TaskNotSucceeded, IntegrityError):
    """``result()`` of a task whose record failed verification: it never ran (exit 6, as every
    integrity failure). ``reason``: the rejection's code (``bad_signature``, ...)."""

    exit_code = 6
    state = "quarantined"

    def __init__(self, task_id: str, error: str | None = None,
                 reason: str = "quarantined") -> None:
        super().__init__(task_id, error)
        self.reason = reason

    def __reduce__(self) -> tuple[type[TaskNotSucceeded], tuple[str | None, ...]]:
        return type(self), (self.task_id, self.error, self.reason)
