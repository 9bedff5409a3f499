"""The KubeRay manifests in `cluster/kuberay/` are valid and keep the rules DESIGN.md sets.

- ray.io kinds validate against the CRD schemas in `$RAYSYS_SCHEMA_DIR/kuberay/` (default
  `../shared/schemas` beside the repository), made strict: an object schema with `properties`
  and no `x-kubernetes-preserve-unknown-fields` is closed, so a misspelt field fails as the API
  server's pruning would silently drop it. CEL rules and the operator's Go checks are not covered.
- Core kinds validate with `kubernetes-validate` (strict schemas of one Kubernetes version).
- The RayService's serveConfigV2 parses with Ray Serve's own schema, unknown keys refused.
- Rules: no real secret in the template, secrets only through secretKeyRef or a read-only mount,
  no liveness probe on /health or /-/healthz and KubeRay's probes left alone, rayStartParams
  values are strings, every Ray pod drains through preStop within its grace period, only raysys
  pods reach Redis and its Sentinels, and the names used (env vars, CLI) are DESIGN's. The Redis
  group itself (replicas, Sentinel, its conf files) is tests/deploy/test_redis_ha.py's.

Without the schema folder these tests fail under CI=true and skip elsewhere (a user's clone has
no ../shared).
"""

from __future__ import annotations

import argparse
import copy
import importlib
import math
import re
import shlex
import tomllib
from collections import Counter
from collections.abc import Iterator
from functools import cache
from pathlib import Path
from typing import Any

import jsonschema
import pytest
import yaml

from tests.support.manifest_redis import directives, redis_conf_text
from tests.support.schemas import schema_dir, schema_errors

pytestmark = pytest.mark.deploy

REPO = Path(__file__).resolve().parents[2]
KUBERAY = REPO / "cluster" / "kuberay"
DEPLOY_DOC = REPO / "docs" / "DEPLOY.md"
# Kubernetes version the core kinds are checked against (kubernetes-validate ships its schemas).
K8S_VERSION = "1.33"
SERVE_IMPORT_PATH = "raysys.serve.app:app"
SECRET_NAME = "raysys-secrets"
CONFIGMAP_NAME = "raysys-config"
PLACEHOLDER = "CHANGE-ME"
RAYSYS_LABEL = ("app.kubernetes.io/part-of", "raysys")
# Env names whose value is a credential (or carries one, like a Redis URL with its password).
SECRET_NAME_RE = re.compile(r"PASSWORD|TOKEN|SECRET|CREDENTIAL|PRIVATE|_KEYS?$|REDIS_URL")
HEALTH_PATHS = ("/health", "/-/healthz")

Doc = dict[str, Any]

_Loader = getattr(yaml, "CSafeLoader", yaml.SafeLoader)


# --- loading -----------------------------------------------------------------------------------




def _load_docs() -> list[tuple[str, Doc]]:
    docs = []
    for path in sorted(KUBERAY.glob("*.yaml")):
        for doc in yaml.safe_load_all(path.read_text(encoding="utf-8")):
            if doc is not None:
                docs.append((path.name, doc))
    return docs


DOCS = _load_docs()
RAY_DOCS = [(f, d) for f, d in DOCS if str(d.get("apiVersion", "")).startswith("ray.io/")]
CORE_DOCS = [(f, d) for f, d in DOCS if not str(d.get("apiVersion", "")).startswith("ray.io/")]


def _ids(docs: list[tuple[str, Doc]]) -> list[str]:
    return [f"{f}:{d.get('kind')}/{d.get('metadata', {}).get('name')}" for f, d in docs]


def the(kind: str, name: str | None = None) -> Doc:
    """The one manifest of ``kind`` (and ``name``)."""
    found = [d for _, d in DOCS
             if d.get("kind") == kind and (name is None or d["metadata"]["name"] == name)]
    assert len(found) == 1, f"expected one {kind} {name or ''} in cluster/kuberay, got {len(found)}"
    return found[0]


def cluster_specs() -> list[tuple[str, Doc]]:
    """Every RayCluster spec: the RayCluster's own and the RayService's rayClusterConfig."""
    return [("RayCluster", the("RayCluster")["spec"]),
            ("RayService", the("RayService")["spec"]["rayClusterConfig"])]


def pod_templates(spec: Doc) -> Iterator[tuple[str, Doc, Doc]]:
    """(group name, group spec, pod template) of the head and every worker group."""
    yield "head", spec["headGroupSpec"], spec["headGroupSpec"]["template"]
    for group in spec.get("workerGroupSpecs", []):
        yield group["groupName"], group, group["template"]


