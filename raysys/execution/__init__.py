"""Running tasks: the engine of a worker (:class:`TaskRunner`), its lanes (threads, an event
loop, Ray tasks through a :class:`RemoteLane` that ``raysys.actors`` provides), deadlines,
and the committer that writes outcomes under their fences as they come in.

Imports the foundation, ``handlers``, ``store`` and ``ledger``; never Ray.
"""

from raysys.execution.committer import Committer, Finished, final_state
from raysys.execution.lanes import RemoteLane
from raysys.execution.outcomes import call_async, call_sync, effective_limits
from raysys.execution.runner import DEFAULT_CONCURRENCY, TaskRunner

__all__ = ["DEFAULT_CONCURRENCY", "Committer", "Finished", "RemoteLane", "TaskRunner",
           "call_async", "call_sync", "effective_limits", "final_state"]
