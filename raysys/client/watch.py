"""One polling loop for every waiter of an async client: however many coroutines await
``wait``/``result`` at once, each round asks the Coordinator about the ids still awaited in
batches (one call per ``SUBMIT_CHUNK`` ids, never one per task), then sleeps ``POLL_S``.

The loop is an asyncio task started by the first waiter and ending when none is left, so a
client used under several event loops one after another (``asyncio.run`` twice) starts a
fresh one in each. One event loop at a time per client.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable, Sequence

from raysys.client.outcomes import POLL_S, known
from raysys.client.requests import SUBMIT_CHUNK, chunks
from raysys.errors import NotFound
from raysys.models import FINAL_STATES, TaskStatus

log = logging.getLogger(__name__)

Fetch = Callable[[list[str]], Awaitable[Sequence[TaskStatus | None]]]


class StatusWatch:
    """Futures resolved with each awaited task's final status (NotFound for an unknown id; the
    error of a failed round for every waiter of that round).

    ``fetch``: the statuses of a batch of ids, in order (None: unknown), as the Coordinator's
    ``statuses`` answers.
    """

    def __init__(self, fetch: Fetch, namespace: str, poll_s: float = POLL_S) -> None:
        self._fetch = fetch
        self._namespace = namespace
        self._poll_s = poll_s
        self._waiters: dict[str, list[asyncio.Future[TaskStatus]]] = {}
        self._loop_task: asyncio.Task[None] | None = None

    def final(self, task_id: str) -> asyncio.Future[TaskStatus]:
        """A future of ``task_id``'s final status; cancel it to stop waiting for it."""
        future: asyncio.Future[TaskStatus] = asyncio.get_running_loop().create_future()
        self._waiters.setdefault(task_id, []).append(future)
        if self._loop_task is None or self._loop_task.done():
            self._loop_task = asyncio.get_running_loop().create_task(self._run())
        return future

    def stop(self) -> None:
        """End the polling loop; every pending waiter is cancelled."""
        if self._loop_task is not None and not self._loop_task.done():
            self._loop_task.cancel()
        self._fail_all(None)

    async def _run(self) -> None:
        try:
            while self._prune():
                await self._round()
                if self._prune():
                    await asyncio.sleep(self._poll_s)
        except Exception as exc:  # a round failed (actor gone, ...): its waiters learn why
            self._fail_all(exc)
        finally:
            self._fail_all(None)  # cancelled with the loop: nobody is left waiting

    async def _round(self) -> None:
        for batch in chunks(list(self._waiters), SUBMIT_CHUNK):
            statuses = await self._fetch(batch)
            for task_id, status in zip(batch, statuses, strict=True):
                try:
                    final = known(task_id, status, self._namespace)
                except NotFound as exc:
                    self._settle(task_id, exc)
                    continue
                if final.state in FINAL_STATES:
                    self._settle(task_id, final)

    def _settle(self, task_id: str, outcome: TaskStatus | Exception) -> None:
        for future in self._waiters.pop(task_id, []):
            if future.done():
                continue
            if isinstance(outcome, Exception):
                future.set_exception(outcome)
            else:
                future.set_result(outcome)

    def _prune(self) -> bool:
        """Drop waiters that gave up (cancelled); True while any task is still awaited."""
        for task_id in list(self._waiters):
            live = [f for f in self._waiters[task_id] if not f.done()]
            if live:
                self._waiters[task_id] = live
            else:
                del self._waiters[task_id]
        return bool(self._waiters)

    def _fail_all(self, exc: Exception | None) -> None:
        for task_id in list(self._waiters):
            for future in self._waiters.pop(task_id):
                if future.done():
                    continue
                if exc is None:
                    future.cancel()
                else:
                    future.set_exception(exc)
