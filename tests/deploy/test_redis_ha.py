"""Redis with replicas and Sentinel, as the manifests deploy it: its rules, and its failover.

The manifests (`cluster/kuberay/redis.yaml`, `sentinel.yaml`; `docker-compose.yml` from the same
files in `cluster/redis/`) run three Redis servers, one primary and two replicas, and three
Sentinels. Checked here, without a cluster:

- the conf files and start scripts of the ConfigMap are `cluster/redis/` word for word;
- redis.conf is durable (AOF, `appendfsync always`), never evicts, keeps task hashes compact,
  and a primary without `min-replicas-to-write` replicas refuses writes, the same number raysys
  waits for (`RAYSYS_REDIS_MIN_REPLICAS` in configmap.yaml);
- the Sentinels monitor the master raysys asks for, with a quorum of 2 of 3 that is also a
  majority; pods spread over nodes (required anti-affinity); the disruption budgets keep enough
  servers for writes and enough Sentinels for a failover;
- raysys and Ray's GCS reach Redis through the Sentinels, and the start scripts are told the
  same names the StatefulSets give their pods;
- the start scripts pick the primary as they say, and quote the password for redis.conf.

On loopback (slow): a primary, two replicas and three Sentinels run the manifests' own
directives (`RedisGroup(config="manifest")`; the Sentinels' two timeouts shortened); the primary
is killed with SIGKILL, a replica is promoted, raysys's writes carry on, and the start scripts
name the new primary to a server or Sentinel starting then.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import redis
import yaml

from raysys.config import Settings, load_settings
from raysys.core import open_core
from raysys.models import TaskSpec
from raysys.redis_server.binary import free_port
from raysys.signing.keyring import Keyring, generate_key
from tests.support.manifest_redis import (
    CONF_DIR,
    configmap_files,
    directives,
    redis_conf_text,
    sentinel_conf_text,
)
from tests.support.prerequisites import unavailable
from tests.support.sentinels import MASTER, RedisGroup, running_group

pytestmark = pytest.mark.deploy

REPO = Path(__file__).resolve().parents[2]
KUBERAY = REPO / "cluster" / "kuberay"
SECRET = {"name": "raysys-secrets", "key": "redis-password"}
HOSTNAME = "kubernetes.io/hostname"
FAILOVER_WITHIN_S = 30.0

Doc = dict[str, Any]


def _docs() -> list[Doc]:
    return [doc for path in sorted(KUBERAY.glob("*.yaml"))
            for doc in yaml.safe_load_all(path.read_text(encoding="utf-8")) if doc]


DOCS = _docs()


def the(kind: str, name: str) -> Doc:
    (found,) = [d for d in DOCS if d["kind"] == kind and d["metadata"]["name"] == name]
    return found


def settings_map() -> dict[str, str]:
    data: dict[str, str] = the("ConfigMap", "raysys-config")["data"]
    return data


def conf(text: str) -> dict[str, str]:
    """{directive: its arguments} of a conf text's single-valued directives."""
    return {name: " ".join(args) for name, args in directives(text) if name != "sentinel"}


def sentinel_options(text: str) -> dict[str, list[str]]:
    """{option: arguments} of the ``sentinel ...`` directives."""
    return {args[0]: args[1:] for name, args in directives(text) if name == "sentinel"}


def pod_spec(statefulset: str) -> Doc:
    spec: Doc = the("StatefulSet", statefulset)["spec"]["template"]["spec"]
    return spec


def env_of(statefulset: str) -> dict[str, Doc]:
    (container,) = pod_spec(statefulset)["containers"]
    return {e["name"]: e for e in container["env"]}


def pod_names(statefulset: str, port: int) -> list[str]:
    """host:port of each pod of ``statefulset``, by its governing Service's DNS name."""
    spec = the("StatefulSet", statefulset)["spec"]
    return [f"{statefulset}-{i}.{spec['serviceName']}:{port}" for i in range(spec["replicas"])]


# --- the conf files ----------------------------------------------------------------------------


def test_the_configmap_holds_cluster_redis_word_for_word() -> None:
    # given the ConfigMap the servers and Sentinels mount, and the files compose mounts
    files = configmap_files()

    # then they are the same files, with the same text
    assert sorted(files) == sorted(p.name for p in CONF_DIR.iterdir() if p.is_file())
    for name, text in files.items():
        assert text == (CONF_DIR / name).read_text(encoding="utf-8"), (
            f"cluster/kuberay/redis.yaml's {name} differs from cluster/redis/{name}")


