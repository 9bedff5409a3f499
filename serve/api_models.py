"""Request bodies of the task API (strict: unknown fields are errors, named in the 422), and
the error response every route gives."""

from __future__ import annotations

import hmac
import logging
from typing import Any

from fastapi.responses import JSONResponse
from pydantic import BaseModel, ConfigDict, Field

from raysys.errors import ValidationError
from raysys.models import MAX_BATCH, TaskSpec, due_ms

log = logging.getLogger(__name__)


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


INTERNAL_KINDS = "raysys."  # built-in kinds only raysys itself submits (snapshot files)


def refuse_internal(kind: str) -> None:
    """Kinds under ``raysys.`` (e.g. ``raysys.snapshot``, which writes files where its payload
    says) are raysys's own: not over HTTP; the CLI (``snapshot save --every``) submits them."""
    if kind.startswith(INTERNAL_KINDS):
        raise ValidationError(f"kind {kind} is internal to raysys: not accepted over HTTP "
                              "(use `raysys snapshot save --every` for snapshot schedules)")


def spec_of(task: TaskIn) -> TaskSpec:
    """A validated spec from one request task (``delay_s``/``run_at`` become its due time)."""
    refuse_internal(task.kind)
    fields = task.model_dump()
    due = due_ms(fields.pop("delay_s"), fields.pop("run_at"))
    return TaskSpec.build(**fields, not_before_ms=due)


def error_response(status: int, detail: list[dict[str, Any]], *,
                   auth: bool = False) -> JSONResponse:
    headers = {"WWW-Authenticate": "Bearer"} if auth else None
    return JSONResponse({"detail": detail}, status_code=status, headers=headers)


def unavailable(what: str, exc: BaseException) -> JSONResponse:
    """503 for a failure the caller may retry (Redis down or failing over, an actor restarting);
    the cause goes to the log, not to the caller."""
    log.warning("%s failed: %s", what, exc)
    return error_response(503, [{"msg": f"{what} unavailable; retry"}])


def bearer_denied(token: bytes | None, header: str) -> JSONResponse | None:
    """401 unless ``header`` (Authorization) is ``Bearer <token>``; always 401 without a
    configured token (the task API is then off). Compared in constant time."""
    scheme, _, given = header.partition(" ")
    if token is None:
        return error_response(401, [{"msg": "the task API is disabled: the server has no "
                                    "RAYSYS_API_TOKEN"}], auth=True)
    if scheme.lower() != "bearer" or not hmac.compare_digest(given.strip().encode(), token):
        return error_response(401, [{"msg": "missing or wrong bearer token"}], auth=True)
    return None
