"""Every writing script sent twice, as a resend delivers it, on a real Redis.

With ``RAYSYS_REDIS_MIN_REPLICAS`` > 0, :meth:`Scripts.run_after` sends a writing script again
when ``WAIT`` did not confirm it, and redis-py resends a call whose reply was lost: Redis then
runs the same script with the same KEYS and ARGV twice, and the caller sees only the second
reply. :class:`ResendingScripts` does exactly that for every script that writes (every name in
``SCRIPT_NAMES`` but ``READ_ONLY``), so a test drives the public API over it and checks that
the caller's result, the counts and the audit stream are those of one send.

- :func:`resending_core`: a :class:`Core` whose parts (its store, a ``SnapshotManager``, a
  ``Messenger``) send each writing script twice, with the log of what each send answered.
- :class:`Pair` and :func:`same_as_one_send`: a scenario run in a namespace that sends each
  script once and in one that resends, compared: result, counts, counters, audit events, and
  each script's two answers.
- :data:`WRITING`: the names of the scripts that write.
"""

from __future__ import annotations

import uuid
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any, TypeVar

import redis

from raysys.core import Core, KeyringLike
from raysys.signing.envelope import Sealer
from raysys.store.lua import READ_ONLY, SCRIPT_NAMES, Scripts
from tests.support.stores import core_over, read_audit

WRITING = frozenset(SCRIPT_NAMES) - READ_ONLY
T = TypeVar("T")


@dataclass(frozen=True, slots=True)
class Resend:
    """One script sent twice: its name and what each send answered (a reply, or the error
    Redis raised)."""

    name: str
    first: Any
    second: Any


@dataclass
class ResendLog:
    """The resends of one core, oldest first."""

    resends: list[Resend] = field(default_factory=list)

    def names(self) -> set[str]:
        return {resend.name for resend in self.resends}

    def of(self, name: str) -> list[Resend]:
        return [resend for resend in self.resends if resend.name == name]


class ResendingScripts(Scripts):
    """The scripts of ``inner`` (same client, same registered scripts), each writing one sent
    twice: the identical call (same keys and args; for :meth:`run_after` the same prepared
    commands ahead of it) goes to Redis again once the first has been answered, and the
    second answer is returned (or its error raised). Read-only scripts are sent once."""

    def __init__(self, inner: Scripts, log: ResendLog) -> None:
        vars(self).update(vars(inner))
        self.log = log

    def run(self, name: str, keys: list[str], args: list[Any]) -> Any:
        if name in READ_ONLY:
            return super().run(name, keys, args)
        if self.replicas:  # Scripts.run hands such a call to run_after: resent there
            return super().run(name, keys, args)
        return self._twice(name, lambda: Scripts.run(self, name, keys, args))

    def run_after(self, prepare: Callable[[redis.client.Pipeline], None], name: str,
                  keys: list[str], args: list[Any]) -> Any:
        if name in READ_ONLY:
            return super().run_after(prepare, name, keys, args)
        return self._twice(name, lambda: Scripts.run_after(self, prepare, name, keys, args))

    def _twice(self, name: str, send: Callable[[], Any]) -> Any:
        try:
            first: Any = send()
        except redis.ResponseError as exc:  # the resend still reaches Redis
            first = exc
        try:
            second = send()
        except redis.ResponseError as exc:
            self.log.resends.append(Resend(name, first, exc))
            raise
        self.log.resends.append(Resend(name, first, second))
        return second


def resending_core(client: redis.Redis, keyring: Sealer | KeyringLike, namespace: str,
                   **options: Any) -> tuple[Core, ResendLog]:
    """A core over ``client`` whose writing scripts are each sent twice, and their log.

    Its parts are built from ``core.scripts``, so build them (``core.store`` included) after
    this call, never before. ``options`` as for :func:`~tests.support.stores.core_over`.
    """
    core = core_over(client, keyring, namespace, **options)
    log = ResendLog()
    core.scripts = ResendingScripts(core.scripts, log)
    return core, log


# ---- comparing a resent run with a single send --------------------------------------------
LEADING_TIME = {"acquire": 2, "complete": 1, "release": 1, "expire": 1, "unstarted": 1}
"""Replies that start with the server time (and acquire's run flag: a replay answers 0): left
out when two answers are compared."""


@dataclass
class Pair:
    """Two fresh namespaces on one Redis and keyring: ``once`` sends each script once, ``twice``
    resends every writing script (``log``: what each send answered)."""

    once: Core
    twice: Core
    log: ResendLog

    @classmethod
    def over(cls, client: redis.Redis, keyring: Sealer | KeyringLike) -> Pair:
        once = core_over(client, keyring, "once" + uuid.uuid4().hex[:10])
        twice, log = resending_core(client, keyring, "twice" + uuid.uuid4().hex[:10])
        return cls(once, twice, log)


def books(core: Core) -> tuple[dict[str, int], dict[str, int], list[str]]:
    """What a run leaves to count: tasks per state, the event counters, the audit events."""
    return (core.store.counts(), core.store.stats(),
            [event.ev for event in read_audit(core.client, core.namespace)])


def same_as_one_send(pair: Pair, scenario: Callable[[Core], T], *scripts: str,
                     unlike: tuple[str, ...] = ()) -> T:
    """Run ``scenario`` once per namespace; assert the resent run returned what the single
    send did and left the same counts, counters and audit events, that each of ``scripts`` was
    resent, and that every resend was answered as its first send (``unlike``: scripts whose
    second answer may differ; the test says why). The result, for further checks."""
    once = scenario(pair.once), books(pair.once)
    twice = scenario(pair.twice), books(pair.twice)
    assert twice == once, f"resent: {twice!r}\nsent once: {once!r}"
    missing = set(scripts) - pair.log.names()
    assert not missing, f"never resent: {sorted(missing)}"
    answered_alike(pair.log, unlike=unlike)
    return twice[0]


def answered_alike(log: ResendLog, *, unlike: tuple[str, ...] = ()) -> None:
    """Every resend (but those of ``unlike``) was answered as its first send."""
    for resend in log.resends:
        if resend.name not in unlike:
            first, second = answer(resend.name, resend.first), answer(resend.name, resend.second)
            assert second == first, f"{resend.name}: resend answered {second!r}, not {first!r}"


def answer(name: str, reply: Any) -> Any:
    """``reply`` without what is expected to differ between sends (see LEADING_TIME)."""
    if isinstance(reply, Exception):
        return ("error", str(reply))
    skip = LEADING_TIME.get(name, 0)
    return reply[skip:] if skip else reply