def ray_container(template: Doc) -> Doc:
    container: Doc = template["spec"]["containers"][0]  # KubeRay's Ray container is the first
    return container


def walk(node: Any) -> Iterator[Any]:
    yield node
    if isinstance(node, dict):
        for value in node.values():
            yield from walk(value)
    elif isinstance(node, list):
        for value in node:
            yield from walk(value)


def all_containers(doc: Doc) -> Iterator[Doc]:
    for node in walk(doc):
        if isinstance(node, dict):
            for key in ("containers", "initContainers"):
                if isinstance(node.get(key), list):
                    yield from node[key]


def allowed_env_names() -> set[str]:
    """Every raysys variable: `.env.example` lists them all (DESIGN.md, "Configuration")."""
    text = (REPO / ".env.example").read_text(encoding="utf-8")
    return set(re.findall(r"^#?\s*([A-Z][A-Z0-9_]*)=", text, flags=re.MULTILINE))


def is_raysys_name(name: str) -> bool:
    return name.startswith(("RAYSYS_", "REDIS_")) or name in {
        "LOG_LEVEL", "COORDINATOR_ID", "DISTRIBUTOR_ID", "WORKER_ID"}


def project_version() -> str:
    doc = tomllib.loads((REPO / "pyproject.toml").read_text(encoding="utf-8"))
    version: str = doc["project"]["version"]
    return version


# --- strict CRD validation ---------------------------------------------------------------------

_SCHEMA_MAPS = ("properties", "patternProperties", "definitions", "$defs")
_SUBSCHEMAS = ("items", "additionalProperties", "additionalItems", "not", "allOf", "anyOf",
               "oneOf", "if", "then", "else", "contains", "propertyNames")


def strict(schema: Any) -> Any:
    """A copy of ``schema`` with every object that has ``properties`` closed to other keys.

    Objects that declare ``additionalProperties`` (maps such as labels) or
    ``x-kubernetes-preserve-unknown-fields`` stay as they are. Keywords holding data rather than
    schemas (``default``, ``enum``, ``x-kubernetes-*``) are copied untouched.
    """
    if isinstance(schema, list):
        return [strict(item) for item in schema]
    if not isinstance(schema, dict):
        return schema
    out: dict[str, Any] = {}
    for key, value in schema.items():
        if key in _SCHEMA_MAPS and isinstance(value, dict):
            out[key] = {name: strict(sub) for name, sub in value.items()}
        elif key in _SUBSCHEMAS:
            out[key] = strict(value)
        else:
            out[key] = value
    if ("properties" in out and "additionalProperties" not in out
            and not out.get("x-kubernetes-preserve-unknown-fields")):
        out["additionalProperties"] = False
    return out


@cache
def crd_schemas() -> dict[str, dict[str, Any]]:
    """{kind: openAPIV3Schema of its ray.io/v1 version} from every CRD in the schema folder."""
    found: dict[str, dict[str, Any]] = {}
    for path in sorted(schema_dir("kuberay").glob("*.yaml")):
        crd = yaml.load(path.read_text(encoding="utf-8"), Loader=_Loader)
        if not isinstance(crd, dict) or crd.get("kind") != "CustomResourceDefinition":
            continue
        for version in crd["spec"]["versions"]:
            if version["name"] == "v1":
                found[crd["spec"]["names"]["kind"]] = version["schema"]["openAPIV3Schema"]
    assert found, f"no CustomResourceDefinition with a v1 version in {schema_dir('kuberay')}"
    return found


@cache
def _validator(kind: str, closed: bool) -> jsonschema.Draft7Validator:
    schemas = crd_schemas()
    assert kind in schemas, f"no CRD schema for kind {kind}; have {sorted(schemas)}"
    schema = strict(schemas[kind]) if closed else schemas[kind]
    return jsonschema.Draft7Validator(schema)


def crd_errors(doc: Doc, *, closed: bool = True) -> list[str]:
    return schema_errors(_validator(doc["kind"], closed), doc)


def test_the_manifest_set_is_complete() -> None:
    # then every file the deployment needs is there, and every document names itself
    names = {path.name for path in KUBERAY.glob("*.yaml")}
    assert names >= {"raycluster.yaml", "rayservice.yaml", "rayjob.yaml", "redis.yaml",
                     "sentinel.yaml", "configmap.yaml", "secret.example.yaml",
                     "networkpolicy.yaml", "pdb.yaml"}
    kinds = Counter(d["kind"] for _, d in DOCS)
    for kind in ("RayCluster", "RayService", "RayJob", "StatefulSet", "Service", "ConfigMap",
                 "Secret", "NetworkPolicy", "PodDisruptionBudget"):
        assert kinds[kind] >= 1, f"no {kind} in cluster/kuberay"
    for file, doc in DOCS:
        assert doc.get("apiVersion") and doc.get("metadata", {}).get("name"), file


