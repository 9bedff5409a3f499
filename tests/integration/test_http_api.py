"""The HTTP API the FastAPI way, over real HTTP on a real local Ray cluster: its OpenAPI
document, the token on every task route (401 first, whatever the body), errors in one list
shape, /docs working offline, workers, stats, a task's history, audited actions, and a
Schemathesis run fuzzing every route from the app's own schema.

One deployment for the module (Serve runs one app per cluster), in a namespace of its own.
"""

from __future__ import annotations

import os
import re
import subprocess
import sys
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import redis

import raysys
from raysys.client import Client
from raysys.redis_server.attach import attach_or_start
from raysys.store.keyspace import Keyspace, drop_keys
from tests.support.http import get, request
from tests.support.polling import wait_until
from tests.support.prerequisites import tool
from tests.support.stores import flip_record_bit

pytestmark = [pytest.mark.integration, pytest.mark.slow, pytest.mark.timeout(300)]
HOST = "127.0.0.1"
OPEN = {"/health", "/metrics"}
FUZZ_EXAMPLES = 25  # per operation and phase; the whole run takes ~30 s here
CHECKS = ("not_a_server_error,status_code_conformance,content_type_conformance,"
          "response_headers_conformance,response_schema_conformance,negative_data_rejection,"
          "ignored_auth,unsupported_method,allow_header_conformance,missing_required_header")


@pytest.fixture(scope="module")
def live(ray_cluster: None, data_dir: Path, http_port: int) -> Iterator[tuple[Client, str]]:
    client = raysys.start(1, data_dir=data_dir, namespace=f"it-{uuid.uuid4().hex[:10]}")
    try:
        url = client.serve(HOST, http_port)
        assert url is not None
        wait_until(lambda: get(url + "/health")[0] == 200, 60, "the app to answer /health")
        yield client, url
    finally:
        client.shutdown()
        with redis.Redis.from_url(attach_or_start(data_dir)[0]) as conn:
            drop_keys(conn, Keyspace(client.namespace).pattern())


@pytest.fixture(scope="module")
def schema(live: tuple[Client, str]) -> dict[str, Any]:
    status, doc = get(live[1] + "/openapi.json")
    assert status == 200
    return dict(doc)


def operations(schema: dict[str, Any]) -> Iterator[tuple[str, str, dict[str, Any]]]:
    for path, methods in schema["paths"].items():
        for method, op in methods.items():
            yield path, method.upper(), op


def concrete(path: str) -> str:
    """A path template with its parameters filled with well-formed values."""
    return path.replace("{task_id}", "0" * 32).replace("{name}", "nightly")


def test_openapi_describes_every_route_its_bodies_and_the_bearer_scheme(
        schema: dict[str, Any]) -> None:
    routes = {(method, path) for path, method, _ in operations(schema)}
    assert routes == {
        ("GET", "/health"), ("GET", "/metrics"), ("GET", "/workers"), ("GET", "/stats"),
        ("POST", "/tasks"), ("GET", "/tasks"), ("GET", "/tasks/{task_id}"),
        ("DELETE", "/tasks/{task_id}"), ("GET", "/tasks/{task_id}/history"),
        ("POST", "/tasks/redrive"), ("GET", "/schedules"), ("POST", "/schedules"),
        ("DELETE", "/schedules/{name}"), ("POST", "/schedules/{name}/pause"),
        ("POST", "/schedules/{name}/resume")}
    assert schema["components"]["securitySchemes"]["token"] == {
        "type": "http", "scheme": "bearer", "description": "The server's RAYSYS_API_TOKEN"}
    for path, method, op in operations(schema):
        assert ("security" in op) is (path not in OPEN), (method, path)
        assert "200" in op["responses"] or "201" in op["responses"], (method, path)
        if path not in OPEN:
            assert {"401", "422", "503"} <= set(op["responses"]), (method, path)
    task_in = schema["components"]["schemas"]["TaskIn"]["properties"]
    assert {"kind", "payload", "priority", "idempotency_key", "max_attempts", "timeout_s",
            "schedule_to_start_s", "delay_s", "run_at"} == set(task_in)
    body = schema["paths"]["/tasks"]["post"]["requestBody"]["content"]["application/json"]
    assert [r["$ref"].rsplit("/", 1)[1] for r in body["schema"]["oneOf"]] == [
        "TaskIn", "BatchIn"]  # one task, or {"tasks": [...]}


def test_every_token_route_answers_401_before_looking_at_the_request(
        live: tuple[Client, str], schema: dict[str, Any], api_token: str) -> None:
    _, url = live
    for path, method, _ in operations(schema):
        if path in OPEN:
            continue
        for headers in ({}, {"Authorization": "Bearer " + "x" * 40},
                        {"Authorization": api_token}, {"Authorization": "Basic " + api_token}):
            # a malformed body and a malformed id too: the token is checked first
            for data, target in ((None, concrete(path)), (b"\xff{not json", concrete(path)),
                                 (None, path.replace("{task_id}", "not-an-id"))):
                if method == "GET" and data is not None:
                    continue
                status, doc = request(method, url + target, data=data, headers=headers)
                assert status == 401, (method, target, headers, data, doc)
                assert isinstance(doc["detail"], list) and doc["detail"][0]["msg"], doc


