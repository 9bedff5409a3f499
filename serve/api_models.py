"""Request bodies of the task API (strict: unknown fields are errors, named in the 422)."""

from __future__ import annotations

from typing import Any

from pydantic import BaseModel, ConfigDict, Field

from raysys.models import MAX_BATCH


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
