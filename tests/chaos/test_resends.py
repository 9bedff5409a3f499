"""Chaos: a request delivered twice because its link stalled past the client timeout.

Behind a cut link (``tcp_proxy``: bytes held, then delivered) a client times out and resends;
when the link heals Redis receives both copies. Every write the actors make must come out the
same as if it had arrived once: the store's scripts (commit, lease) by design, and the commit
ledger, whose figures (``lost``, ``duplicate_commits``) the suites and ``raysys demo`` report.
The clients are built by ``raysys.redis_conn.connect_redis``, as the actors' are (its retry
policy), with a 1 s timeout to keep the test short. No Ray: core objects over a real Redis.
"""

from __future__ import annotations

import threading
import time
import uuid
from collections.abc import Callable, Iterator
from typing import Any

import pytest
import redis

from raysys.config import load_settings
from raysys.ledger import CommitLedger
from raysys.models import Outcome, TaskSpec
from raysys.redis_server.connection import connect_redis
from raysys.signing.envelope import Sealer
from raysys.signing.keyring import Keyring, generate_key
from raysys.store import TaskStore
from raysys.worker_loop import WorkerLoop
from tests.chaos.tcp_proxy import TcpProxy
from tests.support.stores import store_over

pytestmark = [pytest.mark.chaos, pytest.mark.timeout(60)]

TIMEOUT_S = 1.0


@pytest.fixture
def link(redis_server_factory: Any, redis_binary: str, tmp_path: Any
         ) -> Iterator[tuple[TcpProxy, redis.Redis, redis.Redis]]:
    """(proxy, client through the proxy, direct client) on a fresh server."""
    server = redis_server_factory(redis_binary, password=None)
    proxy = TcpProxy(("127.0.0.1", server.port))
    settings = load_settings(data_dir=tmp_path)
    through = connect_redis(settings, f"redis://127.0.0.1:{proxy.port}/0",
                            socket_timeout=TIMEOUT_S)
    through.ping()  # open the pool's connection before any cut
    direct = redis.Redis(host="127.0.0.1", port=server.port)
    yield proxy, through, direct
    through.close()
    direct.close()
    proxy.close()


def across_a_cut(proxy: TcpProxy, call: Callable[[], Any]) -> Any:
    """Run ``call`` while the link is cut; heal it once the client has resent on a new
    connection (after its first try timed out), so Redis receives both copies.

    The caller's connection is open before the cut, as an actor's long-lived one is (a
    connection opened during the cut would fail its handshake, and send nothing else).
    """
    out: list[Any] = []
    thread = threading.Thread(target=lambda: out.append(call()))
    connections = proxy.connections
    proxy.cut()
    thread.start()
    deadline = time.monotonic() + 10 * TIMEOUT_S
    while proxy.connections == connections:  # the resend opens a new connection
        assert time.monotonic() < deadline, "the client never resent"
        time.sleep(0.01)
    time.sleep(0.1)  # let the resend's bytes reach the proxy
    proxy.heal()
    thread.join(timeout=30)
    assert out, "the call did not return after the link healed"
    return out[0]


def script_calls(direct: redis.Redis, command: str = "evalsha") -> int:
    """``command`` calls (EVALSHA: script runs) the server executed so far (both copies of a
    resend count)."""
    stats = direct.info("commandstats").get(f"cmdstat_{command}", {})
    return int(stats.get("calls", 0)) - int(stats.get("failed_calls", 0))


def stores(through: redis.Redis, direct: redis.Redis) -> tuple[TaskStore, TaskStore]:
    sealer = Sealer(Keyring([generate_key()]))
    namespace = "resend" + uuid.uuid4().hex[:8]
    return store_over(through, sealer, namespace), store_over(direct, sealer, namespace)


