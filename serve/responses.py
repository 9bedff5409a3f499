"""Response bodies of the HTTP API, as ``/openapi.json`` describes them."""

from typing import Any

from pydantic import BaseModel, ConfigDict, Field, JsonValue

from raysys.store.listing import TaskRow


class ErrorItem(BaseModel):
    loc: list[str | int] | None = None
    msg: str
    type: str | None = None


class ErrorOut(BaseModel):
    """Every error: a list naming what is wrong (and where, for a bad request)."""

    detail: list[ErrorItem]


ERRORS: dict[int | str, dict[str, Any]] = {
    code: {"model": ErrorOut, "description": what} for code, what in (
        (401, "missing or wrong bearer token (or the server has no RAYSYS_API_TOKEN)"),
        (422, "a bad request, naming the field"),
        (503, "Redis or the Coordinator unavailable; safe to retry"))}
NOT_FOUND: dict[int | str, dict[str, Any]] = {404: {"model": ErrorOut, "description": "unknown"}}


class HealthOut(BaseModel):
    status: str = Field(description="healthy, degraded (200) or unhealthy (503)")
    agent_id: str
    uptime: float
    redis_connected: bool
    namespace: str
    actors: dict[str, bool]
    live_workers: int
    reaper_lag_s: float
    waiting: dict[str, dict[str, Any]]


class SubmittedOne(BaseModel):
    id: str


class SubmittedMany(BaseModel):
    ids: list[str]


class TaskOut(BaseModel):
    """One task. ``integrity`` is set when a stored record of it failed verification (the
    task will not run: it is quarantined)."""

    id: str
    state: str
    kind: str | None
    priority: int | None
    attempts: int
    result: JsonValue
    error: str | None
    integrity: str | None = None
    waiting: str | None = Field(None, description="pending and held back: why")
    run_at: str | None = None


class TaskPageOut(BaseModel):
    tasks: list[TaskRow]  # the listing's own row, as ``TaskRow.to_json`` writes it
    cursor: str | None = Field(description="pass back to continue; null at the end")


class AttemptOut(BaseModel):
    event: str
    attempt: int | None
    fence: int | None
    holder: str | None
    started_ms: int | None
    ended_ms: int | None
    detail: str | None


class HistoryOut(BaseModel):
    """A task's attempts and events (oldest first, the last 20) and the audit entries that
    name it among the newest ones."""

    id: str
    history: list[AttemptOut]
    audit: list[dict[str, str]]


class CancelOut(BaseModel):
    id: str
    before: str
    state: str
    cancelled: bool = Field(description="false: the task was already final (nothing changed)")


class RedriveOut(BaseModel):
    request_id: str
    redriven: list[str]
    already: list[str]
    refused: dict[str, str]
    missing: list[str]
    dry_run: bool


class WorkerOut(BaseModel):
    model_config = ConfigDict(extra="allow")

    id: str
    alive: bool
    age_ms: int
    node: str | None = None
    inflight: int = 0
    capacity: int = 0
    free: int = 0
    draining: bool = False
    completed: int = 0
    pid: int | None = None


class WorkersOut(BaseModel):
    workers: list[WorkerOut]


class SamplePoint(BaseModel):
    ts: float = Field(description="end of the interval, epoch seconds")
    finished_per_s: float
    submitted_per_s: float
    wait_p50_ms: float | None = Field(description="submit to start, of tasks finished then")
    wait_p95_ms: float | None


class StatsOut(BaseModel):
    namespace: str
    counts: dict[str, int]
    totals: dict[str, int]
    series: list[SamplePoint] = Field(description="the last hour, oldest first")
    redis: dict[str, int | bool]
    actors: dict[str, bool]
    live_workers: int
    dashboard_url: str | None


class ScheduleOut(BaseModel):
    model_config = ConfigDict(extra="allow")

    name: str
    cron: str
    kind: str
    paused: bool
    last_ms: int | None
    next_ms: int | None
    signed_by: str


class SchedulesOut(BaseModel):
    schedules: list[ScheduleOut]
    rejected: dict[str, str] = Field(description="name: why its record failed verification")


class RemovedOut(BaseModel):
    name: str
    removed: bool
