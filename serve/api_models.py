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


class BatchIn(BaseModel):
    """``POST /tasks`` with ``{"tasks": [...]}``."""

    model_config = ConfigDict(extra="forbid")

    tasks: list[TaskIn] = Field(min_length=1, max_length=MAX_BATCH)
