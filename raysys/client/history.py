"""The client's long-running-system half: listing tasks, attempt history, redrive, periodic
schedules (a base of :class:`~raysys.client.client.Client`; every call goes through the
Coordinator with :meth:`Client._call`; its arguments are built by ``raysys.client.requests``,
as the async client's are)."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from datetime import datetime
from typing import Any, TypeVar

from raysys.client.handles import CoordinatorHandle, Ref
from raysys.client.requests import (
    listing_query,
    redrive_request,
    schedule_list,
    schedule_request,
)
from raysys.schedules import ScheduleInfo
from raysys.store.listing import TaskPage
from raysys.store.redrive import RedriveReport

T = TypeVar("T")


class ClientHistory:
    """Listing, history, redrive and schedules through the Coordinator."""

    coordinator: CoordinatorHandle

    def _call(self, make: Callable[[], Ref[T]], *, retry: bool = True) -> T:
        raise NotImplementedError

    def tasks(self, state: str | None = None, kind: str | None = None, limit: int = 50,
              cursor: str | None = None, since: float | datetime | str | None = None,
              ) -> TaskPage:
        """A page of tasks, newest first (by finish time for a final state, else by
        submission); ``page.cursor`` continues it. ``since``: epoch seconds, an aware
        datetime, or ISO-8601 text."""
        query = listing_query(state, kind, limit, cursor, since)
        return self._call(lambda: self.coordinator.tasks.remote(**query))

    def history(self, task_id: str) -> list[dict[str, Any]]:
        """The task's attempts and events, oldest first (the last 20)."""
        return self._call(lambda: self.coordinator.history.remote(task_id))

    def redrive(self, ids: Sequence[str] | None = None, *, state: str | None = None,
                kind: str | None = None, dry_run: bool = False,
                request_id: str | None = None) -> RedriveReport:
        """Run finished tasks again after a fix: ``ids``, or every task in ``state`` (dead,
        cancelled, quarantined), of ``kind`` if given. Same ids, history kept, audited; a
        record that fails verification is refused. Idempotent per ``request_id`` (a resent
        call with the same one redrives nothing twice)."""
        request = redrive_request(ids, state=state, kind=kind, dry_run=dry_run,
                                  request_id=request_id)
        return self._call(lambda: self.coordinator.redrive.remote(**request))

    # ---- periodic schedules ------------------------------------------------------------------
    def schedule(self, name: str, cron: str, kind: str, payload: Any = None, *, tz: str = "UTC",
                 catchup: str = "skip", priority: int = 0) -> ScheduleInfo:
        """Add a periodic schedule: each tick of ``cron`` (five fields, or six with seconds
        first) in zone ``tz`` enqueues exactly one ``kind`` task. ``catchup``: what ticks
        missed while no Coordinator ran do (``skip`` or ``all``, bounded)."""
        request = schedule_request(name, cron, kind, payload, tz=tz, catchup=catchup,
                                   priority=priority)  # checked here first
        info: ScheduleInfo = self._call(lambda: self.coordinator.schedules.remote(
            "add", **request))
        return info

    def schedules(self) -> list[ScheduleInfo]:
        """Every schedule (a definition that fails verification is logged and left out)."""
        return schedule_list(self._call(lambda: self.coordinator.schedules.remote("list")))

    def remove_schedule(self, name: str) -> None:
        self._call(lambda: self.coordinator.schedules.remote("remove", name=name))

    def pause_schedule(self, name: str) -> ScheduleInfo:
        info: ScheduleInfo = self._call(lambda: self.coordinator.schedules.remote(
            "pause", name=name))
        return info

    def resume_schedule(self, name: str) -> ScheduleInfo:
        info: ScheduleInfo = self._call(lambda: self.coordinator.schedules.remote(
            "resume", name=name))
        return info

