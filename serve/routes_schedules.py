"""The schedule routes (all need the token): list, add, remove, pause, resume.

Schedules are read and written through the replica's ``ScheduleBook`` (signed records in
Redis; the Coordinator's ticker enqueues their tasks). Pause, resume and remove are audited
with who asked.
"""

import asyncio
from typing import Annotated, Any

import redis
from fastapi import APIRouter, Path

from raysys.errors import Conflict, NotFound, RaysysError
from raysys.errors import ValidationError as SpecError
from raysys.schedules import ScheduleExists, ScheduleSpec
from raysys.schedules.spec import NAME_PATTERN
from raysys.serve.api_models import ScheduleIn, refuse_internal
from raysys.serve.auth import Caller, Who
from raysys.serve.backend import Api, Backend
from raysys.serve.http_errors import ApiError, unavailable
from raysys.serve.responses import ERRORS, NOT_FOUND, RemovedOut, ScheduleOut, SchedulesOut

router = APIRouter(tags=["schedules"], responses=ERRORS)
NAME = Path(pattern=NAME_PATTERN)
ADDED_LINKS = {  # where an added schedule's name leads (Schemathesis follows these)
    name: {"operationId": operation, "parameters": {"name": "$response.body#/name"}}
    for name, operation in (("Pause", "pause_schedule"), ("Resume", "resume_schedule"),
                            ("Remove", "remove_schedule"))}
CONFLICT: dict[int | str, dict[str, Any]] = {
    409: {"model": ERRORS[422]["model"], "description": "the name is taken, or it changed"}}


@router.get("/schedules", response_model=SchedulesOut)
async def list_schedules(api: Api, _who: Who) -> dict[str, Any]:
    """Every schedule with its last and next tick; ``rejected``: records that failed
    verification (never run)."""
    try:
        infos, bad = await asyncio.to_thread(api.schedules.list)
    except (RaysysError, redis.RedisError, OSError) as exc:  # Redis down or failing over
        raise unavailable("schedules", exc) from None
    return {"schedules": [i.to_json() for i in infos], "rejected": bad}


@router.post("/schedules", response_model=ScheduleOut, status_code=201,
             responses={**CONFLICT, 201: {"links": ADDED_LINKS}})
async def add_schedule(body: ScheduleIn, api: Api,
                       who: Who) -> dict[str, Any]:
    """Add one (its first tick is the next after now); 409 when the name is taken."""
    try:
        spec = ScheduleSpec.build(**body.model_dump())
        refuse_internal(spec.kind)
        info = await asyncio.to_thread(api.schedules.add, spec)
    except (ScheduleExists, Conflict) as exc:
        raise ApiError(409, [{"loc": ["body", "name"], "msg": str(exc)}]) from None
    except SpecError as exc:
        raise ApiError(422, [{"loc": ["body"], "msg": str(exc)}]) from None
    except (RaysysError, redis.RedisError, OSError) as exc:  # Redis down or failing over
        raise unavailable("schedules", exc) from None
    await api.audit("api_schedule_add", str(who), schedule=spec.name)
    return info.to_json()


@router.delete("/schedules/{name}", response_model=RemovedOut,
               responses={**NOT_FOUND, **CONFLICT})
async def remove_schedule(name: Annotated[str, NAME], api: Api,
                          who: Who) -> dict[str, Any]:
    """Remove it (its tasks already enqueued stay); 404 when there is none."""
    await change(api, who, "remove", name)
    return {"name": name, "removed": True}


@router.post("/schedules/{name}/pause", response_model=ScheduleOut,
             responses={**NOT_FOUND, **CONFLICT})
async def pause_schedule(name: Annotated[str, NAME], api: Api,
                         who: Who) -> dict[str, Any]:
    """Stop enqueueing its ticks until resumed."""
    return await change(api, who, "pause", name)


@router.post("/schedules/{name}/resume", response_model=ScheduleOut,
             responses={**NOT_FOUND, **CONFLICT})
async def resume_schedule(name: Annotated[str, NAME], api: Api,
                          who: Who) -> dict[str, Any]:
    """Enqueue its ticks again."""
    return await change(api, who, "resume", name)


async def change(api: Backend, who: Caller, action: str, name: str) -> dict[str, Any]:
    """``ScheduleBook.<action>(name)``, audited; its ScheduleInfo as JSON ({} once removed).
    :class:`ApiError` 404 (no such schedule), 409 (changed meanwhile), 422, 503 (Redis)."""
    try:
        info = await asyncio.to_thread(getattr(api.schedules, action), name)
    except NotFound:
        raise ApiError(404, [{"msg": f"no schedule {name}"}]) from None
    except Conflict as exc:
        raise ApiError(409, [{"msg": str(exc)}]) from None
    except SpecError as exc:
        raise ApiError(422, [{"msg": str(exc)}]) from None
    except (RaysysError, redis.RedisError, OSError) as exc:  # Redis down or failing over
        raise unavailable("schedules", exc) from None
    await api.audit(f"api_schedule_{action}", str(who), schedule=name)
    return {} if info is None else dict(info.to_json())
