"""The Redis and Sentinel configuration of the deployment manifests, for tests to run on loopback.

``cluster/kuberay/redis.yaml`` holds ``redis.conf`` and ``sentinel.conf`` (and the scripts that
start a server or a Sentinel from them) in its ConfigMap ``raysys-redis-conf``;
``cluster/redis/`` holds the same files for ``docker-compose.yml``. The secrets (``requirepass``,
``masterauth``, ``sentinel auth-pass``) are in neither: the start scripts append them from the
environment, so nothing secret needs filtering out here.

- :func:`configmap_files`: the ConfigMap's files, {name: text}.
- :func:`directives`: a conf text as (name, arguments) pairs, comments and blank lines dropped.
- :func:`manifest_redis_lines`: ``redis.conf``'s directives for ``EmbeddedRedis(config_lines=)``,
  without the Kubernetes-only ones (``port``, ``dir``: the loopback server picks its own) and
  without those the embedded server's command line already sets (``appendfsync`` goes to
  ``EmbeddedRedis(appendfsync=)``: :func:`manifest_appendfsync`); a ValueError names any of
  those whose value differs from the command line's, so a loopback run never quietly differs.
- :func:`manifest_sentinel_lines`: ``sentinel.conf``'s directives for a loopback Sentinel,
  without ``port`` and ``dir``, the monitored primary's host and port replaced, and chosen
  ``sentinel <option> <master>`` values overridden.
"""

from __future__ import annotations

import shlex
from collections.abc import Mapping
from functools import cache
from pathlib import Path

import yaml

from raysys.redis_server.command import server_command

REPO = Path(__file__).resolve().parents[2]
REDIS_MANIFEST = REPO / "cluster" / "kuberay" / "redis.yaml"
CONF_DIR = REPO / "cluster" / "redis"
CONFIGMAP_NAME = "raysys-redis-conf"
# Where a server or Sentinel listens and keeps its files: per pod in Kubernetes, per process here.
K8S_ONLY = frozenset({"port", "dir"})

Directive = tuple[str, list[str]]


@cache
def configmap_files() -> dict[str, str]:
    """{file name: text} of the ConfigMap ``raysys-redis-conf`` in cluster/kuberay/redis.yaml."""
    for doc in yaml.safe_load_all(REDIS_MANIFEST.read_text(encoding="utf-8")):
        if (isinstance(doc, dict) and doc.get("kind") == "ConfigMap"
                and doc["metadata"]["name"] == CONFIGMAP_NAME):
            data: dict[str, str] = doc["data"]
            return data
    raise AssertionError(f"no ConfigMap {CONFIGMAP_NAME} in {REDIS_MANIFEST}")


def redis_conf_text() -> str:
    return configmap_files()["redis.conf"]


def sentinel_conf_text() -> str:
    return configmap_files()["sentinel.conf"]


def directives(text: str) -> list[Directive]:
    """(name, arguments) of every directive of a redis.conf or sentinel.conf text, in order;
    names lower-cased, arguments unquoted as Redis reads them (close enough: shell quoting)."""
    found = []
    for line in text.splitlines():
        if line.strip() and not line.lstrip().startswith("#"):
            name, *args = shlex.split(line)
            found.append((name.lower(), args))
    return found


def _embedded_settings(appendfsync: str) -> dict[str, str]:
    """{option: value} that the embedded server's command line sets (``--name value`` pairs)."""
    argv = server_command(Path("redis-server"), 1, Path("/dir"), Path("/log"),
                          appendfsync=appendfsync)
    options = argv[1:-1]  # the binary first, "-" (read stdin) last
    return {name.removeprefix("--"): value
            for name, value in zip(options[::2], options[1::2], strict=True)}


def manifest_appendfsync() -> str:
    """The manifest's ``appendfsync`` (give it to ``EmbeddedRedis(appendfsync=)``)."""
    values = [args for name, args in directives(redis_conf_text()) if name == "appendfsync"]
    assert len(values) == 1 and len(values[0]) == 1, f"appendfsync in redis.conf: {values}"
    return values[0][0]


def manifest_redis_lines() -> list[str]:
    """redis.conf's directives as lines for ``EmbeddedRedis(config_lines=)``; see the module
    docstring for what is left out and why."""
    appendfsync = manifest_appendfsync()
    embedded = _embedded_settings(appendfsync)
    lines = []
    for name, args in directives(redis_conf_text()):
        if name in K8S_ONLY:
            continue
        if name in embedded:
            if " ".join(args) != embedded[name]:
                raise ValueError(f"redis.conf sets {name} {' '.join(args)!r}, the embedded "
                                 f"server's command line {embedded[name]!r}: a loopback run "
                                 f"would not be the manifest's configuration")
            continue
        lines.append(_line(name, args))
    return lines


def manifest_sentinel_lines(primary_host: str, primary_port: int,
                            overrides: Mapping[str, str] | None = None) -> list[str]:
    """sentinel.conf's directives for a loopback Sentinel monitoring ``primary_host:port``.

    ``port`` and ``dir`` are left out (the caller sets its own); the ``sentinel monitor`` line
    keeps its master name and quorum; ``overrides`` maps a ``sentinel <option> <master>`` option
    (``down-after-milliseconds``) to the value to use instead of the manifest's. The order is
    the manifest's: ``resolve-hostnames`` must come before a line that names a host.
    """
    overrides = dict(overrides or {})
    lines = []
    for name, args in directives(sentinel_conf_text()):
        if name in K8S_ONLY:
            continue
        if name == "sentinel" and args[:1] == ["monitor"]:
            _, master, _host, _port, quorum = args
            args = ["monitor", master, primary_host, str(primary_port), quorum]
        elif name == "sentinel" and len(args) == 3 and args[0] in overrides:
            args = [args[0], args[1], overrides.pop(args[0])]
        lines.append(_line(name, args))
    if overrides:
        raise ValueError(f"sentinel.conf sets no {sorted(overrides)} to override")
    return lines


def _line(name: str, args: list[str]) -> str:
    return " ".join([name, *(shlex.quote(arg) if arg else '""' for arg in args)])
