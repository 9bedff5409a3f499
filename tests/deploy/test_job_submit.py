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

import json
import secrets
import shutil
import socket
import subprocess
import sys
import tempfile
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from tests.support.processes import (
    MARKER_VAR,
    Proc,
    alive,
    clean_env,
    processes_of,
    stop_selectively,
    wait_until_gone,
)
from tests.support.ray_cluster import RayHead, ray_head

pytestmark = [pytest.mark.deploy, pytest.mark.slow]

ROOT = Path(__file__).resolve().parents[2]
EXAMPLES = ROOT / "examples"
JOB_TIMEOUT_S = 150


@pytest.fixture(scope="module")
def head() -> Iterator[RayHead]:
    with ray_head("rsj-") as started:
        yield started


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
def test_job_submit_runs_the_example_to_completion(head: RayHead) -> None:
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


def test_job_submit_without_the_token_is_refused(head: RayHead) -> None:
    # given clients without the cluster's token: none at all, and a wrong one
    clients = head.tokenless_envs()
    _, before = head.api("/api/jobs/", head.token)

    for env in clients:
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


def test_raysys_without_the_ray_token_is_one_line_and_exit_5(head: RayHead) -> None:
    # given clients without the cluster's token: none at all, and a wrong one
    no_token = {k: v for k, v in head.env.items() if not k.startswith("RAY_AUTH")}
    wrong = no_token | {"RAY_AUTH_MODE": "token", "RAY_AUTH_TOKEN": secrets.token_hex(32)}
    address = head.address

    for env in (no_token, wrong):
        # when either asks the cluster for its workers
        run = head.run("raysys", "workers", f"--address={address}", "--json", env=env,
                       timeout=60)

        # then: Ray unavailable (5), one error line naming the cluster, no traceback
        assert run.returncode == 5, run.stderr[-3000:]
        assert "Traceback" not in run.stderr and run.stdout == ""
        errors = [line for line in run.stderr.splitlines() if line.startswith("raysys: error:")]
        assert len(errors) == 1 and address in errors[0], run.stderr[-3000:]


def test_the_example_job_refuses_a_namespace_where_a_pool_runs(head: RayHead) -> None:
    # given a pool started by `raysys up` in a namespace (HTTP app off: its port is taken)
    address = f"--address={head.address}"
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        env = head.env | {"RAYSYS_DATA_DIR": str(head.root / "data"),
                          "RAYSYS_NAMESPACE": "raysys-taken",
                          "RAYSYS_HTTP_PORT": str(taken.getsockname()[1])}
        up = head.run("raysys", "up", address, "--workers=1", "--json", env=env)
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
        workers = head.run("raysys", "workers", address, "--json", env=env, timeout=60)
        assert workers.returncode == 0, workers.stderr[-3000:]
        assert [w["live"] for w in json.loads(workers.stdout)["workers"]] == [True]
    finally:
        head.run("raysys", "down", address, env=env, timeout=60)


def test_stopping_the_head_is_selective(head: RayHead, bystander: Proc) -> None:
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
    env = clean_env(ray=True, HOME=str(root), TMPDIR=str(root),
                    RAYSYS_DATA_DIR=str(root / "data"), RAY_AUTH_MODE="token",
                    RAY_USAGE_STATS_ENABLED="0", **{MARKER_VAR: marker})
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
