"""Security fixtures: the results file, a seed, and a private Ray cluster per module.

- ``security_results``: the chaos suite's results file (``--chaos-results``, else
  ``build/chaos-results.json``); each scenario writes one row of suite ``security``
  (``security_results.py``), rendered into ``docs/RELIABILITY.md`` by ``python -m
  tests.chaos.report``.
- ``security_seed``: the seed of every random choice (``--chaos-seed`` when given, else the
  run's, shared with the chaos suite); stored in each row so a run can be replayed.
- ``security_ray``: a private local Ray cluster for one module, its own ``HOME`` and temp dir,
  ``RAYSYS_API_TOKEN`` in the environment before ``ray.init`` (the cluster's processes inherit
  it, as a deployment sets it on every node); or the cluster already running in this process
  (the integration suite's), whose token is then the one in the environment. Yields the token.
- ``security_data_dir``: an embedded Redis (and keyring) for one module's deployments.
"""

from __future__ import annotations

import os
import secrets
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.support.ray_cluster import served_data_dir, suite_ray
from tests.support.results import ResultsFile, results_file_for, run_seed


@pytest.fixture(scope="session")
def security_results(pytestconfig: pytest.Config) -> ResultsFile:
    return results_file_for(pytestconfig)


@pytest.fixture(scope="session")
def security_seed(pytestconfig: pytest.Config) -> int:
    seed = run_seed(pytestconfig)
    print(f"security seed: {seed}")
    return seed


@pytest.fixture(scope="module")
def security_ray(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str | None]:
    """A private Ray cluster for the module (or the running one); yields the API token."""
    token = "sec-" + secrets.token_hex(24)
    with suite_ray(tmp_path_factory, "raysys-security", temp_prefix="rssec-",
                   env={"RAYSYS_API_TOKEN": token}, reuse=True) as started:
        # a reused cluster (the integration suite's) has its token in the environment
        yield token if started else os.environ.get("RAYSYS_API_TOKEN")


@pytest.fixture(scope="module")
def security_data_dir(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Path]:
    """A data dir whose embedded Redis runs for the module; stopped at the end."""
    with served_data_dir(tmp_path_factory.mktemp("sec-data")) as path:
        yield path
