"""The ``raysys`` console script, run as a real subprocess in a private environment.

- :func:`make_cli` gives a :class:`Cli` rooted in a directory: no ``RAYSYS_*``/``REDIS_*``
  variables from the caller, a private ``HOME``, ``RAYSYS_DATA_DIR`` and ``TMPDIR`` in it, a
  unique ``RAYSYS_NAMESPACE``, and ``cwd`` there (so no stray ``.env`` is read);
  :meth:`Cli.run` gives a finished :class:`Run` (its ``json()``, its one ``error_line()``),
  :meth:`Cli.popen` and :meth:`Cli.running` a running one, whose stdout :func:`read_line`
  reads with a timeout.
- :func:`assert_no_embedded_server_left`: no embedded Redis outlived the commands that started it.
- :func:`check_report`: the demo/bench report of DESIGN.md, every task accounted for.

Shared by the CLI tests (tests/unit), the demo/bench tests (tests/integration) and the
transport tests (tests/security).
"""

from __future__ import annotations

import json
import os
import re
import selectors
import subprocess
import sys
import uuid
from collections.abc import Iterator, Mapping, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

import pytest

from tests.support.processes import alive, private_env, processes_working_in

RUN_TIMEOUT_S = 45.0
TASK_ID = re.compile(r"^[0-9a-f]{32}$")
STARTED_PID = re.compile(r"embedded Redis started: pid=(\d+)")
REPORT_FIELDS = {
    "tasks",
    "succeeded",
    "dead",
    "cancelled",
    "quarantined",
    "lost",
    "duplicate_commits",
    "retries",
    "tasks_per_s",
    "latency_ms",
    "settings",
}
SETTINGS_FIELDS = {"fsync", "signing", "serve", "audit", "workers", "batch"}


def raysys_script() -> Path:
    """The console script pip installed next to this interpreter."""
    script = Path(sys.executable).with_name("raysys")
    if not (script.is_file() and os.access(script, os.X_OK)):
        pytest.fail(f"no `raysys` entry point at {script}: pip install -e . into this venv")
    return script


# ---- running the CLI --------------------------------------------------------------------------
@dataclass(frozen=True)
class Run:
    """One finished command."""

    args: tuple[str, ...]
    returncode: int
    stdout: str
    stderr: str

    @property
    def output(self) -> str:
        return self.stdout + self.stderr

    def json(self) -> dict[str, Any]:
        """The single JSON object stdout holds; fails if stdout holds anything else."""
        assert self.returncode == 0, (
            f"raysys {' '.join(self.args)} exited {self.returncode}:\n{self.stderr}"
        )
        lines = self.stdout.splitlines()
        assert len(lines) == 1, f"stdout must be one JSON object, got:\n{self.stdout}"
        doc = json.loads(lines[0])
        assert isinstance(doc, dict), f"stdout must be a JSON object, got {doc!r}"
        return doc

    def error_line(self, exit_code: int) -> str:
        """The one stderr line of a failed command; checks the code and that nothing else shows."""
        assert self.returncode == exit_code, (
            f"raysys {' '.join(self.args)}: expected exit {exit_code}, got {self.returncode}\n"
            f"stdout: {self.stdout}\nstderr: {self.stderr}"
        )
        assert "Traceback" not in self.output
        assert self.stdout == ""
        lines = self.stderr.splitlines()
        assert len(lines) == 1, f"expected one line on stderr, got:\n{self.stderr}"
        assert lines[0].startswith("raysys: error: "), lines[0]
        return lines[0]

    def started_pids(self) -> list[int]:
        """Pids of the embedded servers this command started (from its INFO log on stderr)."""
        return [int(pid) for pid in STARTED_PID.findall(self.stderr)]


