"""Security fixtures: the results file, a seed, and a private Ray cluster per module.

- ``security_results``: the chaos suite's results file (``--chaos-results`` when the chaos
  conftest registered it, else ``build/chaos-results.json``); each scenario writes one row of
  suite ``security`` (``security_results.py``), rendered into ``docs/RELIABILITY.md`` by
  ``python -m tests.chaos.report``.
- ``security_seed``: the seed of every random choice (``--chaos-seed`` when given); stored in
  each row so a run can be replayed.
- ``security_ray``: a private local Ray cluster for one module, its own ``HOME`` and temp dir,
  ``RAYSYS_API_TOKEN`` in the environment before ``ray.init`` (the cluster's processes inherit
  it, as a deployment sets it on every node); or the cluster already running in this process
  (the integration suite's), whose token is then the one in the environment. Yields the token.
- ``security_data_dir``: an embedded Redis (and keyring) for one module's deployments.
"""

from __future__ import annotations

import os
import random
import secrets
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.cluster_harness import private_ray, served_data_dir
from tests.security.security_results import ResultsFile

REPO_ROOT = Path(__file__).resolve().parents[2]
DEFAULT_RESULTS = REPO_ROOT / "build" / "chaos-results.json"


@pytest.fixture(scope="session")
def security_results(pytestconfig: pytest.Config) -> ResultsFile:
    # The chaos conftest registers the option; without it (tests/security alone), the default.
    given = pytestconfig.getoption("--chaos-results", default=None)
    return ResultsFile(Path(given) if given else DEFAULT_RESULTS)


@pytest.fixture(scope="session")
def security_seed(pytestconfig: pytest.Config) -> int:
    given = pytestconfig.getoption("--chaos-seed", default=None)
    seed = int(given) if given is not None else random.SystemRandom().randrange(2**31)
    print(f"security seed: {seed}")
    return seed


@pytest.fixture(scope="module")
def security_ray(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str | None]:
    """A private Ray cluster for the module (or the running one); yields the API token."""
    ray = pytest.importorskip("ray")
    if ray.is_initialized():  # the integration suite's session cluster: use it, leave it
        yield os.environ.get("RAYSYS_API_TOKEN")
        return
    token = "sec-" + secrets.token_hex(24)
    with private_ray(tmp_path_factory.mktemp("home"), "raysys-security", temp_prefix="rssec-",
                     env={"RAYSYS_API_TOKEN": token}):
        yield token


@pytest.fixture(scope="module")
def security_data_dir(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Path]:
    """A data dir whose embedded Redis runs for the module; stopped at the end."""
    with served_data_dir(tmp_path_factory.mktemp("sec-data")) as path:
        yield path