@pytest.mark.parametrize(("file", "doc"), RAY_DOCS, ids=_ids(RAY_DOCS))
def test_ray_manifest_matches_its_crd_strictly(file: str, doc: Doc) -> None:
    # given a ray.io manifest
    assert doc["apiVersion"] == "ray.io/v1", f"{file}: KubeRay's served, stored version is v1"

    # then it validates against its CRD with every known object closed
    assert crd_errors(doc) == []


def test_strict_validation_catches_typos_the_open_schema_lets_through() -> None:
    # given the RayCluster with misspelt fields at three depths
    broken = copy.deepcopy(the("RayCluster"))
    spec = broken["spec"]
    spec["gcsFaultToleranceOptions"]["redisAdress"] = (
        spec["gcsFaultToleranceOptions"].pop("redisAddress"))
    pod = spec["workerGroupSpecs"][0]["template"]["spec"]
    pod["terminationGracePeriodSecond"] = pod.pop("terminationGracePeriodSeconds")
    spec["headGroupSpec"]["rayStartParam"] = spec["headGroupSpec"].pop("rayStartParams")

    # when it is validated strictly and as the CRD is written
    strict_errors = "\n".join(crd_errors(broken))
    open_errors = crd_errors(broken, closed=False)

    # then the strict check names each typo, and the plain one would have passed it
    for typo in ("redisAdress", "terminationGracePeriodSecond", "rayStartParam"):
        assert repr(typo) in strict_errors, f"{typo} not reported:\n{strict_errors}"
    assert open_errors == []


def test_strict_keeps_maps_and_preserved_objects_open() -> None:
    # given object schemas of the three sorts
    schema = {
        "type": "object",
        "properties": {
            "labels": {"type": "object", "additionalProperties": {"type": "string"}},
            "raw": {"type": "object", "properties": {"a": {"type": "string"}},
                    "x-kubernetes-preserve-unknown-fields": True},
            "closed": {"type": "object", "properties": {"a": {"type": "string"}}},
        },
    }
    validator = jsonschema.Draft7Validator(strict(schema))

    # then maps and preserved objects take any key, the rest only their own
    assert validator.is_valid({"labels": {"any": "x"}, "raw": {"b": 1}, "closed": {"a": "x"}})
    assert not validator.is_valid({"closed": {"b": "x"}})
    assert not validator.is_valid({"other": 1})


@pytest.mark.parametrize(("file", "doc"), CORE_DOCS, ids=_ids(CORE_DOCS))
def test_core_manifest_validates_with_kubernetes_validate(file: str, doc: Doc) -> None:
    import kubernetes_validate

    # when a core kind is validated against the strict schemas of one Kubernetes version
    try:
        kubernetes_validate.validate(doc, K8S_VERSION, strict=True)
    except kubernetes_validate.ValidationError as exc:
        path = ".".join(map(str, exc.path))
        pytest.fail(f"{file}: {doc['kind']}/{doc['metadata']['name']}: {path}: {exc.message}")
    except kubernetes_validate.SchemaNotFoundError as exc:  # not skipped: every kind is checked
        pytest.fail(f"{file}: {exc.message}")


# --- RayService: the Serve config --------------------------------------------------------------


def _serve_config() -> Doc:
    config = yaml.safe_load(the("RayService")["spec"]["serveConfigV2"])
    assert isinstance(config, dict), "serveConfigV2 is not a YAML mapping"
    return config


def _unknown_keys(model: Any, data: Any, where: str) -> list[str]:
    """Keys of ``data`` that ``model`` (a pydantic model) and its nested models do not declare.

    Ray's Serve schemas ignore unknown keys; a misspelt one would be dropped silently.
    """
    from typing import get_args

    from pydantic import BaseModel

    if not isinstance(data, dict):
        return []
    fields = model.model_fields
    names = {f.alias or n for n, f in fields.items()} | set(fields)
    unknown = [f"{where}.{key}" for key in data if key not in names]
    for name, field in fields.items():
        value = data.get(field.alias or name, data.get(name))
        stack = [field.annotation]
        while stack:
            annotation = stack.pop()
            if isinstance(annotation, type) and issubclass(annotation, BaseModel):
                if isinstance(value, list):
                    for i, item in enumerate(value):
                        unknown += _unknown_keys(annotation, item, f"{where}.{name}[{i}]")
                else:
                    unknown += _unknown_keys(annotation, value, f"{where}.{name}")
            stack.extend(get_args(annotation))
    return unknown


