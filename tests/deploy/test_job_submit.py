"""`ray job submit` against a token-protected `ray start --head`, and the example run directly.

The head gets a private temp dir, explicit free ports for everything that has a fixed default
(GCS, dashboard/job API, Ray client server, dashboard agent, metrics, a worker port range off
Ray's default 10002-19999), token auth with its own token file, and its own HOME (so the user's
``~/.ray/auth_token`` is neither read nor written). ``ray stop`` would stop every Ray process of
the user, so the head is stopped selectively: the processes that carry this test's marker in
their environment, name its temp dir on their command line or run inside it, and all their
descendants. A fake ``raylet`` started before the head proves nothing else was touched.
"""

from __future__ import annotations

import contextlib
import json
import os
import random
import secrets
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
import urllib.error
import urllib.request
import uuid
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest

pytestmark = [pytest.mark.deploy, pytest.mark.slow]

ROOT = Path(__file__).resolve().parents[2]
EXAMPLES = ROOT / "examples"
VENV_BIN = Path(sys.executable).parent  # the test's venv: `ray`, and `python` for the job
MARKER_VAR = "DEPLOY_TEST_MARKER"  # inherited by every process the head starts
START_TIMEOUT_S = 90
JOB_TIMEOUT_S = 150


# ---- processes, selectively -------------------------------------------------------------------
@dataclass(frozen=True)
class Proc:
    pid: int
    ppid: int
    start: int  # clock ticks since boot: tells a reused pid from the process we saw
    state: str
    cmdline: str
    cwd: str
    environ: bytes


def proc_table() -> dict[int, Proc]:
    """Every process this user may inspect (root: all), from /proc."""
    table: dict[int, Proc] = {}
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        base = f"/proc/{entry}"
        try:
            with open(f"{base}/stat", "rb") as f:
                stat = f.read()
            fields = stat[stat.rindex(b")") + 2:].split()
            with open(f"{base}/cmdline", "rb") as f:
                cmdline = f.read().replace(b"\0", b" ").decode(errors="replace").strip()
        except OSError:
            continue
        try:
            with open(f"{base}/environ", "rb") as f:
                environ = f.read()
            cwd = os.readlink(f"{base}/cwd")
        except OSError:
            environ, cwd = b"", ""
        table[int(entry)] = Proc(int(entry), int(fields[1]), int(fields[19]),
                                 fields[0].decode(), cmdline, cwd, environ)
    return table


def processes_of(marker: str, root: Path) -> dict[int, Proc]:
    """Processes carrying ``marker`` or running from / naming ``root``, plus descendants.

    The environment catches Ray's workers (whose process titles hide their command line); the
    cwd and command line catch processes that rewrite their environment area (redis-server).
    """
    table = proc_table()
    tag = f"{MARKER_VAR}={marker}".encode()
    where = str(root)
    chosen = {pid for pid, p in table.items()
              if tag in p.environ.split(b"\0") or where in p.cmdline
              or p.cwd == where or p.cwd.startswith(where + "/")}
    grew = True
    while grew:
        grew = False
        for pid, p in table.items():
            if p.ppid in chosen and pid not in chosen:
                chosen.add(pid)
                grew = True
    chosen.discard(os.getpid())
    return {pid: table[pid] for pid in chosen}


def alive(p: Proc) -> bool:
    now = proc_table().get(p.pid)
    return now is not None and now.start == p.start and now.state not in ("Z", "X")


def terminate(procs: dict[int, Proc], grace_s: float = 10.0) -> None:
    """SIGTERM, then SIGKILL what is left after ``grace_s`` (Ray's GCS can hang on SIGTERM)."""
    for sig in (signal.SIGTERM, signal.SIGKILL):
        for p in procs.values():
            if alive(p):
                with contextlib.suppress(OSError):  # gone meanwhile
                    os.kill(p.pid, sig)
        deadline = time.monotonic() + grace_s
        while time.monotonic() < deadline and any(alive(p) for p in procs.values()):
            time.sleep(0.2)


def stop_selectively(marker: str, root: Path) -> None:
    """Stop everything of one test cluster; new children can appear while it dies: loop."""
    for _ in range(3):
        procs = processes_of(marker, root)
        if not procs:
            return
        terminate(procs)


def wait_until_gone(marker: str, root: Path, timeout_s: float = 30.0) -> list[str]:
    """Command lines of the processes still there after ``timeout_s`` (none: [])."""
    deadline = time.monotonic() + timeout_s
    while True:
        left = [p.cmdline for p in processes_of(marker, root).values() if alive(p)]
        if not left or time.monotonic() > deadline:
            return left
        time.sleep(0.5)


