"""Redis behind Sentinel, and replicated acknowledgements, on real servers.

A primary, two replicas and three Sentinels run on loopback (tests/support/sentinels.py). The
store finds the primary through the Sentinels, follows it across a failover and a kill -9 of the
primary without a restart, and, with ``RAYSYS_REDIS_MIN_REPLICAS``, acknowledges a write only
once replicas hold it.
"""

from __future__ import annotations

import os
import signal
import time
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest
import redis

from raysys.config import load_settings
from raysys.core import Core, open_core
from raysys.errors import ConfigurationError, RedisUnavailable
from raysys.models import Outcome, TaskSpec, TaskState
from raysys.redis_server.embedded import EmbeddedRedis
from raysys.signing.keyring import Keyring, generate_key
from raysys.store.lua import NotReplicated
from tests.support.sentinels import MASTER, RedisGroup

pytestmark = [pytest.mark.unit, pytest.mark.slow, pytest.mark.usefixtures("no_settings_variables")]


@pytest.fixture(scope="module")
def started_group(tmp_path_factory: pytest.TempPathFactory) -> Iterator[RedisGroup]:
    servers = RedisGroup(tmp_path_factory.mktemp("sentinel")).start()
    try:
        yield servers
    finally:
        servers.stop()


@pytest.fixture
def group(started_group: RedisGroup) -> RedisGroup:
    """The module's group, at rest (a server an earlier test killed rejoined as a replica, no
    failover running): each test starts from the same topology whatever the last one did."""
    started_group.settle()
    return started_group


def core_for(group: RedisGroup, **settings: object) -> Core:
    options = load_settings(redis_sentinels=group.sentinels, redis_sentinel_master=MASTER,
                            **settings)
    return open_core(options, namespace="ha" + uuid.uuid4().hex[:8],
                     keyring=Keyring([generate_key()]))


def test_sentinel_settings_name_the_bad_value() -> None:
    with pytest.raises(ConfigurationError, match=r"RAYSYS_REDIS_SENTINELS.*'nohost' is not"):
        load_settings(redis_sentinels="127.0.0.1:26379,nohost")
    with pytest.raises(ConfigurationError, match="unset RAYSYS_REDIS_URL and REDIS_HOST"):
        load_settings(redis_sentinels="127.0.0.1:26379", redis_host="10.0.0.1")
    assert load_settings(redis_sentinels="a:1, [::1]:2").sentinel_endpoints() == [
        ("a", 1), ("::1", 2)]


def test_no_sentinel_answering_is_one_line_naming_the_settings(tmp_path: Path) -> None:
    from raysys.redis_server.binary import free_port

    settings = load_settings(redis_sentinels=f"127.0.0.1:{free_port()}", data_dir=tmp_path)
    with pytest.raises(RedisUnavailable) as caught:
        open_core(settings, keyring=Keyring([generate_key()]))
    message = str(caught.value)
    assert "RAYSYS_REDIS_SENTINELS" in message and "\n" not in message


def test_the_store_follows_the_primary_across_a_failover(group: RedisGroup) -> None:
    # given: tasks submitted through the primary the Sentinels name, each acknowledged once a
    # replica holds it
    with core_for(group, redis_min_replicas=1) as core:
        first = [core.store.submit(TaskSpec.build(kind="echo", payload=i)) for i in range(5)]
        old = group.primary()
        assert core.client.info("server")["tcp_port"] == old.port

        # when: the Sentinels hand the primary role to a replica (a planned failover)
        with redis.Redis(port=group.sentinel_ports[0]) as sentinel:
            sentinel.execute_command("SENTINEL", "FAILOVER", MASTER)
        new = group.wait_new_primary(old)
        group.wait_demoted(old)  # the Sentinels turned the old primary into a replica

        # then: the same client carries on against the new primary, with every task (a write
        # that reached the old primary after the switch is not confirmed by any replica: it is
        # sent again, after asking the Sentinels where the primary is now)
        later = [core.store.submit(TaskSpec.build(kind="echo", payload=i)) for i in range(5)]
        assert core.client.info("server")["tcp_port"] == new.port
        leases = core.store.acquire("w1", 10, ttl_s=30)
        assert sorted(lease.task_id for lease in leases) == sorted(first + later)
        core.store.complete("w1", [(lease, Outcome(ok=True, result=None)) for lease in leases])
        assert {core.store.status(t).state for t in first + later} == {TaskState.SUCCEEDED}


