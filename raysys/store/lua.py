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

from raysys.errors import RaysysError

log = logging.getLogger(__name__)

SCRIPT_NAMES = ("submit", "acquire", "renew", "complete", "expired", "expire", "cancel",
                "quarantine", "cas_record", "claim_nonces", "cas_manifest", "release",
                "unstarted", "migrate_queues", "purge", "redrive", "barrier", "snapshot_chunk",
                "restore_begin", "restore_chunk", "restore_finish", "restore_undo",
                "upgrade_seed")
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

    ``overrides`` replaces sources by name (fault-injection tests)."""

    def __init__(self, client: redis.Redis, overrides: dict[str, str] | None = None) -> None:
        sources = {name: script_source(name) for name in SCRIPT_NAMES}
        sources.update(overrides or {})
        self._client = client
        self._scripts: dict[str, Script] = {
            name: client.register_script(src) for name, src in sources.items()
        }

    def run(self, name: str, keys: list[str], args: list[Any]) -> Any:
        """Run script ``name`` (EVALSHA, loading it first on a server that lacks it); sent
        again while a snapshot or restore holds the namespace."""
        script = self._scripts[name]
        try:
            return script(keys=keys, args=args)
        except redis.ResponseError as exc:
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

        def send() -> Any:
            for attempt in range(2):
                pipe = self._client.pipeline(transaction=False)
                prepare(pipe)
                pipe.evalsha(script.sha, len(keys), *keys, *args)
                try:
                    return pipe.execute()[-1]
                except NoScriptError:  # a restarted or flushed server: load it, send again
                    if attempt:
                        raise
                    self._client.script_load(script.script)
            raise AssertionError("unreachable")

        try:
            return send()
        except redis.ResponseError as exc:
            if "ERR_BARRIER" not in str(exc):
                raise
            return _after_barrier(send, str(exc))


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
