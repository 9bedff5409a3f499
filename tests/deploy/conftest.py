"""Deploy fixtures.

- ``bystander``: a process of the current user that ``ray stop`` would kill (its name is
  ``raylet``), for tests that stop a cluster of their own and must leave everything else
  running; killed when the test ends.
"""

from __future__ import annotations

import shutil
import subprocess
import tempfile
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.support.processes import Proc, proc_table


@pytest.fixture
def bystander() -> Iterator[Proc]:
    where = Path(tempfile.mkdtemp(prefix="rsd-by-"))
    raylet = where / "raylet"
    raylet.symlink_to(shutil.which("sleep") or "/bin/sleep")
    proc = subprocess.Popen([str(raylet), "900"], start_new_session=True)
    try:
        yield proc_table()[proc.pid]
    finally:
        proc.kill()
        proc.wait()
        shutil.rmtree(where, ignore_errors=True)
