"""``raysys demo`` and ``raysys bench`` as a user runs them: a subprocess that starts the
embedded Redis, a private local Ray cluster, every actor and the HTTP app, and reports.

Each run gets a short private root (Ray's socket paths must fit 107 bytes) and its own HTTP
port; nothing of a run may outlive it (no server, no Ray process working in its directory).
"""

from __future__ import annotations

import json
import shutil
import signal
import subprocess
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
import redis

from raysys.redis_server.binary import free_port
from raysys.redis_server.embedded import EmbeddedRedis
from tests.support.cli import (
    Cli,
    assert_no_embedded_server_left,
    check_report,
    make_cli,
    read_line,
)
from tests.support.http import get
from tests.support.polling import wait_until
from tests.support.processes import wait_no_processes

pytestmark = [pytest.mark.integration, pytest.mark.slow, pytest.mark.timeout(240)]
RUN_TIMEOUT_S = 180.0


@pytest.fixture
def cli() -> Iterator[Cli]:
    root = Path(tempfile.mkdtemp(prefix="rsd-"))
    runner = make_cli(root).with_env(RAYSYS_HTTP_PORT=str(free_port()))
    yield runner
    shutil.rmtree(root, ignore_errors=True)


def test_demo_runs_every_actor_and_accounts_for_every_task(cli: Cli) -> None:
    # when: the main job runs on the embedded default with DEBUG logging (no dashboard: the
    # tests leave Ray's dashboard off unless they test it)
    run = cli.with_env(LOG_LEVEL="DEBUG").run("demo", "--tasks", "400", "--workers", "2",
                                              "--json", "--no-dashboard", timeout=RUN_TIMEOUT_S)

    # then: one JSON report on stdout, every task accounted for by the ledger ...
    report = run.json()
    check_report(report, tasks=400, workers=2)
    assert report["dead"] > 0 and report["retries"] > 0  # failing and flaky tasks in the mix
    assert report["succeeded"] > report["dead"]
    settings = report["settings"]
    assert settings["fsync"] == "always" and settings["mode"] == "ray-actors"
    assert settings["serve"] is True and settings["signing"] == "hmac-sha256"
    assert report["dashboard_url"] is None
    # ... progress on stderr only ...
    assert "400/400" in run.stderr and "[#" not in run.stdout
    # ... one log file per process, kept after the run, with the DEBUG trace of messages,
    # task runs, commits and Redis calls
    logs = sorted((cli.data_dir / "logs").glob("demo-*/agent_system-*.log"))
    roles = {p.name.split("-")[1] for p in logs}
    assert {"coordinator", "distributor", "serve"} <= roles, [p.name for p in logs]
    assert sum(1 for p in logs if "-worker-" in p.name) >= 2
    text = "\n".join(p.read_text() for p in logs)
    for needle in ("message sent distributor", "message received demo-", "runs task",
                   "committed task", "redis script acquire", "redis script complete"):
        assert needle in text, needle
    # ... and nothing outlives the run
    assert wait_no_processes(cli.root) == []
    assert_no_embedded_server_left(cli, run)