@pytest.fixture
def bystander() -> Iterator[Proc]:
    """A process `ray stop` would kill (its name is `raylet`); stopping our head must not."""
    where = Path(tempfile.mkdtemp(prefix="rsj-by-"))
    raylet = where / "raylet"
    raylet.symlink_to(shutil.which("sleep") or "/bin/sleep")
    proc = subprocess.Popen([str(raylet), "600"], start_new_session=True)
    try:
        yield proc_table()[proc.pid]
    finally:
        proc.kill()
        proc.wait()
        shutil.rmtree(where, ignore_errors=True)


# ---- ports ------------------------------------------------------------------------------------
def free_ports(count: int) -> list[int]:
    """Distinct free TCP ports (held open together while chosen, so they differ)."""
    socks = []
    try:
        for _ in range(count):
            s = socket.socket()
            s.bind(("127.0.0.1", 0))
            socks.append(s)
        return [s.getsockname()[1] for s in socks]
    finally:
        for s in socks:
            s.close()


def _port_free(port: int) -> bool:
    with socket.socket() as s:
        try:
            s.bind(("127.0.0.1", port))
        except OSError:
            return False
    return True


def worker_port_range(size: int = 100) -> tuple[int, int]:
    """A free block between Ray's default worker range (10002-19999) and the ephemeral ports."""
    for _ in range(50):
        low = random.randrange(20_000, 32_000 - size)
        if all(_port_free(p) for p in range(low, low + size)):
            return low, low + size - 1
    raise RuntimeError("no free block of worker ports in 20000-32000")


# ---- the head ---------------------------------------------------------------------------------
@dataclass
class Head:
    root: Path  # everything of this cluster lives here (short path: Ray's socket paths)
    marker: str
    token: str
    env: dict[str, str]  # a client's environment: token auth on, the token file, private HOME
    dashboard_port: int
    gcs_port: int
    stopped: bool = field(default=False)

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.dashboard_port}"

    def ray(self, *args: str, env: dict[str, str] | None = None,
            timeout: float = JOB_TIMEOUT_S) -> subprocess.CompletedProcess[str]:
        return subprocess.run([str(VENV_BIN / "ray"), *args], env=env or self.env, text=True,
                              capture_output=True, timeout=timeout, cwd=self.root)

    def api(self, path: str, token: str | None) -> tuple[int, Any]:
        """GET the dashboard's HTTP API, with ``Authorization: Bearer`` when ``token``."""
        request = urllib.request.Request(self.url + path)
        if token is not None:
            request.add_header("Authorization", f"Bearer {token}")
        try:
            with urllib.request.urlopen(request, timeout=30) as reply:
                return reply.status, json.loads(reply.read())
        except urllib.error.HTTPError as exc:
            return exc.code, None

    def stop(self) -> None:
        if not self.stopped:
            self.stopped = True
            stop_selectively(self.marker, self.root)


def clean_env(**extra: str) -> dict[str, str]:
    """The test's environment without raysys/Redis/Ray settings that would leak in."""
    env = {k: v for k, v in os.environ.items()
           if not k.startswith(("RAYSYS_", "REDIS_", "RAY_"))}
    env["PATH"] = f"{VENV_BIN}{os.pathsep}{env.get('PATH', '/usr/bin:/bin')}"
    env.pop("VIRTUAL_ENV", None)
    env.pop("PYTHONPATH", None)
    return env | extra


def start_head() -> Head:
    root = Path(tempfile.mkdtemp(prefix="rsj-"))
    marker = uuid.uuid4().hex
    home = root / "home"
    home.mkdir()
    token = secrets.token_hex(32)  # what `ray get-auth-token --generate` makes
    token_file = root / "auth_token"
    token_file.write_text(token)
    token_file.chmod(0o600)
    gcs, dashboard, client, agent, metrics = free_ports(5)
    low, high = worker_port_range()
    env = clean_env(HOME=str(home), RAY_AUTH_MODE="token", RAY_AUTH_TOKEN_PATH=str(token_file),
                    RAY_USAGE_STATS_ENABLED="0", TMPDIR=str(root))
    head = Head(root, marker, token, env, dashboard, gcs)
    # The cluster's environment reaches the job and the actors it starts: the embedded Redis
    # in a private data dir, and the marker that finds every process for the selective stop.
    head_env = env | {"RAYSYS_DATA_DIR": str(root / "data"), MARKER_VAR: marker}
    run = subprocess.run(
        [str(VENV_BIN / "ray"), "start", "--head",
         f"--port={gcs}", f"--temp-dir={root / 'ray'}", "--dashboard-host=127.0.0.1",
         f"--dashboard-port={dashboard}", f"--ray-client-server-port={client}",
         f"--dashboard-agent-listen-port={agent}", f"--metrics-export-port={metrics}",
         f"--min-worker-port={low}", f"--max-worker-port={high}", "--disable-usage-stats"],
        env=head_env, cwd=root, text=True, capture_output=True, timeout=START_TIMEOUT_S)
    if run.returncode != 0:
        head.stop()
        shutil.rmtree(root, ignore_errors=True)
        pytest.fail(f"ray start --head failed ({run.returncode}):\n{run.stdout}\n{run.stderr}")
    return head


