"""Integration fixtures: one local Ray cluster per session plus one real embedded Redis.

The session gets its own ``HOME`` (Ray writes ``~/.ray/auth_token`` on a fresh ``ray.init``)
and its own short Ray temp dir, so it never attaches to, or disturbs, another cluster on the
machine. Ray is started without an address: private random ports, never Redis's 6379. Each test
gets a fresh raysys namespace (its own Ray namespace and Redis key prefix) through
``raysys_start``; the actors are removed and the keys dropped when the test ends.
"""

from __future__ import annotations

import secrets
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
import redis

import raysys
from raysys.client import Client
from raysys.ledger import CommitLedger, LedgerReport
from raysys.redis_server.attach import attach_or_start
from raysys.redis_server.binary import free_port
from raysys.store.keyspace import Keyspace, drop_keys
from tests.support.ray_cluster import served_data_dir, suite_ray

# The task API's token, as a deployment sets it on every node: in the environment the cluster's
# processes inherit at ray.init (never through runtime_env env_vars, which Ray logs).
API_TOKEN = "it-" + secrets.token_hex(24)


@pytest.fixture(scope="session")
def api_token() -> str:
    return API_TOKEN


@pytest.fixture(scope="session")
def http_port() -> int:
    """The one port Serve's proxy listens on for the whole session.

    Serve keeps its proxy (and the port it was first given) for the life of the cluster, so
    every test that serves the app must ask for this same port.
    """
    return free_port()


@pytest.fixture(scope="session")
def ray_cluster(tmp_path_factory: pytest.TempPathFactory) -> Iterator[None]:
    with suite_ray(tmp_path_factory, "raysys-it", temp_prefix="rsit-",
                   env={"RAYSYS_API_TOKEN": API_TOKEN}):
        yield None


@pytest.fixture(scope="session")
def data_dir(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Path]:
    """The session's embedded Redis (and keyring) directory; the server stops at the end."""
    with served_data_dir(tmp_path_factory.mktemp("raysys-data")) as path:
        yield path


@pytest.fixture
def redis_conn(data_dir: Path) -> Iterator[redis.Redis]:
    url, _ = attach_or_start(data_dir)
    client = redis.Redis.from_url(url)
    yield client
    client.close()


StartFn = Callable[..., Client]


@pytest.fixture
def raysys_start(ray_cluster: None, data_dir: Path,
                 redis_conn: redis.Redis) -> Iterator[StartFn]:
    """``raysys_start(workers=N, **overrides)``: actors in a fresh namespace, removed afterwards."""
    clients: list[Client] = []

    def make(workers: int = 2, **overrides: Any) -> Client:
        namespace = overrides.pop("namespace", f"it-{uuid.uuid4().hex[:10]}")
        client = raysys.start(workers, data_dir=data_dir, namespace=namespace, ledger=True,
                       **overrides)
        clients.append(client)
        return client

    yield make
    for client in clients:
        client.shutdown()
        drop_keys(redis_conn, Keyspace(client.namespace).pattern())
        CommitLedger(redis_conn, client.namespace).clear()


@pytest.fixture
def ledger_report(redis_conn: redis.Redis) -> Callable[[Client, list[str]], LedgerReport]:
    """The independent commit ledger's account of ``ids`` (lost, duplicate commits, ...)."""

    def report(client: Client, ids: list[str]) -> LedgerReport:
        return CommitLedger(redis_conn, client.namespace).report(ids)

    return report