def test_redis_conf_is_durable_compact_and_refuses_writes_without_a_replica() -> None:
    settings = conf(redis_conf_text())
    # then every write is in the AOF, fsynced, before it is acknowledged; nothing is evicted;
    # task hashes stay listpacks
    assert settings["appendonly"] == "yes"
    assert settings["appendfsync"] == "always"
    assert settings["maxmemory-policy"] == "noeviction"
    assert settings["hash-max-listpack-value"] == "1024"
    # and a primary without a replica confirming within the lag refuses writes
    needed = int(settings["min-replicas-to-write"])
    assert needed >= 1 and int(settings["min-replicas-max-lag"]) > 0
    # and raysys waits for as many replicas as the servers require
    assert int(settings_map()["RAYSYS_REDIS_MIN_REPLICAS"]) == needed
    # which the group has, with one replica to spare
    replicas = the("StatefulSet", "raysys-redis")["spec"]["replicas"]
    assert replicas >= needed + 2
    # and no secret is in the file (the start script appends it from the environment)
    assert not {"requirepass", "masterauth", "user", "masteruser"} & set(settings)


def test_sentinels_vote_two_of_three_on_the_master_raysys_asks_for() -> None:
    text = sentinel_conf_text()
    options = sentinel_options(text)
    master, host, port, quorum = options["monitor"]
    sentinels = the("StatefulSet", "raysys-sentinel")["spec"]["replicas"]
    # then raysys asks for the master the Sentinels monitor
    assert master == settings_map()["RAYSYS_REDIS_SENTINEL_MASTER"] == MASTER
    # and two of three Sentinels decide: a quorum that is also a majority, so one Sentinel
    # cut off alone, or one lost node, never promotes a replica
    assert (int(quorum), sentinels) == (2, 3)
    assert int(quorum) > sentinels // 2
    # and they fail over on their own timers
    for option in ("down-after-milliseconds", "failover-timeout", "parallel-syncs"):
        assert options[option][0] == master, option
    # and they know servers and each other by DNS name, read before the monitor line names one
    assert options["resolve-hostnames"] == ["yes"] and options["announce-hostnames"] == ["yes"]
    order = [args[0] for name, args in directives(text) if name == "sentinel"]
    assert order.index("resolve-hostnames") < order.index("monitor")
    # and the monitored host is the primary of a first start, the first server of the group
    first = env_of("raysys-redis")["GROUP_SERVERS"]["value"].split()[0]
    assert f"{host}:{port}" == first
    # and no secret is in the file
    assert not {"auth-pass", "auth-user", "sentinel-pass"} & set(options)
    assert "requirepass" not in conf(text)


@pytest.mark.parametrize("statefulset", ["raysys-redis", "raysys-sentinel"])
def test_three_pods_each_on_its_own_node(statefulset: str) -> None:
    spec = the("StatefulSet", statefulset)["spec"]
    labels = spec["template"]["metadata"]["labels"]
    # then there are three, and no two may share a node
    assert spec["replicas"] == 3
    (term,) = spec["template"]["spec"]["affinity"]["podAntiAffinity"][
        "requiredDuringSchedulingIgnoredDuringExecution"]
    assert term["topologyKey"] == HOSTNAME
    assert term["labelSelector"]["matchLabels"].items() <= labels.items()
    # and each keeps its state on a volume of its own
    (claim,) = spec["volumeClaimTemplates"]
    (container,) = spec["template"]["spec"]["containers"]
    assert {"name": claim["metadata"]["name"], "mountPath": "/data"} in container["volumeMounts"]


