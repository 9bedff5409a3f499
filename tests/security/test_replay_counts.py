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
from typing import Any

import pytest
import redis

from raysys.errors import IntegrityError
from raysys.messaging.messenger import Message, Messenger
from raysys.signing.envelope import Sealer
from raysys.signing.keyring import Keyring, generate_key
from tests.security.security_results import ResultsFile, environment, security_row
from tests.support.stores import store_over

pytestmark = [pytest.mark.security, pytest.mark.slow, pytest.mark.timeout(120)]

N = 1000  # messages per phase
SENDER, RECIPIENT = "distributor-1", "worker-1"


def messengers(client: redis.Redis, sealer: Sealer, namespace: str,
               **receiver: Any) -> tuple[Messenger, Messenger]:
    store = store_over(client, sealer, namespace)
    return Messenger(store.core, SENDER, **receiver.pop("sender", {})), Messenger(
        store, RECIPIENT, **receiver)


def deliver(receiver: Messenger, items: list[bytes]) -> list[Message | IntegrityError]:
    out: list[Message | IntegrityError] = []
    for i in range(0, len(items), 200):
        out += receiver.open_many(items[i:i + 200])
    return out


def reasons(results: list[Message | IntegrityError]) -> Counter[str]:
    return Counter("accepted" if isinstance(r, Message) else r.reason for r in results)


def test_every_replay_is_rejected_inside_and_after_the_window_and_after_a_restart(
        redis_server_factory: Any, redis_binary: str, security_results: ResultsFile,
        security_seed: int) -> None:
    began = time.monotonic()
    server = redis_server_factory(redis_binary, appendfsync="always")
    client = redis.Redis.from_url(server.url)
    sealer = Sealer(Keyring([generate_key()]))
    namespace = "replay" + uuid.uuid4().hex[:8]
    sender, receiver = messengers(client, sealer, namespace)
    problems: list[str] = []
    phases: dict[str, Counter[str]] = {}
    first: Counter[str] = Counter()

    def body(i: int) -> dict[str, Any]:
        return {"leases": [{"task_id": f"{i:032x}", "fence": i}]}

    # phase 1, inside the validity window: each message once, then each again, one by one
    window = [sender.seal(RECIPIENT, "assign", body(i)) for i in range(N)]
    first += reasons(deliver(receiver, window))
    latencies = []
    replayed = []
    for data in window:
        t0 = time.perf_counter()
        try:
            receiver.open(data)
            replayed.append("accepted")
        except IntegrityError as exc:
            replayed.append(exc.reason)
        latencies.append(time.perf_counter() - t0)
    phases["inside the window, one by one"] = Counter(replayed)
    # ... and as a batch, and twice within one batch of fresh messages
    phases["inside the window, as a batch"] = reasons(deliver(receiver, window))
    fresh = [sender.seal(RECIPIENT, "assign", body(i)) for i in range(N // 2)]
    doubled = deliver(receiver, [m for data in fresh for m in (data, data)])
    first += reasons(doubled[0::2])
    phases["twice in one batch"] = reasons(doubled[1::2])

    # phase 2, after the window: short-lived messages, replayed once they expired, and again
    # once their nonce records expired from Redis too (then only the expiry rejects them)
    short_sender, short_receiver = messengers(client, sealer, namespace,
                                              sender={"validity_s": 1.0}, skew_s=0.2)
    short = [short_sender.seal(RECIPIENT, "assign", body(i)) for i in range(N)]
    sealed = time.monotonic()
    first += reasons(deliver(short_receiver, short))
    time.sleep(max(0.0, sealed + 1.0 + 0.2 + 0.3 - time.monotonic()))
    phases["after the window"] = reasons(deliver(short_receiver, short))
    nonce_keys = f"{{raysys:{namespace}}}:nonce:*"
    deadline = time.monotonic() + 10
    while sum(1 for _ in client.scan_iter(match=nonce_keys, count=5000)) > N + N // 2:
        assert time.monotonic() < deadline, "the short messages' nonce records never expired"
        time.sleep(0.2)
    phases["after the window and the nonce's expiry"] = reasons(deliver(short_receiver, short))

    # phase 3, after Redis is killed and restarted: a fresh batch accepted once just before
    before_crash = [sender.seal(RECIPIENT, "assign", body(i)) for i in range(N)]
    first += reasons(deliver(receiver, before_crash))
    server.kill()
    server.start()
    client = redis.Redis.from_url(server.url)
    _, receiver = messengers(client, sealer, namespace)  # a new process would build anew
    phases["after a Redis restart"] = reasons(deliver(receiver, before_crash))
    phases["after a Redis restart (phase 1 messages)"] = reasons(deliver(receiver, window))

    # then: every first delivery accepted, every replay rejected
    expected_first = N + N // 2 + N + N
    if first != Counter({"accepted": expected_first}):
        problems.append(f"genuine first deliveries: {dict(first)} (wrongful rejections)")
    attempted = rejected = 0
    for phase, counts in phases.items():
        attempted += sum(counts.values())
        rejected += sum(n for reason, n in counts.items() if reason != "accepted")
        allowed = {"expired"} if "after the window" in phase else {"replay"}
        if set(counts) - allowed:
            problems.append(f"{phase}: {dict(counts)} (expected only {sorted(allowed)})")
    stats = {k.decode(): int(v) for k, v in client.hgetall(
        f"{{raysys:{namespace}}}:stats").items()}
    counted = stats.get("messages:unknown:rejected", 0)
    if counted != rejected:
        problems.append(f"the store counted {counted} rejected messages, {rejected} were")
    security_results.put(security_row(
        f"2-{redis_binary}", "signed actor messages replayed: inside the validity window (one "
        "by one, as a batch, twice in one batch), after it (also after the nonce record "
        "expired), and after Redis was killed with SIGKILL and restarted from its AOF",
        size=f"{attempted} replays of {expected_first} genuine messages", seed=security_seed,
        attempted=attempted, executed=attempted - rejected, rejected=rejected, audited=None,
        problems=problems, latencies_s=latencies,
        latency_what="one replay rejected by Messenger.open (verify, claim the nonce, count)",
        duration_s=time.monotonic() - began, env=environment(client),
        notes="messages are rejected, logged and counted in the store's stats "
              f"({counted} counted), not written to the audit stream; "
              + "; ".join(f"{p}: {dict(c)}" for p, c in phases.items()),
        replays_rejected=rejected, genuine_accepted=first.get("accepted", 0),
        phases={p: dict(c) for p, c in phases.items()}))
    assert not problems, "\n".join(problems)
    assert rejected == attempted
