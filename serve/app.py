"""The Ray Serve app: ``GET /health``, ``GET /metrics``, ``POST /tasks``, ``GET /tasks/{id}``.

* ``/health`` reports Redis, each actor's liveness, live workers and the reaper's lag as JSON:
  ``healthy`` or ``degraded`` answer 200, ``unhealthy`` (Redis down, or no Coordinator) 503.
  It is for monitors and load balancers, not a Kubernetes liveness probe. ``check_health``
  fails only for a broken replica, never because Redis is down (Serve would replace replicas
  forever; ``../shared/RAY_NOTES.md``).
* ``/metrics`` is Prometheus text for the whole system, read from Redis (:mod:`raysys.metrics`).
* The task API needs ``Authorization: Bearer <RAYSYS_API_TOKEN>`` (401 otherwise, also when the
  server has no token configured); a bad body is a 422 naming the field. Submissions go through
  the Coordinator, the one write path.

Start-up (``RaysysAPI.__init__``) finds or starts the Coordinator, the Distributor and the
workers, so deploying this app alone (a RayService) brings the system up. ``app`` is the
builder a Serve config names (``import_path: raysys.serve.app:app``); :func:`deploy` is what
``raysys up`` and ``raysys demo`` call.
"""

# No `from __future__ import annotations`: Serve pickles this class by value, and FastAPI must
# resolve the handlers' annotations (Request, ...) without the module's globals.

import asyncio
import logging
import os
import time
from typing import Any, cast

import orjson
import ray
from fastapi import FastAPI, Request
from fastapi.responses import JSONResponse, Response
from prometheus_client import CONTENT_TYPE_LATEST
from pydantic import ValidationError as BodyError
from ray import serve
from ray.serve._private.constants import SERVE_CONTROLLER_NAME, SERVE_NAMESPACE

from raysys import metrics
from raysys.actor_config import DEFAULT_CONCURRENCY, ActorConfig
from raysys.actors import factory
from raysys.actors.context import open_actor_core
from raysys.config import load_settings
from raysys.errors import Conflict, NotFound, RaysysError
from raysys.errors import ValidationError as SpecError
from raysys.models import FINAL_STATES
from raysys.schedules import ScheduleBook, ScheduleExists, ScheduleSpec
from raysys.serve.api_models import (
    BatchIn,
    RedriveIn,
    TaskIn,
    bearer_denied,
    error_response,
    refuse_internal,
    spec_of,
    unavailable,
)
from raysys.timespec import parse_instant

log = logging.getLogger(__name__)

APP_NAME = "raysys"
DEPLOYMENT = "raysys-api"
REQUEST_TIMEOUT_S = 30.0
ACTOR_PING_S = 2.0

api = FastAPI(title="raysys", docs_url=None, redoc_url=None)


async def _pinged(handle: Any, role: str) -> None:
    if role == "coordinator":
        await handle.ping.remote()
    else:
        await handle.info.remote()


@serve.deployment(name=DEPLOYMENT, num_replicas=1, ray_actor_options={"num_cpus": 0},
                  health_check_period_s=10, health_check_timeout_s=30)
