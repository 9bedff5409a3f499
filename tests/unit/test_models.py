"""Task input validation: typed errors, limits, nothing half-built."""

from __future__ import annotations

import pytest

from raysys.errors import ValidationError
from raysys.models import (
    MAX_PAYLOAD_BYTES,
    MAX_PAYLOAD_DEPTH,
    TaskSpec,
    json_depth,
    parse_json_payload,
)

pytestmark = pytest.mark.unit


def test_defaults_are_sane() -> None:
    # a submission's limits default to its kind's (None here: resolved when the task runs)
    spec = TaskSpec.build(kind="echo", payload={"a": 1})
    assert (spec.priority, spec.max_attempts, spec.timeout_s, spec.idempotency_key,
            spec.schedule_to_start_s) == (0, None, None, None, None)


@pytest.mark.parametrize(
    ("fields", "fragment"),
    [
        ({"kind": ""}, "kind"),
        ({"kind": "has space"}, "kind"),
        ({"kind": "ok", "priority": 5000}, "priority"),
        ({"kind": "ok", "priority": "1"}, "priority"),
        ({"kind": "ok", "max_attempts": 0}, "max_attempts"),
        ({"kind": "ok", "surprise": 1}, "surprise"),
        ({"kind": "ok", "idempotency_key": ""}, "idempotency_key"),
        ({"kind": "ok", "payload": {"x": float("nan")}}, "payload"),
        ({"kind": "ok", "payload": "x" * (MAX_PAYLOAD_BYTES + 1)}, "limit"),
    ],
)
def test_bad_specs_raise_validation_error_naming_the_field(fields: dict, fragment: str) -> None:  # type: ignore[type-arg]
    with pytest.raises(ValidationError, match=fragment):
        TaskSpec.build(**fields)


def test_deep_payload_is_refused() -> None:
    deep: object = 1
    for _ in range(MAX_PAYLOAD_DEPTH + 5):
        deep = [deep]
    with pytest.raises(ValidationError, match="deeper"):
        TaskSpec.build(kind="ok", payload=deep)


@pytest.mark.parametrize("text", ["{", "[1,", "nan", "[" * 100_000 + "]" * 100_000, "\x00"])
def test_malformed_json_text_gets_a_typed_error(text: str) -> None:
    with pytest.raises(ValidationError):
        parse_json_payload(text)


def test_json_depth_counts_levels() -> None:
    assert json_depth(1) == 0
    assert json_depth([1]) == 1
    assert json_depth({"a": [{"b": 1}]}) == 3
