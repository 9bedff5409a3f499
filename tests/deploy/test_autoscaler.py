"""Ray's autoscaler adds a node when raysys asks for what a waiting kind needs.

A real head started with Ray's fake multi-node provider (``RAY_FAKE_CLUSTER=1``: the autoscaler
"launches" nodes as raylets on this machine): no node has the ``special`` resource a kind needs,
so its tasks wait pending (the Distributor holds the kind back), the Coordinator asks the
autoscaler for one bundle per pending task (``request_resources``), the autoscaler launches a
``ray.worker.special`` node, and the tasks run there. ``ray.cluster_utils.AutoscalingCluster``
does not start from the 2.60 wheel (../shared/RAY_NOTES.md); this path does.
"""

from __future__ import annotations

import json
import shutil
from pathlib import Path
from typing import Any

import pytest

from tests.support.ray_cluster import RayPorts, ray_head

pytestmark = [pytest.mark.deploy, pytest.mark.slow, pytest.mark.timeout(300)]
HERE = Path(__file__).resolve().parent / "autoscaler"


def fake_config(root: Path, ports: RayPorts) -> list[str]:
    config = root / "fake_cluster.yaml"
    text = (HERE / "fake_cluster.yaml").read_text()
    config.write_text(text.replace("GCS_ADDRESS", f'"127.0.0.1:{ports.gcs}"'))
    shutil.copy(HERE / "autoscaled_handlers.py", root / "autoscaled_handlers.py")
    return [f"--autoscaling-config={config}", "--num-cpus=2"]


def test_a_waiting_kind_makes_the_autoscaler_add_a_node_and_then_runs() -> None:
    with ray_head("rsas-", env={"RAY_FAKE_CLUSTER": "1"}, head_args=fake_config) as head:
        env = {**head.env, "RAY_ADDRESS": head.address, "PYTHONPATH": str(head.root)}
        done = head.run("python", str(HERE / "driver.py"), env=env, timeout=240)
        assert done.returncode == 0, done.stderr[-3000:]
        report: dict[str, Any] = json.loads(done.stdout.strip().splitlines()[-1])
    # then the kind waited for a node, a node with `special` joined, and every task ran on it
    assert report["seen_waiting"], report
    assert not any("special" in node for node in report["before"]), report
    assert any("special" in node for node in report["after"]), report
    assert report["states"] == ["succeeded"] * 4, report
    assert len(report["ran_on"]) >= 1, report
