"""Where the deploy tests find ``../shared/schemas`` (DESIGN.md, "Tests"): never copied here."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]


def schema_dir(sub: str) -> Path:
    """`$RAYSYS_SCHEMA_DIR/<sub>` (default ../shared/schemas); fail under CI=true, else skip."""
    env = os.environ.get("RAYSYS_SCHEMA_DIR")
    base = Path(env) if env else REPO.parent / "shared" / "schemas"
    path = base / sub
    if path.is_dir():
        return path
    reason = (f"schema folder {path} not found: set RAYSYS_SCHEMA_DIR to the shared schemas "
              "folder (default: ../shared/schemas beside the repository)")
    if os.environ.get("CI", "").lower() == "true":
        pytest.fail(reason)
    pytest.skip(reason)
