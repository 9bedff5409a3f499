"""The Lua scripts of every state transition, loaded from ``raysys/store/scripts/*.lua``.

A script whose text has the line ``-- uses: lib`` gets ``lib.lua`` (helpers several scripts
share: kind queues, counters, server time) put in front of it when it is loaded: one source for
those helpers, and each script still runs as one atomic unit.

Every script that changes task state (``BARRIERED``; each takes the key prefix as ARGV[1])
starts with a check of the namespace's barrier (a chunked snapshot being copied) and restoring
marker (a chunked restore): while either stands it changes nothing and fails with
``ERR_BARRIER``, and :meth:`Scripts.run` sends it again once the way is clear (at most
``BARRIER_WAIT_S``). That pause is what makes a snapshot copied in many scripts one instant.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable
from functools import cache
from importlib import resources
from typing import Any

import redis
from redis.commands.core import Script
from redis.exceptions import NoScriptError
from redis.sentinel import SentinelConnectionPool

from raysys.errors import RaysysError, RedisUnavailable

log = logging.getLogger(__name__)

SCRIPT_NAMES = ("submit", "acquire", "renew", "complete", "expired", "expire", "cancel",
                "quarantine", "cas_record", "claim_nonces", "cas_manifest", "release",
                "unstarted", "migrate_queues", "purge", "redrive", "barrier", "snapshot_chunk",
                "snapshot_zpart", "restore_begin", "restore_chunk", "restore_finish",
                "restore_undo", "upgrade_seed")
BARRIERED = frozenset({"submit", "acquire", "renew", "complete", "expire", "cancel",
                       "quarantine", "cas_record", "claim_nonces", "release", "unstarted",
                       "migrate_queues", "purge", "redrive", "upgrade_seed"})
USES_LIB = "-- uses: lib\n"
BARRIER_CHECK = """-- (raysys/store/lua.py) snapshot or restore under way: change nothing
if redis.call("EXISTS", ARGV[1] .. "barrier", ARGV[1] .. "restoring") > 0 then
  local restoring = redis.call("GET", ARGV[1] .. "restoring")
  return redis.error_reply("ERR_BARRIER " .. (restoring
    and "restoring snapshot " .. string.match(restoring, "^[^|]*") or "snapshot"))