def test_serve_config_parses_with_ray_serves_schema() -> None:
    from ray.serve.schema import ServeDeploySchema

    # when serveConfigV2 is parsed by Ray Serve's own deploy schema
    config = _serve_config()
    parsed = ServeDeploySchema.model_validate(config)

    # then no key is unknown to it (it would ignore them), and the raysys app is served at /
    assert _unknown_keys(ServeDeploySchema, config, "serveConfigV2") == []
    (app,) = parsed.applications
    assert app.import_path == SERVE_IMPORT_PATH
    assert app.route_prefix == "/"
    assert not (app.runtime_env or {}).get("env_vars"), "no settings through runtime_env"
    # and a request cannot hang forever (Ray's default is no timeout)
    assert parsed.http_options.request_timeout_s is not None
    # and Serve listens where the ConfigMap says the HTTP API is
    data = the("ConfigMap", CONFIGMAP_NAME)["data"]
    assert parsed.http_options.host == data["RAYSYS_HTTP_HOST"]
    assert parsed.http_options.port == int(data["RAYSYS_HTTP_PORT"])


def test_serve_config_check_names_an_unknown_key() -> None:
    from ray.serve.schema import ServeDeploySchema

    # given the Serve config with misspelt keys, one of them nested
    config = _serve_config()
    config["applications"][0]["route_prefx"] = config["applications"][0].pop("route_prefix")
    config["http_options"]["request_timeout"] = config["http_options"].pop("request_timeout_s")

    # then Ray's schema would take it, and the key check names both
    ServeDeploySchema.model_validate(config)
    assert sorted(_unknown_keys(ServeDeploySchema, config, "serveConfigV2")) == [
        "serveConfigV2.applications[0].route_prefx",
        "serveConfigV2.http_options.request_timeout",
    ]


def test_serve_import_path_is_importable() -> None:
    # when the module of the RayService's import_path is imported (the image installs raysys)
    module_name, _, attribute = SERVE_IMPORT_PATH.partition(":")
    module = importlib.import_module(module_name)

    # then it holds the application object
    assert hasattr(module, attribute), f"{module_name} has no attribute {attribute!r}"


# --- the two cluster specs ---------------------------------------------------------------------


def test_rayservice_runs_the_raycluster_spec() -> None:
    # given the RayCluster's spec without its fixed GCS storage namespace
    expected = copy.deepcopy(the("RayCluster")["spec"])
    del expected["gcsFaultToleranceOptions"]["externalStorageNamespace"]

    # then the RayService runs the same cluster
    service = the("RayService")["spec"]
    assert service["rayClusterConfig"] == expected
    # and upgrades by bringing up a new cluster before the old one goes
    assert service["upgradeStrategy"]["type"] == "NewCluster"


def test_rayservice_clusters_never_share_a_gcs_namespace() -> None:
    # an upgrade runs two clusters at once: a fixed namespace would make them share GCS state
    options = the("RayService")["spec"]["rayClusterConfig"]["gcsFaultToleranceOptions"]
    assert "externalStorageNamespace" not in options
    assert the("RayCluster")["spec"]["gcsFaultToleranceOptions"]["externalStorageNamespace"]


@pytest.mark.parametrize(("owner", "spec"), cluster_specs(), ids=["RayCluster", "RayService"])
def test_gcs_fault_tolerance_and_token_auth(owner: str, spec: Doc) -> None:
    # then Ray's GCS persists in the raysys Redis, found through the Sentinels' Service (Ray's
    # GCS asks a Sentinel for the primary), with the password from the Secret
    options = spec["gcsFaultToleranceOptions"]
    assert options["redisAddress"] == "raysys-sentinel:26379"
    ref = options["redisPassword"]["valueFrom"]["secretKeyRef"]
    assert ref == {"name": SECRET_NAME, "key": "redis-password"}
    # and the dashboard / job API need Ray's token
    assert spec["authOptions"]["mode"] == "token"
    # and nothing the operator rejects beside gcsFaultToleranceOptions is set: no Redis options
    # in rayStartParams, no Redis address or user anywhere, and no REDIS_PASSWORD on the head
    # (KubeRay sets it there from redisPassword; workers may and do set their own)
    for group_name, group, template in pod_templates(spec):
        params = group.get("rayStartParams", {})
        assert not {"redis-password", "redis-username"} & set(params)
        env = {e["name"] for e in ray_container(template).get("env", [])}
        assert not {"RAY_REDIS_ADDRESS", "REDIS_USERNAME"} & env
        if group_name == "head":
            assert "REDIS_PASSWORD" not in env, f"{owner}: KubeRay refuses REDIS_PASSWORD here"
    configmap = set(the("ConfigMap", CONFIGMAP_NAME)["data"])
    assert not {"RAY_REDIS_ADDRESS", "REDIS_PASSWORD", "REDIS_USERNAME"} & configmap


