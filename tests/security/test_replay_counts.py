"""Replayed actor messages, counted: inside their validity window, after it, after a Redis restart.

``test_keys_and_replay.py`` shows one replay of each kind rejected; this module replays
thousands and counts. Every genuine first delivery must be accepted (no wrongful rejection) and
every replay rejected: right away (reason ``replay``), twice in one batch, after the message
expired (``expired``, also once its nonce record has expired from Redis), and after Redis was
killed with SIGKILL and restarted from its AOF (``replay``: the nonce records survived). The
per-message time to reject a replay (verify, claim the nonce in Redis, count) is the figure.
"""

from __future__ import annotations

import time
import uuid
from collections import Counter
from dataclasses import dataclass, field
from typing import Any

import pytest
import redis

from raysys.errors import IntegrityError
from raysys.messaging.messenger import Message, Messenger
from raysys.signing.envelope import Sealer
from raysys.signing.keyring import Keyring, generate_key
from tests.security.security_results import security_row
from tests.support.polling import wait_until
from tests.support.results import ResultsFile, environment
from tests.support.stores import store_over

pytestmark = [pytest.mark.security, pytest.mark.slow, pytest.mark.timeout(120)]

N = 1000  # messages per phase
SENDER, RECIPIENT = "distributor-1", "worker-1"


def messengers(client: redis.Redis, sealer: Sealer, namespace: str,
               **receiver: Any) -> tuple[Messenger, Messenger]:
    store = store_over(client, sealer, namespace)
    return Messenger(store.core, SENDER, **receiver.pop("sender", {})), Messenger(
        store.core, RECIPIENT, **receiver)


def deliver(receiver: Messenger, items: list[bytes]) -> list[Message | IntegrityError]:
    out: list[Message | IntegrityError] = []
    for i in range(0, len(items), 200):
        out += receiver.open_many(items[i:i + 200])
    return out


def reasons(results: list[Message | IntegrityError]) -> Counter[str]:
    return Counter("accepted" if isinstance(r, Message) else r.reason for r in results)


def body(i: int) -> dict[str, Any]:
    return {"leases": [{"task_id": f"{i:032x}", "fence": i}]}


@dataclass
class Replays:
    """What the receivers answered: first deliveries (all must be accepted), each phase's
    replays (all rejected), and how long each one-by-one rejection took."""

    first: Counter[str] = field(default_factory=Counter)
    phases: dict[str, Counter[str]] = field(default_factory=dict)
    latencies: list[float] = field(default_factory=list)


