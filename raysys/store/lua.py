"""The Lua scripts of every state transition, loaded from ``raysys/store/scripts/*.lua``.

A script whose text has the line ``-- uses: lib`` gets ``lib.lua`` (helpers several scripts
share: kind queues, counters, server time) put in front of it when it is loaded: one source for
those helpers, and each script still runs as one atomic unit.
"""

from __future__ import annotations

from collections.abc import Callable
from functools import cache
from importlib import resources
from typing import Any

import redis
from redis.commands.core import Script
from redis.exceptions import NoScriptError

SCRIPT_NAMES = ("submit", "acquire", "renew", "complete", "expired", "expire", "cancel",
                "quarantine", "cas_record", "claim_nonces", "cas_manifest", "release",
                "snapshot_read", "snapshot_write", "unstarted", "migrate_queues", "purge",
                "redrive")
USES_LIB = "-- uses: lib\n"


@cache
def script_source(name: str) -> str:
    """The text Redis runs for script ``name``: its file, with ``lib.lua`` in front if it
    uses it."""
    text = _file(name)
    return _file("lib") + "\n" + text if USES_LIB in text else text


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
        """Run script ``name`` (EVALSHA, loading it first on a server that lacks it)."""
        return self._scripts[name](keys=keys, args=args)

    def run_after(self, prepare: Callable[[redis.client.Pipeline], None], name: str,
                  keys: list[str], args: list[Any]) -> Any:
        """Send ``prepare``'s commands, then script ``name``, in one round trip; its reply.

        Redis applies them in that order (a pipeline, not a transaction): a crash after the
        script's ack leaves the commands before it applied too.
        """
        script = self._scripts[name]
        for attempt in range(2):
            pipe = self._client.pipeline(transaction=False)
            prepare(pipe)
            pipe.evalsha(script.sha, len(keys), *keys, *args)
            try:
                return pipe.execute()[-1]
            except NoScriptError:  # a restarted or flushed server: load it and send again
                if attempt:
                    raise
                self._client.script_load(script.script)
        raise AssertionError("unreachable")
