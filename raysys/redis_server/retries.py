"""How raysys's Redis clients retry: connection errors with backoff, never refused credentials
(retrying is no use, and it can lock the account), bounded in tries and in time."""

from __future__ import annotations

import math
import time
from collections.abc import Callable
from typing import Any, TypeVar

import redis
from redis.backoff import ExponentialBackoff
from redis.retry import Retry

_T = TypeVar("_T")


class BoundedRetry(Retry):
    """Retry ``supported_errors`` with ``backoff`` at most ``retries`` times (-1: no count) and
    for at most ``within_s`` seconds from the first try of each call; never an
    ``AuthenticationError``. A time bound, unlike a count, does not multiply where redis-py
    nests the retry of a connect inside the retry of a command."""

    def __init__(self, backoff: ExponentialBackoff, retries: int, *,
                 within_s: float = math.inf,
                 supported_errors: tuple[type[Exception], ...] | None = None) -> None:
        if supported_errors is None:
            super().__init__(backoff, retries)
        else:
            super().__init__(backoff, retries, supported_errors=supported_errors)
        self.within_s = within_s

    def call_with_retry(
        self,
        do: Callable[[], _T],
        fail: Callable[..., Any],
        is_retryable: Callable[[Exception], bool] | None = None,
        with_failure_count: bool = False,
    ) -> _T:
        deadline = time.monotonic() + self.within_s

        def retryable(error: Exception) -> bool:
            if isinstance(error, redis.AuthenticationError) or time.monotonic() > deadline:
                return False
            return is_retryable is None or is_retryable(error)

        return super().call_with_retry(do, fail, retryable, with_failure_count)
