"""The schedules of one namespace in Redis: add, list, get, remove, pause, resume.

Each change is one transaction (``WATCH``/``MULTI``) or one script, so two callers racing on
one name see one winner and a :class:`~raysys.errors.Conflict` (or a clear error) for the
other. Definitions and cursors are signed; a record that fails verification is reported, never
used.
"""

from __future__ import annotations

import logging
from typing import TYPE_CHECKING, Any

import redis

from raysys.errors import Conflict, IntegrityError, NotFound, ValidationError
from raysys.schedules import cron
from raysys.schedules.spec import (
    PAUSED_SCORE,
    ScheduleInfo,
    ScheduleSpec,
    open_cursor,
    open_spec,
    seal_cursor,
    seal_spec,
)
from raysys.store.records import AUDIT_MAXLEN
from raysys.store.replies import as_bytes, as_text

if TYPE_CHECKING:
    from raysys.core import Core

log = logging.getLogger(__name__)
MAX_SCHEDULES = 10_000


class ScheduleExists(ValidationError):
    """The name is taken by another schedule (exit 3; HTTP 409)."""


class ScheduleBook:
    """Schedules over one core (its client, keys, sealer and store)."""

    def __init__(self, core: Core) -> None:
        self.core = core
        self.client = core.client
        self.keys = core.keys
        self.sealer = core.sealer
        self.namespace = core.namespace
        self.store = core.store

    def add(self, spec: ScheduleSpec) -> ScheduleInfo:
        """Store a new schedule; its first tick is the first after now (server time).
        ValidationError if the name is taken (remove it first)."""
        key = self.keys.schedule(spec.name)
        now = self.store.server_ms()
        if self.client.zcard(self.keys.schedules) >= MAX_SCHEDULES:
            raise ValidationError(f"{MAX_SCHEDULES} schedules already: remove some first")
        rec = seal_spec(self.sealer, spec, self.namespace)
        cur = seal_cursor(self.sealer, spec.name, self.namespace, now)
        nxt = PAUSED_SCORE if spec.paused else cron.next_tick(spec.cron, spec.tz, now)
        with self.client.pipeline(transaction=True) as pipe:
            try:
                pipe.watch(key)  # type: ignore[no-untyped-call]
                if pipe.exists(key):
                    raise ScheduleExists(f"schedule {spec.name} exists: remove it first "
                                          f"(raysys schedule remove {spec.name})")
                pipe.multi()
                pipe.hset(key, mapping={"rec": rec, "cur": cur})
                pipe.zadd(self.keys.schedules, {spec.name: nxt})
                self._audit(pipe, "schedule_added", spec.name, cron=spec.cron, kind=spec.kind)
                pipe.execute()
            except redis.WatchError:
                raise Conflict(f"schedule {spec.name} was added by someone else just now"
                               ) from None
        log.info("schedule %s added: %r (%s) -> %s, catch-up %s", spec.name, spec.cron,
                 spec.tz, spec.kind, spec.catchup)
        return ScheduleInfo(spec, now, None if spec.paused else nxt, self.sealer.keyring.active.kid)

    def get(self, name: str) -> ScheduleInfo:
        """The verified schedule ``name``; NotFound, or IntegrityError if it fails verification."""
        rec, cur = self.client.hmget(self.keys.schedule(name), ["rec", "cur"])
        if rec is None:
            raise NotFound(f"no schedule {name} in namespace {self.namespace}")
        spec, kid = open_spec(self.sealer, as_bytes(rec), name, self.namespace)
        last = open_cursor(self.sealer, as_bytes(cur), name, self.namespace) if cur else None
        score = self.client.zscore(self.keys.schedules, name)
        nxt = None if score is None or score >= PAUSED_SCORE else int(score)
        return ScheduleInfo(spec, last, nxt, kid)

    def list(self) -> tuple[list[ScheduleInfo], dict[str, str]]:
        """Every schedule, by name; and the names that failed verification, with why."""
        names = sorted(as_text(n) for n in self.client.zrange(self.keys.schedules, 0, -1))
        good: list[ScheduleInfo] = []
        bad: dict[str, str] = {}
        for name in names:
            try:
                good.append(self.get(name))
            except NotFound:
                continue
            except IntegrityError as exc:
                bad[name] = f"{exc.reason}: {exc}"
        return good, bad

    def remove(self, name: str) -> None:
        """Delete a schedule (tasks it enqueued stay). NotFound if there is none."""
        pipe = self.client.pipeline(transaction=True)
        pipe.delete(self.keys.schedule(name))
        pipe.zrem(self.keys.schedules, name)
        self._audit(pipe, "schedule_removed", name)
        if not pipe.execute()[0]:
            raise NotFound(f"no schedule {name} in namespace {self.namespace}")

    def pause(self, name: str) -> ScheduleInfo:
        """Stop enqueueing ticks (ticks while paused are skipped, not caught up)."""
        return self._set_paused(name, True)

    def resume(self, name: str) -> ScheduleInfo:
        """Enqueue again from the first tick after now."""
        return self._set_paused(name, False)

    def _set_paused(self, name: str, paused: bool) -> ScheduleInfo:
        key = self.keys.schedule(name)
        with self.client.pipeline(transaction=True) as pipe:
            try:
                pipe.watch(key)  # type: ignore[no-untyped-call]
                rec = pipe.hget(key, "rec")
                if rec is None:
                    raise NotFound(f"no schedule {name} in namespace {self.namespace}")
                spec, _ = open_spec(self.sealer, as_bytes(rec), name, self.namespace)
                changed = spec.model_copy(update={"paused": paused})
                now = self.store.server_ms()
                nxt = PAUSED_SCORE if paused else cron.next_tick(spec.cron, spec.tz, now)
                pipe.multi()
                pipe.hset(key, mapping={
                    "rec": seal_spec(self.sealer, changed, self.namespace),
                    "cur": seal_cursor(self.sealer, name, self.namespace, now)})
                pipe.zadd(self.keys.schedules, {name: nxt})
                self._audit(pipe, "schedule_paused" if paused else "schedule_resumed", name)
                pipe.execute()
            except redis.WatchError:
                raise Conflict(f"schedule {name} changed meanwhile: try again") from None
        return ScheduleInfo(changed, now, None if paused else nxt, self.sealer.keyring.active.kid)

    def _audit(self, pipe: redis.client.Pipeline, event: str, name: str, **fields: str) -> None:
        if self.store.audit_enabled:
            entry: dict[Any, Any] = {"ev": event, "schedule": name, **fields}
            pipe.xadd(self.keys.audit, entry, maxlen=AUDIT_MAXLEN, approximate=True)
