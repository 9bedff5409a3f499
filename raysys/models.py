"""Task data: states, the validated submission, the signed record body, leases, status.

Everything that crosses a process boundary is strict (``extra="forbid"``) and bounded:
payloads at most ``MAX_PAYLOAD_BYTES`` serialised and ``MAX_PAYLOAD_DEPTH`` deep.
"""

from __future__ import annotations

import math
import os
import time
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import UTC, datetime
from enum import StrEnum
from typing import Any, NamedTuple

import orjson
from pydantic import BaseModel, ConfigDict, Field, JsonValue, field_validator
from pydantic import ValidationError as PydanticValidationError

from raysys.errors import ValidationError

MAX_PAYLOAD_BYTES = 256 * 1024
MAX_PAYLOAD_DEPTH = 32
MAX_BATCH = 10_000
MAX_DELAY_S = 366 * 86_400  # the furthest a task may be delayed
PAST_TOLERANCE_S = 60.0  # a run_at this far in the past still runs (now); further is an error
MIN_PRIORITY, MAX_PRIORITY = -1000, 1000
DEFAULT_MAX_ATTEMPTS = 3  # a kind's attempts unless @raysys.task says otherwise
DEFAULT_TIMEOUT_S = 300.0  # a kind's time limit per attempt unless @raysys.task says otherwise
KIND_PATTERN = r"^[A-Za-z0-9_.:-]{1,128}$"
TASK_ID_PATTERN = r"^[0-9a-f]{32}$"


class TaskState(StrEnum):
    """Lower-case task states of the public surface."""

    SCHEDULED = "scheduled"  # submitted with a delay, not due yet
    PENDING = "pending"
    LEASED = "leased"
    SUCCEEDED = "succeeded"
    FAILED = "failed"  # failed an attempt, will retry after a backoff
    DEAD = "dead"  # attempts exhausted
    CANCELLED = "cancelled"
    QUARANTINED = "quarantined"  # failed verification; never executed


FINAL_STATES = frozenset(
    {TaskState.SUCCEEDED, TaskState.DEAD, TaskState.CANCELLED, TaskState.QUARANTINED}
)


def json_depth(value: object, limit: int = MAX_PAYLOAD_DEPTH) -> int:
    """Nesting depth of a JSON value; stops counting (and returns limit + 1) past ``limit``.

    Raises ValidationError for a float that JSON cannot carry (NaN, infinities).
    """
    depth, level = 0, [value]
    while level:
        depth += 1
        if depth > limit:
            return depth
        nxt: list[object] = []
        for item in level:
            if isinstance(item, dict):
                nxt.extend(item.values())
            elif isinstance(item, list):
                nxt.extend(item)
            elif isinstance(item, float) and not math.isfinite(item):
                raise ValidationError(f"payload holds {item!r}, which JSON cannot carry")
        level = nxt
    return depth - 1 if depth else 0


def check_payload(payload: object, what: str = "payload") -> int:
    """Raise ValidationError unless ``payload`` is JSON within the limits; return its size."""
    if json_depth(payload) > MAX_PAYLOAD_DEPTH:
        raise ValidationError(f"{what} is nested deeper than {MAX_PAYLOAD_DEPTH} levels")
    try:
        size = len(orjson.dumps(payload))
    except TypeError as exc:
        raise ValidationError(f"{what} is not JSON: {exc}") from None
    if size > MAX_PAYLOAD_BYTES:
        raise ValidationError(f"{what} is {size} bytes; the limit is {MAX_PAYLOAD_BYTES}")
    return size


def payload_within_limits(cls: type, value: JsonValue) -> JsonValue:
    """A pydantic field validator of a ``payload``: :func:`check_payload` as a ValueError."""
    try:
        check_payload(value)
    except ValidationError as exc:
        raise ValueError(str(exc)) from None
    return value


def parse_json_payload(text: str | bytes) -> JsonValue:
    """Parse user-supplied JSON text within the size and depth limits."""
    if len(text) > MAX_PAYLOAD_BYTES:
        raise ValidationError(f"payload is {len(text)} bytes; the limit is {MAX_PAYLOAD_BYTES}")
    try:
        value = orjson.loads(text)
    except orjson.JSONDecodeError as exc:
        raise ValidationError(f"payload is not valid JSON: {exc}") from None
    check_payload(value)
    return value  # type: ignore[no-any-return]


