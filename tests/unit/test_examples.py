"""The examples the README points to run as written."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

pytestmark = pytest.mark.unit
ROOT = Path(__file__).resolve().parents[2]


def test_core_quickstart_runs_and_accounts_for_every_task(tmp_path: Path) -> None:
    env = {k: v for k, v in os.environ.items()
           if not k.startswith(("RAYSYS_", "REDIS_"))} | {"HOME": str(tmp_path)}
    run = subprocess.run([sys.executable, str(ROOT / "examples" / "core_quickstart.py")],
                         cwd=tmp_path, env=env, capture_output=True, text=True, timeout=60)
    assert run.returncode == 0, run.stderr
    doc = json.loads(run.stdout)
    states = [t["state"] for t in doc["tasks"]]
    assert states == ["succeeded", "succeeded", "dead"]
    assert doc["tasks"][1]["result"].startswith("hello, high")
    assert doc["counts"]["succeeded"] == 2 and doc["counts"]["dead"] == 1
