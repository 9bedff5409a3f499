"""Composition root of the actor system: ``start`` (all on this machine), ``up`` (the named
actors on a running cluster) and ``connect`` (to actors already running). Each returns a
:class:`~raysys.client.client.Client` built in one step from the actors' handles.

Secrets never travel as actor arguments: actors read the keyring from a FILE (for ``start``,
the data dir's ``keys.json``, created on first use) and Redis credentials from their
environment, which a local cluster inherits from this process.
"""

from __future__ import annotations

import logging
import os
import socket
import tempfile
from pathlib import Path
from typing import Any

from raysys.actor_config import DEFAULT_CONCURRENCY, SECRET_SETTINGS, ActorConfig, Workers
from raysys.client.client import Client, Owned
from raysys.client.dashboard import quiet_dashboard_failure, ray_init_options, started_url
from raysys.client.ray_auth import (
    check_token_accepted,
    unreachable_message,
    wrong_token_message,
)
from raysys.config import Settings, load_settings
from raysys.errors import ConfigurationError, RayUnavailable
from raysys.redis_server.attach import attach_or_start
from raysys.redis_server.embedded import EmbeddedRedis
from raysys.signing.keysource import keyring_path, keyring_source

log = logging.getLogger(__name__)


def start(workers: Workers = 2, *, batch: int = 50, concurrency: int = DEFAULT_CONCURRENCY,
          ledger: bool = False, ray_temp_dir: Path | None = None, log_to_driver: bool = False,
          scale_down_idle_s: float = 30.0, max_prefetch: int = 1000,
          ledger_url: str | None = None, dashboard: bool = True,
          **settings_overrides: Any) -> Client:
    """Run raysys on this machine and return a client; ``shutdown()`` takes it all down.

    ``workers``: N, or (MIN, MAX) / "MIN:MAX" for a pool that follows the backlog;
    ``concurrency``: leases each worker runs at once.
    ``settings_overrides`` are :class:`~raysys.config.Settings` fields (``data_dir``,
    ``namespace``, ``lease_ttl_s``, ``reaper_interval_s``, ``handlers``, ...). Secrets cannot be
    passed here (the actors would receive them as arguments): set them in the environment.
    If Ray is already initialised in this process, its cluster is used (and left running).
    ``dashboard``: the private Ray cluster runs its dashboard on 127.0.0.1 at a free port
    (``client.dashboard_url``); a dashboard that cannot start is one warning, not an error.
    """
    import ray

    settings, config, server = _prepare(settings_overrides, workers=workers, batch=batch,
                                        concurrency=concurrency, ledger=ledger,
                                        scale_down_idle_s=scale_down_idle_s,
                                        max_prefetch=max_prefetch, ledger_url=ledger_url)
    owned = Owned(server)
    dashboard_url = None
    try:
        if not ray.is_initialized():
            # A private temp dir: a plain ray.init() would attach to another local cluster.
            temp = ray_temp_dir or Path(tempfile.mkdtemp(prefix="raysys-ray-"))
            owned.ray_temp_dir = temp if ray_temp_dir is None else None
            dashboard_url = _init_local_ray(settings.namespace, temp, dashboard=dashboard,
                                            log_to_driver=log_to_driver)
            owned.ray_started = True
        return _deployed(config, owned=owned, ray_connected=owned.ray_started,
                         dashboard_url=dashboard_url)
    except BaseException:
        if owned.ray_started:
            ray.shutdown()
        owned.release()
        raise


def up(address: str = "auto", workers: Workers = 2, *, batch: int = 50,
       concurrency: int = DEFAULT_CONCURRENCY, **settings_overrides: Any) -> Client:
    """Start (or find) the named actors on a running Ray cluster (``raysys up``).

    The actors are detached: they outlive this process; ``Client.down()`` removes them. With no
    Redis configured, the embedded one is started in the data dir and left running (single
    machine only: actors on other nodes cannot reach it).
    """
    import ray

    settings, config, server = _prepare(settings_overrides, workers=workers, batch=batch,
                                        concurrency=concurrency, ledger=False)
    if server is not None:
        log.warning("started the embedded Redis in %s for the cluster; it keeps running",
                    settings.data_dir)
    connected = join_cluster(address, settings.namespace)
    try:
        return _deployed(config, owned=None, ray_connected=connected)
    except BaseException:
        if connected:
            ray.shutdown()
        raise


def connect(address: str = "auto", namespace: str | None = None, *,
            settings: Settings | None = None) -> Client:
    """Attach to running actors (``raysys up``) of ``namespace`` (default RAYSYS_NAMESPACE)."""
    import ray

    from raysys.client.handles import get

    namespace = namespace or (settings or load_settings()).namespace
    connected = join_cluster(address, namespace)
    from raysys.actors.factory import find

    plane = find(namespace)
    if plane is None:
        if connected:
            ray.shutdown()
        raise RayUnavailable(f"no raysys actors in namespace {namespace!r}: run `raysys up` "
                             "first")
    try:
        config = get(plane.coordinator.actor_config.remote(), timeout=60)
    except Exception as exc:
        if connected:
            ray.shutdown()
        raise RayUnavailable(f"the Coordinator of namespace {namespace!r} does not answer: "
                             f"{type(exc).__name__}") from None
    return Client(config, plane.coordinator, plane.distributor, ray_connected=connected)


def _init_local_ray(namespace: str, temp: Path, *, dashboard: bool,
                    log_to_driver: bool) -> str | None:
    """``ray.init`` of a private local cluster in ``temp``; its dashboard's URL, or None."""
    import ray

    with quiet_dashboard_failure(dashboard):
        context = ray.init(namespace=namespace, log_to_driver=log_to_driver,
                           _temp_dir=str(temp), **ray_init_options(dashboard, temp))
    return started_url(dashboard, context.dashboard_url, temp)