class TaskSpec(BaseModel):
    """A submission as the user gives it (CLI, HTTP, Python). Validated, not yet signed."""

    model_config = ConfigDict(extra="forbid", frozen=True, strict=True)

    kind: str = Field(pattern=KIND_PATTERN)
    payload: JsonValue = None
    priority: int = Field(0, ge=MIN_PRIORITY, le=MAX_PRIORITY)
    idempotency_key: str | None = Field(None, min_length=1, max_length=200)
    # None: the kind's own (``@raysys.task``; 3 attempts, 300 s if it sets none). A value lowers
    # the kind's, never raises it.
    max_attempts: int | None = Field(None, ge=1, le=100)
    timeout_s: float | None = Field(None, gt=0, le=86_400)
    schedule_to_start_s: float | None = Field(None, gt=0, le=365 * 86_400)
    # Epoch ms before which the task must not start (None: now). Signed into the record.
    not_before_ms: int | None = Field(None, ge=0)

    _payload_limits = field_validator("payload")(payload_within_limits)

    @classmethod
    def build(cls, **fields: Any) -> TaskSpec:
        """Construct from untrusted input; raise raysys ValidationError naming each bad field."""
        try:
            return cls.model_validate(fields)
        except PydanticValidationError as exc:
            raise ValidationError(describe_validation(exc)) from None


def due_ms(delay_s: float | None = None, run_at: float | datetime | str | None = None, *,
           now: float | None = None) -> int | None:
    """When a delayed task becomes due, in epoch ms (None: now), from ``delay_s`` (seconds from
    now, >= 0) or ``run_at`` (an aware datetime, ISO-8601 text with a zone, or epoch seconds).

    Raises ValidationError for both at once, a negative or too long delay, a time without a
    zone, or a ``run_at`` more than ``PAST_TOLERANCE_S`` in the past (one just past runs now).
    """
    clock = time.time() if now is None else now
    if delay_s is not None and run_at is not None:
        raise ValidationError("give delay_s or run_at, not both")
    if delay_s is not None:
        if isinstance(delay_s, bool) or not isinstance(delay_s, int | float) or not math.isfinite(
                delay_s) or delay_s < 0:
            raise ValidationError(f"delay_s must be a number of seconds >= 0, not {delay_s!r}")
        if delay_s > MAX_DELAY_S:
            raise ValidationError(f"delay_s is {delay_s:g} s; at most {MAX_DELAY_S} s")
        return int((clock + delay_s) * 1000) if delay_s > 0 else None
    if run_at is None:
        return None
    when = _epoch_seconds(run_at)
    if not math.isfinite(when) or not 0 <= when < 2**40:
        raise ValidationError(f"run_at {run_at!r} is out of range")
    if when < clock - PAST_TOLERANCE_S:
        raise ValidationError(f"run_at {_iso(when)} is {clock - when:.0f} s in the past "
                              f"(more than {PAST_TOLERANCE_S:g} s)")
    if when - clock > MAX_DELAY_S:
        raise ValidationError(f"run_at {_iso(when)} is more than {MAX_DELAY_S} s ahead")
    return int(when * 1000) if when > clock else None


def _epoch_seconds(run_at: float | datetime | str) -> float:
    if isinstance(run_at, bool):
        raise ValidationError(f"run_at must be a time, not {run_at!r}")
    if isinstance(run_at, int | float):
        if not math.isfinite(run_at):
            raise ValidationError(f"run_at must be a time, not {run_at!r}")
        return float(run_at)
    if isinstance(run_at, str):
        try:
            run_at = datetime.fromisoformat(run_at.strip().replace("Z", "+00:00"))
        except ValueError:
            raise ValidationError(f"run_at {run_at!r} is not an ISO-8601 time "
                                  "(like 2026-12-24T18:00:00+01:00)") from None
    if not isinstance(run_at, datetime):
        raise ValidationError(f"run_at must be a time, not {type(run_at).__name__}")
    if run_at.tzinfo is None:
        raise ValidationError(f"run_at {run_at.isoformat()} has no time zone (add Z or +01:00)")
    try:
        return run_at.timestamp()
    except (OverflowError, ValueError, OSError):  # e.g. 0001-01-01T00:00+05:00
        raise ValidationError(f"run_at {run_at.isoformat()} is out of range") from None


def _iso(epoch_s: float) -> str:
    return datetime.fromtimestamp(epoch_s, UTC).isoformat(timespec="seconds")