def test_demo_keep_stays_up_with_its_urls_until_ctrl_c(cli: Cli) -> None:
    # given: a root short enough for the dashboard's sockets (TMPDIR the root itself)
    short = cli.with_env(TMPDIR=str(cli.root))
    stderr_file = cli.root / "demo.err"

    # when: a small demo runs with --keep (SIGINT's default action restored in the child:
    # a shell's background job would inherit it ignored)
    with stderr_file.open("w") as err:
        proc = subprocess.Popen(short.command(["demo", "--tasks", "20", "--workers", "1",
                                               "--keep", "--json"]),
                                cwd=cli.root, env=dict(short.env), text=True,
                                stdin=subprocess.DEVNULL, stdout=subprocess.PIPE, stderr=err,
                                preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_DFL))
    try:
        # then: the report comes first, every task accounted for, naming the dashboard ...
        report = json.loads(read_line(proc, RUN_TIMEOUT_S))
        check_report(report, tasks=20, workers=1)
        wait_until(lambda: "staying up until Ctrl-C" in stderr_file.read_text(), 30,
                   "the URLs on stderr")
        urls = dict(line.split() for line in stderr_file.read_text().splitlines()
                    if line.startswith("  ") and len(line.split()) == 2)
        # ... and it stays up: console, health, metrics and dashboard answer
        assert urls["dashboard"] == report["dashboard_url"]
        assert urls["dashboard"].startswith("http://127.0.0.1:")
        assert urls["health"] == f"http://127.0.0.1:{cli.env['RAYSYS_HTTP_PORT']}/health"
        assert get(urls["health"])[0] == 200 and get(urls["metrics"])[0] == 200
        status, page = get(urls["console"] + "/")
        assert status == 200 and 'data-test="login-form"' in page
        assert get(urls["dashboard"])[0] == 200
        assert set(urls) == {"console", "health", "metrics", "dashboard"}

        # when: Ctrl-C
        proc.send_signal(signal.SIGINT)
        code = proc.wait(timeout=120)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
        assert proc.stdout is not None
        proc.stdout.close()

    # then: exit 130 after a clean shutdown: one line, no traceback, nothing left running
    stderr = stderr_file.read_text()
    assert code == 130, stderr[-3000:]
    assert stderr.rstrip().endswith("raysys: interrupted") and "Traceback" not in stderr
    assert wait_no_processes(cli.root) == []
    assert_no_embedded_server_left(cli)


def test_bench_on_a_configured_redis_leaves_no_keys(cli: Cli,
                                                   redis_server: EmbeddedRedis,
                                                   redis_client: redis.Redis) -> None:
    # given: the keys the user's Redis holds before the run
    before = set(redis_client.keys("*"))

    # when
    run = cli.with_env(RAYSYS_REDIS_URL=redis_server.url).run(
        "bench", "--tasks", "1000", "--json", timeout=RUN_TIMEOUT_S)

    # then: every noop task succeeded, and the run's namespace and ledger were dropped
    report = run.json()
    check_report(report, tasks=1000, workers=report["settings"]["workers"])
    assert report["succeeded"] == 1000 and report["dead"] == 0
    assert report["settings"]["fsync"] == "server-configured"
    assert set(redis_client.keys("*")) == before
    assert wait_no_processes(cli.root) == []
    # and: a warm-up ran first and was accounted for too; each actor's memory was sampled
    assert report["warmup"] == {"tasks": 50, "lost": 0, "duplicate_commits": 0}
    assert report["settings"]["warmup"] == 50
    rss = report["actor_rss_mb"]
    assert {"coordinator", "distributor"} <= set(rss) and len(rss) == 2 + report["settings"][
        "workers"]
    assert all(set(samples) == {"before", "warm", "after"} and min(samples.values()) > 10
               for samples in rss.values())
    assert 0 < report["submit_call_ms"]["p50"] <= report["submit_call_ms"]["p99"]


def test_bench_knobs_reach_the_run_and_its_report(cli: Cli) -> None:
    # when: a bench with every tuning knob off its default
    run = cli.run("bench", "--tasks", "400", "--workers", "1", "--batch", "50", "--fsync",
                  "everysec", "--signing", "ed25519", "--json", timeout=RUN_TIMEOUT_S)

    # then: the report names the settings the run used, and accounts for every task
    report = run.json()
    check_report(report, tasks=400, workers=1)
    settings = report["settings"]
    assert (settings["fsync"], settings["signing"], settings["batch"]) == (
        "everysec", "ed25519", 50)
    assert report["succeeded"] == 400
    assert wait_no_processes(cli.root) == []


def test_demo_with_redis_unreachable_fails_in_one_line_before_starting_ray(cli: Cli) -> None:
    # given: a configured Redis that nobody serves
    port = free_port()

    # when
    started = time.monotonic()
    run = cli.with_env(RAYSYS_REDIS_URL=f"redis://127.0.0.1:{port}/0").run(
        "demo", "--tasks", "10", timeout=RUN_TIMEOUT_S)

    # then: exit 4 (Redis unavailable), one line naming the address, quickly, no Ray started
    line = run.error_line(4)
    assert f"127.0.0.1:{port}" in line
    assert time.monotonic() - started < 30
    assert not list((cli.tmpdir).glob("raysys-ray-*"))
    assert wait_no_processes(cli.root) == []