@serve.ingress(api)
class RaysysAPI:
    def __init__(self, config: ActorConfig, workers: int | None = None,
                 start_actors: bool = True) -> None:
        self.config = config
        self.core = open_actor_core(config, "serve")
        self.namespace = config.namespace
        self.ttl_s = self.core.settings.lease_ttl_s
        self.reaper_interval_s = self.core.settings.reaper_interval_s
        token = self.core.settings.api_token
        self._token = token.get_secret_value().encode() if token is not None else None
        self.schedules = ScheduleBook(self.core)
        self.agent_id = f"serve-{os.getpid()}"
        self.started = time.time()
        if start_actors:  # idempotent: actors that exist are found, not started twice
            factory.deploy(config, workers)
        log.info("raysys API up in namespace %s (task API %s)", self.namespace,
                 "enabled" if self._token else "disabled: no RAYSYS_API_TOKEN")

    def namespace_served(self) -> str:
        return self.namespace

    def check_health(self) -> None:
        """Serve reaching this method is the check: a replica whose event loop hangs fails it
        by timeout and is replaced. Redis being down shows in /health, never here (Serve
        would replace replicas for as long as Redis is away)."""

    # ---- health and metrics -------------------------------------------------------------------
    @api.get("/health")
    async def health(self) -> JSONResponse:
        actors = await self._actors_alive()
        snap = await asyncio.to_thread(self._snapshot, actors)
        status = "healthy"
        if not snap.redis_connected or not actors["coordinator"]:
            status = "unhealthy"
        elif (not actors["distributor"] or snap.live_workers == 0
              or snap.reaper_lag_s > 2 * self.reaper_interval_s + 1
              or any(d.get("reason") == "resources" for d in snap.waiting.values())):
            status = "degraded"
        body = {"status": status, "agent_id": self.agent_id,
                "uptime": round(time.time() - self.started, 1),
                "redis_connected": snap.redis_connected, "namespace": self.namespace,
                "actors": actors, "live_workers": snap.live_workers,
                "reaper_lag_s": round(snap.reaper_lag_s, 3), "waiting": snap.waiting}
        return JSONResponse(body, status_code=503 if status == "unhealthy" else 200)

    @api.get("/metrics")
    async def metrics_text(self) -> Response:
        actors = await self._actors_alive()
        snap = await asyncio.to_thread(self._snapshot, actors)
        return Response(metrics.render(snap), media_type=CONTENT_TYPE_LATEST)

    # ---- task API -----------------------------------------------------------------------------
    @api.post("/tasks")
    async def submit(self, request: Request) -> JSONResponse:
        denied = self._denied(request)
        if denied is not None:
            return denied
        try:
            body = orjson.loads(await request.body())
        except orjson.JSONDecodeError as exc:
            return error_response(422, [{"loc": ["body"], "msg": f"not JSON: {exc}"}])
        try:
            batch = isinstance(body, dict) and "tasks" in body
            tasks = BatchIn.model_validate(body).tasks if batch else [TaskIn.model_validate(body)]
            specs = [spec_of(t) for t in tasks]
        except BodyError as exc:
            return error_response(422, [{"loc": ["body", *e["loc"]], "msg": e["msg"]}
                                for e in exc.errors()])
        except SpecError as exc:
            return error_response(422, [{"loc": ["body"], "msg": str(exc)}])
        try:
            coordinator = factory.get_actor(factory.COORDINATOR, self.namespace)
            ids = await coordinator.submit_many.remote(specs)
        except RaysysError as exc:
            return error_response(422 if isinstance(exc, SpecError) else 503, [{"msg": str(exc)}])
        except Exception as exc:  # actor restarting or gone: the caller may retry
            cause = getattr(exc, "cause", None)
            if isinstance(cause, SpecError):
                return error_response(422, [{"loc": ["body"], "msg": str(cause)}])
            log.warning("submission failed: %s", exc)
            return error_response(503, [{"msg": "coordinator unavailable; retry (with an "
                                        "idempotency_key to be safe)"}])
        return JSONResponse({"ids": ids} if batch else {"id": ids[0]})

    @api.get("/tasks")
    async def list_tasks(self, request: Request, state: str | None = None,
                         kind: str | None = None, since: str | None = None, limit: int = 50,
                         cursor: str | None = None) -> JSONResponse:
        """Tasks newest first: ``{"tasks": [...], "cursor"}`` (``cursor`` null at the end);
        ``since`` is an ISO-8601 time or a duration ago (``1h``)."""
        denied = self._denied(request)
        if denied is not None:
            return denied
        try:
            since_ms = None if since is None else int(parse_instant(since, what="since") * 1000)
            page = await asyncio.to_thread(self.core.store.tasks, state=state, kind=kind,
                                           since_ms=since_ms, limit=limit, cursor=cursor)
        except SpecError as exc:
            return error_response(422, [{"loc": ["query"], "msg": str(exc)}])
        except RaysysError as exc:
            return error_response(503, [{"msg": str(exc)}])
        return JSONResponse(page.to_json())

    @api.post("/tasks/redrive")
    async def redrive(self, request: Request) -> JSONResponse:
        """Run finished tasks again: ``{"ids": [...]}`` or ``{"state": "dead", "kind"?}``,
        plus ``dry_run``, ``request_id`` (a resend with the same id redrives nothing twice)."""
        denied = self._denied(request)
        if denied is not None:
            return denied
        try:
            body = RedriveIn.model_validate(orjson.loads(await request.body()))
        except orjson.JSONDecodeError as exc:
            return error_response(422, [{"loc": ["body"], "msg": f"not JSON: {exc}"}])
        except BodyError as exc:
            return error_response(422, [{"loc": ["body", *e["loc"]], "msg": e["msg"]}
                                for e in exc.errors()])
        try:
            coordinator = factory.get_actor(factory.COORDINATOR, self.namespace)
            report = await coordinator.redrive.remote(**body.model_dump())
        except Exception as exc:
            cause = getattr(exc, "cause", exc)
            if isinstance(cause, SpecError):
                return error_response(422, [{"loc": ["body"], "msg": str(cause)}])
            log.warning("redrive failed: %s", exc)
            return error_response(503, [{"msg": "coordinator unavailable; retry with the same "
                                        "request_id"}])
        return JSONResponse(report.to_json())

    # ---- schedules ------------------------------------------------------------------------
    @api.get("/schedules")
    async def list_schedules(self, request: Request) -> JSONResponse:
        """``{"schedules": [...], "rejected": {name: why}}``."""
        denied = self._denied(request)
        if denied is not None:
            return denied
        try:
            infos, bad = await asyncio.to_thread(self.schedules.list)
        except Exception as exc:  # Redis down or failing over: the caller may retry
            return unavailable("schedules", exc)
        return JSONResponse({"schedules": [i.to_json() for i in infos], "rejected": bad})

    @api.post("/schedules")
    async def add_schedule(self, request: Request) -> JSONResponse:
        """Add one: ``{"name", "cron", "kind", "payload"?, "tz"?, "catchup"?, "priority"?}``;
        409 when the name is taken."""
        denied = self._denied(request)
        if denied is not None:
            return denied
        try:
            body = orjson.loads(await request.body())
            if not isinstance(body, dict):
                raise SpecError("the body must be a JSON object")
            spec = ScheduleSpec.build(**body)
            refuse_internal(spec.kind)
            info = await asyncio.to_thread(self.schedules.add, spec)
        except orjson.JSONDecodeError as exc:
            return error_response(422, [{"loc": ["body"], "msg": f"not JSON: {exc}"}])
        except (ScheduleExists, Conflict) as exc:
            return error_response(409, [{"loc": ["body", "name"], "msg": str(exc)}])
        except SpecError as exc:
            return error_response(422, [{"loc": ["body"], "msg": str(exc)}])
        except Exception as exc:  # Redis down or failing over: the caller may retry
            return unavailable("schedules", exc)
        return JSONResponse(info.to_json(), status_code=201)

    @api.delete("/schedules/{name}")
    async def remove_schedule(self, name: str, request: Request) -> JSONResponse:
        return await self._schedule_change(request, "remove", name)

    @api.post("/schedules/{name}/pause")
    async def pause_schedule(self, name: str, request: Request) -> JSONResponse:
        return await self._schedule_change(request, "pause", name)

    @api.post("/schedules/{name}/resume")
    async def resume_schedule(self, name: str, request: Request) -> JSONResponse:
        return await self._schedule_change(request, "resume", name)

    async def _schedule_change(self, request: Request, action: str, name: str
                               ) -> JSONResponse:
        denied = self._denied(request)
        if denied is not None:
            return denied
        try:
            info = await asyncio.to_thread(getattr(self.schedules, action), name)
        except NotFound:
            return error_response(404, [{"msg": f"no schedule {name}"}])
        except Conflict as exc:
            return error_response(409, [{"msg": str(exc)}])
        except SpecError as exc:
            return error_response(422, [{"msg": str(exc)}])
        except Exception as exc:  # Redis down or failing over: the caller may retry
            return unavailable("schedules", exc)
        if info is None:
            return JSONResponse({"name": name, "removed": True})
        return JSONResponse(info.to_json())

    @api.delete("/tasks/{task_id}")
    async def cancel(self, task_id: str, request: Request) -> JSONResponse:
        """Cancel one task: ``{"id", "before", "state", "cancelled"}``; a final task is a
        no-op (``cancelled`` false), an unknown one a 404."""
        denied = self._denied(request)
        if denied is not None:
            return denied
        try:
            coordinator = factory.get_actor(factory.COORDINATOR, self.namespace)
            before = await coordinator.cancel.remote(task_id)
        except Exception as exc:
            cause = getattr(exc, "cause", exc)
            if isinstance(cause, NotFound):
                return error_response(404, [{"msg": f"no task {task_id}"}])
            if isinstance(cause, SpecError):
                return error_response(422, [{"loc": ["path", "task_id"], "msg": str(cause)}])
            log.warning("cancel failed: %s", exc)
            return error_response(503, [{"msg": "coordinator unavailable; retry"}])
        done = before not in FINAL_STATES
        return JSONResponse({"id": task_id, "before": before.value, "cancelled": done,
                             "state": "cancelled" if done else before.value})

    @api.get("/tasks/{task_id}")
    async def status(self, task_id: str, request: Request) -> JSONResponse:
        denied = self._denied(request)
        if denied is not None:
            return denied
        try:
            status = await asyncio.to_thread(self.core.store.status, task_id)
        except NotFound:
            return error_response(404, [{"msg": f"no task {task_id}"}])
        except SpecError as exc:
            return error_response(422, [{"loc": ["path", "task_id"], "msg": str(exc)}])
        except RaysysError as exc:
            return error_response(503, [{"msg": str(exc)}])
        doc = status.to_json()
        return JSONResponse({k: doc[k] for k in ("id", "state", "result", "error", "attempts")})

    # ---- internals ----------------------------------------------------------------------------
    def _denied(self, request: Request) -> JSONResponse | None:
        return bearer_denied(self._token, request.headers.get("authorization", ""))

    def _snapshot(self, actors: dict[str, bool]) -> metrics.Snapshot:
        return metrics.read(self.core, worker_max_age_ms=int(self.ttl_s * 1000),
                            actors=actors)

    async def _actors_alive(self) -> dict[str, bool]:
        names = {"coordinator": factory.COORDINATOR, "distributor": factory.DISTRIBUTOR}
        out: dict[str, bool] = {}
        for role, name in names.items():
            try:
                handle = factory.get_actor(name, self.namespace)
                await asyncio.wait_for(_pinged(handle, role), timeout=ACTOR_PING_S)
                out[role] = True
            except Exception as exc:
                log.warning("%s did not answer: %r", role, exc)
                out[role] = False
        return out


