"""``benchmarks/compare_dramatiq.py`` as a user runs it: a smoke test of the comparison.

The script starts everything itself (two private Redis servers, the ``dramatiq`` CLI, ``raysys
bench`` with its own Ray cluster), so no fixture of conftest.py is used. The figures are not
checked, only that both sides did every task and that the ratio is the one of the medians; and
that nothing of the run outlives it.
"""

from __future__ import annotations

import importlib.util
import json
import re
import shutil
import subprocess
import sys
import tempfile
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.support.processes import private_env, wait_no_processes

pytestmark = [pytest.mark.integration, pytest.mark.slow, pytest.mark.timeout(300)]
SCRIPT = Path(__file__).resolve().parents[2] / "benchmarks" / "compare_dramatiq.py"
RUN_TIMEOUT_S = 240.0
TASKS = 300
RUN_DIR = re.compile(r"^compare_dramatiq: (?:Dramatiq and its Redis|raysys bench) in (\S+)$",
                     re.MULTILINE)


@pytest.fixture
def root() -> Iterator[Path]:
    path = Path(tempfile.mkdtemp(prefix="rcd-"))
    yield path
    shutil.rmtree(path, ignore_errors=True)


def dramatiq_processes() -> set[str]:
    """``pgrep -af dramatiq``: Dramatiq CLI and worker processes (pid and command line)."""
    found = subprocess.run(["pgrep", "-af", "dramatiq"], capture_output=True, text=True,
                           check=False)
    return set(found.stdout.splitlines())


def test_compare_runs_both_sides_and_reports_the_ratio_of_the_medians(root: Path) -> None:
    if importlib.util.find_spec("dramatiq") is None:
        pytest.skip("Dramatiq is not installed: pip install -e '.[dev]'")
    before = dramatiq_processes()  # another run's, if any

    # when: the comparison runs in a private environment (HOME, TMPDIR, no RAYSYS_* variables)
    run = subprocess.run([sys.executable, str(SCRIPT), "--tasks", str(TASKS), "--json"],
                         cwd=root, env=private_env(root), capture_output=True, text=True,
                         timeout=RUN_TIMEOUT_S, stdin=subprocess.DEVNULL, check=False)

    # then: exit 0 and one JSON object on stdout
    assert run.returncode == 0, f"exited {run.returncode}:\n{run.stderr}"
    lines = run.stdout.splitlines()
    assert len(lines) == 1, f"stdout must be one JSON object, got:\n{run.stdout}"
    report = json.loads(lines[0])
    # ... one round, every task done by each side, nothing lost or committed twice ...
    assert report["tasks"] == TASKS and report["fsync"] == "always"
    [only] = report["rounds"]
    dramatiq, raysys = only["dramatiq"], only["raysys"]
    assert dramatiq["processed"] == dramatiq["tasks"] == TASKS
    assert raysys["tasks"] == raysys["succeeded"] == TASKS
    assert raysys["lost"] == raysys["duplicate_commits"] == 0
    assert dramatiq["tasks_per_s"] > 0 and raysys["tasks_per_s"] > 0
    assert dramatiq["settings"]["fsync"] == raysys["settings"]["fsync"] == "always"
    # ... the medians (of one round: its figures) and their ratio ...
    assert report["dramatiq_tasks_per_s"] == dramatiq["tasks_per_s"]
    assert report["raysys_tasks_per_s"] == raysys["tasks_per_s"]
    expected = report["raysys_tasks_per_s"] / report["dramatiq_tasks_per_s"]
    assert report["ratio"] == pytest.approx(expected, abs=5e-4)
    # ... progress on stderr, and no process of the run left behind
    dirs = [Path(d) for d in RUN_DIR.findall(run.stderr)]
    assert len(dirs) == 2, run.stderr
    assert not any(d.exists() for d in dirs), "the run's temporary directories are left"
    # (Dramatiq processes too, but another run's: those running before)
    assert wait_no_processes(root, *dirs,
                             also=lambda: sorted(dramatiq_processes() - before)) == []
