"""`ray-cluster.yaml` passes the checks `ray up` makes, offline, and keeps Ray off Redis's port."""

from __future__ import annotations

import copy
import json
import shlex
from pathlib import Path
from typing import Any

import jsonschema
import pytest
import yaml

pytestmark = pytest.mark.deploy

CLUSTER_YAML = Path(__file__).resolve().parents[2] / "ray-cluster.yaml"


def _ray_schema() -> dict[str, Any]:
    import ray.autoscaler

    schema_path = Path(ray.autoscaler.__file__).parent / "ray-schema.json"
    schema: dict[str, Any] = json.loads(schema_path.read_text(encoding="utf-8"))
    return schema


def _schema_errors(config: dict[str, Any]) -> list[str]:
    validator = jsonschema.Draft7Validator(_ray_schema())
    return [
        f"{'/'.join(map(str, error.absolute_path)) or '<root>'}: {error.message}"
        for error in sorted(validator.iter_errors(config), key=lambda e: list(e.absolute_path))
    ]


def _validate_like_ray_up(config: dict[str, Any]) -> dict[str, Any]:
    """What `ray up` does before it contacts any node: fill in defaults, then validate."""
    from ray.autoscaler._private.util import prepare_config, validate_config

    prepared: dict[str, Any] = prepare_config(copy.deepcopy(config))
    validate_config(prepared)
    return prepared


@pytest.fixture(scope="module")
def raw() -> dict[str, Any]:
    loaded = yaml.safe_load(CLUSTER_YAML.read_text(encoding="utf-8"))
    assert isinstance(loaded, dict), "ray-cluster.yaml is not a mapping"
    return loaded


def test_matches_rays_cluster_schema(raw: dict[str, Any]) -> None:
    # when the raw file is checked against the schema shipped in the installed ray
    # then there is nothing to report (errors name the path, unlike validate_config's)
    assert _schema_errors(raw) == []


def test_passes_ray_up_validation(raw: dict[str, Any]) -> None:
    # when the config is prepared and validated as `ray up` does
    prepared = _validate_like_ray_up(raw)

    # then it is a single-node local cluster on this host
    assert prepared["provider"]["type"] == "local"
    assert prepared["provider"]["head_ip"] == "127.0.0.1"
    assert prepared["provider"]["worker_ips"] == []
    assert prepared["max_workers"] == 0


def _ray_start_args(commands: list[str]) -> list[str]:
    starts = [shlex.split(c) for c in commands if "ray start" in c]
    assert len(starts) == 1, f"expected one `ray start` command, got {commands}"
    return starts[0]


def test_ray_keeps_off_the_redis_port(raw: dict[str, Any]) -> None:
    # given the head and worker start commands
    head = _ray_start_args(raw["head_start_ray_commands"])
    worker = _ray_start_args(raw["worker_start_ray_commands"])

    # then the GCS port is explicit and not Redis's, and workers join on that same port
    assert "--head" in head
    assert "--port=6380" in head
    assert not any("6379" in arg for arg in head + worker)
    assert "--address=$RAY_HEAD_IP:6380" in worker
    # and the dashboard / job API is bound to localhost on its usual port
    assert "--dashboard-host=127.0.0.1" in head
    assert "--dashboard-port=8265" in head


def test_validation_rejects_a_misspelt_key(raw: dict[str, Any]) -> None:
    # given the config with a typo in a top-level key
    broken = copy.deepcopy(raw)
    broken["head_start_ray_comands"] = broken.pop("head_start_ray_commands")

    # then both checks refuse it, and the schema check names the key
    assert any("head_start_ray_comands" in error for error in _schema_errors(broken))
    with pytest.raises(jsonschema.ValidationError):
        _validate_like_ray_up(broken)