def test_resent_commit_is_applied_once(link: tuple[TcpProxy, redis.Redis, redis.Redis]) -> None:
    # given two leased tasks, one committed already (the script is loaded, as in a run)
    proxy, through, direct = link
    store, check = stores(through, direct)
    _, task_id = check.submit_many([TaskSpec.build(kind="echo", payload=i) for i in (0, 1)])
    warm, lease = check.acquire("w1", 2, 30)
    assert store.complete("w1", [(warm, Outcome(True, 0))]) == [True]
    calls = script_calls(direct)
    # when the other's commit is resent across a cut link (both copies reach Redis)
    accepted = across_a_cut(proxy, lambda: store.complete("w1", [(lease, Outcome(True, 1))]))
    assert script_calls(direct) - calls == 2
    # then it is acknowledged, applied once, and nothing counts a rejection
    assert accepted == [True]
    assert check.status(task_id).state.value == "succeeded"
    counts, stats = check.counts(), check.stats()
    assert (counts["succeeded"], counts["leased"]) == (2, 0)
    assert stats.get("fenced_rejected", 0) == 0


def test_resent_commit_with_its_ledger_intents_is_applied_once(
        link: tuple[TcpProxy, redis.Redis, redis.Redis]) -> None:
    # given a worker loop committing with its ledger intents on the same round trip, one
    # commit made already (the script is loaded, as in a run)
    proxy, through, direct = link
    store, check = stores(through, direct)
    ids = check.submit_many([TaskSpec.build(kind="echo", payload=i) for i in (0, 1)])
    warm, lease = check.acquire("w1", 2, 30)
    loop = WorkerLoop(store, "w1", ledger=CommitLedger(through, store.namespace))
    loop.commit([(warm, Outcome(True, 0))], [time.time()])
    calls = script_calls(direct)
    # when the other's commit pipeline (intents, then the script) is resent across a cut link
    accepted = across_a_cut(proxy,
                            lambda: loop.commit([(lease, Outcome(True, 1))], [time.time()]))
    assert script_calls(direct) - calls == 2
    # then it is applied once, and the ledger counts two commits, none twice
    report = CommitLedger(direct, store.namespace).report(ids)
    assert (report.succeeded, report.lost, report.duplicate_commits) == (2, 0, 0)
    assert accepted == [True]  # the resend is acknowledged, not refused
    loop.close()
    assert check.stats().get("fenced_rejected", 0) == 0


def test_resent_acquire_grants_once(link: tuple[TcpProxy, redis.Redis, redis.Redis]) -> None:
    # given six pending tasks, one leased already (the script is loaded, as in a run)
    proxy, through, direct = link
    store, check = stores(through, direct)
    check.submit_many([TaskSpec.build(kind="echo", payload=i) for i in range(6)])
    assert len(store.acquire("w0", 1, 30)) == 1
    calls = script_calls(direct)
    # when an acquire of three is resent across a cut link (both copies reach Redis)
    leases = across_a_cut(proxy, lambda: store.acquire("w1", 3, 30))
    assert script_calls(direct) - calls == 2
    # then the resend returns the first call's leases: three granted, two still pending
    assert len(leases) == 3
    counts = check.counts()
    assert (counts["leased"], counts["pending"]) == (4, 2)
    assert check.stats()["granted"] == 4


def test_resent_ledger_record_counts_one_commit(
        link: tuple[TcpProxy, redis.Redis, redis.Redis]) -> None:
    # given the commit ledger written over the link (one HSET per batch of entries)
    proxy, through, direct = link
    namespace = "resend" + uuid.uuid4().hex[:8]
    ledger = CommitLedger(through, namespace)
    ledger.record([("t0", 6, "succeeded")])
    calls = script_calls(direct, "hset")
    # when one acknowledged commit is recorded across a cut link (both copies reach Redis)
    across_a_cut(proxy, lambda: ledger.record([("t1", 7, "succeeded")]))
    assert script_calls(direct, "hset") - calls == 2
    # then the ledger holds one commit of t1
    report = CommitLedger(direct, namespace).report(["t1"])
    assert (report.lost, report.duplicate_commits) == (0, 0)
