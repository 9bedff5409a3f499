"""A periodic schedule as users define it, and as it is signed and stored.

Stored as ``{raysys:<ns>}:sch:<name>`` (hash): ``rec``, the signed definition (envelope purpose
``schedule``), and ``cur``, the signed cursor (purpose ``schedule_cursor``): every tick at or
before ``at_ms`` has been enqueued or skipped. ``{raysys:<ns>}:schedules`` (sorted set) holds
every name scored by its next tick (epoch ms); a paused schedule scores ``PAUSED_SCORE``.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, JsonValue, field_validator
from pydantic import ValidationError as PydanticValidationError

from raysys.errors import IntegrityError, ValidationError
from raysys.models import KIND_PATTERN, MAX_PRIORITY, MIN_PRIORITY, payload_within_limits
from raysys.schedules import cron
from raysys.signing.envelope import Sealer

SCHEDULE = "schedule"  # envelope purpose of a definition
CURSOR = "schedule_cursor"  # envelope purpose of a cursor
NAME_PATTERN = r"^[A-Za-z0-9_.:-]{1,100}$"
PAUSED_SCORE = 9_000_000_000_000_000  # far beyond any tick: the ticker never picks it
Catchup = Literal["skip", "all"]


class ScheduleSpec(BaseModel):
    """What ``schedule add`` takes. Validated (cron parses, zone exists), not yet signed."""

    model_config = ConfigDict(extra="forbid", frozen=True, strict=True)

    name: str = Field(pattern=NAME_PATTERN)
    cron: str = Field(min_length=1, max_length=200)
    kind: str = Field(pattern=KIND_PATTERN)
    payload: JsonValue = None
    tz: str = Field("UTC", min_length=1, max_length=64)
    catchup: Catchup = "skip"
    priority: int = Field(0, ge=MIN_PRIORITY, le=MAX_PRIORITY)
    paused: bool = False

    _payload_limits = field_validator("payload")(payload_within_limits)

    @classmethod
    def build(cls, **fields: Any) -> ScheduleSpec:
        """From untrusted input; ValidationError naming what is wrong (cron and zone too)."""
        try:
            spec = cls.model_validate(fields)
        except PydanticValidationError as exc:
            parts = [f"{'.'.join(str(p) for p in e.get('loc', ())) or 'input'}: "
                     f"{str(e.get('msg', 'invalid')).removeprefix('Value error, ')}"
                     for e in exc.errors()]
            raise ValidationError("invalid schedule: " + "; ".join(parts)) from None
        cron.check(spec.cron, spec.tz)
        return spec


@dataclass(frozen=True, slots=True)
class ScheduleInfo:
    """A verified schedule: its definition, the last tick handled and the next one."""

    spec: ScheduleSpec
    last_ms: int | None
    next_ms: int | None
    signed_by: str

    def to_json(self) -> dict[str, Any]:
        return {**self.spec.model_dump(), "last_ms": self.last_ms, "next_ms": self.next_ms,
                "signed_by": self.signed_by}


def seal_spec(sealer: Sealer, spec: ScheduleSpec, namespace: str) -> bytes:
    return sealer.seal(SCHEDULE, {**spec.model_dump(), "ns": namespace})


def open_spec(sealer: Sealer, data: bytes, name: str, namespace: str) -> tuple[ScheduleSpec,
                                                                                  str]:
    """The verified definition stored under ``name`` and its key id; IntegrityError if not."""
    opened = sealer.open(data, SCHEDULE)
    body = opened.body
    if not isinstance(body, dict) or body.get("name") != name or body.get("ns") != namespace:
        raise IntegrityError(f"schedule {name}: record signed for another schedule or "
                             "namespace", reason="copied_record")
    fields = {k: v for k, v in body.items() if k != "ns"}
    try:
        return ScheduleSpec.model_validate(fields), opened.kid
    except PydanticValidationError:
        raise IntegrityError(f"schedule {name}: signed record lacks fields",
                             reason="malformed") from None


def seal_cursor(sealer: Sealer, name: str, namespace: str, at_ms: int) -> bytes:
    return sealer.seal(CURSOR, {"name": name, "ns": namespace, "at_ms": int(at_ms)})


def open_cursor(sealer: Sealer, data: bytes, name: str, namespace: str) -> int:
    """The verified cursor's time (ms); IntegrityError if it does not verify as this one's."""
    body = sealer.open(data, CURSOR).body
    if (not isinstance(body, dict) or body.get("name") != name or body.get("ns") != namespace
            or not isinstance(body.get("at_ms"), int)):
        raise IntegrityError(f"schedule {name}: cursor signed for another schedule",
                             reason="copied_record")
    return int(body["at_ms"])
