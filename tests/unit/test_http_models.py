"""The HTTP API's shape without a server: its response models accept every document the store
gives them (a route whose model disagrees with the data answers 500), and every route but the
open ones needs the token."""

from __future__ import annotations

import pytest
from fastapi.dependencies.models import Dependant
from fastapi.routing import APIRoute

from raysys.models import TaskState, TaskStatus
from raysys.serve import console, docs, routes_schedules, routes_system, routes_tasks
from raysys.serve.auth import caller, is_open
from raysys.serve.responses import TaskOut

pytestmark = pytest.mark.unit


@pytest.mark.parametrize("state", list(TaskState))
def test_task_out_takes_every_status_document(state: TaskState) -> None:
    status = TaskStatus(id="0" * 32, state=state, attempts=2, priority=-3, kind="echo",
                        result={"nested": [1, "two", None]}, error="boom", fence=7,
                        holder="w1", waiting="no live node can place kind echo",
                        run_at_ms=1_800_000_000_000,
                        integrity="failed: bad_signature (task record)")
    out = TaskOut.model_validate({"integrity": None, **status.to_json()})
    assert out.waiting == status.waiting and out.integrity == status.integrity
    assert out.run_at is not None and out.run_at.startswith("2027-01-15")


def depends_on(dependant: Dependant, target: object) -> bool:
    return any(d.call is target or depends_on(d, target) for d in dependant.dependencies)


def test_every_route_but_the_open_ones_needs_the_token() -> None:
    routes = [r for module in (routes_system, routes_tasks, routes_schedules, docs, console)
              for r in module.router.routes if isinstance(r, APIRoute)]
    assert len(routes) >= 19
    for route in routes:
        assert depends_on(route.dependant, caller) is not is_open(route.path), route.path
    assert {r.path for r in routes if is_open(r.path)} == {
        "/health", "/metrics", "/docs", "/docs/assets/{name}", "/ui", "/ui/",
        "/ui/assets/{name}"}


def test_open_paths_are_those_paths_and_what_is_under_them() -> None:
    assert is_open("/health") and is_open("/ui/") and is_open("/docs/assets/x.css")
    assert not any(is_open(p) for p in ("/healthz", "/uix", "/docsfoo", "/tasks", "/"))
