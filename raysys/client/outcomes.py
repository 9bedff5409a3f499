"""What a client makes of the statuses it reads: when a wait is over, and what a final status
means for ``result()`` — one implementation for the synchronous and the async client.

Pure (no Ray, no Redis): the clients fetch statuses, in rounds, and hand them here.
"""

from __future__ import annotations

import time
from collections.abc import Sequence
from typing import Any

from raysys.client.requests import SUBMIT_CHUNK, chunks
from raysys.errors import (
    IntegrityError,
    NotFound,
    TaskCancelled,
    TaskDead,
    TaskQuarantined,
)
from raysys.models import FINAL_STATES, TaskState, TaskStatus, quarantine_code

POLL_S = 0.1  # the pause between two rounds of a wait


def result_of(status: TaskStatus) -> Any:
    """A final status's result, or the error its state stands for.

    ``succeeded``: the verified result (IntegrityError, reason ``unverified_result``, when the
    store could not verify the completion record: a result is never returned unverified);
    ``dead``: TaskDead; ``cancelled``: TaskCancelled; ``quarantined``: TaskQuarantined, with
    the rejection's reason; any other state: TimeoutError (the task is not final yet).
    """
    if status.state == TaskState.SUCCEEDED:
        if status.error is not None:  # a verified success carries no error (store.status)
            raise IntegrityError(f"task {status.id} succeeded but its result cannot be "
                                 f"trusted: {status.error}", reason="unverified_result")
        return status.result
    if status.state == TaskState.DEAD:
        raise TaskDead(status.id, status.error)
    if status.state == TaskState.CANCELLED:
        raise TaskCancelled(status.id, status.error)
    if status.state == TaskState.QUARANTINED:
        raise TaskQuarantined(status.id, status.error, quarantine_reason(status.error))
    raise TimeoutError(f"task {status.id} is still {status.state.value}")


def quarantine_reason(error: str | None) -> str:
    """The rejection code (``bad_signature``, ``copied_record``, ...) in a quarantined task's
    stored error; ``quarantined`` when the error names none."""
    return quarantine_code(error) or "quarantined"


def known(task_id: str, status: TaskStatus | None, namespace: str) -> TaskStatus:
    """``status``, or NotFound when the Coordinator knows no task ``task_id`` (None)."""
    if status is None:
        raise NotFound(f"no task {task_id} in namespace {namespace}")
    return status


class WaitRounds:
    """The bookkeeping of one ``wait(ids, timeout)``: which ids the next round asks about (each
    once, in batches of at most ``SUBMIT_CHUNK``: one Coordinator call per batch, never one per
    task), the latest status of each, and when the wait is over (every task final, or the
    deadline passed). The caller fetches each batch's statuses and pauses between rounds.
    """

    def __init__(self, task_ids: Sequence[str], namespace: str,
                 timeout: float | None = None) -> None:
        self.ids = list(task_ids)
        self.namespace = namespace
        self.deadline = None if timeout is None else time.monotonic() + timeout
        self.latest: dict[str, TaskStatus] = {}
        self.todo = list(dict.fromkeys(self.ids))

    def batches(self) -> list[list[str]]:
        """This round's ids to ask about, in batches."""
        return list(chunks(self.todo, SUBMIT_CHUNK))

    def take(self, batch: Sequence[str], statuses: Sequence[TaskStatus | None]) -> None:
        """Record a batch's answer (same order); NotFound for an unknown id."""
        for task_id, status in zip(batch, statuses, strict=True):
            self.latest[task_id] = known(task_id, status, self.namespace)

    def over(self) -> bool:
        """After a round: True when every task is final or the deadline has passed."""
        self.todo = [i for i in self.todo if self.latest[i].state not in FINAL_STATES]
        return not self.todo or (self.deadline is not None and time.monotonic() > self.deadline)

    def statuses(self) -> list[TaskStatus]:
        """The latest status of every id, in the order ``wait`` was given them."""
        return [self.latest[i] for i in self.ids]