def test_ray_start_params_are_strings() -> None:
    # then every rayStartParams value, in every ray.io manifest, is a YAML string
    found = 0
    for file, doc in RAY_DOCS:
        for node in walk(doc):
            if isinstance(node, dict) and isinstance(node.get("rayStartParams"), dict):
                for key, value in node["rayStartParams"].items():
                    found += 1
                    assert isinstance(value, str), f"{file}: rayStartParams.{key}={value!r}"
    assert found, "no rayStartParams checked"


def test_versions_and_images_match_the_project() -> None:
    import ray

    # then the clusters run the installed Ray and the image built from this version
    for owner, spec in cluster_specs():
        assert spec["rayVersion"] == ray.__version__, owner
        for group, _, template in pod_templates(spec):
            image = ray_container(template)["image"]
            assert image == f"raysys:{project_version()}", f"{owner} {group}: {image}"


# --- probes and drain --------------------------------------------------------------------------


def _probe_targets(probe: Doc) -> list[str]:
    targets = [str(probe.get("httpGet", {}).get("path", ""))]
    targets += [str(part) for part in probe.get("exec", {}).get("command", [])]
    return targets


@pytest.mark.parametrize(("file", "doc"), DOCS, ids=_ids(DOCS))
def test_no_liveness_probe_on_health_endpoints(file: str, doc: Doc) -> None:
    # then no liveness probe anywhere points at /health or Serve's /-/healthz
    for node in walk(doc):
        if isinstance(node, dict) and isinstance(node.get("livenessProbe"), dict):
            for target in _probe_targets(node["livenessProbe"]):
                assert not any(path in target for path in HEALTH_PATHS), f"{file}: {target}"


@pytest.mark.parametrize(("owner", "spec"), cluster_specs(), ids=["RayCluster", "RayService"])
def test_kuberay_probes_are_left_alone(owner: str, spec: Doc) -> None:
    # then the Ray containers declare no probe: KubeRay installs its own (raylet, GCS)
    for group, _, template in pod_templates(spec):
        for container in template["spec"]["containers"]:
            for probe in ("livenessProbe", "readinessProbe", "startupProbe"):
                assert probe not in container, f"{owner} {group}: {container['name']}.{probe}"


def _drain_args(container: Doc) -> list[str]:
    command = container["lifecycle"]["preStop"]["exec"]["command"]
    script = command[-1] if command[:2] in (["/bin/bash", "-c"], ["/bin/sh", "-c"]) else None
    words = shlex.split(script) if script is not None else list(command)
    assert words[:2] == ["raysys", "drain"], f"preStop is not `raysys drain`: {command}"
    return words[2:]


@pytest.mark.parametrize(("owner", "spec"), cluster_specs(), ids=["RayCluster", "RayService"])
def test_every_ray_pod_drains_before_it_stops(owner: str, spec: Doc) -> None:
    from raysys.cli import build_parser

    assert spec.get("workerGroupSpecs"), f"{owner}: no worker group"
    for group, _, template in pod_templates(spec):
        container = ray_container(template)
        # given the preStop hook of the Ray container
        assert "preStop" in container.get("lifecycle", {}), f"{owner} {group}: no preStop hook"
        args = _drain_args(container)

        # then it drains this pod's Ray node, named by the pod IP from the downward API
        assert args[:2] == ["--node", "$MY_POD_IP"], f"{owner} {group}: {args}"
        env = {e["name"]: e for e in container.get("env", [])}
        assert env["MY_POD_IP"]["valueFrom"]["fieldRef"]["fieldPath"] == "status.podIP"
        # and the raysys CLI accepts the command as written
        parsed = build_parser().parse_args(["drain", *args])
        assert isinstance(parsed, argparse.Namespace)
        # and the pod's grace period leaves the drain its whole timeout, and Ray time to stop
        grace = template["spec"]["terminationGracePeriodSeconds"]
        assert grace >= parsed.timeout + 30, f"{owner} {group}: grace {grace}s, drain {args}"


# --- secrets and configuration -----------------------------------------------------------------


def _entropy_per_char(text: str) -> float:
    counts = Counter(text)
    return -sum(n / len(text) * math.log2(n / len(text)) for n in counts.values())


