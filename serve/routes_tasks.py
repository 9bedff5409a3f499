"""The task routes (all need the token): submit, list, one task, its history, cancel, redrive.

Writes go through the Coordinator, the one write path; reads through the replica's core. A
Coordinator that is restarting or gone is a 503 the caller may retry (with an
``idempotency_key``, or the same ``request_id`` for a redrive, to be safe). Cancel and
redrive are audited with who asked (``Caller``).
"""

import asyncio
import logging
from collections.abc import Awaitable, Callable
from typing import Annotated, Any, TypeVar

import redis
from fastapi import APIRouter, Body, Path, Query

from raysys.errors import NotFound, RaysysError
from raysys.errors import ValidationError as SpecError
from raysys.models import FINAL_STATES, TaskState
from raysys.serve.api_models import BatchIn, RedriveIn, SubmitIn, spec_of
from raysys.serve.auth import Who
from raysys.serve.backend import Api, Backend
from raysys.serve.http_errors import ApiError, unavailable
from raysys.serve.responses import (
    ERRORS,
    NOT_FOUND,
    CancelOut,
    HistoryOut,
    RedriveOut,
    SubmittedMany,
    SubmittedOne,
    TaskOut,
    TaskPageOut,
)
from raysys.store.listing import MAX_PAGE
from raysys.timespec import parse_instant

log = logging.getLogger(__name__)
T = TypeVar("T")

router = APIRouter(tags=["tasks"], responses=ERRORS)
TASK_ID = Path(pattern=r"^[0-9a-f]{32}$", description="a task id (32 hex digits)")
SUBMITTED_LINKS = {  # where a submitted id leads (Schemathesis follows these)
    name: {"operationId": operation, "parameters": {"task_id": "$response.body#/id"}}
    for name, operation in (("GetTask", "get_task"), ("TaskHistory", "task_history"),
                            ("CancelTask", "cancel_task"))}
COORDINATOR_TIMEOUT_S = 20.0  # below Serve's 30 s request timeout: our 503, not its answer
AUDIT_SCAN = 1000  # newest audit entries searched for a task's own


async def through_coordinator(api: Backend, call: Callable[[Any], Awaitable[T]], what: str,
                              retry_hint: str = "retry") -> T:
    """``await call(coordinator)``; its ValidationError a 422, NotFound a 404, anything else
    (actor restarting or gone, Redis away, no answer within COORDINATOR_TIMEOUT_S) a 503 with
    ``retry_hint``."""
    try:
        coordinator = await asyncio.to_thread(api.coordinator)
        return await asyncio.wait_for(call(coordinator), COORDINATOR_TIMEOUT_S)
    except Exception as exc:
        cause = getattr(exc, "cause", exc)
        if isinstance(cause, SpecError):
            raise ApiError(422, [{"loc": ["body"], "msg": str(cause)}]) from None
        if isinstance(cause, NotFound):
            raise ApiError(404, [{"msg": str(cause)}]) from None
        log.warning("%s failed: %s", what, exc)
        raise ApiError(503, [{"msg": f"coordinator unavailable; {retry_hint}"}]) from None


async def read(call: Callable[[], T]) -> T:
    """Run a store read off the event loop: NotFound a 404, a bad value a 422, Redis a 503."""
    try:
        return await asyncio.to_thread(call)
    except NotFound as exc:
        raise ApiError(404, [{"msg": str(exc)}]) from None
    except SpecError as exc:
        raise ApiError(422, [{"loc": ["query"], "msg": str(exc)}]) from None
    except (RaysysError, redis.RedisError, OSError) as exc:  # Redis down or failing over
        raise unavailable("the task store", exc) from None


@router.post("/tasks", response_model=SubmittedOne | SubmittedMany,
             responses={200: {"links": SUBMITTED_LINKS}})