def test_errors_name_the_field_in_a_list(live: tuple[Client, str], api_token: str) -> None:
    _, url = live
    status, doc = request("POST", url + "/tasks", body={"kind": "echo", "priority": False},
                          token=api_token)
    assert status == 422 and doc["detail"][0]["loc"] == ["body", "priority"], doc
    status, doc = request("POST", url + "/tasks", body={"tasks": [{"payload": 1}]},
                          token=api_token)
    assert status == 422 and doc["detail"][0]["loc"] == ["body", "tasks", 0, "kind"], doc
    status, doc = request("POST", url + "/tasks", data=b"\xff", token=api_token)
    assert status == 422 and doc["detail"][0]["loc"] == ["body"], doc
    status, doc = get(url + "/tasks?limit=0", token=api_token)
    assert status == 422 and doc["detail"][0]["loc"] == ["query", "limit"], doc
    status, doc = get(url + "/nowhere", token=api_token)
    assert status == 404 and doc == {"detail": [{"msg": "Not Found"}]}
    status, doc = request("GET", url + "/tasks/redrive", token=api_token)
    assert status == 405 and isinstance(doc["detail"], list)


def test_docs_work_offline(live: tuple[Client, str]) -> None:
    _, url = live
    status, page = get(url + "/docs")
    assert status == 200 and isinstance(page, str)
    sources = re.findall(r"""(?:src|href)=["']([^"']+)["']""", page)
    assert "/docs/assets/swagger-ui-bundle.js" in sources, sources
    assert all(s.startswith("/") for s in sources), f"a /docs asset leaves the host: {sources}"
    assert "cdn" not in page.lower()
    for name in ("swagger-ui-bundle.js", "swagger-ui.css"):
        status, body = get(f"{url}/docs/assets/{name}")
        assert status == 200 and len(body) > 10_000, name
    assert get(url + "/docs/assets/LICENSE")[0] == 404  # a file there, but not one it serves


def test_workers_stats_history_and_audited_cancel(
        live: tuple[Client, str], api_token: str) -> None:
    client, url = live
    # given: a task that waits an hour before it is due, and one that ran
    status, held = request("POST", url + "/tasks", token=api_token,
                           body={"kind": "echo", "payload": "later", "delay_s": 3600})
    assert status == 200
    status, ran = request("POST", url + "/tasks", token=api_token,
                          body={"kind": "echo", "payload": "now"})
    client.wait([ran["id"]], timeout=60)

    # then: the worker pool, the stats and the task's history are there
    status, pool = get(url + "/workers", token=api_token)
    (worker,) = pool["workers"]
    assert status == 200 and worker["alive"] and worker["free"] == worker["capacity"] > 0
    status, stats = get(url + "/stats", token=api_token)
    assert status == 200 and stats["counts"]["succeeded"] >= 1
    assert stats["counts"]["scheduled"] >= 1 and stats["redis"]["used_memory"] > 0
    assert stats["actors"] == {"coordinator": True, "distributor": True}
    status, history = get(f"{url}/tasks/{ran['id']}/history", token=api_token)
    assert status == 200 and history["history"][-1]["holder"] == worker["id"]

    # when: the held task is cancelled over HTTP
    status, cancelled = request("DELETE", f"{url}/tasks/{held['id']}", token=api_token)
    assert status == 200 and cancelled["cancelled"] and cancelled["before"] == "scheduled"
    again = request("DELETE", f"{url}/tasks/{held['id']}", token=api_token)[1]
    assert again["cancelled"] is False and again["state"] == "cancelled"

    # then: the audit says who did it (the token's id and the caller's address), never the token
    status, history = get(f"{url}/tasks/{held['id']}/history", token=api_token)
    (entry,) = [e for e in history["audit"] if e.get("ev") == "api_cancel"]
    assert re.fullmatch(r"token [0-9a-f]{12} from \S+.*", entry["by"]), entry
    assert api_token not in str(history)


def test_schemathesis_finds_nothing_in_any_route(
        live: tuple[Client, str], api_token: str, tmp_path: Path) -> None:
    """Every route fuzzed from /openapi.json: no 5xx, every response as documented, every
    route without the token a 401 (``ignored_auth``), undeclared methods a 405."""
    _, url = live
    command = [tool("schemathesis", "pip install schemathesis (the dev extra has it)"), "run",
               url + "/openapi.json", "--checks", CHECKS, "--max-examples",
               str(FUZZ_EXAMPLES), "--workers", "1", "--header",
               f"Authorization: Bearer {api_token}", "--seed", "20261206"]
    done = subprocess.run(command, capture_output=True, text=True, timeout=240,
                          cwd=tmp_path, env={**os.environ, "NO_COLOR": "1"}, check=False)
    report = done.stdout[-6000:].replace(api_token, "<token>")
    assert done.returncode == 0, report
    assert re.search(r"\b[1-9]\d* passed\b", report), report
    print(report[-800:], file=sys.stderr)


def test_a_task_whose_record_fails_verification_says_so(
        live: tuple[Client, str], api_token: str, data_dir: Path) -> None:
    # given: a task due in an hour whose stored signed record was changed by one bit
    client, url = live
    status, held = request("POST", url + "/tasks", token=api_token,
                           body={"kind": "echo", "payload": "pay me", "delay_s": 3600})
    assert status == 200
    with redis.Redis.from_url(attach_or_start(data_dir)[0]) as conn:
        flip_record_bit(conn, client.namespace, held["id"])

    # when: the task is asked for over HTTP
    status, doc = get(f"{url}/tasks/{held['id']}", token=api_token)

    # then: the answer names the failure (it will never run)
    assert status == 200 and doc["integrity"] == "failed: bad_signature (task record)", doc