def test_secret_template_holds_placeholders_only() -> None:
    secret = the("Secret", SECRET_NAME)
    # then values are readable text (no base64 `data` to hide a real one in)
    assert "data" not in secret
    values = secret["stringData"]
    assert values
    for key, value in values.items():
        # and each says it is a placeholder
        assert PLACEHOLDER in value, f"{key}: no {PLACEHOLDER} marker"
        # and holds no random-looking run (a pasted password, token or key)
        for run in re.findall(r"[A-Za-z0-9+/=_]{16,}", value):
            assert _entropy_per_char(run) < 3.5, f"{key}: {run!r} looks like a real secret"


def test_every_secret_reference_names_a_key_of_the_template() -> None:
    # given the keys of the Secret template
    keys = set(the("Secret", SECRET_NAME)["stringData"])

    # then every secretKeyRef and secret volume item in the manifests names one of them
    used = set()
    for file, doc in DOCS:
        for node in walk(doc):
            if not isinstance(node, dict):
                continue
            ref = node.get("secretKeyRef")
            if isinstance(ref, dict):
                assert ref["name"] == SECRET_NAME, f"{file}: {ref}"
                used.add(ref["key"])
            volume = node.get("secret")
            if isinstance(volume, dict) and "secretName" in volume:
                assert volume["secretName"] == SECRET_NAME, f"{file}: {volume}"
                assert volume.get("items"), f"{file}: mount only the keys a pod needs"
                used |= {item["key"] for item in volume["items"]}
    assert used == keys


@pytest.mark.parametrize(("file", "doc"), DOCS, ids=_ids(DOCS))
def test_credentials_come_only_from_the_secret(file: str, doc: Doc) -> None:
    # then an env var holding a credential is never a literal
    for container in all_containers(doc):
        for entry in container.get("env", []):
            if SECRET_NAME_RE.search(entry["name"]) and not entry["name"].endswith("_FILE"):
                assert "value" not in entry, f"{file}: {container['name']}: {entry['name']}"
                assert "secretKeyRef" in entry["valueFrom"], f"{file}: {entry['name']}"
        for source in container.get("envFrom", []):
            assert "secretRef" not in source, f"{file}: envFrom a Secret exposes every key"
    if doc["kind"] == "ConfigMap":
        assert not [k for k in doc["data"] if SECRET_NAME_RE.search(k)], file


@pytest.mark.parametrize(("owner", "spec"), cluster_specs(), ids=["RayCluster", "RayService"])
def test_ray_pods_get_raysys_settings_and_secrets(owner: str, spec: Doc) -> None:
    for group, _, template in pod_templates(spec):
        container = ray_container(template)
        env = {e["name"]: e for e in container.get("env", [])}
        # then settings come from the ConfigMap
        assert {"configMapRef": {"name": CONFIGMAP_NAME}} in container.get("envFrom", [])
        # and the Redis password (for the servers and the Sentinels) and the API token from the
        # Secret: on the head, KubeRay sets REDIS_PASSWORD from gcsFaultToleranceOptions
        secrets = {"RAYSYS_REDIS_SENTINEL_PASSWORD": "redis-password",
                   "RAYSYS_API_TOKEN": "api-token"}
        if group != "head":
            secrets["REDIS_PASSWORD"] = "redis-password"
        else:
            gcs = spec["gcsFaultToleranceOptions"]["redisPassword"]["valueFrom"]["secretKeyRef"]
            assert gcs == {"name": SECRET_NAME, "key": "redis-password"}
        for name, key in secrets.items():
            ref = env[name]["valueFrom"]["secretKeyRef"]
            assert ref == {"name": SECRET_NAME, "key": key}, f"{owner} {group}: {name}"
        # and no Redis URL, which would bypass the Sentinels (raysys refuses both at once)
        assert "RAYSYS_REDIS_URL" not in env, f"{owner} {group}"
        # and the keyring is a file on a read-only Secret volume
        key_file = Path(env["RAYSYS_SIGNING_KEY_FILE"]["value"])
        mounts = {Path(m["mountPath"]): m for m in container["volumeMounts"]}
        mount = mounts[key_file.parent]
        assert mount.get("readOnly") is True, f"{owner} {group}: keyring mount is writable"
        volumes = {v["name"]: v for v in template["spec"]["volumes"]}
        items = volumes[mount["name"]]["secret"]["items"]
        assert {"key": "keys.json", "path": key_file.name} in items
        # and the pod is a raysys pod, so the NetworkPolicy lets it reach Redis
        labels = template["metadata"]["labels"]
        assert labels.get(RAYSYS_LABEL[0]) == RAYSYS_LABEL[1], f"{owner} {group}"


