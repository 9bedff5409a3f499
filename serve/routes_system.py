"""``GET /health`` and ``GET /metrics`` (open), ``GET /workers`` and ``GET /stats`` (token).

* ``/health`` reports Redis, each actor's liveness, live workers and the reaper's lag:
  ``healthy`` or ``degraded`` answer 200, ``unhealthy`` (Redis down, or no Coordinator) 503.
  It is for monitors and load balancers, not a Kubernetes liveness probe.
* ``/metrics`` is Prometheus text for the whole system, read from Redis (:mod:`raysys.metrics`).
* ``/workers``: every worker's heartbeat (node, liveness, in flight, free slots, draining).
* ``/stats``: tasks by state, the event counters, the last hour's rates (:mod:`.series`),
  Redis memory, the actors, and the Ray dashboard's address: what the console's overview shows.
"""

import asyncio
import time
from typing import Any

from fastapi import APIRouter
from fastapi.responses import JSONResponse, Response
from prometheus_client import CONTENT_TYPE_LATEST

from raysys import metrics
from raysys.registry import Registry
from raysys.serve import series
from raysys.serve.auth import Who
from raysys.serve.backend import Api, Backend
from raysys.serve.http_errors import unavailable
from raysys.serve.responses import ERRORS, HealthOut, StatsOut, WorkersOut

router = APIRouter()


def health_status(api: Backend, snap: metrics.Snapshot) -> str:
    """healthy, degraded (a part missing or late; still serving) or unhealthy."""
    if not snap.redis_connected or not snap.actors.get("coordinator"):
        return "unhealthy"
    if (not snap.actors.get("distributor") or snap.live_workers == 0
            or snap.reaper_lag_s > 2 * api.reaper_interval_s + 1
            or any(d.get("reason") == "resources" for d in snap.waiting.values())):
        return "degraded"
    return "healthy"


@router.get("/health", response_model=HealthOut, tags=["system"],
            responses={503: {"model": HealthOut, "description": "unhealthy"}})
async def health(api: Api) -> JSONResponse:
    """Liveness of Redis, the actors and the workers (503 when unhealthy)."""
    snap = await api.snapshot()
    status = health_status(api, snap)
    body = HealthOut(status=status, agent_id=api.agent_id,
                     uptime=round(time.time() - api.started, 1),
                     redis_connected=snap.redis_connected, namespace=api.namespace,
                     actors=snap.actors, live_workers=snap.live_workers,
                     reaper_lag_s=round(snap.reaper_lag_s, 3), waiting=snap.waiting)
    return JSONResponse(body.model_dump(), status_code=503 if status == "unhealthy" else 200)


@router.get("/metrics", tags=["system"], response_class=Response,
            responses={200: {"content": {CONTENT_TYPE_LATEST: {}},
                             "description": "Prometheus text exposition"}})
async def metrics_text(api: Api) -> Response:
    """Every raysys metric of the namespace, in Prometheus's text format."""
    return Response(metrics.render(await api.snapshot()), media_type=CONTENT_TYPE_LATEST)


@router.get("/workers", response_model=WorkersOut, tags=["system"], responses=ERRORS)
async def list_workers(api: Api, _who: Who) -> dict[str, Any]:
    """Every worker that ever beat: ``alive`` when its last beat is within the lease TTL."""
    try:
        rows = await asyncio.to_thread(Registry(api.core).workers, int(api.ttl_s * 1000))
    except Exception as exc:  # Redis down or failing over: the caller may retry
        raise unavailable("workers", exc) from None
    for row in rows:
        row["free"] = max(0, int(row.get("capacity", 0)) - int(row.get("inflight", 0)))
        row.setdefault("draining", False)
    return {"workers": rows}


@router.get("/stats", response_model=StatsOut, tags=["system"], responses=ERRORS)
async def get_stats(api: Api, _who: Who) -> dict[str, Any]:
    """What the console's overview shows, in one call."""
    snap = await api.snapshot()
    if not snap.redis_connected:
        raise unavailable("stats", ConnectionError("Redis is not answering"))
    try:
        points = await asyncio.to_thread(series.series, api.core.store)
    except Exception as exc:
        raise unavailable("stats", exc) from None
    return {"namespace": api.namespace, "counts": snap.counts, "totals": snap.stats,
            "series": points, "actors": snap.actors, "live_workers": snap.live_workers,
            "redis": {"connected": True, "used_memory": snap.memory.get("used_memory", 0),
                      "maxmemory": snap.memory.get("maxmemory", 0)},
            "dashboard_url": api.dashboard_url}
