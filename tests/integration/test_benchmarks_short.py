"""The long-running benchmarks in one-minute form, as a user runs them (each script in its own
process, its own Ray and Redis). They check the pass criteria (nothing lost, committed twice,
quarantined, run early, enqueued twice; memory levelling off; a snapshot restoring exactly),
never a speed: the figures go to docs/PERFORMANCE.md from the full runs.
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

from tests.support.processes import clean_env

pytestmark = [pytest.mark.integration, pytest.mark.slow, pytest.mark.timeout(420)]
BENCHMARKS = Path(__file__).resolve().parents[2] / "benchmarks"


def bench(script: str, *args: str, timeout: float = 400) -> tuple[int, dict[str, Any]]:
    done = subprocess.run([sys.executable, str(BENCHMARKS / script), *args, "--json"],
                          capture_output=True, text=True, timeout=timeout,
                          env=clean_env(ray=True), cwd=BENCHMARKS, check=False)
    lines = [line for line in done.stdout.splitlines() if line.startswith("{")]
    assert lines, f"{script} printed no report (exit {done.returncode}):\n{done.stderr[-3000:]}"
    return done.returncode, json.loads(lines[-1])


def test_soak_levels_off_and_loses_nothing() -> None:
    # a minute at 300 tasks/s with a 10 s retention: purging starts ~20 s in
    code, report = bench("soak.py", "--rate", "300", "--minutes", "1.5", "--retention", "10",
                         "--warmup-min", "0.75", "--sample-s", "5", "--tolerance", "0.25")
    assert report["lost"] == 0 and report["duplicate_commits"] == 0
    assert report["quarantined"] == 0 and report["purged"] > 0
    assert report["used_memory_after_warmup_mib"]["max_deviation"] <= 0.25, report
    assert code == 0


def test_delayed_tasks_never_start_early() -> None:
    code, report = bench("delayed_bench.py", "--tasks", "3000", "--spread", "10")
    assert report["started"] == 3000 and report["early"] == 0
    assert report["lost"] == 0 and report["duplicate_commits"] == 0
    assert code == 0


def test_a_schedule_enqueues_each_tick_once_across_coordinator_kills() -> None:
    code, report = bench("schedule_bench.py", "--minutes", "1", "--kill-every", "20")
    assert len(report["kills_at_s"]) == 2
    assert report["ticks_twice"] == 0 and report["ticks_missing"] == 0, report
    assert report["ticks_with_one_task"] == report["ticks_expected"] >= 50
    assert code == 0


def test_a_snapshot_of_many_tasks_restores_exactly() -> None:
    code, report = bench("snapshot_bench.py", "--tasks", "60000")
    assert report["restored_counts_match"] and report["keys"] > 60_000
    assert report["writer_submits_during_save"] >= 1
    assert code == 0


def test_a_purge_removes_every_finished_task_while_work_goes_on() -> None:
    code, report = bench("purge_bench.py", "--tasks", "60000", "--noop", "5000")
    assert report["purged"] == 60_000
    assert report["noop_during_purge"]["lost"] == 0
    assert report["noop_during_purge"]["duplicate_commits"] == 0
    assert code == 0