@dataclass(frozen=True)
class Cli:
    """Runs ``raysys`` in a private environment rooted at ``root``."""

    root: Path
    env: Mapping[str, str]
    namespace: str
    script: Path = field(default_factory=raysys_script)

    @property
    def data_dir(self) -> Path:
        return Path(self.env["RAYSYS_DATA_DIR"])

    @property
    def tmpdir(self) -> Path:
        return Path(self.env["TMPDIR"])

    def with_env(self, **changes: str | None) -> Cli:
        """A copy with variables set (a str) or removed (None)."""
        env = dict(self.env)
        for name, value in changes.items():
            if value is None:
                env.pop(name, None)
            else:
                env[name] = value
        return replace(self, env=env)

    def command(self, args: Sequence[str], module: bool = False) -> list[str]:
        entry = [sys.executable, "-m", "raysys.cli"] if module else [str(self.script)]
        return [*entry, *args]

    def run(self, *args: str, module: bool = False, timeout: float = RUN_TIMEOUT_S) -> Run:
        proc = subprocess.run(
            self.command(args, module),
            cwd=self.root,
            env=dict(self.env),
            capture_output=True,
            text=True,
            timeout=timeout,
            stdin=subprocess.DEVNULL,
            check=False,
        )
        return Run(tuple(args), proc.returncode, proc.stdout, proc.stderr)

    def popen(self, *args: str, stderr_file: Path) -> subprocess.Popen[str]:
        with stderr_file.open("w") as err:
            return subprocess.Popen(
                self.command(args),
                cwd=self.root,
                env=dict(self.env),
                text=True,
                stdin=subprocess.DEVNULL,
                stdout=subprocess.PIPE,
                stderr=err,
            )

    @contextmanager
    def running(self, *args: str, stderr_file: Path) -> Iterator[subprocess.Popen[str]]:
        """:meth:`popen`, killed on leaving the block if it still runs then."""
        proc = self.popen(*args, stderr_file=stderr_file)
        try:
            yield proc
        finally:
            if proc.poll() is None:
                proc.kill()
                proc.wait()


def make_cli(root: Path, namespace: str | None = None) -> Cli:
    """A :class:`Cli` in :func:`~tests.support.processes.private_env` under ``root``, with its
    own namespace (a fresh one unless given)."""
    namespace = namespace or "cli" + uuid.uuid4().hex[:10]
    return Cli(root, private_env(root, RAYSYS_NAMESPACE=namespace), namespace)


def assert_no_embedded_server_left(cli: Cli, *runs: Run) -> None:
    for run in runs:
        for pid in run.started_pids():
            assert not alive(pid), f"embedded Redis pid {pid} outlived `raysys {run.args}`"
    state = cli.data_dir / "redis" / "embedded.json"
    if state.exists():
        pid = json.loads(state.read_text())["pid"]
        assert not alive(pid), f"{state} names a live server, pid {pid}"
    assert processes_working_in(cli.root) == []


def read_line(proc: subprocess.Popen[str], timeout: float) -> str:
    """The next stdout line of ``proc`` within ``timeout`` seconds."""
    assert proc.stdout is not None
    with selectors.DefaultSelector() as sel:
        sel.register(proc.stdout, selectors.EVENT_READ)
        if not sel.select(timeout):
            proc.kill()
            pytest.fail(f"no output within {timeout} s")
    return proc.stdout.readline()


# ---- reports ----------------------------------------------------------------------------------
def check_report(report: dict[str, Any], tasks: int, workers: int) -> None:
    """The demo/bench report of DESIGN.md: every field, and every task accounted for."""
    assert set(report) >= REPORT_FIELDS, f"missing: {REPORT_FIELDS - set(report)}"
    assert set(report["latency_ms"]) == {"p50", "p95", "p99"}
    assert set(report["settings"]) >= SETTINGS_FIELDS
    assert report["settings"]["workers"] == workers
    assert report["tasks"] == tasks
    assert report["tasks"] == sum(
        report[k] for k in ("succeeded", "dead", "cancelled", "quarantined", "lost")
    )
    assert report["lost"] == 0
    assert report["duplicate_commits"] == 0
    assert report["tasks_per_s"] > 0
    assert (
        0
        <= report["latency_ms"]["p50"]
        <= report["latency_ms"]["p95"]
        <= report["latency_ms"]["p99"]
    )
