"""The async client: the synchronous :class:`~raysys.client.client.Client`'s task calls with
``await``, for an asyncio (FastAPI, ...) application. ``raysys.aio`` is its public name.

It talks to the same named actors through the same typed handles, awaiting Ray's object
references (``await ref``: no thread per call), and shares everything but the waiting with the
synchronous client: the arguments it sends (``requests``), how an actor call's errors surface
(``calls``: a RaysysError raised in an actor is re-raised as itself; an actor that restarts is
retried the same way) and what a final status means (``outcomes.result_of``). Waits are
coalesced (``watch``): however many coroutines await ``wait``/``result`` at once, one round of
Coordinator calls (a thousand ids each) serves them all every ``POLL_S``.

Starting and stopping (``ray.init``, the actors, the embedded Redis) block, so ``connect``,
``start`` and ``shutdown`` run the synchronous client's in a thread.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable, Sequence
from functools import partial
from typing import Any, TypeVar

from raysys.client.calls import CallAttempts
from raysys.client.client import Client
from raysys.client.handles import Ref
from raysys.client.outcomes import known, result_of
from raysys.client.requests import (
    When,
    chunks,
    listing_query,
    redrive_request,
    schedule_list,
    schedule_request,
    task_spec,
    task_specs,
)
from raysys.client.watch import StatusWatch
from raysys.models import TaskSpec, TaskState, TaskStatus
from raysys.schedules import ScheduleInfo
from raysys.store.listing import TaskPage
from raysys.store.redrive import RedriveReport

T = TypeVar("T")


async def connect(address: str = "auto", namespace: str | None = None,
                  **options: Any) -> AsyncClient:
    """``raysys.connect`` (same arguments), without blocking the event loop."""
    from raysys.client.launch import connect as connect_sync

    return AsyncClient(await asyncio.to_thread(connect_sync, address, namespace, **options))


async def start(workers: int | str | tuple[int, int] = 2, **options: Any) -> AsyncClient:
    """``raysys.start`` (same arguments), run in a thread; ``shutdown()`` takes it all down."""
    from raysys.client.launch import start as start_sync

    return AsyncClient(await asyncio.to_thread(start_sync, workers, **options))


class AsyncClient:
    """Submit, wait and query one raysys namespace with ``await``.

    Built over a synchronous :class:`Client` (``sync``), whose handles it uses and whose
    lifetime it takes over: :meth:`shutdown` (or leaving ``async with``) is the sync client's
    ``shutdown``. Pool and cluster operations (``drain``, ``resume``, ``scale``, ...) stay on
    ``sync``. Use it from one event loop at a time.
    """

    def __init__(self, client: Client) -> None:
        self.sync = client
        self.namespace = client.namespace
        self.coordinator = client.coordinator
        self.call_timeout_s = client.call_timeout_s
        self.dashboard_url = client.dashboard_url
        self._watch = StatusWatch(self.statuses, self.namespace)

    # ---- tasks --------------------------------------------------------------------------------
    async def submit(self, kind: str, payload: Any = None, priority: int = 0,
                     idempotency_key: str | None = None, *, delay_s: float | None = None,
                     run_at: When | None = None, **spec: Any) -> str:
        """Store one task durably (returns after it is in Redis); its id. As
        :meth:`Client.submit`."""
        task = task_spec(kind, payload, priority, idempotency_key, delay_s=delay_s,
                         run_at=run_at, **spec)
        return (await self._submit([task], retry=idempotency_key is not None))[0]

    async def submit_many(self, kind: str, payloads: Sequence[Any], priority: int = 0, *,
                          delay_s: float | None = None, run_at: When | None = None,
                          **spec: Any) -> list[str]:
        """Store many tasks of one kind; ids in the order of ``payloads``."""
        tasks = task_specs(kind, payloads, priority, delay_s=delay_s, run_at=run_at, **spec)
        return await self._submit(tasks, retry=False)

    async def submit_specs(self, specs: Sequence[TaskSpec]) -> list[str]:
        """Store prepared specs (mixed kinds and priorities); ids in order."""
        return await self._submit(list(specs), retry=False)

    async def _submit(self, specs: list[TaskSpec], *, retry: bool) -> list[str]:
        # As the sync client: only keyed submissions are resent while the Coordinator restarts.
        ids: list[str] = []
        for chunk in chunks(specs):
            got = await self._call(partial(self.coordinator.submit_many.remote, chunk),
                                   retry=retry)
            ids += [str(task_id) for task_id in got]
        return ids

    async def status(self, task_id: str) -> TaskStatus:
        return await self._call(lambda: self.coordinator.status.remote(task_id))

    async def statuses(self, task_ids: Sequence[str]) -> list[TaskStatus | None]:
        ids = list(task_ids)
        return await self._call(lambda: self.coordinator.statuses.remote(ids))

    async def wait(self, task_ids: Sequence[str],
                   timeout: float | None = None) -> list[TaskStatus]:
        """Wait until every task is final (or ``timeout`` s passed); statuses in ``ids`` order.

        On timeout the current statuses are returned: check ``.state``. An unknown id raises
        NotFound. As :meth:`Client.wait`.
        """
        ids = list(task_ids)
        futures = {task_id: self._watch.final(task_id) for task_id in dict.fromkeys(ids)}
        try:
            if futures:
                await asyncio.wait(futures.values(), timeout=timeout,
                                   return_when=asyncio.FIRST_EXCEPTION)
            latest = {i: f.result() for i, f in futures.items() if f.done()}  # raises NotFound
        finally:
            for future in futures.values():
                if future.done() and not future.cancelled():
                    future.exception()  # seen: one error is raised, the rest are its kind
                future.cancel()  # a no-op for those done; the others stop being watched
        late = [i for i in futures if i not in latest]
        for batch in chunks(late):  # timed out: their current statuses
            for task_id, status in zip(batch, await self.statuses(batch), strict=True):
                latest[task_id] = known(task_id, status, self.namespace)
        return [latest[i] for i in ids]

    async def result(self, task_id: str, timeout: float | None = None) -> Any:
        """Wait for the task to be final and return its verified result; TaskDead,
        TaskCancelled or TaskQuarantined when it ended otherwise, TimeoutError when it is not
        final in time. As :meth:`Client.result`."""
        return result_of((await self.wait([task_id], timeout))[0])

    async def cancel(self, task_id: str) -> TaskState:
        """Cancel a task; the state it was in. As :meth:`Client.cancel`."""
        return await self._call(lambda: self.coordinator.cancel.remote(task_id))

    async def cancel_many(self, task_ids: Sequence[str]) -> list[TaskState | None]:
        """:meth:`cancel` each id; the state each was in (None: unknown id)."""
        ids = list(task_ids)
        return await self._call(lambda: self.coordinator.cancel_many.remote(ids))

    async def counts(self) -> dict[str, int]:
        return await self._call(lambda: self.coordinator.counts.remote())

    # ---- listing, history, redrive, schedules -------------------------------------------------
    async def tasks(self, state: str | None = None, kind: str | None = None, limit: int = 50,
                    cursor: str | None = None, since: When | None = None) -> TaskPage:
        """A page of tasks, newest first; ``page.cursor`` continues it. As
        :meth:`Client.tasks`."""
        query = listing_query(state, kind, limit, cursor, since)
        return await self._call(lambda: self.coordinator.tasks.remote(**query))

    async def history(self, task_id: str) -> list[dict[str, Any]]:
        """The task's attempts and events, oldest first (the last 20)."""
        return await self._call(lambda: self.coordinator.history.remote(task_id))

    async def redrive(self, ids: Sequence[str] | None = None, *, state: str | None = None,
                      kind: str | None = None, dry_run: bool = False,
                      request_id: str | None = None) -> RedriveReport:
        """Run finished tasks again after a fix. As :meth:`Client.redrive`."""
        request = redrive_request(ids, state=state, kind=kind, dry_run=dry_run,
                                  request_id=request_id)
        return await self._call(lambda: self.coordinator.redrive.remote(**request))

    async def schedule(self, name: str, cron: str, kind: str, payload: Any = None, *,
                       tz: str = "UTC", catchup: str = "skip",
                       priority: int = 0) -> ScheduleInfo:
        """Add a periodic schedule. As :meth:`Client.schedule`."""
        request = schedule_request(name, cron, kind, payload, tz=tz, catchup=catchup,
                                   priority=priority)
        info: ScheduleInfo = await self._call(lambda: self.coordinator.schedules.remote(
            "add", **request))
        return info

    async def schedules(self) -> list[ScheduleInfo]:
        """Every schedule (a definition that fails verification is logged and left out)."""
        return schedule_list(await self._call(lambda: self.coordinator.schedules.remote("list")))

    # ---- lifetime -----------------------------------------------------------------------------
    async def shutdown(self) -> None:
        """The sync client's ``shutdown`` (``start``: everything it started goes; ``connect``:
        disconnect only), in a thread; waits still pending are cancelled."""
        self._watch.stop()
        await asyncio.to_thread(self.sync.shutdown)

    async def __aenter__(self) -> AsyncClient:
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.shutdown()

    # ---- plumbing -----------------------------------------------------------------------------
    async def _call(self, make: Callable[[], Ref[T]], *, retry: bool = True) -> T:
        """``await make()``, retried while the actor restarts (if ``retry``), exactly as
        :meth:`Client._call` (``raysys.client.calls``)."""
        attempts = CallAttempts(self.call_timeout_s, retry=retry)
        while True:
            try:
                return await asyncio.wait_for(make(), self.call_timeout_s)
            except Exception as exc:
                pause = attempts.after(exc)  # raises the actor's own error, or RayUnavailable
                if pause is None:
                    raise
                await asyncio.sleep(pause)
