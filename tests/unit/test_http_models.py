"""The HTTP API's response models accept every document the store gives them (a route whose
model disagrees with the data answers 500): each optional field of a task set at once."""

from __future__ import annotations

import pytest

from raysys.models import TaskState, TaskStatus
from raysys.serve.responses import TaskOut

pytestmark = pytest.mark.unit


@pytest.mark.parametrize("state", list(TaskState))
def test_task_out_takes_every_status_document(state: TaskState) -> None:
    status = TaskStatus(id="0" * 32, state=state, attempts=2, priority=-3, kind="echo",
                        result={"nested": [1, "two", None]}, error="boom", fence=7,
                        holder="w1", waiting="no live node can place kind echo",
                        run_at_ms=1_800_000_000_000,
                        integrity="failed: bad_signature (task record)")
    out = TaskOut.model_validate({"integrity": None, **status.to_json()})
    assert out.waiting == status.waiting and out.integrity == status.integrity
    assert out.run_at is not None and out.run_at.startswith("2027-01-15")
