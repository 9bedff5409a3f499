"""What every actor stands on: its configuration, and the core it builds from it.

An actor never receives a secret as an argument or through Ray's ``runtime_env``: it gets the
non-secret settings overrides (namespace, data dir, the keyring FILE path, lease TTL, ...) and
reads everything else from its own environment (``RAYSYS_*``/``REDIS_*`` set on the node by the
deployment) or, for the embedded default, from the data dir on its machine (the embedded Redis's
password file and state file).
"""

from __future__ import annotations

import logging

from raysys.actor_config import SECRET_SETTINGS, ActorConfig
from raysys.core import Core, freeze_heap, open_core
from raysys.logs import configure as configure_logging

log = logging.getLogger(__name__)
__all__ = ["SECRET_SETTINGS", "ActorConfig", "open_actor_core"]

def open_actor_core(config: ActorConfig, role: str) -> Core:
    """The actor's :class:`~raysys.core.Core`: configured Redis, or the data dir's embedded one.

    Also sets up this process's logging: ``LOG_LEVEL``, to stderr (Ray's log files for the
    actor) and to ``<data dir>/logs/agent_system-<role>-<pid>.log``. Keys come from a file
    (reloaded on change) or the node's environment; an actor never creates them.
    """
    settings = config.settings()
    configure_logging(settings.log_level, role, settings.data_dir / "logs")
    core = open_core(settings, namespace=config.namespace, create_keys=False)
    if core.server is not None:  # nobody was serving the data dir: AOF replay keeps the data
        log.warning("no embedded Redis was running in %s; this actor started one",
                    settings.data_dir)
    freeze_heap()  # start-up is done: keep full GC passes off the actor's hot path
    return core
