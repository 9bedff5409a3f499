"""The results file the chaos and security suites write their figures to, and what goes in a row.

- :class:`ResultsFile`: ``{"rows": [row, ...]}``, one row per (``suite``, ``id``); ``python -m
  tests.chaos.report`` renders it into ``docs/RELIABILITY.md``. :func:`results_file_for` opens
  the one a pytest run writes (``--chaos-results``, default ``build/chaos-results.json``).
- :func:`run_seed`: the seed of the run's random choices (``--chaos-seed``, else a random one
  kept for the whole run), stored with each row so a run can be replayed.
- :func:`environment`: what the figures were measured on (cores, Python, Ray, the Redis
  server, the commit), stored with each row.
- :func:`percentile`: the nearest-rank percentile the rows report.

The suites build their rows with ``tests.chaos.harness.chaos_row`` and
``tests.security.security_results.security_row``.
"""

from __future__ import annotations

import fcntl
import json
import math
import os
import platform
import random
import subprocess
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import pytest
import redis

REPO_ROOT = Path(__file__).resolve().parents[2]
DEFAULT_RESULTS = REPO_ROOT / "build" / "chaos-results.json"


class ResultsFile:
    """The JSON file the suites write and ``report.py`` renders: ``{"rows": [row, ...]}``.

    A row is keyed by (``suite``, ``id``); writing a row replaces the previous one with that key.
    Chaos rows: ``scenario``, ``size``, ``seed``, ``faults``, ``lost``, ``duplicate_commits``,
    ``extra_attempts``, ``extra_bound``, ``reclaim_p50_s``, ``reclaim_max_s``,
    ``reclaim_bound_s``, ``duration_s``, ``passed``, ``notes``. Security rows (suite
    ``security``): ``scenario``, ``size``, ``seed``, ``attempted``, ``executed``, ``rejected``,
    ``audited``, ``passed``, ``notes``. Unknown fields are kept and ignored by the report.
    """

    def __init__(self, path: Path) -> None:
        self.path = path

    def put(self, row: dict[str, Any]) -> None:
        if "suite" not in row or "id" not in row:
            raise ValueError("a results row needs 'suite' and 'id'")
        self.path.parent.mkdir(parents=True, exist_ok=True)
        with open(self.path.with_suffix(".lock"), "w") as lock:
            fcntl.flock(lock, fcntl.LOCK_EX)
            rows = self.rows()
            rows = [r for r in rows if (r.get("suite"), r.get("id")) != (row["suite"], row["id"])]
            rows.append({**row, "recorded_at": time.strftime("%Y-%m-%dT%H:%M:%S%z")})
            rows.sort(key=lambda r: (str(r.get("suite")), str(r.get("id"))))
            tmp = self.path.with_suffix(f".tmp{os.getpid()}")
            tmp.write_text(json.dumps({"rows": rows}, indent=2, sort_keys=True) + "\n")
            tmp.replace(self.path)

    def rows(self) -> list[dict[str, Any]]:
        try:
            data = json.loads(self.path.read_text())
        except FileNotFoundError:
            return []
        rows = data.get("rows", []) if isinstance(data, dict) else []
        return [r for r in rows if isinstance(r, dict)]


def results_file_for(config: pytest.Config) -> ResultsFile:
    """The results file of this pytest run: ``--chaos-results`` (registered in
    tests/conftest.py), else ``build/chaos-results.json`` under the repository."""
    given = config.getoption("--chaos-results", default=None)
    return ResultsFile(Path(given) if given else DEFAULT_RESULTS)


def run_seed(config: pytest.Config) -> int:
    """``--chaos-seed`` (registered in tests/conftest.py), else a random seed drawn once per
    run: the chaos and security suites of one run share it."""
    seed = getattr(config, "_chaos_seed", None)
    if seed is None:
        given = config.getoption("--chaos-seed", default=None)
        seed = int(given) if given is not None else random.SystemRandom().randrange(2**31)
        config._chaos_seed = seed  # type: ignore[attr-defined]
    return int(seed)


def environment(conn: redis.Redis) -> dict[str, Any]:
    """Cores, Python, Ray, the Redis server under test and the repository commit."""
    import ray

    info = conn.info("server")
    name = "valkey" if "valkey_version" in info else "redis"
    server = f"{name} {info.get(f'{name}_version')}"
    try:
        commit = subprocess.run(["git", "-C", str(REPO_ROOT), "describe", "--always", "--dirty"],
                                capture_output=True, text=True, timeout=10, check=True)
        revision = commit.stdout.strip()
    except (OSError, subprocess.SubprocessError):
        revision = "unknown"
    return {"cores": os.cpu_count(), "python": platform.python_version(),
            "ray": ray.__version__, "redis": server, "commit": revision}


def percentile(values: Sequence[float], p: float) -> float | None:
    """Nearest-rank percentile; None for no values."""
    if not values:
        return None
    ordered = sorted(values)
    rank = min(len(ordered), max(1, math.ceil(p / 100 * len(ordered))))
    return ordered[rank - 1]