@pytest.fixture(scope="module")
def head() -> Iterator[Head]:
    started = start_head()
    try:
        yield started
    finally:
        started.stop()
        shutil.rmtree(started.root, ignore_errors=True)


def report_of(output: str) -> dict[str, Any]:
    """The example's one JSON line, from job logs that mix in Ray's own lines."""
    for line in output.splitlines():
        line = line.strip()
        if line.startswith("{") and '"tasks"' in line:
            doc: dict[str, Any] = json.loads(line)
            return doc
    raise AssertionError(f"no JSON report in the output:\n{output[-4000:]}")


def assert_every_task_accounted_for(doc: dict[str, Any]) -> None:
    assert doc["ok"] is True, doc
    assert doc["tasks"] == 21
    assert sum(doc["states"].values()) == doc["tasks"], doc
    assert doc["states"] == {"succeeded": 20, "dead": 1}
    assert doc["unfinished"] == 0
    assert doc["first_result"]["words"] == 5
    assert "fails on purpose" in doc["failed_error"]


# ---- tests ------------------------------------------------------------------------------------
def test_job_submit_runs_the_example_to_completion(head: Head) -> None:
    # given a token-protected head, and a job id we choose
    job_id = f"raysys-e2e-{uuid.uuid4().hex[:8]}"

    # when the example is submitted with its folder as the working dir (the documented command)
    run = head.ray("job", "submit", "--address", head.url, "--submission-id", job_id,
                   "--working-dir", str(EXAMPLES), "--", "python", "example_e2e.py")

    # then the job succeeded and its report accounts for every task
    assert run.returncode == 0, f"{run.stdout[-6000:]}\n{run.stderr[-3000:]}"
    doc = report_of(run.stdout)
    assert doc["mode"] == "job" and doc["namespace"] == "raysys-example"
    assert_every_task_accounted_for(doc)
    status, job = head.api(f"/api/jobs/{job_id}", head.token)
    assert status == 200 and job["status"] == "SUCCEEDED", job
    # and the job left nothing behind: its actors are gone and the embedded Redis it started
    # in the cluster's data dir was stopped
    leftovers = [p for p in processes_of(head.marker, head.root).values()
                 if "redis-server" in p.cmdline or "valkey-server" in p.cmdline]
    assert leftovers == []


def test_job_submit_without_the_token_is_refused(head: Head) -> None:
    # given clients without the cluster's token: none at all, and a wrong one
    bare_home = head.root / "bare-home"
    bare_home.mkdir(exist_ok=True)
    no_token = clean_env(HOME=str(bare_home), RAY_USAGE_STATS_ENABLED="0")
    wrong = no_token | {"RAY_AUTH_MODE": "token", "RAY_AUTH_TOKEN": secrets.token_hex(32)}
    _, before = head.api("/api/jobs/", head.token)

    for env in (no_token, wrong):
        # when either submits a job
        run = head.ray("job", "submit", "--address", head.url, "--no-wait", "--",
                       "python", "-c", "print('should never run')", env=env, timeout=60)

        # then it is refused, and says why
        assert run.returncode != 0
        assert "Unauthorized" in run.stderr or "authentication" in run.stderr.lower(), run.stderr

    # and the job API itself refuses a request without the token (401) or with a wrong one
    # (403), and no job was created
    assert head.api("/api/jobs/", None)[0] == 401
    assert head.api("/api/jobs/", "not-the-token")[0] == 403
    status, after = head.api("/api/jobs/", head.token)
    assert status == 200 and len(after) == len(before)