def describe_validation(exc: PydanticValidationError) -> str:
    parts = []
    for err in exc.errors():
        where = ".".join(str(p) for p in err.get("loc", ())) or "input"
        parts.append(f"{where}: {str(err.get('msg', 'invalid')).removeprefix('Value error, ')}")
    return "invalid task: " + "; ".join(parts)


def new_task_id() -> str:
    """128 random bits as 32 hex characters (the shape of a uuid4 hex, cheaper to make)."""
    return os.urandom(16).hex()


def record_body(task_id: str, spec: TaskSpec, namespace: str) -> dict[str, Any]:
    """The signed body of a task record. It names its own id and namespace (anti copy)."""
    return {
        "id": task_id,
        "ns": namespace,
        "kind": spec.kind,
        "payload": spec.payload,
        "priority": spec.priority,
        "idempotency_key": spec.idempotency_key,
        "max_attempts": spec.max_attempts,
        "timeout_s": spec.timeout_s,
        "schedule_to_start_s": spec.schedule_to_start_s,
        **({"not_before_ms": spec.not_before_ms} if spec.not_before_ms is not None else {}),
    }


class Lease(NamedTuple):
    """A verified task handed to one holder under one fencing token.

    (A NamedTuple, not a frozen dataclass: one is built per task on the hot path, and a frozen
    dataclass pays an ``object.__setattr__`` per field.)
    """

    task_id: str
    fence: int
    attempt: int
    deadline_ms: int
    kind: str
    payload: Any
    priority: int
    max_attempts: int | None  # None: the kind's default
    timeout_s: float | None  # None: the kind's default
    idempotency_key: str | None

    @classmethod
    def from_doc(cls, doc: Mapping[str, Any]) -> Lease:
        """The one mapping from named fields to a lease: a wire document (``_asdict()``), or a
        verified record body merged with its grant (task_id, fence, attempt, deadline_ms).

        Raises KeyError, TypeError or ValueError when a field is missing or of the wrong type.
        """
        key, attempts, timeout = (doc.get("idempotency_key"), doc.get("max_attempts"),
                                  doc.get("timeout_s"))
        return cls(str(doc["task_id"]), int(doc["fence"]), int(doc["attempt"]),
                   int(doc["deadline_ms"]), str(doc["kind"]), doc["payload"],
                   int(doc["priority"]), None if attempts is None else int(attempts),
                   None if timeout is None else float(timeout),
                   None if key is None else str(key))

    @property
    def effective_idempotency_key(self) -> str:
        """What handlers should key their side effects on: the user's key, else the task id."""
        return self.idempotency_key or self.task_id


QUARANTINE_ERROR_PREFIX = "record failed verification: "  # quarantine.lua's stored err


def quarantine_code(error: str | None) -> str | None:
    """The rejection code (``bad_signature``, ``copied_record``, ...) in a quarantined task's
    stored error (quarantine.lua writes ``record failed verification: <code>``); None when the
    error names none."""
    if error and error.startswith(QUARANTINE_ERROR_PREFIX):
        words = error[len(QUARANTINE_ERROR_PREFIX):].split()
        return words[0] if words else None
    return None


@dataclass(frozen=True, slots=True)
class TaskStatus:
    """What ``status`` returns for one task."""

    id: str
    state: TaskState
    attempts: int
    priority: int
    kind: str
    result: Any = None
    error: str | None = None
    fence: int = 0
    holder: str | None = None
    waiting: str | None = None  # pending and held back: why (no node can place its kind, ...)
    run_at_ms: int | None = None  # scheduled: when it becomes due (epoch ms)
    # "failed: <reason> (<record>)" when a stored signed record fails verification (the task
    # never runs, or its result is withheld), and for every quarantined task; None: all verify
    integrity: str | None = None

    def to_json(self) -> dict[str, Any]:
        doc = {
            "id": self.id,
            "state": self.state.value,
            "result": self.result,
            "error": self.error,
            "attempts": self.attempts,
            "kind": self.kind,
            "priority": self.priority,
        }
        if self.waiting is not None:
            doc["waiting"] = self.waiting
        if self.run_at_ms is not None:
            doc["run_at"] = _iso(self.run_at_ms / 1000)
        if self.integrity is not None:
            doc["integrity"] = self.integrity
        return doc


class Outcome(NamedTuple):
    """What a holder reports for one lease: success with a result, or failure with an error."""

    ok: bool
    result: Any = None
    error: str | None = None
    retryable: bool = True
    seconds: float = 0.0  # how long the handler ran
    delay_s: float | None = None  # a retry's delay the handler asked for (None: the backoff)
