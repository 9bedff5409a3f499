"""What the Ray suites stand on: private Ray clusters, and an embedded Redis data dir.

- In this process (integration, chaos and security suites): :func:`private_ray` runs
  ``ray.init`` under a private ``HOME`` (where Ray writes ``~/.ray/auth_token``) and a short temp
  dir, so no cluster attaches to, or disturbs, another on the machine, and Ray gets private
  random ports, never Redis's 6379; :func:`suite_ray` is that for a fixture (or the cluster
  already running here). The process is left behind as a fresh one would be.
- As subprocesses (deploy and security suites): :func:`ray_head` runs ``ray start --head`` with
  token auth (:func:`write_token`), explicit free ports (:class:`RayPorts`), its own temp dir and
  ``HOME``, and stops it selectively (by its marker, never ``ray stop``); :class:`RayHead`
  answers ``ray`` commands and the dashboard's job API.
- :func:`served_data_dir`: a raysys data dir whose embedded Redis runs for a block.
"""

from __future__ import annotations

import os
import secrets
import shutil
import subprocess
import tempfile
import uuid
from collections.abc import Callable, Iterator, Mapping, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest

from raysys.redis_server.attach import attach_or_start
from tests.support.http import get
from tests.support.processes import (
    MARKER_VAR,
    VENV_BIN,
    clean_env,
    free_ports,
    stop_selectively,
    worker_port_range,
)

HEAD_START_TIMEOUT_S = 120
COMMAND_TIMEOUT_S = 150


# ---- Ray in this process ------------------------------------------------------------------------
@contextmanager
def private_ray(home: Path, namespace: str, *, temp_prefix: str,
                env: Mapping[str, str] | None = None) -> Iterator[None]:
    """``ray.init`` under ``home`` with ``env`` set (the cluster's processes inherit both).

    On exit: Ray shut down, its temp dir removed, the environment restored, and the token
    ``ray.init`` cached reset, so a later cluster in this process (under another ``HOME``)
    starts from a clean slate instead of without a token.
    """
    import ray

    extra = dict(env or {})
    saved = {name: os.environ.get(name) for name in ("HOME", "RAY_AUTH_MODE", *extra)}
    os.environ["HOME"] = str(home)
    os.environ.update(extra)
    temp = Path(tempfile.mkdtemp(prefix=temp_prefix))  # short: socket paths must fit 107 B
    try:
        ray.init(num_cpus=4, include_dashboard=False, namespace=namespace, log_to_driver=False,
                 _temp_dir=str(temp))
        yield None
    finally:
        ray.shutdown()
        shutil.rmtree(temp, ignore_errors=True)
        for name, value in saved.items():
            if value is None:
                os.environ.pop(name, None)
            else:
                os.environ[name] = value
        from ray._raylet import AuthenticationTokenLoader  # type: ignore[attr-defined]

        AuthenticationTokenLoader.instance().reset_cache()


@contextmanager
def suite_ray(tmp_path_factory: pytest.TempPathFactory, namespace: str, *, temp_prefix: str,
              env: Mapping[str, str] | None = None, reuse: bool = False) -> Iterator[bool]:
    """A suite's :func:`private_ray` under a fresh ``HOME``; yields True. ``reuse``: when a
    cluster already runs in this process (another suite's), use it and leave it: yields False.
    Skips without Ray."""
    ray = pytest.importorskip("ray")
    if reuse and ray.is_initialized():
        yield False
        return
    with private_ray(tmp_path_factory.mktemp("home"), namespace, temp_prefix=temp_prefix,
                     env=env):
        yield True


# ---- Ray as subprocesses: `ray start --head` ----------------------------------------------------
def write_token(path: Path) -> str:
    """A new Ray auth token (what `ray get-auth-token --generate` makes), written to ``path``
    with mode 0600."""
    token = secrets.token_hex(32)
    path.write_text(token)
    path.chmod(0o600)
    return token


@dataclass(frozen=True)
class RayPorts:
    """Explicit free ports for everything of a head that has a fixed default (GCS, dashboard
    and job API, Ray client server, dashboard agent, metrics), a worker port range off Ray's
    default 10002-19999, and ``extra`` ports for the test's own use (all distinct)."""

    gcs: int
    dashboard: int
    client_server: int
    agent: int
    metrics: int
    min_worker: int
    max_worker: int
    extra: tuple[int, ...] = ()

    @classmethod
    def pick(cls, extra: int = 0) -> RayPorts:
        gcs, dashboard, client_server, agent, metrics, *more = free_ports(5 + extra)
        return cls(gcs, dashboard, client_server, agent, metrics, *worker_port_range(),
                   extra=tuple(more))

    def head_args(self) -> list[str]:
        """The `ray start --head` options that put the head on these ports."""
        return [f"--port={self.gcs}", "--dashboard-host=127.0.0.1",
                f"--dashboard-port={self.dashboard}",
                f"--ray-client-server-port={self.client_server}",
                f"--dashboard-agent-listen-port={self.agent}",
                f"--metrics-export-port={self.metrics}",
                f"--min-worker-port={self.min_worker}", f"--max-worker-port={self.max_worker}"]


