"""raysys on a Ray cluster of several nodes (``ray.cluster_utils.Cluster`` on this machine):
workers spread over nodes, a kind placed only where its resource is, a kind no node can place
held back until one can, time limits and cancels that stop Ray tasks, a pool that follows the
backlog, a stuck worker replaced, and nodes removed mid-run with nothing lost and nothing
committed twice.

The scenarios run in a process of their own (:mod:`tests.integration.multinode_session`: one
Python process holds one Ray connection); each test asserts on what its scenario recorded.
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

from tests.support.processes import clean_env

pytestmark = [pytest.mark.integration, pytest.mark.slow, pytest.mark.timeout(600)]
ROOT = Path(__file__).resolve().parents[2]


@pytest.fixture(scope="module")
def session(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Any]:
    out = tmp_path_factory.mktemp("multinode") / "results.json"
    # no RAY_* of this process's cluster (its token, its auth mode) nor raysys settings
    done = subprocess.run([sys.executable, "-m", "tests.integration.multinode_session",
                           str(out)], cwd=ROOT, env=clean_env(ray=True), capture_output=True,
                          text=True, timeout=540, check=False)
    assert done.returncode == 0 and out.exists(), done.stderr[:3000] + done.stderr[-3000:]
    results: dict[str, Any] = json.loads(out.read_text())
    return results


def scenario(session: dict[str, Any], name: str) -> dict[str, Any]:
    result = session[name]
    assert "failure" not in result, result.get("failure")
    return result


def test_workers_spread_over_nodes(session: dict[str, Any]) -> None:
    result = scenario(session, "workers_spread")
    assert result["workers"] == 3
    assert len(result["worker_nodes"]) >= 2  # SPREAD: not all on one node


def test_a_kind_that_needs_a_custom_resource_runs_only_on_that_node(
        session: dict[str, Any]) -> None:
    result = scenario(session, "placement")
    assert result["special_nodes"] == [result["node_b"]]
    assert result["special_states"] == result["inline_states"] == ["succeeded"]


def test_a_kind_no_node_can_place_waits_pending_and_runs_once_a_node_can(
        session: dict[str, Any]) -> None:
    result = scenario(session, "waiting_for_a_node")
    assert result["before"] == ["pending"]
    assert result["status_waiting"].startswith("waiting for resources")
    assert result["after"] == ["succeeded"] and result["ran_on"] == [result["nowhere_node"]]


def test_a_ray_task_past_its_limit_is_stopped(session: dict[str, Any]) -> None:
    result = scenario(session, "time_limit_stops_a_ray_task")
    assert result["state"] == "dead" and result["error"] == "timed out after 1 s"
    assert result["stopped_after_s"] < 10  # generous: the limit is 1 s


def test_cancel_force_cancels_a_running_ray_task(session: dict[str, Any]) -> None:
    result = scenario(session, "cancel_stops_a_ray_task")
    assert (result["before"], result["state"]) == ("leased", "cancelled")


def test_the_pool_grows_with_the_backlog_and_shrinks_back_when_idle(
        session: dict[str, Any]) -> None:
    result = scenario(session, "pool_follows_the_backlog")
    assert result["start"] == 1 and result["largest"] == 3  # MIN 1, MAX 3
    assert (result["lost"], result["duplicate_commits"], result["succeeded"]) == (0, 0, 600)


def test_a_worker_stuck_in_every_slot_is_replaced(session: dict[str, Any]) -> None:
    result = scenario(session, "stuck_worker_replaced")
    assert result["stuck_states"] == ["dead", "dead"]  # timed out, no retry (max_attempts 1)
    assert result["new_pid"] != result["old_pid"]
    assert result["after"] == ["succeeded"]


def test_removing_a_node_running_ray_tasks_loses_nothing(session: dict[str, Any]) -> None:
    result = scenario(session, "ray_task_node_removed")
    assert result["states"] == ["succeeded"]
    assert (result["lost"], result["duplicate_commits"], result["succeeded"]) == (0, 0, 120)


def test_removing_a_node_with_a_worker_actor_loses_nothing(session: dict[str, Any]) -> None:
    result = scenario(session, "worker_node_removed")
    assert result["victims"], "no worker ran on the removed node"
    assert result["states"] == ["succeeded"]
    assert (result["lost"], result["duplicate_commits"], result["succeeded"]) == (0, 0, 1200)
