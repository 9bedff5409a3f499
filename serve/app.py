"""The Ray Serve app: the HTTP API (FastAPI) and the console, on one host and port.

Routes (``/openapi.json`` describes them all; ``/docs`` shows it, offline):

* open: ``GET /health``, ``GET /metrics`` (:mod:`.routes_system`), ``/docs``, ``/openapi.json``
  and the console under ``/ui`` (:mod:`.console`; its data comes from the routes below);
* with ``Authorization: Bearer <RAYSYS_API_TOKEN>`` (:mod:`.auth`; 401 otherwise, also when
  the server has no token): tasks (:mod:`.routes_tasks`), schedules
  (:mod:`.routes_schedules`), ``GET /workers`` and ``GET /stats``.

Every error is ``{"detail": [{"loc"?, "msg", "type"?}]}`` (:mod:`.http_errors`). ``check_health``
fails only for a broken replica, never because Redis is down (Serve would replace replicas
forever; ``../shared/RAY_NOTES.md``).

Start-up (``RaysysAPI.__init__``) finds or starts the Coordinator, the Distributor and the
workers, so deploying this app alone (a RayService) brings the system up. ``app`` is the
builder a Serve config names (``import_path: raysys.serve.app:app``); :func:`deploy` is what
``raysys up`` and ``raysys demo`` call.
"""

# No `from __future__ import annotations`: Serve pickles this class by value, and FastAPI must
# resolve the route functions' annotations at import.

import logging
from typing import Any, cast

import ray
from fastapi import FastAPI
from ray import serve
from ray.serve._private.constants import SERVE_CONTROLLER_NAME, SERVE_NAMESPACE

from raysys.actor_config import DEFAULT_CONCURRENCY, ActorConfig
from raysys.actors import factory
from raysys.config import load_settings
from raysys.serve import console, docs, routes_schedules, routes_system, routes_tasks
from raysys.serve.auth import BearerGate
from raysys.serve.backend import Backend, install
from raysys.serve.http_errors import install_handlers
from raysys.serve.series import Sampler

log = logging.getLogger(__name__)

APP_NAME = "raysys"
DEPLOYMENT = "raysys-api"
REQUEST_TIMEOUT_S = 30.0
VERSION = "0.1.0"


def build_api() -> FastAPI:
    """The FastAPI app: every router, the error handlers, and no CDN-backed docs."""
    api = FastAPI(title="raysys", version=VERSION, docs_url=None, redoc_url=None,
                  generate_unique_id_function=lambda route: route.name,
                  description="Durable, signed, lease-based task execution on Ray. Task, "
                  "schedule, worker and stats routes need `Authorization: Bearer "
                  "<RAYSYS_API_TOKEN>`; errors are `{\"detail\": [{\"loc\", \"msg\"}]}`.")
    routers = [m.router for m in (routes_system, routes_tasks, routes_schedules, docs, console)]
    for router in routers:
        api.include_router(router)
    install_handlers(api, [route for router in routers for route in router.routes])
    api.add_middleware(BearerGate)
    return api


api = build_api()


@serve.deployment(name=DEPLOYMENT, num_replicas=1, ray_actor_options={"num_cpus": 0},
                  health_check_period_s=10, health_check_timeout_s=30)
@serve.ingress(api)
class RaysysAPI:
    """One replica: its backend (Redis through the core, the Coordinator for writes), the
    console's sampler, and, with ``start_actors``, the named actors found or started.

    Holds no state of its own that must survive: Serve may replace it at any time (a failed
    health check, a redeploy) and the new replica carries on from Redis. ``dashboard_url``:
    the Ray dashboard the console links to (None: "not linked")."""

    def __init__(self, config: ActorConfig, workers: int | None = None,
                 start_actors: bool = True, dashboard_url: str | None = None) -> None:
        self.backend = Backend(config, dashboard_url)
        install(self.backend)
        self.sampler = Sampler(self.backend.core.store).start()
        if start_actors:  # idempotent: actors that exist are found, not started twice
            factory.deploy(config, workers)
        log.info("raysys API up in namespace %s (task API %s)", config.namespace,
                 "enabled" if self.backend.token else "disabled: no RAYSYS_API_TOKEN")

    def __del__(self) -> None:  # Serve calls it when it stops the replica
        sampler = getattr(self, "sampler", None)
        if sampler is not None:
            sampler.stop()

    def namespace_served(self) -> str:
        return self.backend.namespace

    def check_health(self) -> None:
        """Serve reaching this method is the check: a replica whose event loop hangs fails it
        by timeout and is replaced. Redis being down shows in /health, never here (Serve
        would replace replicas for as long as Redis is away)."""


def _deployment() -> serve.Deployment:
    """The deployment ``@serve.deployment`` made of :class:`RaysysAPI` (typed as what it is)."""
    return cast(serve.Deployment, RaysysAPI)


def app(args: dict[str, str] | None = None) -> Any:
    """Serve application builder (``import_path: raysys.serve.app:app``).

    ``args``: ``workers`` (N or MIN:MAX, default 2), ``concurrency`` (leases each worker runs
    at once, default 16), ``dashboard_url`` (the Ray dashboard's address as the console's users
    reach it; unset: the console says "not linked"). Everything else comes from the
    environment (``RAYSYS_*``/``REDIS_*``), as on every node.
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
    return _deployment().bind(config, None, True, args.get("dashboard_url"))


def running_http() -> tuple[str, int] | None:
    """(host, port) of the Serve instance already running on this cluster, if any."""
    try:
        controller = ray.get_actor(SERVE_CONTROLLER_NAME, namespace=SERVE_NAMESPACE)
    except ValueError:
        return None
    options: Any = ray.get(controller.get_http_config.remote(), timeout=30)
    return str(options.host), int(options.port)


def deploy(config: ActorConfig, *, host: str, port: int, workers: int = 0,
           start_actors: bool = False, dashboard_url: str | None = None) -> str:
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
    serve.run(_deployment().bind(config, workers, start_actors, dashboard_url), name=APP_NAME,
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
