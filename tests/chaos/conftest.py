"""Chaos fixtures: a Ray cluster per module, the attempt-record Redis, and raysys deployments.

Options (registered in tests/conftest.py, e.g. ``pytest tests/chaos --chaos-seed 1234``):

- ``--chaos-seed N``: the seed of every random choice (victims, kill times); default: random.
  The seed is printed in the header and the summary, and stored in each results row, so a
  failing run can be replayed.
- ``--chaos-results PATH``: where each scenario writes its measured row (default
  ``build/chaos-results.json`` under the repository); ``python -m tests.chaos.report`` turns
  the file into ``docs/RELIABILITY.md``.

The Ray cluster is private (its own ``HOME`` and temp dir, like ``tests/integration``) and
module-scoped, so it is shut down before the integration suite's session cluster starts in the
same pytest run; when a cluster is already up in this process (the integration one), it is
reused. The repository root goes on ``PYTHONPATH`` before ``ray.init`` so every Ray worker can
import the chaos handlers (``tests.chaos.chaos_handlers``).
"""

from __future__ import annotations

import contextlib
import os
import random
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import redis

import raysys
from raysys.ledger import CommitLedger
from raysys.redis_server.attach import attach_or_start
from raysys.redis_server.embedded import EmbeddedRedis
from raysys.store.keyspace import Keyspace, drop_keys
from tests.chaos.harness import HANDLER_MODULE, AttemptLog, DeployFn, Deployment
from tests.support.ray_cluster import served_data_dir, suite_ray
from tests.support.results import ResultsFile, results_file_for, run_seed

REPO_ROOT = Path(__file__).resolve().parents[2]


def pytest_report_header(config: pytest.Config) -> str:
    seed = run_seed(config)
    return f"chaos seed: {seed} (replay: pytest tests/chaos --chaos-seed {seed})"


def pytest_terminal_summary(terminalreporter: Any, config: pytest.Config) -> None:
    if getattr(config, "_chaos_seed", None) is not None:
        seed = run_seed(config)
        terminalreporter.write_line(f"chaos seed: {seed} (replay: pytest tests/chaos "
                                    f"--chaos-seed {seed})")


@pytest.fixture(scope="session")
def chaos_seed(pytestconfig: pytest.Config) -> int:
    return run_seed(pytestconfig)


@pytest.fixture
def chaos_rng(chaos_seed: int, request: pytest.FixtureRequest) -> random.Random:
    """A generator seeded by the suite seed and the test's name: replayable per scenario."""
    return random.Random(f"{chaos_seed}/{request.node.name}")


@pytest.fixture(scope="session")
def results_file(pytestconfig: pytest.Config) -> ResultsFile:
    return results_file_for(pytestconfig)


# ---- Ray ----------------------------------------------------------------------------------------
@pytest.fixture(scope="module")
def chaos_ray(tmp_path_factory: pytest.TempPathFactory) -> Iterator[None]:
    """A private local Ray cluster for one module (or the one already running here).

    At teardown the process is left as a fresh one would be, so a later ``ray.init`` here
    (the next module's, the integration suite's) starts cleanly: ``ray.init`` sets
    ``RAY_AUTH_MODE=token`` in this process and caches the token it wrote under ``HOME``, and a
    second cluster under another ``HOME`` would otherwise start without a token and die.
    """
    path = os.pathsep.join(p for p in (str(REPO_ROOT), os.environ.get("PYTHONPATH")) if p)
    with suite_ray(tmp_path_factory, "raysys-chaos", temp_prefix="rsch-",
                   env={"PYTHONPATH": path}, reuse=True):  # or the integration suite's
        yield None


# ---- Redis servers ------------------------------------------------------------------------------
@pytest.fixture(scope="session")
def record_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[EmbeddedRedis]:
    """The attempt record's Redis: apart from the raysys Redis the scenarios break."""
    server = EmbeddedRedis(tmp_path_factory.mktemp("chaos-record"), password=None,
                           appendfsync="no")
    server.start()
    yield server
    server.stop()


@pytest.fixture(scope="session")
def chaos_data_dir(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Path]:
    """The session's embedded raysys Redis (and keyring) for scenarios that do not break it."""
    with served_data_dir(tmp_path_factory.mktemp("chaos-data")) as path:
        yield path


# ---- deployments --------------------------------------------------------------------------------
@pytest.fixture
def chaos_deploy(chaos_ray: None, chaos_data_dir: Path, record_server: EmbeddedRedis,
                 redis_server_factory: Any) -> Iterator[DeployFn]:
    """``chaos_deploy(workers, *, data_dir=None, conn=None, batch=10, concurrency=1,
    max_prefetch=19, ledger_url=None, **settings)``: a worker runs ``concurrency`` tasks at
    once and holds at most concurrency + max_prefetch leases (the scenarios' default: one at a
    time, 20 held); ``ledger_url`` puts the commit ledger on a Redis of its own.

    Starts raysys (ledger on, the chaos handlers registered, a fresh namespace) on the session's
    embedded Redis, or on the one serving ``data_dir``, or on a configured Redis
    (``redis_host``/``redis_port`` settings; then pass ``conn``, a client on it). Everything is
    removed at teardown (actors, workers a test started itself in the namespace included, the
    namespace's keys, the ledger, the attempt record). Depends on ``redis_server_factory`` so
    servers a test starts with it outlive the deployment.
    """
    made: list[Deployment] = []
    servers: list[EmbeddedRedis] = []
    record_client = redis.Redis(host="127.0.0.1", port=record_server.port)

    def deploy(workers: int, *, data_dir: Path | None = None, conn: redis.Redis | None = None,
               batch: int = 10, concurrency: int = 1, max_prefetch: int = 19,
               ledger_url: str | None = None, **settings: Any) -> Deployment:
        data_dir = data_dir or chaos_data_dir
        namespace = settings.pop("namespace", f"chaos-{uuid.uuid4().hex[:10]}")
        settings.setdefault("handlers", HANDLER_MODULE)
        settings.setdefault("lease_ttl_s", 2.0)
        settings.setdefault("reaper_interval_s", 0.5)
        if conn is None:
            url, server = attach_or_start(data_dir)
            if server is not None:  # a data dir nobody served yet: ours to stop
                servers.append(server)
            conn = redis.Redis.from_url(url)
        client = raysys.start(workers, batch=batch, concurrency=concurrency,
                              max_prefetch=max_prefetch, ledger=True, ledger_url=ledger_url,
                              data_dir=data_dir, namespace=namespace, **settings)
        log = AttemptLog(record_client, f"chaos:attempts:{namespace}", namespace)
        deployment = Deployment(client, conn, log, Path(data_dir), settings["lease_ttl_s"],
                                settings["reaper_interval_s"], client.config.capacity,
                                redis.Redis.from_url(ledger_url) if ledger_url else None)
        made.append(deployment)
        return deployment

    yield deploy
    for deployment in made:
        deployment.client.shutdown()  # removes every named actor of the namespace
        deployment.log.delete()
        with contextlib.suppress(redis.RedisError):
            drop_keys(deployment.conn, Keyspace(deployment.namespace).pattern())
            CommitLedger(deployment.ledger or deployment.conn, deployment.namespace).clear()
        deployment.conn.close()
    for server in servers:
        server.stop()
    record_client.close()
