"""A timer thread for deadlines: calls ``on_due(key)`` when a key's time comes.

Deadlines are monotonic-clock seconds. Adding or removing a key is O(log n); a removed key's
entry stays in the heap until its time and is then skipped.
"""

from __future__ import annotations

import heapq
import itertools
import logging
import threading
import time
from collections.abc import Callable

log = logging.getLogger(__name__)


class Watchdog:
    """Fires ``on_due(key)`` once per :meth:`add`, at its deadline, unless :meth:`remove`d."""

    def __init__(self, name: str, on_due: Callable[[str], None]) -> None:
        self.on_due = on_due
        self._heap: list[tuple[float, int, str]] = []
        self._live: dict[str, int] = {}
        self._seq = itertools.count()
        self._cond = threading.Condition()
        self._stopped = False
        self._thread = threading.Thread(target=self._run, name=name, daemon=True)
        self._thread.start()

    def add(self, key: str, deadline: float) -> None:
        with self._cond:
            seq = next(self._seq)
            self._live[key] = seq
            heapq.heappush(self._heap, (deadline, seq, key))
            if self._heap[0][1] == seq:
                self._cond.notify()

    def remove(self, key: str) -> None:
        with self._cond:
            self._live.pop(key, None)

    def stop(self) -> None:
        with self._cond:
            self._stopped = True
            self._cond.notify()

    def _run(self) -> None:
        while True:
            with self._cond:
                while not self._stopped:
                    now = time.monotonic()
                    if self._heap and self._heap[0][0] <= now:
                        _, seq, key = heapq.heappop(self._heap)
                        if self._live.get(key) == seq:
                            del self._live[key]
                            break
                        continue
                    self._cond.wait(self._heap[0][0] - now if self._heap else None)
                else:
                    return
            try:
                self.on_due(key)
            except Exception:  # a failing callback must not stop the clock
                log.exception("deadline handler failed for %s", key)