def test_env_names_are_designs() -> None:
    # given every raysys variable DESIGN allows
    allowed = allowed_env_names()
    assert {"RAYSYS_REDIS_URL", "RAYSYS_NAMESPACE", "RAYSYS_SIGNING_KEY_FILE"} <= allowed

    # then every raysys-looking name the manifests set is one of them
    names = set(the("ConfigMap", CONFIGMAP_NAME)["data"])
    for _, doc in DOCS:
        for container in all_containers(doc):
            names |= {e["name"] for e in container.get("env", [])}
    job_env = yaml.safe_load(the("RayJob")["spec"]["runtimeEnvYAML"]).get("env_vars", {})
    names |= set(job_env)
    unknown = sorted(n for n in names if is_raysys_name(n) and n not in allowed)
    assert unknown == [], f"not in DESIGN's list (.env.example): {unknown}"


# --- Redis, network policy, disruption budgets -------------------------------------------------


def _redis_container() -> Doc:
    (container,) = the("StatefulSet", "raysys-redis")["spec"]["template"]["spec"]["containers"]
    return container


def test_redis_is_durable_non_evicting_and_password_protected() -> None:
    container = _redis_container()
    statefulset = the("StatefulSet", "raysys-redis")["spec"]
    conf = {name: " ".join(args) for name, args in directives(redis_conf_text())}
    # then the server starts from the ConfigMap's redis.conf (redis-start.sh beside it)
    assert container["command"] == ["sh", "/etc/raysys-redis/redis-start.sh"]
    mounts = {m["mountPath"]: m for m in container["volumeMounts"]}
    volumes = {v["name"]: v for v in statefulset["template"]["spec"]["volumes"]}
    conf_volume = volumes[mounts["/etc/raysys-redis"]["name"]]
    assert conf_volume["configMap"]["name"] == "raysys-redis-conf"
    # in which AOF is on and fsynced on every write, and nothing is ever evicted
    for name, value in (("appendonly", "yes"), ("appendfsync", "always"),
                        ("maxmemory-policy", "noeviction")):
        assert conf.get(name) == value, f"redis.conf: {name} {conf.get(name)!r}"
    # and the password is not in it: the script appends it from the environment, which takes
    # it from the Secret
    assert not {"requirepass", "masterauth", "user"} & set(conf)
    env = {e["name"]: e for e in container["env"]}
    ref = env["REDIS_PASSWORD"]["valueFrom"]["secretKeyRef"]
    assert ref == {"name": SECRET_NAME, "key": "redis-password"}
    # and readiness is a real PING
    probe = " ".join(container["readinessProbe"]["exec"]["command"])
    assert "redis-cli ping" in probe
    # and the data directory is a PersistentVolumeClaim
    claims = {c["metadata"]["name"] for c in statefulset["volumeClaimTemplates"]}
    assert mounts["/data"]["name"] in claims and conf["dir"] == "/data"
    # and the StatefulSet's headless Service names each server
    service = the("Service", "raysys-redis")["spec"]
    assert service["selector"].items() <= _redis_labels().items()
    assert [p["port"] for p in service["ports"]] == [int(conf["port"])]
    assert service["clusterIP"] == "None" and statefulset["serviceName"] == "raysys-redis"


def _redis_labels() -> dict[str, str]:
    labels: dict[str, str] = (
        the("StatefulSet", "raysys-redis")["spec"]["template"]["metadata"]["labels"])
    return labels


def _sentinel_labels() -> dict[str, str]:
    labels: dict[str, str] = (
        the("StatefulSet", "raysys-sentinel")["spec"]["template"]["metadata"]["labels"])
    return labels


@pytest.mark.parametrize(("name", "port"), [("raysys-redis", 6379), ("raysys-sentinel", 26379)])
def test_only_raysys_pods_reach_redis_and_the_sentinels(name: str, port: int) -> None:
    policy = the("NetworkPolicy", name)["spec"]
    pods = the("StatefulSet", name)["spec"]["template"]["metadata"]["labels"]
    # then the policy selects the Redis (or Sentinel) pods, and admits ingress only
    assert policy["podSelector"]["matchLabels"].items() <= pods.items()
    assert policy["policyTypes"] == ["Ingress"]
    # and only from pods labelled as raysys (the Ray pods, the servers and the Sentinels
    # themselves), on the one port
    (rule,) = policy["ingress"]
    assert rule["from"] == [{"podSelector": {"matchLabels": dict([RAYSYS_LABEL])}}]
    assert rule["ports"] == [{"protocol": "TCP", "port": port}]
    for other in ("raysys-redis", "raysys-sentinel"):
        labels = the("StatefulSet", other)["spec"]["template"]["metadata"]["labels"]
        assert labels.get(RAYSYS_LABEL[0]) == RAYSYS_LABEL[1], other