def test_disruption_budgets_keep_writes_and_failovers_possible() -> None:
    budgets = {d["spec"]["selector"]["matchLabels"].get("app.kubernetes.io/name"): d["spec"]
               for d in DOCS if d["kind"] == "PodDisruptionBudget"}
    needed = int(conf(redis_conf_text())["min-replicas-to-write"])
    quorum = int(sentinel_options(sentinel_conf_text())["monitor"][3])
    servers = the("StatefulSet", "raysys-redis")["spec"]["replicas"]
    sentinels = the("StatefulSet", "raysys-sentinel")["spec"]["replicas"]
    # then a drain leaves a primary and the replicas it needs to take writes
    redis_min = budgets["raysys-redis"]["minAvailable"]
    assert needed + 1 <= redis_min < servers
    # and enough Sentinels to agree a primary is down and to elect the one that fails over
    sentinel_min = budgets["raysys-sentinel"]["minAvailable"]
    assert max(quorum, sentinels // 2 + 1) <= sentinel_min < sentinels


# --- how everyone finds everyone ---------------------------------------------------------------


@pytest.mark.usefixtures("no_settings_variables")
def test_raysys_finds_the_primary_through_every_sentinel() -> None:
    # given the ConfigMap every raysys pod reads its settings from, and a password
    data = settings_map()
    settings = Settings.model_validate(
        {**data, "REDIS_PASSWORD": "x" * 32, "RAYSYS_REDIS_SENTINEL_PASSWORD": "x" * 32})

    # then raysys asks each Sentinel pod by its DNS name, and no fixed Redis address
    sentinel_port = int(conf(sentinel_conf_text())["port"])
    expected = [tuple(p.rsplit(":", 1)) for p in pod_names("raysys-sentinel", sentinel_port)]
    assert [(h, str(p)) for h, p in settings.sentinel_endpoints()] == expected
    assert settings.redis_url is None and settings.redis_host is None
    assert settings.redis_min_replicas >= 1


def test_ray_gcs_reaches_a_ready_sentinel_through_one_service() -> None:
    service = the("Service", "raysys-sentinel")["spec"]
    sentinel_port = int(conf(sentinel_conf_text())["port"])
    # then the Service balances over the Sentinel pods (not headless: only ready ones)
    assert service.get("clusterIP") != "None"
    labels = the("StatefulSet", "raysys-sentinel")["spec"]["template"]["metadata"]["labels"]
    assert service["selector"].items() <= labels.items()
    assert [p["port"] for p in service["ports"]] == [sentinel_port]
    # and both cluster specs point Ray's GCS at it
    for spec in (the("RayCluster", "raysys")["spec"],
                 the("RayService", "raysys")["spec"]["rayClusterConfig"]):
        address = spec["gcsFaultToleranceOptions"]["redisAddress"]
        assert address == f"raysys-sentinel:{sentinel_port}"


def test_every_raysys_pod_has_the_password_for_servers_and_sentinels() -> None:
    # given every container that reads raysys's settings
    containers = []
    for doc in DOCS:
        stack: list[Any] = [doc]
        while stack:
            node = stack.pop()
            if isinstance(node, dict):
                if {"configMapRef": {"name": "raysys-config"}} in node.get("envFrom", []):
                    containers.append((doc["kind"], node))
                stack.extend(node.values())
            elif isinstance(node, list):
                stack.extend(node)
    assert len(containers) >= 5  # two heads, two worker groups, the snapshot CronJob

    # then each has the Sentinels' password and the servers' (KubeRay gives it to the heads
    # from gcsFaultToleranceOptions, which may not be given twice), both the Secret's
    for kind, container in containers:
        env = {e["name"]: e for e in container.get("env", [])}
        assert env["RAYSYS_REDIS_SENTINEL_PASSWORD"]["valueFrom"]["secretKeyRef"] == SECRET
        if container["name"] != "ray-head":
            assert env["REDIS_PASSWORD"]["valueFrom"]["secretKeyRef"] == SECRET, kind
        assert "RAYSYS_REDIS_URL" not in env, f"{kind}: a URL bypasses the Sentinels"


@pytest.mark.parametrize(("statefulset", "conf_name", "script"), [
    ("raysys-redis", "redis.conf", "redis-start.sh"),
    ("raysys-sentinel", "sentinel.conf", "sentinel-start.sh"),
])
def test_start_scripts_know_the_group_by_the_pods_names(statefulset: str, conf_name: str,
                                                        script: str) -> None:
    spec = the("StatefulSet", statefulset)["spec"]
    pod = spec["template"]["spec"]
    (container,) = pod["containers"]
    env = env_of(statefulset)
    port = int(conf(configmap_files()[conf_name])["port"])
    redis_port = int(conf(redis_conf_text())["port"])
    sentinel_port = int(conf(sentinel_conf_text())["port"])
    # then the container runs the ConfigMap's start script
    assert container["command"] == ["sh", f"/etc/raysys-redis/{script}"]
    mounts = {m["name"]: m for m in container["volumeMounts"]}
    (conf_volume,) = [v for v in pod["volumes"] if "configMap" in v]
    assert conf_volume["configMap"]["name"] == "raysys-redis-conf"
    assert mounts[conf_volume["name"]]["mountPath"] == "/etc/raysys-redis"
    assert mounts[conf_volume["name"]]["readOnly"] is True
    # and listens where its conf says
    assert [p["containerPort"] for p in container["ports"]] == [port]
    # and announces the name its governing Service gives the pod
    assert env["POD_NAME"]["valueFrom"]["fieldRef"]["fieldPath"] == "metadata.name"
    assert env["ANNOUNCE_HOST"]["value"] == f"$(POD_NAME).{spec['serviceName']}"
    service = the("Service", spec["serviceName"])["spec"]
    assert service["clusterIP"] == "None" and service["publishNotReadyAddresses"] is True
    # and names every server and Sentinel the way the StatefulSets name their pods
    assert env["GROUP_SERVERS"]["value"].split() == pod_names("raysys-redis", redis_port)
    assert env["GROUP_SENTINELS"]["value"].split() == pod_names("raysys-sentinel",
                                                                sentinel_port)
    # and has the password from the Secret
    assert env["REDIS_PASSWORD"]["valueFrom"]["secretKeyRef"] == SECRET


# --- the start scripts, run ----------------------------------------------------------------------


@pytest.fixture
def scripts(tmp_path: Path) -> Path:
    """The ConfigMap's files in a folder, their data directory moved under ``tmp_path``."""
    for tool in ("redis-cli", "timeout", "sh"):
        if shutil.which(tool) is None:
            unavailable(f"the start scripts need {tool} on PATH")
    folder = tmp_path / "conf"
    folder.mkdir()
    for name, text in configmap_files().items():
        if name.endswith(".conf"):
            text = text.replace("\ndir /data\n", f"\ndir {tmp_path / 'data'}\n")
            assert f"dir {tmp_path}" in text, name
        (folder / name).write_text(text, encoding="utf-8")
    (tmp_path / "data").mkdir()
    return folder


def run_script(folder: Path, script: str, **env: str) -> list[str]:
    """``sh SCRIPT --print`` with ``env``: the configuration it would start with."""
    done = subprocess.run(["sh", str(folder / script), "--print"], capture_output=True,
                          text=True, timeout=60, check=False,
                          env={"PATH": os.environ["PATH"], **env})
    assert done.returncode == 0, done.stderr
    return done.stdout.splitlines()


def test_first_start_the_first_server_is_primary_and_the_password_is_quoted(
        scripts: Path) -> None:
    # given no Sentinel answering and an empty data directory (the group's first start)
    group = {"GROUP_SERVERS": "s0:6379 s1:6379 s2:6379",
             "GROUP_SENTINELS": f"127.0.0.1:{free_port()}",
             "REDIS_PASSWORD": 'a"b\\c d'}

    # when the first and the second server start
    first = run_script(scripts, "redis-start.sh", ANNOUNCE_HOST="s0", **group)
    second = run_script(scripts, "redis-start.sh", ANNOUNCE_HOST="s1", **group)

    # then the first is the primary and the second replicates it
    assert not [line for line in first if line.startswith("replicaof")]
    assert "replicaof s0 6379" in second
    # and each runs every directive of redis.conf, announces its name, and has the password
    # quoted the way redis.conf reads it
    base = directives((scripts / "redis.conf").read_text(encoding="utf-8"))
    for lines, name in ((first, "s0"), (second, "s1")):
        assert directives("\n".join(lines))[:len(base)] == base
        assert f"replica-announce-ip {name}" in lines
        assert 'requirepass "a\\"b\\\\c d"' in lines and 'masterauth "a\\"b\\\\c d"' in lines


def test_a_sentinel_falls_back_on_what_it_remembers_then_on_the_first_server(
        scripts: Path) -> None:
    # (nothing answers on these ports)
    group = {"GROUP_SERVERS": f"127.0.0.1:{free_port()} 127.0.0.1:{free_port()}",
             "GROUP_SENTINELS": f"127.0.0.1:{free_port()}", "REDIS_PASSWORD": "pw",
             "ANNOUNCE_HOST": "sentinel-0"}
    first_server = group["GROUP_SERVERS"].split()[0].replace(":", " ")

    # given no other Sentinel and no server answering, and no state: the first server
    lines = run_script(scripts, "sentinel-start.sh", **group)
    assert f"sentinel monitor {MASTER} {first_server} 2" in lines
    assert [f"sentinel auth-pass {MASTER} \"pw\"", "sentinel announce-ip sentinel-0"] == [
        line for line in lines if line.startswith(("sentinel auth-pass", "sentinel announce-ip"))]
    assert 'requirepass "pw"' in lines

    # given the file a Sentinel rewrote after a failover to s1
    myid = "0123456789abcdef0123456789abcdef01234567"
    data = Path(conf((scripts / "sentinel.conf").read_text())["dir"])
    (data / "sentinel.conf").write_text(
        f"sentinel monitor {MASTER} s1 6379 2\nsentinel myid {myid}\n")

    # then it monitors the primary it remembers, under the id it had
    lines = run_script(scripts, "sentinel-start.sh", **group)
    assert f"sentinel monitor {MASTER} s1 6379 2" in lines
    assert f"sentinel myid {myid}" in lines


# --- on loopback: the manifests' configuration fails over --------------------------------------


@pytest.fixture
def manifest_group(tmp_path: Path) -> Iterator[RedisGroup]:
    with running_group(tmp_path / "redis", config="manifest") as group:
        yield group


@pytest.mark.slow
@pytest.mark.usefixtures("no_settings_variables")
def test_the_manifests_configuration_fails_over_and_keeps_taking_writes(
        manifest_group: RedisGroup, scripts: Path, tmp_path: Path) -> None:
    group = manifest_group
    min_replicas = int(settings_map()["RAYSYS_REDIS_MIN_REPLICAS"])
    settings = load_settings(redis_sentinels=group.sentinels, redis_sentinel_master=MASTER,
                             redis_min_replicas=min_replicas, data_dir=tmp_path / "raysys")
    with open_core(settings, namespace="ha-manifest",
                   keyring=Keyring([generate_key()])) as core:
        # given servers that run the manifest's redis.conf, and a task acknowledged once a
        # replica holds it (RAYSYS_REDIS_MIN_REPLICAS as the ConfigMap sets it)
        old = group.primary()
        with redis.Redis(port=old.port, decode_responses=True) as conn:
            expected = conf(redis_conf_text())
            for name in ("min-replicas-to-write", "min-replicas-max-lag", "appendfsync",
                         "maxmemory-policy", "hash-max-listpack-value"):
                assert conn.config_get(name) == {name: expected[name]}
        first = core.store.submit(TaskSpec.build(kind="echo", payload="before"))

        # when the primary is killed with SIGKILL, and a task is submitted at once
        began = time.monotonic()
        old.kill()
        second = core.store.submit(TaskSpec.build(kind="echo", payload="after"))
        took = time.monotonic() - began

        # then a replica was promoted, and took the write (after the failover) in time
        new = group.wait_new_primary(old, timeout=FAILOVER_WITHIN_S)
        assert took < FAILOVER_WITHIN_S
        assert core.client.info("server")["tcp_port"] == new.port
        # and it holds both tasks: the one acknowledged before the kill was on a replica
        leases = core.store.acquire("w1", 10, ttl_s=30)
        assert sorted(lease.task_id for lease in leases) == sorted([first, second])

    # and a server or Sentinel starting now is given the new primary by its start script
    sentinels = " ".join(f"127.0.0.1:{port}" for port in group.sentinel_ports)
    servers = " ".join(f"127.0.0.1:{server.port}" for server in group.servers)
    env = {"GROUP_SERVERS": servers, "GROUP_SENTINELS": sentinels, "REDIS_PASSWORD": "unused"}
    lines = run_script(scripts, "redis-start.sh", ANNOUNCE_HOST="127.0.0.1", **env)
    assert f"replicaof 127.0.0.1 {new.port}" in lines
    lines = run_script(scripts, "sentinel-start.sh", ANNOUNCE_HOST="sentinel-x", **env)
    assert f"sentinel monitor {MASTER} 127.0.0.1 {new.port} 2" in lines
    # and, with no Sentinel answering, a Sentinel takes the server that says it is the master
    env["GROUP_SENTINELS"] = f"127.0.0.1:{free_port()}"
    lines = run_script(scripts, "sentinel-start.sh", ANNOUNCE_HOST="sentinel-x", **env)
    assert f"sentinel monitor {MASTER} 127.0.0.1 {new.port} 2" in lines
