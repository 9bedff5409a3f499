"""Task data: states, the validated submission, the signed record body, leases, status.

Everything that crosses a process boundary is strict (``extra="forbid"``) and bounded:
payloads at most ``MAX_PAYLOAD_BYTES`` serialised and ``MAX_PAYLOAD_DEPTH`` deep.
"""

from __future__ import annotations

import math
import os
from collections.abc import Mapping
from dataclasses import dataclass
from enum import StrEnum
from typing import Any, NamedTuple

import orjson
from pydantic import BaseModel, ConfigDict, Field, JsonValue, field_validator
from pydantic import ValidationError as PydanticValidationError

from raysys.errors import ValidationError

MAX_PAYLOAD_BYTES = 256 * 1024
MAX_PAYLOAD_DEPTH = 32
MAX_BATCH = 10_000
MIN_PRIORITY, MAX_PRIORITY = -1000, 1000
DEFAULT_MAX_ATTEMPTS = 3  # a kind's attempts unless @raysys.task says otherwise
DEFAULT_TIMEOUT_S = 300.0  # a kind's time limit per attempt unless @raysys.task says otherwise
KIND_PATTERN = r"^[A-Za-z0-9_.:-]{1,128}$"
TASK_ID_PATTERN = r"^[0-9a-f]{32}$"


class TaskState(StrEnum):
    """Lower-case task states of the public surface."""

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

    @field_validator("payload")
    @classmethod
    def _payload_limits(cls, value: JsonValue) -> JsonValue:
        try:
            check_payload(value)
        except ValidationError as exc:
            raise ValueError(str(exc)) from None
        return value

    @classmethod
    def build(cls, **fields: Any) -> TaskSpec:
        """Construct from untrusted input; raise raysys ValidationError naming each bad field."""
        try:
            return cls.model_validate(fields)
        except PydanticValidationError as exc:
            raise ValidationError(describe_validation(exc)) from None


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
        return doc


class Outcome(NamedTuple):
    """What a holder reports for one lease: success with a result, or failure with an error."""

    ok: bool
    result: Any = None
    error: str | None = None
    retryable: bool = True
    seconds: float = 0.0  # how long the handler ran
    delay_s: float | None = None  # a retry's delay the handler asked for (None: the backoff)
