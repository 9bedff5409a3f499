"""`.env.example` documents exactly the variables raysys reads, with defaults that load cleanly."""

from __future__ import annotations

import re
from collections import Counter
from pathlib import Path

import pytest

from raysys.config import KNOWN_VARIABLES, Settings

pytestmark = pytest.mark.unit

ENV_EXAMPLE = Path(__file__).resolve().parents[2] / ".env.example"

# "NAME=value" (set to its default) or "# NAME=" (documented, unset by default).
_ASSIGNMENT = re.compile(r"^(?:#\s*)?([A-Z][A-Z0-9_]*)=")


def _listed_variables() -> list[str]:
    names = []
    for line in ENV_EXAMPLE.read_text(encoding="utf-8").splitlines():
        match = _ASSIGNMENT.match(line)
        if match:
            names.append(match.group(1))
    return names


def test_env_example_lists_exactly_the_known_variables() -> None:
    # given the variables .env.example documents
    listed = _listed_variables()

    # then each known variable appears once and nothing else does
    duplicates = sorted(name for name, count in Counter(listed).items() if count > 1)
    assert duplicates == [], f"listed more than once in .env.example: {duplicates}"
    missing = sorted(set(KNOWN_VARIABLES) - set(listed))
    assert missing == [], f"missing from .env.example: {missing}"
    unknown = sorted(set(listed) - set(KNOWN_VARIABLES))
    assert unknown == [], f"in .env.example but not in raysys.config.KNOWN_VARIABLES: {unknown}"


def test_every_variable_has_a_comment() -> None:
    # given the lines of .env.example
    lines = ENV_EXAMPLE.read_text(encoding="utf-8").splitlines()

    # then the line above each variable is a comment that is not itself a variable
    for index, line in enumerate(lines):
        match = _ASSIGNMENT.match(line)
        if match:
            above = lines[index - 1] if index else ""
            assert above.startswith("#") and not _ASSIGNMENT.match(above), (
                f"{match.group(1)} has no comment line above it"
            )


def test_env_example_sets_no_secret() -> None:
    # given the active (uncommented) assignments
    active = {}
    for line in ENV_EXAMPLE.read_text(encoding="utf-8").splitlines():
        if not line.startswith("#") and "=" in line:
            name, _, value = line.partition("=")
            active[name.strip()] = value.strip()

    # then no secret carries a value
    secrets = ("RAYSYS_REDIS_URL", "REDIS_PASSWORD", "RAYSYS_API_TOKEN", "RAYSYS_SIGNING_KEYS")
    assert {name: active[name] for name in secrets if active.get(name)} == {}


def test_env_example_copied_to_dotenv_gives_the_defaults(no_settings_variables: None) -> None:
    # given an environment without any raysys variable (no_settings_variables)

    # when settings are loaded from .env.example as if it were .env
    from_example = Settings(_env_file=ENV_EXAMPLE)  # type: ignore[call-arg]
    defaults = Settings(_env_file=None)  # type: ignore[call-arg]

    # then it validates and changes nothing: copying it is safe
    assert from_example.model_dump() == defaults.model_dump()
    assert not from_example.redis_configured
