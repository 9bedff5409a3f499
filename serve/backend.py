"""What the HTTP routes of one Serve replica work with: its core (Redis), the namespace's
Coordinator, the API token, and the checks ``/health`` and ``/metrics`` share.

The replica's constructor installs one :class:`Backend` (:func:`install`); routes get it with
``Depends(backend)``. Routes read through the core and write through the Coordinator, the one
write path for tasks (DESIGN.md, "Layers").
"""

import asyncio
import logging
import os
import time
from typing import Annotated, Any

import redis
from fastapi import Depends

from raysys import metrics
from raysys.actor_config import ActorConfig
from raysys.actors import factory
from raysys.actors.context import open_actor_core
from raysys.schedules import ScheduleBook
from raysys.store.records import AUDIT_MAXLEN

log = logging.getLogger(__name__)

ACTOR_PING_S = 2.0


class Backend:
    """One replica's view of the system (see the module docstring)."""

    def __init__(self, config: ActorConfig, dashboard_url: str | None = None) -> None:
        self.config = config
        self.core = open_actor_core(config, "serve")
        self.namespace = config.namespace
        self.ttl_s = self.core.settings.lease_ttl_s
        self.reaper_interval_s = self.core.settings.reaper_interval_s
        token = self.core.settings.api_token
        self.token = token.get_secret_value().encode() if token is not None else None
        self.schedules = ScheduleBook(self.core)
        self.agent_id = f"serve-{os.getpid()}"
        self.started = time.time()
        self.dashboard_url = dashboard_url
        self._alive: dict[str, bool] = {}

    def coordinator(self) -> Any:
        """The namespace's Coordinator handle (ValueError when it does not exist)."""
        return factory.get_actor(factory.COORDINATOR, self.namespace)

    async def actors_alive(self) -> dict[str, bool]:
        """``{"coordinator": bool, "distributor": bool}``: answered within ACTOR_PING_S (the
        lookups in the GCS run off the event loop). A change of answer is logged, once."""
        names = {"coordinator": factory.COORDINATOR, "distributor": factory.DISTRIBUTOR}
        out: dict[str, bool] = {}
        for role, name in names.items():
            try:
                handle = await asyncio.to_thread(factory.get_actor, name, self.namespace)
                call = handle.ping if role == "coordinator" else handle.info
                await asyncio.wait_for(_awaited(call.remote()), timeout=ACTOR_PING_S)
                out[role] = True
            except Exception as exc:  # gone, restarting, or too slow: all mean "down" here
                if self._alive.get(role, True):
                    log.warning("%s did not answer: %r", role, exc)
                out[role] = False
        self._alive = out
        return out

    async def snapshot(self) -> metrics.Snapshot:
        """Every metric of the namespace (one Redis round trip) plus the actors' liveness."""
        actors = await self.actors_alive()
        return await asyncio.to_thread(
            metrics.read, self.core, worker_max_age_ms=int(self.ttl_s * 1000), actors=actors)

    async def audit(self, event: str, by: str, **fields: str) -> None:
        """Append an operator's action to the namespace's audit stream (who: ``by``). Best
        effort: the action is done when this runs, so a Redis error here is logged, never
        turned into a failed answer."""
        if not self.core.store.audit_enabled:
            return
        entry: dict[Any, Any] = {"ev": event, "by": by, **fields}
        try:
            await asyncio.to_thread(self.core.client.xadd, self.core.keys.audit, entry,
                                    maxlen=AUDIT_MAXLEN, approximate=True)
        except (redis.RedisError, OSError) as exc:
            log.warning("audit entry %s by %s not written: %s", event, by, exc)


async def _awaited(ref: Any) -> Any:
    return await ref


_current: list[Backend] = []


def install(instance: Backend) -> None:
    """Make ``instance`` the backend of this process's routes."""
    _current[:] = [instance]


def installed() -> bool:
    """Whether this process has a backend (a replica that finished starting)."""
    return bool(_current)


def backend() -> Backend:
    """The installed backend (a FastAPI dependency); RuntimeError before :func:`install`."""
    if not _current:
        raise RuntimeError("the raysys API has no backend installed (replica not started)")
    return _current[0]


Api = Annotated[Backend, Depends(backend)]  # a route's backend parameter
