"""The operator's window (issue 17): `raysys doctor` against a running system, and the Ray
dashboard of ``raysys.start(dashboard=True)``.

Doctor runs as the console script against the session's cluster (tests/integration/conftest.py):
its GCS address, the session's ``HOME`` (where ``ray.init`` wrote the token) with
``RAY_AUTH_MODE=token``, the session's data dir (embedded Redis and keyring) and the session's
Serve port. The dashboard test starts raysys in a subprocess of its own (this process's Ray is
the session's, started without a dashboard) in a private root, and leaves nothing behind.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import tempfile
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from raysys.client import Client
from raysys.redis_server.binary import free_port
from tests.support.cli import make_cli
from tests.support.http import get
from tests.support.polling import wait_until
from tests.support.processes import private_env, wait_no_processes

pytestmark = [pytest.mark.integration, pytest.mark.slow, pytest.mark.timeout(240)]
HOST = "127.0.0.1"
RUN_TIMEOUT_S = 180.0

START_WITH_DASHBOARD = """
import json, os, time, urllib.error, urllib.request
import raysys

def status(url, token=None):
    request = urllib.request.Request(url)
    if token:
        request.add_header("Authorization", f"Bearer {token}")
    try:
        with urllib.request.urlopen(request, timeout=30) as reply:
            return reply.status
    except urllib.error.HTTPError as exc:
        return exc.code

def stats(url, token):
    for _ in range(300):  # the app's first answer, then its /stats
        if status(url + "/health") in (200, 503):
            break
        time.sleep(0.2)
    request = urllib.request.Request(url + "/stats")
    request.add_header("Authorization", f"Bearer {token}")
    with urllib.request.urlopen(request, timeout=30) as reply:
        return json.load(reply)

with raysys.start(1, namespace="dash", dashboard=True) as client:
    url = client.dashboard_url
    token = open(f"{os.environ['HOME']}/.ray/auth_token").read().strip()
    app = client.serve("127.0.0.1", int(os.environ["APP_PORT"]))
    print(json.dumps({"url": url, "page": status(url), "api": status(url + "/api/version"),
                      "api_with_token": status(url + "/api/version", token),
                      "console_link": stats(app, os.environ["RAYSYS_API_TOKEN"])[
                          "dashboard_url"]}), flush=True)
"""


def healthy(url: str) -> bool:
    status, doc = get(url + "/health")
    return status == 200 and isinstance(doc, dict) and doc.get("status") == "healthy"


def test_doctor_finds_every_part_of_a_running_system(
        raysys_start: Callable[..., Client], http_port: int, data_dir: Path,
        tmp_path: Path) -> None:
    import ray

    # given: a running system (one worker) serving the HTTP app, healthy
    client = raysys_start(1)
    url = client.serve(HOST, http_port)
    assert url is not None
    wait_until(lambda: healthy(url), 60, "/health to say healthy", interval=0.2)
    cli = make_cli(tmp_path, client.namespace).with_env(
        HOME=os.environ["HOME"], RAY_AUTH_MODE="token", RAYSYS_DATA_DIR=str(data_dir),
        RAYSYS_HTTP_PORT=str(http_port))

    # when
    run = cli.run("doctor", "--address", ray.get_runtime_context().gcs_address, "--json",
                  timeout=60)

    # then: every check passes (the embedded Redis may warn about maxmemory), one line each
    doc = run.json()
    checks = {c["check"]: c for c in doc["checks"]}
    assert list(checks) == ["redis", "memory", "keys", "retention", "ray", "actors",
                            "workers", "http"]
    assert doc["ok"] is True and all(c["status"] in ("ok", "warn") for c in checks.values())
    for name in ("ray", "actors", "workers", "http"):
        assert checks[name]["status"] == "ok", checks[name]
    assert "1 node(s) alive" in checks["ray"]["detail"]
    assert f"namespace {client.namespace!r} answer" in checks["actors"]["detail"]
    assert checks["workers"]["detail"].startswith("1 live")
    assert checks["http"]["detail"] == f"{url}/health: healthy, 1 live workers"


@pytest.fixture
def root() -> Iterator[Path]:
    path = Path(tempfile.mkdtemp(prefix="rsw-"))  # short: Ray's socket paths
    yield path
    shutil.rmtree(path, ignore_errors=True)


def test_start_with_the_dashboard_gives_a_url_that_answers(root: Path) -> None:
    # given: a fresh process in a private root (HOME, data dir; TMPDIR the root itself: the
    # dashboard's sockets must fit 107 bytes), token auth as Ray's default for a new cluster
    env = private_env(root, TMPDIR=str(root), APP_PORT=str(free_port()),
                      RAYSYS_API_TOKEN="dash-" + "t" * 40)

    # when: it runs raysys.start(dashboard=True) and asks the URL the client gives
    run = subprocess.run([sys.executable, "-c", START_WITH_DASHBOARD], env=env, cwd=root,
                         capture_output=True, text=True, timeout=RUN_TIMEOUT_S, check=False)

    # then: the dashboard on 127.0.0.1 serves its page; its API wants the local token
    assert run.returncode == 0, run.stderr[-3000:]
    doc = json.loads(run.stdout.splitlines()[-1])
    assert doc["url"].startswith(f"http://{HOST}:") and not doc["url"].endswith(":6379")
    assert doc["page"] == 200
    assert (doc["api"], doc["api_with_token"]) == (401, 200)
    assert doc["console_link"] == doc["url"]  # the console's overview links to it
    assert "did not start" not in run.stderr and "not started" not in run.stderr
    # and: shutdown() stopped it with everything else
    assert wait_no_processes(root) == []