def test_disruption_budgets_cover_workers_redis_and_sentinels() -> None:
    budgets = [d for _, d in DOCS if d["kind"] == "PodDisruptionBudget"]
    selectors = [b["spec"]["selector"]["matchLabels"] for b in budgets]
    # then the Ray worker pods of both cluster specs are covered, one at a time
    for owner, spec in cluster_specs():
        for group, _, template in pod_templates(spec):
            if group == "head":
                continue
            labels = template["metadata"]["labels"]
            matching = [b for b, s in zip(budgets, selectors, strict=True)
                        if s.items() <= labels.items()]
            assert [b["spec"].get("maxUnavailable") for b in matching] == [1], f"{owner} {group}"
    # and a voluntary drain takes one Redis server and one Sentinel at a time (two of three
    # stay: test_redis_ha.py says why two is enough)
    for labels in (_redis_labels(), _sentinel_labels()):
        matching = [b for b, s in zip(budgets, selectors, strict=True)
                    if s.items() <= labels.items()]
        assert [b["spec"].get("minAvailable") for b in matching] == [2], labels


# --- RayJob ------------------------------------------------------------------------------------


def test_rayjob_runs_the_example_on_the_cluster() -> None:
    job = the("RayJob")["spec"]
    # then it runs examples/example_e2e.py on the RayCluster of raycluster.yaml
    assert job["clusterSelector"] == {"ray.io/cluster": the("RayCluster")["metadata"]["name"]}
    assert job["entrypoint"] == "python example_e2e.py"
    assert (REPO / "examples" / "example_e2e.py").is_file()
    # and a selected cluster is not the job's to delete
    assert "shutdownAfterJobFinishes" not in job
    # and its working_dir is where the image puts the examples
    runtime_env = yaml.safe_load(job["runtimeEnvYAML"])
    dockerfile = (REPO / "Dockerfile").read_text(encoding="utf-8")
    assert re.search(rf"^COPY\s+examples/?\s+{re.escape(runtime_env['working_dir'])}/?\s*$",
                     dockerfile, flags=re.MULTILINE), runtime_env["working_dir"]
    # and its worker pool lives in a namespace of its own: the example removes it at the end
    production = the("ConfigMap", CONFIGMAP_NAME)["data"]["RAYSYS_NAMESPACE"]
    assert runtime_env["env_vars"]["RAYSYS_NAMESPACE"] != production
    # and nothing secret rides in runtime_env (Ray logs it)
    assert not [n for n in runtime_env["env_vars"] if SECRET_NAME_RE.search(n)]


# --- docs/DEPLOY.md ----------------------------------------------------------------------------


def _doc_commands() -> list[list[str]]:
    """Every `raysys ...` command line in DEPLOY.md's code blocks, as argv without `raysys`."""
    text = DEPLOY_DOC.read_text(encoding="utf-8")
    commands = []
    for block in re.findall(r"```[a-z]*\n(.*?)```", text, flags=re.DOTALL):
        for line in block.replace("\\\n", " ").splitlines():
            for part in re.split(r"&&|\|\||;|\|", line):
                words = shlex.split(part, comments=True)
                # `raysys ...` alone, after VAR=value prefixes, or after `kubectl exec POD --`
                if "raysys" in words:
                    commands.append(words[words.index("raysys") + 1:])
    return commands


def test_deploy_doc_uses_real_cli_commands() -> None:
    from raysys.cli import build_parser

    # given the raysys commands DEPLOY.md tells users to run
    commands = _doc_commands()
    assert {c[0] for c in commands} >= {"up", "drain", "snapshot"}

    # then the CLI accepts each as written
    for argv in commands:
        try:
            build_parser().parse_args(argv)
        except SystemExit:
            pytest.fail(f"DEPLOY.md: `raysys {' '.join(argv)}` is not a valid raysys command")


def test_deploy_doc_names_designs_variables_and_these_files() -> None:
    text = DEPLOY_DOC.read_text(encoding="utf-8")
    # then every raysys variable it names is DESIGN's
    named = set(re.findall(r"\b((?:RAYSYS|REDIS)_[A-Z0-9_]+)\b", text))
    assert sorted(named - allowed_env_names()) == []
    # and it covers each manifest, and the operator's Helm install
    for path in KUBERAY.glob("*.yaml"):
        assert path.name in text, f"DEPLOY.md does not mention {path.name}"
    assert "helm install" in text and "kuberay-operator" in text