def _deployed(config: ActorConfig, *, owned: Owned | None, ray_connected: bool,
              dashboard_url: str | None = None) -> Client:
    """Find or start the actors; a Client over them. On failure, remove what ``start`` made."""
    from raysys.actors import factory

    try:
        plane = factory.deploy(config)
    except Exception as exc:
        if owned is not None:
            try:
                factory.kill_all(config.namespace)
            except Exception as kill_exc:  # Ray itself is gone: nothing left to remove
                log.warning("could not remove the actors: %s", kill_exc)
        raise RayUnavailable(f"raysys actors did not start: {type(exc).__name__}: "
                             f"{str(exc).splitlines()[0] if str(exc) else ''}") from None
    return Client(config, plane.coordinator, plane.distributor, owned=owned,
                  ray_connected=ray_connected, dashboard_url=dashboard_url)


def _prepare(overrides: dict[str, Any], *, workers: Workers, batch: int, concurrency: int,
             ledger: bool, scale_down_idle_s: float = 30.0, max_prefetch: int = 1000,
             ledger_url: str | None = None
             ) -> tuple[Settings, ActorConfig, EmbeddedRedis | None]:
    """Settings, the actors' config, and the embedded Redis if this call started it."""
    secret = SECRET_SETTINGS.intersection(overrides)
    if secret:
        raise ConfigurationError(f"{', '.join(sorted(secret))}: set these in the environment "
                                 "(RAYSYS_*/REDIS_*), not as arguments")
    settings = load_settings(**overrides)
    server: EmbeddedRedis | None = None
    if not settings.redis_configured:
        _, server = attach_or_start(settings.data_dir)
    actor_overrides = dict(overrides)
    actor_overrides["data_dir"] = str(settings.data_dir)
    try:
        if settings.signing_keys is None:
            keyring_source(settings)()  # the embedded default creates data_dir/keys.json once
            actor_overrides["signing_key_file"] = str(keyring_path(settings))
        config = ActorConfig.build(settings.namespace, actor_overrides, workers=workers,
                                   batch=batch, concurrency=concurrency, ledger=ledger,
                                   scale_down_idle_s=scale_down_idle_s,
                                   max_prefetch=max_prefetch, worker_prefix=settings.worker_id,
                                   ledger_url=ledger_url)
    except BaseException:
        if server is not None:
            server.stop()
        raise
    return settings, config, server


def join_cluster(address: str, namespace: str) -> bool:
    """``ray.init`` onto an existing cluster unless already connected; True if this call did."""
    import ray

    if ray.is_initialized():
        return False
    check_ray_reachable(address)
    check_token_accepted(address)  # else Ray retries a token refusal for 20 s, then blurs it
    try:
        ray.init(address=address, namespace=namespace, log_to_driver=False)
    except ConnectionError as exc:  # token auth refusing us looks the same: say which
        raise RayUnavailable(unreachable_message(address, exc)) from None
    except ray.exceptions.AuthenticationError:
        raise RayUnavailable(wrong_token_message(address)) from None
    return True


def running_gcs_address() -> str:
    """The GCS address of the one Ray cluster running on this machine, found as Ray does."""
    try:
        from ray._private.services import find_gcs_addresses
    except ImportError:
        return ""
    addresses = sorted(find_gcs_addresses())  # type: ignore[no-untyped-call]  # Ray: no hints
    return str(addresses[0]) if len(addresses) == 1 else ""


def port_free(host: str, port: int) -> bool:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        try:
            sock.bind((host, port))
        except OSError:
            return False
    return True


def check_ray_reachable(address: str, timeout_s: float = 3.0) -> None:
    """Fail fast with one line: ``ray.init`` retries an absent GCS for minutes, not seconds.

    ``auto`` needs ``RAY_ADDRESS`` or a local cluster's address file; ``host:port`` must accept
    a TCP connection. Other forms (``ray://``, ``http://``) are left to Ray.
    """
    target = address
    if address == "auto":
        target = _auto_address()
        if not target:
            raise RayUnavailable("no running Ray cluster found: start one (`ray start --head "
                                 "--port 6380`) or pass --address HOST:PORT")
    if "://" in target:
        return
    host, _, port = target.rpartition(":")
    if not host or not port.isdigit():
        raise RayUnavailable(f"Ray address {target!r} is not HOST:PORT")
    try:
        socket.create_connection((host, int(port)), timeout=timeout_s).close()
    except OSError as exc:
        raise RayUnavailable(f"no Ray cluster answers at {target} ({exc.strerror or exc}): start "
                             "it, or pass the head's GCS address with --address") from None


def resolved_address(address: str) -> str:
    """``address`` itself, or for ``auto`` the GCS address it means now ("" when none)."""
    return _auto_address() if address == "auto" else address


def _auto_address() -> str:
    """What ``--address auto`` means: RAY_ADDRESS, the local cluster's address file, or the
    one GCS Ray finds on this machine (only without RAY_TMPDIR); "" when there is none."""
    target = os.environ.get("RAY_ADDRESS", "")
    if not target:
        current = Path(os.environ.get("RAY_TMPDIR", tempfile.gettempdir())) / "ray" / (
            "ray_current_cluster")
        target = current.read_text().strip() if current.is_file() else ""
    if not target and "RAY_TMPDIR" not in os.environ:
        # `ray start --temp-dir X` writes its address file under X: find it as Ray does
        target = running_gcs_address()
    return target
