"""A periodic timer thread: lease renewal and heartbeats, the reaper, metric mirroring."""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable

log = logging.getLogger(__name__)


class PeriodicTimer(threading.Thread):
    """Calls ``beat`` every ``interval_s`` until stopped (lease renewal, reaping)."""

    def __init__(self, name: str, interval_s: float, beat: Callable[[], object]) -> None:
        super().__init__(name=name, daemon=True)
        self.interval_s = interval_s
        self.beat = beat
        self._stop_event = threading.Event()

    def run(self) -> None:
        while not self._stop_event.wait(self.interval_s):
            try:
                self.beat()
            except Exception:  # keep beating; the next call may succeed (Redis blip)
                log.exception("%s failed; will retry in %.1f s", self.name, self.interval_s)

    def stop(self) -> None:
        self._stop_event.set()
        time.sleep(0)
