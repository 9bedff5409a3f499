"""The durable task store: key names, the Lua scripts of every state transition, and reads.

Owns everything raysys keeps in Redis for tasks: ``Keyspace`` (the only place that spells key
names), ``Scripts`` (the Lua scripts in ``scripts/``, registered once per process), the
``TaskStore`` that runs them (submit, lease, renew, commit, reap, cancel, queries), the kinds
book (what each kind asks for), reply decoding and the histograms the scripts keep. Imports
only the foundation and ``signing``.
"""

from raysys.store.keyspace import Keyspace, drop_keys, glob_escape
from raysys.store.kinds import KindBook, KindInfo
from raysys.store.lua import Scripts
from raysys.store.reaping import ReapReport
from raysys.store.records import AUDIT_MAXLEN, COMPLETION, RECORD
from raysys.store.task_store import FENCES_PER_MS, MAX_KEY_DEFERRALS, RetryPolicy, TaskStore

__all__ = [
    "AUDIT_MAXLEN",
    "COMPLETION",
    "FENCES_PER_MS",
    "MAX_KEY_DEFERRALS",
    "RECORD",
    "Keyspace",
    "KindBook",
    "KindInfo",
    "ReapReport",
    "RetryPolicy",
    "Scripts",
    "TaskStore",
    "drop_keys",
    "glob_escape",
]