end
"""
BARRIER_WAIT_S = 600.0  # a write waits this long for a snapshot or restore, then fails
# Scripts that change nothing (but the barrier's expiry): no WAIT after them.
READ_ONLY = frozenset({"expired", "snapshot_chunk", "snapshot_zpart"})
REPLICATION_RETRY_S = 10.0  # a write not confirmed by replicas is sent again for this long
# The reply of a primary whose ``min-replicas-to-write`` is not met (cut off from its replicas,
# e.g. an old primary back from a pause after a failover): nothing was written.
NOREPLICAS = "NOREPLICAS"


class NotReplicated(RedisUnavailable, redis.ConnectionError):
    """A script's writes were applied on the primary, but ``WAIT`` did not confirm them on
    ``RAYSYS_REDIS_MIN_REPLICAS`` replicas in time: they may be lost with the primary, so they
    are not acknowledged. Retryable: every script answers a resend as it answered the first
    send (it is a ``redis.ConnectionError`` too, so callers that retry Redis errors do)."""


@cache
def script_source(name: str) -> str:
    """The text Redis runs for script ``name``: its file, with ``lib.lua`` in front if it
    uses it."""
    text = _file(name)
    if USES_LIB in text:
        text = _file("lib") + "\n" + text
    return BARRIER_CHECK + text if name in BARRIERED else text


def _file(name: str) -> str:
    return resources.files("raysys.store").joinpath("scripts", f"{name}.lua").read_text("utf-8")


class Scripts:
    """Every script, registered once for one client (one per :class:`~raysys.core.Core`).

    ``overrides`` replaces sources by name (fault-injection tests). With ``replicas`` > 0
    (``RAYSYS_REDIS_MIN_REPLICAS``) every script that writes is followed, on the same
    connection and in the same round trip, by ``WAIT replicas wait_timeout_ms``; its reply is
    returned only once that many replicas hold the writes, else :class:`NotReplicated`."""

    def __init__(self, client: redis.Redis, overrides: dict[str, str] | None = None, *,
                 replicas: int = 0, wait_timeout_ms: int = 1000,
                 replication_retry_s: float = REPLICATION_RETRY_S) -> None:
        sources = {name: script_source(name) for name in SCRIPT_NAMES}
        sources.update(overrides or {})
        self._client = client
        self._scripts: dict[str, Script] = {
            name: client.register_script(src) for name, src in sources.items()
        }
        self.replicas = replicas
        self.wait_timeout_ms = wait_timeout_ms
        self.replication_retry_s = replication_retry_s

    def run(self, name: str, keys: list[str], args: list[Any]) -> Any:
        """Run script ``name`` (EVALSHA, loading it first on a server that lacks it); sent
        again while a snapshot or restore holds the namespace."""
        if self.replicas and name not in READ_ONLY:
            return self.run_after(_nothing, name, keys, args)
        script = self._scripts[name]
        try:
            return script(keys=keys, args=args)
        except redis.ResponseError as exc:
            if NOREPLICAS in str(exc):
                raise self._refused(name) from None
            if "ERR_BARRIER" not in str(exc):
                raise
            return _after_barrier(lambda: script(keys=keys, args=args), str(exc))

    def run_after(self, prepare: Callable[[redis.client.Pipeline], None], name: str,
                  keys: list[str], args: list[Any]) -> Any:
        """Send ``prepare``'s commands, then script ``name``, in one round trip; its reply.

        Redis applies them in that order (a pipeline, not a transaction): a crash after the
        script's ack leaves the commands before it applied too.
        """
        script = self._scripts[name]
        replicated = self.replicas > 0 and name not in READ_ONLY

        def send() -> Any:
            for attempt in range(2):
                pipe = self._client.pipeline(transaction=False)
                prepare(pipe)
                pipe.evalsha(script.sha, len(keys), *keys, *args)
                if replicated:
                    pipe.wait(self.replicas, self.wait_timeout_ms)
                try:
                    replies = pipe.execute()
                except NoScriptError:  # a restarted or flushed server: load it, send again
                    if attempt:
                        raise
                    self._client.script_load(script.script)
                    continue
                except redis.ResponseError as exc:
                    if NOREPLICAS in str(exc):
                        raise self._refused(name) from None
                    raise
                if replicated:
                    self._check_replicated(name, int(replies[-1]))
                    return replies[-2]
                return replies[-1]
            raise AssertionError("unreachable")

        def call() -> Any:
            return self._until_replicated(send) if replicated else send()

        try:
            return call()
        except redis.ResponseError as exc:
            if "ERR_BARRIER" not in str(exc):
                raise
            return _after_barrier(call, str(exc))

    def _until_replicated(self, send: Callable[[], Any]) -> Any:
        """``send`` again (safe: scripts answer a resend as the first send) while replicas do
        not confirm it, asking Sentinel afresh for the primary each time (this one may have
        just been replaced), for ``replication_retry_s``; then :class:`NotReplicated`."""
        deadline = time.monotonic() + self.replication_retry_s
        pause = 0.05
        while True:
            try:
                return send()
            except NotReplicated as exc:
                if time.monotonic() + pause > deadline:
                    raise
                log.warning("%s; sending it again", exc)
                pool = self._client.connection_pool
                if isinstance(pool, SentinelConnectionPool):
                    pool.disconnect(inuse_connections=False)  # next connect asks Sentinel
                time.sleep(pause)
                pause = min(pause * 2, 1.0)

    def _refused(self, name: str) -> NotReplicated:
        return NotReplicated(
            f"Redis script {name}: the server refused the write (NOREPLICAS: fewer replicas "
            f"than its min-replicas-to-write are in sync, e.g. a primary cut off from its "
            f"replicas or just replaced by one); nothing was written (safe to retry)")

    def _check_replicated(self, name: str, acknowledged: int) -> None:
        if acknowledged < self.replicas:
            raise NotReplicated(
                f"Redis script {name}: {acknowledged} of {self.replicas} replicas "
                f"(RAYSYS_REDIS_MIN_REPLICAS) confirmed the write within "
                f"{self.wait_timeout_ms} ms; not acknowledged (safe to retry): check the "
                f"replicas' links (INFO replication)")


def _nothing(pipe: redis.client.Pipeline) -> None:
    """Nothing to send ahead of the script."""


def _after_barrier(send: Callable[[], Any], why: str) -> Any:
    """Send again with a growing pause until the barrier is gone (BARRIER_WAIT_S at most)."""
    deadline = time.monotonic() + BARRIER_WAIT_S
    pause = 0.005
    log.debug("waiting for the namespace: %s", why)
    while True:
        time.sleep(pause)
        try:
            return send()
        except redis.ResponseError as exc:
            if "ERR_BARRIER" not in str(exc):
                raise
            if time.monotonic() > deadline:
                raise RaysysError(
                    f"Redis writes of this namespace have waited {BARRIER_WAIT_S:.0f} s for a "
                    f"snapshot or restore ({str(exc).split(' ', 1)[-1]}); if a restore died "
                    "half way, run `raysys snapshot restore` again to finish it") from None
        pause = min(pause * 2, 0.1)