def test_a_killed_primary_is_replaced_and_the_cut_call_goes_through(group: RedisGroup) -> None:
    # given: a lease granted by the primary, replicated
    with core_for(group, redis_min_replicas=1) as core:
        # a failover whose first election fails is retried after twice failover-timeout (10 s)
        core.scripts.replication_retry_s = 30.0
        task = core.store.submit(TaskSpec.build(kind="echo", payload="before"))
        (lease,) = core.store.acquire("w1", 1, ttl_s=60)
        old = group.primary()

        # when: the primary is killed with SIGKILL, and a call is made at once
        old.kill()
        began = time.monotonic()
        after = core.store.submit(TaskSpec.build(kind="echo", payload="after"))
        took = time.monotonic() - began

        # then: the call waited for the failover and went to the new primary, where the lease
        # it granted still holds (it was replicated) and new fences are above the old one
        new = group.wait_new_primary(old)
        assert core.client.info("server")["tcp_port"] == new.port, took
        assert core.store.complete("w1", [(lease, Outcome(ok=True, result="x"))]) == [True]
        (second,) = core.store.acquire("w2", 1, ttl_s=60)
        assert second.task_id == after and second.fence > lease.fence
        assert core.store.status(task).state is TaskState.SUCCEEDED


def test_min_replicas_acknowledges_only_what_replicas_hold(group: RedisGroup) -> None:
    with core_for(group, redis_min_replicas=2, redis_wait_timeout_ms=300) as core:
        core.scripts.replication_retry_s = 1.0
        # given: both replicas up: a submission is acknowledged
        spec = TaskSpec.build(kind="echo", payload="kept", idempotency_key="k-1")
        paused = group.wait_replicas(2)[0]
        task = core.store.submit(spec)
        assert paused.pid is not None

        # when: one replica stops answering
        os.kill(paused.pid, signal.SIGSTOP)
        try:
            # then: a submission is applied on the primary but not acknowledged: one clear,
            # retryable error after the timeout
            other = TaskSpec.build(kind="echo", payload="waits", idempotency_key="k-2")
            with pytest.raises(NotReplicated, match="1 of 2 replicas"):
                core.store.submit(other)
        finally:
            os.kill(paused.pid, signal.SIGCONT)
        # and sending it again once the replica is back gives the one task, not a second
        again = core.store.submit(other)
        assert core.store.submit(spec) == task
        assert core.store.status(again).state is TaskState.PENDING
        assert core.store.counts()["pending"] == 2


def test_a_dropped_connection_reconnects_to_the_new_primary(group: RedisGroup) -> None:
    # given: a connection of the store's client, dropped mid-use (as a call cut by a kill is),
    # whose primary is then replaced and comes back as a replica at the same address
    with core_for(group) as core:
        pool = core.client.connection_pool
        conn = pool.get_connection()
        try:
            old = group.primary()
            assert conn.port == old.port
            conn.disconnect()
            with redis.Redis(port=group.sentinel_ports[0]) as sentinel:
                sentinel.execute_command("SENTINEL", "FAILOVER", MASTER)
            new = group.wait_new_primary(old)
            group.wait_demoted(old)

            # when: the dropped connection is used again without going back to the pool (a
            # pipeline retrying its send does exactly this)
            conn.send_command("SET", "raysys-test:after-failover", "1")
            reply = conn.read_response()
        finally:
            pool.release(conn)

        # then: it asked the Sentinels again and wrote to the new primary, not the old one
        assert reply in (b"OK", "OK") and conn.port == new.port


