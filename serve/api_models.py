"""Request bodies of the HTTP API (strict: unknown fields, and values of another JSON type
such as ``false`` for a number, are errors named in the 422).

Field constraints mirror :class:`raysys.models.TaskSpec` and
:class:`raysys.schedules.ScheduleSpec`, so ``/openapi.json`` states them; the specs stay the
one validation (a body that passes here is built into a spec, whose error is a 422 too).
"""

from typing import Annotated, Any, Literal

from pydantic import BaseModel, ConfigDict, Discriminator, Field, JsonValue, Tag

from raysys.errors import ValidationError
from raysys.models import (
    KIND_PATTERN,
    MAX_BATCH,
    MAX_PRIORITY,
    MIN_PRIORITY,
    TaskSpec,
    due_ms,
)
from raysys.schedules.spec import NAME_PATTERN

Redrivable = Literal["dead", "cancelled", "quarantined"]


class TaskIn(BaseModel):
    """One task to submit."""

    model_config = ConfigDict(extra="forbid", strict=True)

    kind: str = Field(pattern=KIND_PATTERN, description="a registered kind")
    payload: JsonValue = None
    priority: int = Field(0, ge=MIN_PRIORITY, le=MAX_PRIORITY)
    idempotency_key: str | None = Field(
        None, min_length=1, max_length=200,
        description="a resend with the same key returns the first task's id")
    max_attempts: int | None = Field(None, ge=1, le=100,
                                     description="lowers the kind's own, never raises it")
    timeout_s: float | None = Field(None, gt=0, le=86_400)
    schedule_to_start_s: float | None = Field(None, gt=0, le=365 * 86_400)
    delay_s: float | None = Field(None, ge=0, description="run no earlier than this from now")
    run_at: str | None = Field(None, description="... or than this ISO-8601 time (with a zone)")


class BatchIn(BaseModel):
    """Several tasks to submit at once: all stored, or none."""

    model_config = ConfigDict(extra="forbid", strict=True)

    tasks: list[TaskIn] = Field(min_length=1, max_length=MAX_BATCH)


def _body_shape(value: Any) -> str:
    return "batch" if isinstance(value, dict) and "tasks" in value else "task"


SubmitIn = Annotated[Annotated[TaskIn, Tag("task")] | Annotated[BatchIn, Tag("batch")],
                     Discriminator(_body_shape)]


class RedriveIn(BaseModel):
    """Run finished tasks again: ``ids``, or every task in a ``state`` (of one ``kind``)."""

    model_config = ConfigDict(extra="forbid", strict=True)

    ids: list[str] | None = Field(None, max_length=MAX_BATCH)
    state: Redrivable | None = None
    kind: str | None = Field(None, pattern=KIND_PATTERN)
    dry_run: bool = False
    request_id: str | None = Field(None, min_length=1, max_length=100,
                                   description="a resend with the same id redrives nothing twice")


class ScheduleIn(BaseModel):
    """A periodic schedule: each cron tick enqueues one task of ``kind``."""

    model_config = ConfigDict(extra="forbid", strict=True)

    name: str = Field(pattern=NAME_PATTERN)
    cron: str = Field(min_length=1, max_length=200,
                      description="five or six fields (seconds first when six)")
    kind: str = Field(pattern=KIND_PATTERN)
    payload: JsonValue = None
    tz: str = Field("UTC", min_length=1, max_length=64, description="an IANA zone")
    catchup: Literal["skip", "all"] = "skip"
    priority: int = Field(0, ge=MIN_PRIORITY, le=MAX_PRIORITY)


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
