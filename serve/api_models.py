"""Request bodies of the task API (strict: unknown fields are errors, named in the 422), and
the error response every route gives."""

from __future__ import annotations

from typing import Any

from fastapi.responses import JSONResponse
from pydantic import BaseModel, ConfigDict, Field

from raysys.models import MAX_BATCH, TaskSpec, due_ms


class TaskIn(BaseModel):
    """``POST /tasks`` with one task."""

    model_config = ConfigDict(extra="forbid")

    kind: str
    payload: Any = None
    priority: int = 0
    idempotency_key: str | None = None
    delay_s: float | None = None  # run no earlier than this many seconds from now
    run_at: str | None = None  # ... or than this ISO-8601 time (with a zone)


class BatchIn(BaseModel):
    """``POST /tasks`` with ``{"tasks": [...]}``."""

    model_config = ConfigDict(extra="forbid")

    tasks: list[TaskIn] = Field(min_length=1, max_length=MAX_BATCH)


class RedriveIn(BaseModel):
    """``POST /tasks/redrive``: ``ids``, or a ``state`` (and ``kind``)."""

    model_config = ConfigDict(extra="forbid")

    ids: list[str] | None = Field(None, max_length=MAX_BATCH)
    state: str | None = None
    kind: str | None = None
    dry_run: bool = False
    request_id: str | None = Field(None, min_length=1, max_length=100)


def spec_of(task: TaskIn) -> TaskSpec:
    """A validated spec from one request task (``delay_s``/``run_at`` become its due time)."""
    fields = task.model_dump()
    due = due_ms(fields.pop("delay_s"), fields.pop("run_at"))
    return TaskSpec.build(**fields, not_before_ms=due)


def error_response(status: int, detail: list[dict[str, Any]], *,
                   auth: bool = False) -> JSONResponse:
    headers = {"WWW-Authenticate": "Bearer"} if auth else None
    return JSONResponse({"detail": detail}, status_code=status, headers=headers)
