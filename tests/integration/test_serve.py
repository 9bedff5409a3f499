"""The Ray Serve app over real HTTP on a real local Ray cluster: health, metrics, task API.

One Serve instance per session (its HTTP options are fixed when Serve first starts), on a free
port; each test deploys the app for its own namespace. The task API's token reaches the
replicas through the cluster's environment (tests/integration/conftest.py).
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import tempfile
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
import ray
from prometheus_client.parser import text_string_to_metric_families

import raysys
from raysys.client import Client, connect
from raysys.models import FINAL_STATES, TaskSpec, TaskState
from raysys.redis_server.attach import attach_or_start
from raysys.redis_server.embedded import EmbeddedRedis
from tests.support.http import get, request
from tests.support.metrics import metric_names_used
from tests.support.polling import wait_until
from tests.support.prerequisites import under_ci

pytestmark = [pytest.mark.integration, pytest.mark.slow, pytest.mark.timeout(240)]
HOST = "127.0.0.1"
HTTP_POLL_S = 0.2  # a request to the app (or to Ray's export) at most this often while waiting


@pytest.fixture
def served(raysys_start: Callable[..., Client],
           http_port: int) -> Callable[..., tuple[Client, str]]:
    def make(**options: Any) -> tuple[Client, str]:
        client = raysys_start(**options)
        url = client.serve(HOST, http_port)
        assert url == f"http://{HOST}:{http_port}"
        wait_until(lambda: get(url + "/health")[0] == 200, 60, "the app to answer /health",
                   interval=HTTP_POLL_S)
        return client, url

    return make


def scrape(url: str) -> tuple[str, dict[str, float]]:
    """The /metrics text and its samples as {'name{label=value,...}': value}."""
    status, text = get(url + "/metrics")
    assert status == 200, text
    samples: dict[str, float] = {}
    for family in text_string_to_metric_families(text):
        for s in family.samples:
            labels = ",".join(f"{k}={v}" for k, v in sorted(s.labels.items()))
            samples[f"{s.name}{{{labels}}}"] = s.value
    return text, samples


def final_count(client: Client) -> int:
    return sum(client.counts()[s.value] for s in FINAL_STATES)


def test_health_and_metrics_count_every_task_once_across_a_worker_restart(
        served: Callable[..., tuple[Client, str]], tmp_path: Path) -> None:
    # given the app on a pool of two workers
    client, url = served(workers=2, batch=20, lease_ttl_s=2.0, reaper_interval_s=0.5)
    status, health = get(url + "/health")
    assert status == 200 and health["status"] == "healthy", health
    assert health["redis_connected"] is True and health["live_workers"] == 2
    assert health["actors"] == {"coordinator": True, "distributor": True}
    assert {"agent_id", "uptime", "reaper_lag_s"} <= set(health)
    _, before = scrape(url)

    # when 400 tasks run, and one worker is killed with SIGKILL while they do
    ids = client.submit_specs([TaskSpec.build(kind="sleep", payload={"seconds": 0.005})
                               for _ in range(400)])
    victim = client.worker(1)
    pid = ray.get(victim.pid.remote(), timeout=30)
    wait_until(lambda: final_count(client) >= 100, 60, "a quarter of the run")
    os.kill(pid, signal.SIGKILL)
    results = client.wait(ids, timeout=120)
    assert {r.state for r in results} == {TaskState.SUCCEEDED}
    text, after = scrape(url)

    # then the task counters moved by exactly the number of tasks, whatever was re-run
    def moved(name: str) -> float:
        return after.get(name, 0.0) - before.get(name, 0.0)

    assert moved("raysys_tasks_created_total{}") == 400
    assert moved("raysys_tasks_completed_total{status=succeeded}") == 400
    assert moved("task_duration_seconds_count{}") == 400
    assert moved("raysys_leases_granted_total{}") >= 400
    assert moved("raysys_leases_expired_total{}") >= 1  # the killed worker's leases came back
    assert moved("agent_messages_total{outcome=accepted,type=assign}") >= 2
    assert after["raysys_message_latency_seconds_count{}"] >= 2
    assert after["pending_tasks{}"] == 0 and after["redis_connected{}"] == 1
    assert after["raysys_actor_up{actor=coordinator}"] == 1
    # ... the text parses with promtool, and every name alerts and Grafana use is in it
    promtool = shutil.which("promtool")
    if promtool is None and under_ci():
        pytest.fail("promtool missing under CI=true (.ci/run installs Debian's prometheus)")
    if promtool is not None:
        check = subprocess.run([promtool, "check", "metrics"], input=text, text=True,
                               capture_output=True, check=False)
        assert check.returncode == 0, check.stdout + check.stderr
    exposed = {f.name for f in text_string_to_metric_families(text)}
    exposed |= {f"{name}_total" for name in exposed}
    assert metric_names_used() <= exposed, metric_names_used() - exposed


def test_task_api_needs_the_token_and_names_bad_fields(
        served: Callable[..., tuple[Client, str]], api_token: str) -> None:
    client, url = served(workers=1)
    task = {"kind": "echo", "payload": {"hello": "world"}, "priority": 2}

    # missing or wrong token: 401, nothing stored
    assert request("POST", url + "/tasks", body=task)[0] == 401
    assert request("POST", url + "/tasks", body=task, token="x" * 40)[0] == 401
    assert request("GET", url + "/tasks/" + "0" * 32)[0] == 401
    # bad bodies: 422 naming the field, nothing stored
    for body, field in (({"payload": 1}, "kind"), ({**task, "colour": "red"}, "colour"),
                        ({**task, "priority": "high"}, "priority"),
                        ({"tasks": []}, "tasks"), ({"kind": "bad kind!"}, "kind")):
        status, doc = request("POST", url + "/tasks", body=body, token=api_token)
        assert status == 422, (body, doc)
        assert field in json.dumps(doc), (field, doc)
    status, doc = request("POST", url + "/tasks", data=b"{not json", token=api_token)
    assert status == 422
    assert client.stats().get("submitted", 0) == 0

    # a good single task and a batch
    status, doc = request("POST", url + "/tasks", body=task, token=api_token)
    assert status == 200 and set(doc) == {"id"}
    status, batch = request("POST", url + "/tasks", body={"tasks": [task, {"kind": "noop"}]},
                            token=api_token)
    assert status == 200 and len(batch["ids"]) == 2
    client.wait([doc["id"], *batch["ids"]], timeout=60)
    status, got = get(f"{url}/tasks/{doc['id']}", token=api_token)
    assert status == 200
    assert got == {"id": doc["id"], "state": "succeeded", "result": {"hello": "world"},
                   "error": None, "attempts": 1, "kind": "echo", "priority": 2,
                   "integrity": None, "waiting": None, "run_at": None}
    assert get(f"{url}/tasks/{'f' * 32}", token=api_token)[0] == 404
    assert get(f"{url}/tasks/not-an-id", token=api_token)[0] == 422


@pytest.fixture
def own_redis() -> Iterator[tuple[Path, EmbeddedRedis]]:
    """A data dir and its embedded Redis, which this test may kill and start (same port)."""
    path = Path(tempfile.mkdtemp(prefix="rsh-"))
    _, server = attach_or_start(path)
    assert server is not None
    yield path, server
    server.stop()
    shutil.rmtree(path, ignore_errors=True)


def test_health_is_503_while_redis_is_down_and_200_after(
        ray_cluster: None, http_port: int, own_redis: tuple[Path, EmbeddedRedis],
        api_token: str) -> None:
    # given the system on a Redis this test controls
    data_dir, server = own_redis
    client = raysys.start(1, data_dir=data_dir, namespace=f"it-{uuid.uuid4().hex[:8]}")
    try:
        url = client.serve(HOST, http_port)
        assert url is not None
        wait_until(lambda: get(url + "/health")[0] == 200, 60, "the app to answer",
                   interval=HTTP_POLL_S)

        # when Redis is killed, then /health turns 503 within a few seconds, naming the cause
        server.kill()
        took = wait_until(lambda: get(url + "/health")[0] == 503, 30, "/health to turn 503",
                          interval=HTTP_POLL_S)
        assert took < 10
        _, doc = get(url + "/health")
        assert doc["status"] == "unhealthy" and doc["redis_connected"] is False
        # ... /metrics still answers, saying Redis is down
        _, samples = scrape(url)
        assert samples["redis_connected{}"] == 0
        # ... and every read of the task API is a 503 to retry, in the one error shape
        for path in (f"/tasks/{'0' * 32}", f"/tasks/{'0' * 32}/history", "/tasks", "/stats",
                     "/workers", "/schedules"):
            status, doc = get(url + path, token=api_token)
            assert status == 503 and doc["detail"][0]["msg"].endswith("unavailable; retry"), \
                (path, status, doc)

        # when it comes back (same port, AOF), then /health is 200 again
        server.start()
        wait_until(lambda: get(url + "/health")[0] == 200, 60, "/health to recover",
                   interval=HTTP_POLL_S)
        assert get(url + "/health")[1]["redis_connected"] is True
    finally:
        client.shutdown()


def test_down_removes_the_app_only_for_its_own_namespace(
        served: Callable[..., tuple[Client, str]],
        raysys_start: Callable[..., Client]) -> None:
    # given the app serving one namespace, and a second pool in another namespace
    client, url = served(workers=1)
    other = raysys_start(workers=0)
    # when the other namespace goes down through a connected client (as `raysys down` does)
    connect(namespace=other.namespace).down()
    # then the app still serves the first namespace
    status, health = get(url + "/health")
    assert status == 200 and health["namespace"] == client.namespace
    # and when the first namespace goes down, its app goes with it
    connect(namespace=client.namespace).down()
    wait_until(lambda: get(url + "/health")[0] == 404, 30, "the app to be removed",
               interval=HTTP_POLL_S)


def test_the_same_metrics_reach_rays_metrics_export_with_the_ray_prefix(
        raysys_start: Callable[..., Client]) -> None:
    # given a system that ran some tasks
    client = raysys_start(workers=1)
    ids = client.submit_many("noop", list(range(25)))
    client.wait(ids, timeout=60)
    # when the Coordinator copies the metrics into Ray's metrics API (every 5 s; once now)
    assert ray.get(client.coordinator.publish_metrics.remote(), timeout=30) > 0
    node = ray._private.worker.global_worker.node
    url = f"http://{node.node_ip_address}:{node.metrics_export_port}/metrics"

    # then the node's Prometheus export shows them under Ray's prefix, for the dashboard
    def exported() -> bool:
        status, text = get(url)
        return status == 200 and "ray_raysys_tasks_created_total" in str(text)

    wait_until(exported, 60, "Ray's metrics export to show the raysys metrics",
               interval=HTTP_POLL_S)
    _, text = get(url)
    for name in ("ray_pending_tasks", "ray_redis_connected", "ray_raysys_tasks_completed_total"):
        assert name in text, name
