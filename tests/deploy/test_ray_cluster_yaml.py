"""`ray-cluster.yaml` passes the checks `ray up` makes, offline, and keeps Ray off Redis's port."""

from __future__ import annotations

import copy
import json
import re
import shlex
from pathlib import Path
from typing import Any

import jsonschema
import pytest
import yaml

from tests.support.schemas import schema_errors

pytestmark = pytest.mark.deploy

CLUSTER_YAML = Path(__file__).resolve().parents[2] / "ray-cluster.yaml"


def _ray_schema() -> dict[str, Any]:
    import ray.autoscaler

    schema_path = Path(ray.autoscaler.__file__).parent / "ray-schema.json"
    schema: dict[str, Any] = json.loads(schema_path.read_text(encoding="utf-8"))
    return schema


def _schema_errors(config: dict[str, Any]) -> list[str]:
    return schema_errors(_ray_schema(), config, separator="/")


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


def test_token_auth_is_on_and_raysys_comes_up_after_ray(raw: dict[str, Any]) -> None:
    # given the start and setup commands
    head_commands = raw["head_start_ray_commands"]
    head = _ray_start_args(head_commands)
    worker = _ray_start_args(raw["worker_start_ray_commands"])

    # then every `ray start` runs with token auth, and the token reaches every node as a file
    assert head[:3] == ["RAY_AUTH_MODE=token", "ray", "start"]
    assert worker[:3] == ["RAY_AUTH_MODE=token", "ray", "start"]
    assert raw["file_mounts"]["~/.ray/auth_token"] == "~/.ray/auth_token"
    # and later commands (raysys up, `ray exec`, jobs) get it from ~/.bashrc
    assert any("RAY_AUTH_MODE=token" in c and ".bashrc" in c for c in raw["setup_commands"])
    # and the setup installs raysys, and the head starts its actors once Ray runs
    assert any("pip install" in c and "raysys" in c for c in raw["setup_commands"])
    starts = [i for i, c in enumerate(head_commands) if "ray start" in c]
    ups = [i for i, c in enumerate(head_commands) if c.startswith("raysys up")]
    assert len(ups) == 1 and ups[0] > starts[0]
    assert "--address=127.0.0.1:6380" in head_commands[ups[0]].split()


# ---- the AWS variant in the comments ---------------------------------------------------------
def _aws_variant(raw: dict[str, Any]) -> dict[str, Any]:
    """The config with `provider`/`auth` replaced by the commented block, as its comment says."""
    text = CLUSTER_YAML.read_text(encoding="utf-8")
    match = re.search(r"^# BEGIN aws\n(.*?)^# END aws$", text, re.MULTILINE | re.DOTALL)
    assert match, "no `# BEGIN aws` ... `# END aws` block in ray-cluster.yaml"
    block = yaml.safe_load("\n".join(line[2:] for line in match.group(1).splitlines()))
    config = {k: v for k, v in copy.deepcopy(raw).items() if k not in ("provider", "auth")}
    return config | block


def test_the_aws_variant_passes_ray_up_validation(raw: dict[str, Any]) -> None:
    # given the AWS block of the comments in place of the local provider
    config = _aws_variant(raw)

    # then it matches the schema and passes `ray up`'s own validation (offline)
    assert _schema_errors(config) == []
    prepared = _validate_like_ray_up(config)
    # with explicit head and worker node types
    assert prepared["provider"]["type"] == "aws"
    assert prepared["head_node_type"] == "ray.head.default"
    assert set(prepared["available_node_types"]) == {"ray.head.default", "ray.worker.default"}


# ---- the local variant (cluster/local/), rendered as tests/deploy/test_ray_up_local.py does ----
LOCAL_TEMPLATE = CLUSTER_YAML.parent / "cluster" / "local" / "ray-cluster.local.yaml"
PLACEHOLDER = re.compile(r"@([A-Z_]+)@")
FIXED_DEFAULT_PORTS = {"6379", "6380", "8265", "10001", "52365", "8000"}


@pytest.fixture(scope="module")
def local_rendered() -> dict[str, Any]:
    template = LOCAL_TEMPLATE.read_text(encoding="utf-8")
    names = set(PLACEHOLDER.findall(template))
    values = {name: str(41000 + i) if name.endswith("_PORT") else f"/srv/test/{name.lower()}"
              for i, name in enumerate(sorted(names))}
    values |= {"CLUSTER_NAME": "raysys-test", "SSH_USER": "raysys-test",
               "SSH_PROXY_COMMAND": "python3 relay.py %h 41022"}
    loaded = yaml.safe_load(PLACEHOLDER.sub(lambda m: values[m.group(1)], template))
    assert isinstance(loaded, dict)
    return loaded


def test_the_local_variant_renders_and_passes_ray_up_validation(
        local_rendered: dict[str, Any]) -> None:
    # when the rendered local variant is checked like the top-level file
    assert _schema_errors(local_rendered) == []
    prepared = _validate_like_ray_up(local_rendered)

    # then it is a one-node local cluster reached through a proxy command
    assert prepared["provider"]["type"] == "local"
    assert prepared["max_workers"] == 0
    assert prepared["auth"]["ssh_proxy_command"].endswith("%h 41022")


def test_the_local_variant_takes_no_fixed_port_and_keeps_token_auth(
        local_rendered: dict[str, Any]) -> None:
    # given its `ray start` on the head
    head = _ray_start_args(local_rendered["head_start_ray_commands"])
    options = dict(arg.split("=", 1) for arg in head if arg.startswith("--") and "=" in arg)

    # then every port Ray would otherwise default is explicit, and none is a fixed default
    for option in ("--port", "--dashboard-port", "--ray-client-server-port",
                   "--dashboard-agent-listen-port", "--metrics-export-port", "--min-worker-port",
                   "--max-worker-port"):
        assert option in options, option
        assert options[option] not in FIXED_DEFAULT_PORTS, option
    # and its temp dir is private, and token auth is on
    assert options["--temp-dir"].startswith("/srv/test/")
    assert head[0] == "RAY_AUTH_MODE=token"
    assert local_rendered["file_mounts"]["~/.ray/auth_token"] == "/srv/test/auth_token_file"
    # and `raysys up` joins that GCS port
    assert f"--address=127.0.0.1:{options['--port']}" in " ".join(
        local_rendered["head_start_ray_commands"])