def _deployment() -> serve.Deployment:
    """The deployment ``@serve.deployment`` made of :class:`RaysysAPI` (typed as what it is)."""
    return cast(serve.Deployment, RaysysAPI)


def app(args: dict[str, str] | None = None) -> Any:
    """Serve application builder (``import_path: raysys.serve.app:app``).

    ``args``: ``workers`` (N or MIN:MAX, default 2), ``concurrency`` (leases each worker runs
    at once, default 16). Everything else comes from the environment (``RAYSYS_*``/``REDIS_*``),
    as on every node.
    """
    args = dict(args or {})
    settings = load_settings()
    overrides: dict[str, Any] = {}
    if settings.signing_key_file is not None:
        overrides["signing_key_file"] = str(settings.signing_key_file)
    config = ActorConfig.build(settings.namespace, overrides,
                               workers=str(args.get("workers", "2")),
                               concurrency=int(args.get("concurrency", DEFAULT_CONCURRENCY)),
                               worker_prefix=settings.worker_id)
    return _deployment().bind(config, None, True)


def running_http() -> tuple[str, int] | None:
    """(host, port) of the Serve instance already running on this cluster, if any."""
    try:
        controller = ray.get_actor(SERVE_CONTROLLER_NAME, namespace=SERVE_NAMESPACE)
    except ValueError:
        return None
    options: Any = ray.get(controller.get_http_config.remote(), timeout=30)
    return str(options.host), int(options.port)


def deploy(config: ActorConfig, *, host: str, port: int, workers: int = 0,
           start_actors: bool = False) -> str:
    """Run the app on the connected Ray cluster (``raysys up``/``demo``); its base URL.

    If Serve already runs on the cluster, the app joins it on Serve's own host and port (one
    HTTP server per cluster); otherwise Serve starts on ``host``:``port``.
    """
    running = running_http()
    if running is None:
        serve.start(http_options={"host": host, "port": port,
                                  "request_timeout_s": REQUEST_TIMEOUT_S})
    else:
        host, port = running
    serve.run(_deployment().bind(config, workers, start_actors), name=APP_NAME,
              route_prefix="/", blocking=False)
    return f"http://{host}:{port}"


def remove(namespace: str) -> bool:
    """Remove the app if it serves ``namespace`` (``raysys down``); True if it was removed.

    One cluster runs one app under this name; another namespace's ``down`` (an example job's
    own pool, say) must leave it alone. Serve itself keeps running.
    """
    if serve.status().applications.get(APP_NAME) is None:
        return False
    handle = serve.get_app_handle(APP_NAME)
    if handle.namespace_served.remote().result(timeout_s=30) != namespace:
        return False
    serve.delete(APP_NAME)
    return True