@dataclass
class RayHead:
    """A `ray start --head` of this test: everything lives in ``root`` (short: Ray's socket
    paths), every process it starts carries ``marker``, and its clients need ``token``."""

    root: Path
    marker: str
    token: str
    env: dict[str, str]  # a client's environment: token auth on, the token file, private HOME
    ports: RayPorts
    stopped: bool = field(default=False)

    @property
    def url(self) -> str:
        """The dashboard (and job API)."""
        return f"http://127.0.0.1:{self.ports.dashboard}"

    @property
    def address(self) -> str:
        """The GCS address, as `raysys --address` takes it."""
        return f"127.0.0.1:{self.ports.gcs}"

    def run(self, program: str, *args: str, env: Mapping[str, str] | None = None,
            timeout: float = COMMAND_TIMEOUT_S) -> subprocess.CompletedProcess[str]:
        """``program`` (of this venv: ``ray``, ``raysys``) in ``root``, as a client of the head
        (its ``env`` unless another is given)."""
        return subprocess.run([str(VENV_BIN / program), *args], env=dict(env or self.env),
                              text=True, capture_output=True, timeout=timeout, cwd=self.root)

    def ray(self, *args: str, env: Mapping[str, str] | None = None,
            timeout: float = COMMAND_TIMEOUT_S) -> subprocess.CompletedProcess[str]:
        return self.run("ray", *args, env=env, timeout=timeout)

    def tokenless_envs(self, **extra: str) -> list[dict[str, str]]:
        """Two clients' environments without this head's token: none at all (a ``HOME`` of
        their own, so no ``~/.ray/auth_token`` either), and a wrong one; ``extra`` in both."""
        home = self.root / "bare-home"
        home.mkdir(exist_ok=True)
        none = clean_env(ray=True, HOME=str(home), RAY_USAGE_STATS_ENABLED="0", **extra)
        return [none, none | {"RAY_AUTH_MODE": "token", "RAY_AUTH_TOKEN": secrets.token_hex(32)}]

    def api(self, path: str, token: str | None) -> tuple[int, Any]:
        """GET the dashboard's HTTP API, with ``Authorization: Bearer`` when ``token``."""
        return get(self.url + path, token)

    def stop(self) -> None:
        if not self.stopped:
            self.stopped = True
            stop_selectively(self.marker, self.root)


@contextmanager
def ray_head(prefix: str, *, env: Mapping[str, str] | None = None,
             head_args: Sequence[str] | Callable[[Path, RayPorts], Sequence[str]] = (),
             default_auth: bool = False) -> Iterator[RayHead]:
    """A started :class:`RayHead` in a new temp dir named ``prefix...``; stopped and removed
    when the block ends. ``env``: more variables for the head and its clients (TLS, say);
    ``head_args``: more `ray start` options, or a function of the head's root and ports making
    them (a config file naming the GCS port). Fails the test when the head does not start.

    ``default_auth``: token auth as Ray 2.60 turns it on by itself: the token in
    ``HOME/.ray/auth_token`` and `ray start` run without ``RAY_AUTH_MODE`` (clients still get
    ``RAY_AUTH_MODE=token``: an explicit address never turns it on for them). Otherwise
    ``RAY_AUTH_MODE=token`` and the token file ``root/auth_token`` for the head and clients.

    The head's environment reaches the jobs and actors it starts: the marker, and an embedded
    Redis in a private data dir (``root/data``)."""
    root = Path(tempfile.mkdtemp(prefix=prefix))
    (root / "home").mkdir()
    token_file = root / "home" / ".ray" / "auth_token" if default_auth else root / "auth_token"
    token_file.parent.mkdir(exist_ok=True)
    token = write_token(token_file)
    ports = RayPorts.pick()
    where = {} if default_auth else {"RAY_AUTH_TOKEN_PATH": str(token_file)}
    client_env = clean_env(ray=True, HOME=str(root / "home"), RAY_AUTH_MODE="token",
                           RAY_USAGE_STATS_ENABLED="0", TMPDIR=str(root), **where, **(env or {}))
    head_env = {k: v for k, v in client_env.items() if not (default_auth and k == "RAY_AUTH_MODE")}
    head = RayHead(root, uuid.uuid4().hex, token, client_env, ports)
    if callable(head_args):
        head_args = head_args(root, ports)
    try:
        start = subprocess.run(
            [str(VENV_BIN / "ray"), "start", "--head", f"--temp-dir={root / 'ray'}",
             *ports.head_args(), *head_args, "--disable-usage-stats"],
            env=head_env | {"RAYSYS_DATA_DIR": str(root / "data"), MARKER_VAR: head.marker},
            cwd=root, text=True, capture_output=True, timeout=HEAD_START_TIMEOUT_S)
        if start.returncode != 0:
            pytest.fail(f"ray start --head failed ({start.returncode}):\n{start.stdout}\n"
                        f"{start.stderr}")
        yield head
    finally:
        head.stop()
        shutil.rmtree(root, ignore_errors=True)


# ---- Redis --------------------------------------------------------------------------------------
@contextmanager
def served_data_dir(path: Path) -> Iterator[Path]:
    """``path`` as a raysys data dir whose embedded Redis (``everysec``: tests, not durability
    claims) runs until the block ends; a server already serving it is left running."""
    _, server = attach_or_start(path, appendfsync="everysec")
    try:
        yield path
    finally:
        if server is not None:
            server.stop()