def test_a_lease_only_the_old_primary_granted_cannot_commit_anywhere(group: RedisGroup) -> None:
    # given: a lease granted by the primary after it lost both replicas' links (stopped, then
    # cut: nothing written afterwards reaches them), so no replica has it (MIN_REPLICAS 0: the
    # grant was acknowledged from the primary alone)
    with core_for(group) as core:
        task = core.store.submit(TaskSpec.build(kind="echo", payload="once"))
        old = group.primary()
        replicas = group.wait_replicas(2, primary=old)
        for replica in replicas:
            os.kill(replica.pid or 0, signal.SIGSTOP)
        try:
            with redis.Redis(port=old.port) as primary:
                primary.client_kill_filter(_type="replica")
            (stale,) = core.store.acquire("old-holder", 1, ttl_s=60)
            stale_core = core_over_server(old, core)  # the holder's connection to the old primary
            # when: the primary is killed before the replicas resume, and a replica promoted
            old.kill()
        finally:
            for replica in replicas:
                os.kill(replica.pid or 0, signal.SIGCONT)
        new = group.wait_new_primary(old)

        # then: the lease's holder cannot commit through the new primary, where the task is
        # pending again and leased next under a higher fence (a new run_id raises the floor)
        done = Outcome(ok=True, result="x")
        assert core.store.complete("old-holder", [(stale, done)]) == [False]
        (fresh,) = core.store.acquire("new-holder", 1, ttl_s=60)
        assert fresh.task_id == task and fresh.fence > stale.fence
        assert core.store.complete("new-holder", [(fresh, done)]) == [True]

        # and the old primary, started again (as it was: a primary, with the lease in its AOF)
        # and demoted by the Sentinels, acknowledges nothing to the stale holder either
        old.start()
        with pytest.raises(redis.RedisError):
            stale_core.store.complete("old-holder", [(stale, done)])
        group.wait_demoted(old)
        assert core.client.info("server")["tcp_port"] == new.port
        status = core.store.status(task)
        assert status.state is TaskState.SUCCEEDED and status.fence == fresh.fence
        stale_core.client.close()


def core_over_server(server: EmbeddedRedis, like: Core) -> Core:
    """A core on a plain connection to ``server`` (no Sentinel), with the namespace and keys of
    ``like``, waiting for one replica per write (``RAYSYS_REDIS_MIN_REPLICAS=1``)."""
    client = redis.Redis(port=server.port, socket_timeout=5)
    settings = load_settings(redis_min_replicas=1, redis_wait_timeout_ms=300)
    core = Core.assemble(client, like.sealer, like.namespace, settings=settings)
    core.scripts.replication_retry_s = 1.0
    return core


@pytest.mark.parametrize("min_replicas", [0, 1])
def test_a_write_the_primary_refuses_for_want_of_replicas_is_not_acknowledged(
        group: RedisGroup, min_replicas: int) -> None:
    # given: a primary that wants more replicas in sync than it has (min-replicas-to-write)
    with core_for(group, redis_min_replicas=min_replicas) as core:
        core.scripts.replication_retry_s = 0.5
        core.store.submit(TaskSpec.build(kind="echo", payload="before"))
        primary = group.primary()
        with redis.Redis(port=primary.port) as conn:
            conn.config_set("min-replicas-to-write", 3)
            try:
                # when: a task is submitted
                # then: one clear, retryable error naming the refusal; nothing was written
                with pytest.raises(NotReplicated, match=r"NOREPLICAS.*safe to retry"):
                    core.store.submit(TaskSpec.build(kind="echo", payload="refused"))
            finally:
                conn.config_set("min-replicas-to-write", 0)
        assert core.store.counts()["pending"] == 1