async def submit_tasks(body: Annotated[SubmitIn, Body()], api: Api,
                       _who: Who) -> dict[str, Any]:
    """Submit one task, or ``{"tasks": [...]}`` (all stored, or none): ``{"id"}`` or
    ``{"ids"}``."""
    tasks = body.tasks if isinstance(body, BatchIn) else [body]
    try:
        specs = [spec_of(t) for t in tasks]
    except SpecError as exc:
        raise ApiError(422, [{"loc": ["body"], "msg": str(exc)}]) from None
    ids: list[str] = await through_coordinator(
        api, lambda c: c.submit_many.remote(specs), "submission",
        "retry (with an idempotency_key to be safe)")
    return {"ids": ids} if isinstance(body, BatchIn) else {"id": ids[0]}


@router.get("/tasks", response_model=TaskPageOut)
async def list_tasks(api: Api, _who: Who, state: TaskState | None = None,
                     kind: Annotated[str | None, Query(max_length=128)] = None,
                     since: Annotated[str | None, Query(description="ISO-8601, or ago: 1h")]
                     = None,
                     limit: Annotated[int, Query(ge=1, le=MAX_PAGE)] = 50,
                     cursor: Annotated[str | None, Query(max_length=200)] = None
                     ) -> dict[str, Any]:
    """Tasks newest first (by finish time for a final state, else by submission);
    ``cursor`` continues a page (null at the end)."""
    def page() -> dict[str, Any]:
        since_ms = None if since is None else int(parse_instant(since, what="since") * 1000)
        return api.core.store.tasks(state=state.value if state else None, kind=kind,
                                    since_ms=since_ms, limit=limit, cursor=cursor).to_json()

    return await read(page)


@router.get("/tasks/{task_id}", response_model=TaskOut, responses=NOT_FOUND)
async def get_task(task_id: Annotated[str, TASK_ID], api: Api,
                 _who: Who) -> dict[str, Any]:
    """One task; ``integrity`` names why a stored record of it failed verification."""
    doc: dict[str, Any] = (await read(lambda: api.core.store.status(task_id))).to_json()
    return doc  # a field it leaves out (integrity when all verify) is null in TaskOut


@router.get("/tasks/{task_id}/history", response_model=HistoryOut, responses=NOT_FOUND)
async def task_history(task_id: Annotated[str, TASK_ID], api: Api,
                  _who: Who) -> dict[str, Any]:
    """The task's attempts (holder, fence, start, end, error) and its audit entries."""
    attempts = await read(lambda: api.core.store.history(task_id))
    tail = await read(lambda: api.core.store.audit_tail(AUDIT_SCAN))
    named = [e for e in tail if task_id in e.values()]
    # ... and the API's entry for each redrive that named it (it names the request, and who)
    requests = {e["request"] for e in named if "request" in e}
    mine = [e for e in tail if task_id in e.values() or e.get("request") in requests]
    return {"id": task_id, "history": attempts, "audit": mine}


@router.delete("/tasks/{task_id}", response_model=CancelOut, responses=NOT_FOUND)
async def cancel_task(task_id: Annotated[str, TASK_ID], api: Api,
                 who: Who) -> dict[str, Any]:
    """Cancel one task: a pending one at once, a running one is told to stop; a final task is
    left as it is (``cancelled`` false)."""
    before: TaskState = await through_coordinator(
        api, lambda c: c.cancel.remote(task_id), "cancel")
    done = before not in FINAL_STATES
    if done:
        await api.audit("api_cancel", str(who), task=task_id)
    return {"id": task_id, "before": before.value, "cancelled": done,
            "state": "cancelled" if done else before.value}


@router.post("/tasks/redrive", response_model=RedriveOut)
async def redrive_tasks(body: RedriveIn, api: Api,
                  who: Who) -> dict[str, Any]:
    """Run finished tasks again (same id, attempts start over): ``ids``, or every task in a
    ``state`` (of one ``kind``); ``dry_run`` lists what would run."""
    report = await through_coordinator(
        api, lambda c: c.redrive.remote(**body.model_dump()), "redrive",
        "retry with the same request_id")
    doc: dict[str, Any] = report.to_json()
    if doc["redriven"] and not doc["dry_run"]:
        await api.audit("api_redrive", str(who), request=doc["request_id"],
                        tasks=str(len(doc["redriven"])))
    return doc
