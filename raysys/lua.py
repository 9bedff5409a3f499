"""The Lua scripts of every state transition, loaded from ``raysys/scripts/*.lua``."""

from __future__ import annotations

from importlib import resources
from typing import Any

import redis
from redis.commands.core import Script

SCRIPT_NAMES = ("submit", "acquire", "renew", "complete", "expired", "expire", "cancel",
                "quarantine", "cas_record", "claim_nonces", "cas_manifest", "release")


def script_source(name: str) -> str:
    """The text of ``raysys/scripts/<name>.lua``."""
    return resources.files("raysys").joinpath("scripts", f"{name}.lua").read_text("utf-8")


class Scripts:
    """Registered scripts for one client. ``overrides`` replaces sources (fault-injection tests)."""

    def __init__(self, client: redis.Redis, overrides: dict[str, str] | None = None) -> None:
        sources = {name: script_source(name) for name in SCRIPT_NAMES}
        sources.update(overrides or {})
        self._scripts: dict[str, Script] = {
            name: client.register_script(src) for name, src in sources.items()
        }

    def run(self, name: str, keys: list[str], args: list[Any]) -> Any:
        return self._scripts[name](keys=keys, args=args)