def test_raysys_without_the_ray_token_is_one_line_and_exit_5(head: Head) -> None:
    # given clients without the cluster's token: none at all, and a wrong one
    no_token = {k: v for k, v in head.env.items() if not k.startswith("RAY_AUTH")}
    wrong = no_token | {"RAY_AUTH_MODE": "token", "RAY_AUTH_TOKEN": secrets.token_hex(32)}
    address = f"127.0.0.1:{head.gcs_port}"

    for env in (no_token, wrong):
        # when either asks the cluster for its workers
        run = subprocess.run([str(VENV_BIN / "raysys"), "workers", f"--address={address}",
                              "--json"], env=env, cwd=head.root, text=True,
                             capture_output=True, timeout=60)

        # then: Ray unavailable (5), one error line naming the cluster, no traceback
        assert run.returncode == 5, run.stderr[-3000:]
        assert "Traceback" not in run.stderr and run.stdout == ""
        errors = [line for line in run.stderr.splitlines() if line.startswith("raysys: error:")]
        assert len(errors) == 1 and address in errors[0], run.stderr[-3000:]


def test_the_example_job_refuses_a_namespace_where_a_pool_runs(head: Head) -> None:
    # given a pool started by `raysys up` in a namespace (HTTP app off: its port is taken)
    address = f"--address=127.0.0.1:{head.gcs_port}"
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        env = head.env | {"RAYSYS_DATA_DIR": str(head.root / "data"),
                          "RAYSYS_NAMESPACE": "raysys-taken",
                          "RAYSYS_HTTP_PORT": str(taken.getsockname()[1])}
        up = subprocess.run([str(VENV_BIN / "raysys"), "up", address, "--workers=1", "--json"],
                            env=env, cwd=head.root, text=True, capture_output=True,
                            timeout=JOB_TIMEOUT_S)
    try:
        assert up.returncode == 0, up.stderr[-3000:]
        assert json.loads(up.stdout)["namespace"] == "raysys-taken"

        # when the example is submitted into that namespace
        run = head.ray("job", "submit", "--address", head.url, "--working-dir", str(EXAMPLES),
                       "--runtime-env-json", '{"env_vars": {"RAYSYS_NAMESPACE": "raysys-taken"}}',
                       "--", "python", "example_e2e.py")

        # then it refuses, says why, and leaves that pool running
        assert run.returncode != 0
        assert "already run in namespace 'raysys-taken'" in run.stdout + run.stderr
        workers = subprocess.run([str(VENV_BIN / "raysys"), "workers", address, "--json"],
                                 env=env, cwd=head.root, text=True, capture_output=True,
                                 timeout=60)
        assert workers.returncode == 0, workers.stderr[-3000:]
        assert [w["live"] for w in json.loads(workers.stdout)["workers"]] == [True]
    finally:
        subprocess.run([str(VENV_BIN / "raysys"), "down", address], env=env, cwd=head.root,
                       capture_output=True, timeout=60)


def test_stopping_the_head_is_selective(head: Head, bystander: Proc) -> None:
    # given the head's processes (raylet, GCS, dashboard, workers), and another "raylet"
    ours = processes_of(head.marker, head.root)
    assert any("raylet" in p.cmdline for p in ours.values())
    assert bystander.pid not in ours

    # when the head is stopped by its marker and temp dir (never `ray stop`)
    head.stop()

    # then none of its processes is left, and the bystander still runs
    assert [p.cmdline for p in ours.values() if alive(p)] == []
    assert processes_of(head.marker, head.root) == {}
    assert alive(bystander)


def test_example_runs_locally(bystander: Proc) -> None:
    # given a clean environment: no Redis configured, a private HOME and temp dir
    root = Path(tempfile.mkdtemp(prefix="rsj-local-"))
    marker = uuid.uuid4().hex
    env = clean_env(HOME=str(root), TMPDIR=str(root), RAYSYS_DATA_DIR=str(root / "data"),
                    RAY_AUTH_MODE="token", RAY_USAGE_STATS_ENABLED="0") | {MARKER_VAR: marker}
    try:
        # when the example runs as a plain script from another directory
        run = subprocess.run([sys.executable, str(EXAMPLES / "example_e2e.py")], env=env,
                             cwd=root, text=True, capture_output=True, timeout=JOB_TIMEOUT_S)

        # then it prints one JSON object that accounts for every task, and exits 0
        assert run.returncode == 0, run.stderr[-4000:]
        doc = json.loads(run.stdout)
        assert doc["mode"] == "local"
        assert_every_task_accounted_for(doc)
        # and it stopped the local Ray and the embedded Redis it started
        assert wait_until_gone(marker, root) == []
        assert alive(bystander)
    finally:
        stop_selectively(marker, root)
        shutil.rmtree(root, ignore_errors=True)
