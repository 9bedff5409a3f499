"""JSON Schemas the deploy tests validate against: where they live, and the errors they give.

- :func:`schema_dir`: ``$RAYSYS_SCHEMA_DIR/<sub>`` (default ``../shared/schemas`` beside the
  repository; DESIGN.md, "Tests": read there, never copied here); a missing folder fails the test
  under ``CI=true`` and skips it elsewhere.
- :func:`schema_errors`: every error of a document under a schema, one line each, in document
  order.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import jsonschema

from tests.support.prerequisites import unavailable

REPO = Path(__file__).resolve().parents[2]


def schema_dir(sub: str) -> Path:
    """`$RAYSYS_SCHEMA_DIR/<sub>` (default ../shared/schemas); fail under CI=true, else skip."""
    env = os.environ.get("RAYSYS_SCHEMA_DIR")
    base = Path(env) if env else REPO.parent / "shared" / "schemas"
    path = base / sub
    if not path.is_dir():
        unavailable(f"schema folder {path} not found: set RAYSYS_SCHEMA_DIR to the shared schemas "
                    "folder (default: ../shared/schemas beside the repository)")
    return path


def schema_errors(schema: dict[str, Any] | jsonschema.Draft7Validator, doc: Any,
                  separator: str = ".") -> list[str]:
    """``path: message`` for every error of ``doc`` under ``schema`` (Draft 7), sorted by
    path; the path's parts joined by ``separator`` (``<root>`` for the document itself)."""
    validator = (schema if isinstance(schema, jsonschema.Draft7Validator)
                 else jsonschema.Draft7Validator(schema))
    return [
        f"{separator.join(map(str, error.absolute_path)) or '<root>'}: {error.message}"
        for error in sorted(validator.iter_errors(doc), key=lambda e: list(e.absolute_path))
    ]
