"""The durable task store: key names, the Lua scripts of every state transition, and reads.

Owns everything raysys keeps in Redis for tasks: ``Keyspace`` (the only place that spells key
names), ``Scripts`` (the Lua scripts in ``scripts/``, registered once per process), the
``TaskStore`` that runs them (submit, lease, renew, commit, reap, cancel, queries), reply
decoding and the histograms the scripts keep. Imports only the foundation and ``signing``.
"""

from raysys.store.keyspace import Keyspace, drop_keys, glob_escape
from raysys.store.lua import Scripts
from raysys.store.records import COMPLETION, RECORD
from raysys.store.task_store import (
    AUDIT_MAXLEN,
    FENCES_PER_MS,
    MAX_KEY_DEFERRALS,
    ReapReport,
    RetryPolicy,
    TaskStore,
)

__all__ = [
    "AUDIT_MAXLEN",
    "COMPLETION",
    "FENCES_PER_MS",
    "MAX_KEY_DEFERRALS",
    "RECORD",
    "Keyspace",
    "ReapReport",
    "RetryPolicy",
    "Scripts",
    "TaskStore",
    "drop_keys",
    "glob_escape",
]