def replay_inside_the_window(sender: Messenger, receiver: Messenger,
                             replays: Replays) -> list[bytes]:
    """Each message once, then each again one by one, then as a batch; and fresh messages
    twice within one batch. Returns the messages (replayed again after the restart)."""
    window = [sender.seal(RECIPIENT, "assign", body(i)) for i in range(N)]
    replays.first += reasons(deliver(receiver, window))
    replayed = []
    for data in window:
        t0 = time.perf_counter()
        try:
            receiver.open(data)
            replayed.append("accepted")
        except IntegrityError as exc:
            replayed.append(exc.reason)
        replays.latencies.append(time.perf_counter() - t0)
    replays.phases["inside the window, one by one"] = Counter(replayed)
    replays.phases["inside the window, as a batch"] = reasons(deliver(receiver, window))
    fresh = [sender.seal(RECIPIENT, "assign", body(i)) for i in range(N // 2)]
    doubled = deliver(receiver, [m for data in fresh for m in (data, data)])
    replays.first += reasons(doubled[0::2])
    replays.phases["twice in one batch"] = reasons(doubled[1::2])
    return window


def replay_after_the_window(client: redis.Redis, sealer: Sealer, namespace: str,
                            replays: Replays) -> None:
    """Short-lived messages, replayed once they expired, and again once their nonce records
    expired from Redis too (then only the expiry rejects them)."""
    short_sender, short_receiver = messengers(client, sealer, namespace,
                                              sender={"validity_s": 1.0}, skew_s=0.2)
    short = [short_sender.seal(RECIPIENT, "assign", body(i)) for i in range(N)]
    sealed = time.monotonic()
    replays.first += reasons(deliver(short_receiver, short))
    time.sleep(max(0.0, sealed + 1.0 + 0.2 + 0.3 - time.monotonic()))
    replays.phases["after the window"] = reasons(deliver(short_receiver, short))
    nonce_keys = f"{{raysys:{namespace}}}:nonce:*"
    wait_until(lambda: sum(1 for _ in client.scan_iter(match=nonce_keys, count=5000))
               <= N + N // 2, 10, "the short messages' nonce records to expire", interval=0.2)
    replays.phases["after the window and the nonce's expiry"] = reasons(
        deliver(short_receiver, short))


def replay_after_a_restart(server: Any, sealer: Sealer, namespace: str, sender: Messenger,
                           receiver: Messenger, window: list[bytes],
                           replays: Replays) -> redis.Redis:
    """A fresh batch accepted once just before Redis is killed and restarted from its AOF;
    it and the phase 1 messages replayed to a receiver built anew. The new client."""
    before_crash = [sender.seal(RECIPIENT, "assign", body(i)) for i in range(N)]
    replays.first += reasons(deliver(receiver, before_crash))
    server.kill()
    server.start()
    client = redis.Redis.from_url(server.url)
    _, receiver = messengers(client, sealer, namespace)  # a new process would build anew
    replays.phases["after a Redis restart"] = reasons(deliver(receiver, before_crash))
    replays.phases["after a Redis restart (phase 1 messages)"] = reasons(
        deliver(receiver, window))
    return client


def replay_problems(replays: Replays, expected_first: int, counted: int
                    ) -> tuple[list[str], int, int]:
    """Every first delivery accepted, every replay rejected (``replay``, or ``expired`` after
    the window), and each rejection counted by the store; the problems, replays attempted and
    rejected."""
    problems = []
    if replays.first != Counter({"accepted": expected_first}):
        problems.append(f"genuine first deliveries: {dict(replays.first)} (wrongful rejections)")
    attempted = rejected = 0
    for phase, counts in replays.phases.items():
        attempted += sum(counts.values())
        rejected += sum(n for reason, n in counts.items() if reason != "accepted")
        allowed = {"expired"} if "after the window" in phase else {"replay"}
        if set(counts) - allowed:
            problems.append(f"{phase}: {dict(counts)} (expected only {sorted(allowed)})")
    if counted != rejected:
        problems.append(f"the store counted {counted} rejected messages, {rejected} were")
    return problems, attempted, rejected


def test_every_replay_is_rejected_inside_and_after_the_window_and_after_a_restart(
        redis_server_factory: Any, redis_binary: str, security_results: ResultsFile,
        security_seed: int) -> None:
    began = time.monotonic()
    # given: two parties signing and checking messages, on Redis with appendfsync always
    server = redis_server_factory(redis_binary, appendfsync="always")
    client = redis.Redis.from_url(server.url)
    sealer = Sealer(Keyring([generate_key()]))
    namespace = "replay" + uuid.uuid4().hex[:8]
    sender, receiver = messengers(client, sealer, namespace)
    replays = Replays()

    # when: messages are replayed inside the validity window, after it, and after a restart
    window = replay_inside_the_window(sender, receiver, replays)
    replay_after_the_window(client, sealer, namespace, replays)
    client = replay_after_a_restart(server, sealer, namespace, sender, receiver, window,
                                    replays)

    # then: every first delivery accepted, every replay rejected, and counted
    expected_first = N + N // 2 + N + N
    stats = {k.decode(): int(v) for k, v in client.hgetall(
        f"{{raysys:{namespace}}}:stats").items()}
    counted = stats.get("messages:unknown:rejected", 0)
    problems, attempted, rejected = replay_problems(replays, expected_first, counted)
    phases = replays.phases
    security_results.put(security_row(
        f"2-{redis_binary}", "signed actor messages replayed: inside the validity window (one "
        "by one, as a batch, twice in one batch), after it (also after the nonce record "
        "expired), and after Redis was killed with SIGKILL and restarted from its AOF",
        size=f"{attempted} replays of {expected_first} genuine messages", seed=security_seed,
        attempted=attempted, executed=attempted - rejected, rejected=rejected, audited=None,
        problems=problems, latencies_s=replays.latencies,
        latency_what="one replay rejected by Messenger.open (verify, claim the nonce, count)",
        duration_s=time.monotonic() - began, env=environment(client),
        notes="messages are rejected, logged and counted in the store's stats "
              f"({counted} counted), not written to the audit stream; "
              + "; ".join(f"{p}: {dict(c)}" for p, c in phases.items()),
        replays_rejected=rejected, genuine_accepted=replays.first.get("accepted", 0),
        phases={p: dict(c) for p, c in phases.items()}))
    assert not problems, "\n".join(problems)
    assert rejected == attempted
