"""The Python client and composition root of the actor system: ``start`` and ``connect``.

``start(workers=N)`` runs everything on this machine: the embedded Redis (or the configured
one), a private local Ray cluster, and the named actors. ``connect()`` finds actors that
``raysys up`` (or another ``start``) left running. Both return a :class:`Client`.

Ray and ``raysys.actors`` are imported inside functions only (DESIGN.md, "Layers"). Secrets
never travel as actor arguments: actors read the keyring from a FILE (for ``start``, the data
dir's ``keys.json``, created on first use) and Redis credentials from their environment, which a
local cluster inherits from this process.
"""

from __future__ import annotations

import logging
import os
import shutil
import socket
import tempfile
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from functools import partial
from pathlib import Path
from typing import Any, TypeVar

from raysys.config import Settings, load_settings
from raysys.embedded import EmbeddedRedis, attach_or_start
from raysys.errors import ConfigurationError, RaysysError, RayUnavailable
from raysys.models import FINAL_STATES, TaskSpec, TaskState, TaskStatus
from raysys.runtime import keyring_path, keyring_source

log = logging.getLogger("raysys.client")

_T = TypeVar("_T")
SUBMIT_CHUNK = 1000  # tasks per coordinator call: keeps each actor message small
DEFAULT_CALL_TIMEOUT_S = 60.0
READY_TIMEOUT_S = 120.0
POLL_S = 0.1


@dataclass
class _Owned:
    """What ``start`` created and ``shutdown`` must take down."""

    server: EmbeddedRedis | None
    ray_started: bool
    ray_temp_dir: Path | None


def _worker_index(namespace: str, worker_id: str) -> int:
    prefix = f"{namespace}-worker-"
    if not worker_id.startswith(prefix) or not worker_id[len(prefix):].isdigit():
        raise ConfigurationError(f"{worker_id!r} is not a worker id of namespace {namespace} "
                                 f"(expected {prefix}<n>)")
    return int(worker_id[len(prefix):])


def _actors_factory() -> Any:
    # raysys.actors lives in actors/ (mapped by package-dir); mypy checks raysys/ alone.
    from raysys.actors import factory  # type: ignore[import-not-found, unused-ignore]

    return factory


def _serve_app() -> Any:
    from raysys.serve import app  # type: ignore[import-not-found, unused-ignore]

    return app


def _actors_context() -> Any:
    from raysys.actors import context  # type: ignore[import-not-found, unused-ignore]

    return context


class Client:
    """Submit, wait, query and control one raysys namespace through its named actors."""

    def __init__(self, namespace: str, coordinator: Any, distributor: Any, config: Any, *,
                 owned: _Owned | None = None, ray_connected: bool = False,
                 call_timeout_s: float = DEFAULT_CALL_TIMEOUT_S) -> None:
        self.namespace = namespace
        self.coordinator = coordinator
        self.distributor = distributor
        self.config = config  # raysys.actors.ActorConfig: how to start more workers
        self.call_timeout_s = call_timeout_s
        self._owned = owned
        self._ray_connected = ray_connected
        self._closed = False
        self._serving = False

    # ---- tasks --------------------------------------------------------------------------------
    def submit(self, kind: str, payload: Any = None, priority: int = 0,
               idempotency_key: str | None = None, **spec: Any) -> str:
        """Store one task durably (returns after it is in Redis); its id."""
        task = TaskSpec.build(kind=kind, payload=payload, priority=priority,
                              idempotency_key=idempotency_key, **spec)
        ids = self._submit([task], retry=idempotency_key is not None)
        return ids[0]

    def submit_many(self, kind: str, payloads: Sequence[Any], priority: int = 0,
                    **spec: Any) -> list[str]:
        """Store many tasks of one kind; ids in the order of ``payloads``."""
        tasks = [TaskSpec.build(kind=kind, payload=p, priority=priority, **spec)
                 for p in payloads]
        return self._submit(tasks, retry=False)

    def submit_specs(self, specs: Sequence[TaskSpec]) -> list[str]:
        """Store prepared specs (mixed kinds and priorities); ids in order."""
        return self._submit(list(specs), retry=False)

    def _submit(self, specs: list[TaskSpec], *, retry: bool) -> list[str]:
        # Without idempotency keys a resend after a lost reply could store the batch twice,
        # so only keyed submissions are retried when the Coordinator is restarting.
        ids: list[str] = []
        for offset in range(0, len(specs), SUBMIT_CHUNK):
            chunk = specs[offset:offset + SUBMIT_CHUNK]
            got = self._call(partial(self._remote_submit, chunk), retry=retry)
            ids += [str(task_id) for task_id in got]
        return ids

    def _remote_submit(self, chunk: list[TaskSpec]) -> Any:
        return self.coordinator.submit_many.remote(chunk)

    def status(self, task_id: str) -> TaskStatus:
        result: TaskStatus = self._call(lambda: self.coordinator.status.remote(task_id))
        return result

    def statuses(self, task_ids: Sequence[str]) -> list[TaskStatus | None]:
        ids = list(task_ids)
        result: list[TaskStatus | None] = self._call(
            lambda: self.coordinator.statuses.remote(ids))
        return result

    def wait(self, task_ids: Sequence[str], timeout: float | None = None) -> list[TaskStatus]:
        """Wait until every task is final (or ``timeout`` s passed); statuses in ``ids`` order.

        On timeout the current statuses are returned: check ``.state``. An unknown id raises
        NotFound.
        """
        ids = list(task_ids)
        deadline = None if timeout is None else time.monotonic() + timeout
        latest: dict[str, TaskStatus] = {}
        todo = list(dict.fromkeys(ids))
        while True:
            for offset in range(0, len(todo), SUBMIT_CHUNK):
                chunk = todo[offset:offset + SUBMIT_CHUNK]
                for task_id, status in zip(chunk, self.statuses(chunk), strict=True):
                    if status is None:
                        from raysys.errors import NotFound

                        raise NotFound(f"no task {task_id} in namespace {self.namespace}")
                    latest[task_id] = status
            todo = [i for i in todo if latest[i].state not in FINAL_STATES]
            if not todo or (deadline is not None and time.monotonic() > deadline):
                return [latest[i] for i in ids]
            time.sleep(POLL_S)

    def cancel(self, task_id: str) -> TaskState:
        """Cancel a task that is not final yet; the state it was in."""
        result: TaskState = self._call(lambda: self.coordinator.cancel.remote(task_id))
        return result

    def counts(self) -> dict[str, int]:
        result: dict[str, int] = self._call(lambda: self.coordinator.counts.remote())
        return result

    def stats(self) -> dict[str, int]:
        """Store event counters (submitted, granted, expired, retries, fenced_rejected, ...)."""
        result: dict[str, int] = self._call(lambda: self.coordinator.stats.remote())
        return result

    def workers(self) -> list[dict[str, Any]]:
        """Heartbeats of every worker (``live``: beat within the lease TTL)."""
        result: list[dict[str, Any]] = self._call(lambda: self.coordinator.workers.remote())
        return result

    # ---- the pool -----------------------------------------------------------------------------
    def scale(self, workers: int) -> None:
        """Start workers ``0..workers-1`` that are missing; drain and stop any above."""
        factory = _actors_factory()

        if workers < 0:
            raise ConfigurationError("workers must be >= 0")
        existing = factory.worker_handles(self.namespace)
        started = [factory.start_worker(self.config, i) for i in range(workers)
                   if i not in existing]
        self._ready([h.load.remote() for h in started])
        surplus = [h for i, h in existing.items() if i >= workers]
        if surplus:
            import ray

            ray.get([h.drain.remote() for h in surplus], timeout=READY_TIMEOUT_S)
            ray.get([h.stop.remote() for h in surplus], timeout=READY_TIMEOUT_S)
            for handle in surplus:
                ray.kill(handle, no_restart=True)

    def worker(self, index: int) -> Any:
        """The actor handle of worker ``index`` (tests, chaos tooling)."""
        factory = _actors_factory()

        try:
            return factory.get_actor(factory.worker_name(index), self.namespace)
        except ValueError:
            raise RayUnavailable(f"no worker {index} in namespace {self.namespace}") from None

    def drain(self, timeout: float = 60.0, *, worker: str | None = None,
              node: str | None = None) -> bool:
        """Let workers finish what they run, hand back what they hold queued, take nothing new.

        True when every drained worker finished in time (on False, whatever is still held
        expires after the lease TTL and is requeued: nothing is lost). Without ``worker`` or
        ``node``, hand-out pauses for the whole pool; afterwards no worker holds a lease. With
        ``worker`` (a worker id such as ``<namespace>-worker-3``, as ``workers()`` lists) only
        that one drains; with ``node`` (Ray node id, IP or host name) every worker on that node
        (a preStop hook). ``resume`` undoes either.
        """
        import ray

        factory = _actors_factory()
        handles = factory.worker_handles(self.namespace)
        if worker is not None or node is not None:
            if worker is not None:
                index = _worker_index(self.namespace, worker)
                if index not in handles:
                    raise RayUnavailable(f"no worker {worker!r} in namespace {self.namespace}")
                chosen = [handles[index]]
            else:
                on_node = {_worker_index(self.namespace, w["id"]) for w in self.workers()
                           if node in (w.get("node"), w.get("node_ip"), w.get("node_id"))}
                chosen = [h for i, h in handles.items() if i in on_node]
                if not chosen:
                    log.warning("no raysys worker runs on node %s: nothing to drain", node)
                    return True
            done = ray.get([h.drain.remote(timeout) for h in chosen], timeout=timeout + 30)
            return all(bool(d) for d in done)
        self._call(lambda: self.distributor.pause.remote())
        done = ray.get([h.drain.remote(timeout) for h in handles.values()], timeout=timeout + 30)
        return all(bool(d) for d in done)

    def serve(self, host: str, port: int) -> str | None:
        """Run the HTTP app (``/health``, ``/metrics``, task API) on this cluster; its URL.

        None, with a warning, when the port is taken: the actors keep working without it. If
        Serve already runs on the cluster, the app joins it (on Serve's port).
        """
        app = _serve_app()
        if app.running_http() is None and not _port_free(host, port):
            log.warning("HTTP app not started: %s:%d is in use (set RAYSYS_HTTP_PORT)", host,
                        port)
            return None
        url: str = app.deploy(self.config, host=host, port=port)
        self._serving = True
        return url

    def resume(self) -> None:
        import ray

        factory = _actors_factory()

        handles = list(factory.worker_handles(self.namespace).values())
        ray.get([h.undrain.remote() for h in handles], timeout=self.call_timeout_s)
        self._call(lambda: self.distributor.resume.remote())

    def down(self, *, drain: bool = False, timeout: float = 60.0) -> None:
        """Stop and remove every actor of the namespace (``raysys down``); Redis keeps the tasks."""
        factory = _actors_factory()

        if drain:
            self.drain(timeout)
        if not self._owned:  # a cluster that outlives us: remove the HTTP app if it is ours
            try:
                _serve_app().remove(self.namespace)
            except Exception as exc:  # Serve never ran here, or is gone already
                log.debug("no HTTP app to remove: %s", exc)
        factory.kill_all(self.namespace)

    def shutdown(self) -> None:
        """``start``: remove the actors, stop Ray and the embedded Redis it started.
        ``connect``: disconnect only (the actors keep running)."""
        if self._closed:
            return
        self._closed = True
        import ray

        owned = self._owned
        try:
            if owned is not None:
                try:
                    self.down()
                except Exception as exc:  # Ray already gone: nothing left to remove
                    log.warning("could not remove the actors: %s", exc)
            if self._ray_connected:
                ray.shutdown()
        finally:
            if owned is not None:
                if owned.server is not None:
                    owned.server.stop()
                if owned.ray_temp_dir is not None:
                    shutil.rmtree(owned.ray_temp_dir, ignore_errors=True)

    def __enter__(self) -> Client:
        return self

    def __exit__(self, *exc: object) -> None:
        self.shutdown()

    # ---- plumbing -----------------------------------------------------------------------------
    def _call(self, make: Callable[[], Any], *, retry: bool = True) -> Any:
        """``ray.get(make())``, retried while the actor restarts (if ``retry``).

        A RaysysError raised in the actor is re-raised here as itself.
        """
        import ray
        from ray.exceptions import GetTimeoutError, RayActorError, RayTaskError

        deadline = time.monotonic() + self.call_timeout_s
        pause = 0.05
        while True:
            try:
                return ray.get(make(), timeout=self.call_timeout_s)
            except RayTaskError as exc:
                cause = exc.cause
                if isinstance(cause, RaysysError):
                    raise cause from None
                raise
            except (RayActorError, GetTimeoutError) as exc:
                if not retry or time.monotonic() > deadline:
                    raise RayUnavailable(f"raysys actor unavailable: {type(exc).__name__}: "
                                         f"{str(exc).splitlines()[0] if str(exc) else ''}"
                                         ) from None
                time.sleep(pause)
                pause = min(pause * 2, 1.0)

    def _deploy(self, workers: int) -> None:
        factory = _actors_factory()
        self.coordinator = factory.start_coordinator(self.config)
        self.distributor = factory.start_distributor(self.config)
        self._ready([self.coordinator.ping.remote(), self.distributor.info.remote()])
        self.scale(workers)

    def _ready(self, refs: list[Any]) -> None:
        if not refs:
            return
        import ray

        try:
            ray.get(refs, timeout=READY_TIMEOUT_S)
        except Exception as exc:
            raise RayUnavailable(f"raysys actors did not start: {type(exc).__name__}: "
                                 f"{str(exc).splitlines()[0] if str(exc) else ''}") from None


def _prepare(overrides: dict[str, Any], batch: int, capacity: int | None,
             ledger: bool) -> tuple[Settings, Any, EmbeddedRedis | None]:
    """Settings, the actors' config, and the embedded Redis if this call started it."""
    context = _actors_context()
    secret = context.SECRET_SETTINGS.intersection(overrides)
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
        config = context.ActorConfig(settings.namespace, actor_overrides, batch=batch,
                                     capacity=capacity or 2 * batch, ledger=ledger)
    except BaseException:
        if server is not None:
            server.stop()
        raise
    return settings, config, server


def start(workers: int = 2, *, batch: int = 50, capacity: int | None = None,
          ledger: bool = False, ray_temp_dir: Path | None = None, log_to_driver: bool = False,
          **settings_overrides: Any) -> Client:
    """Run raysys on this machine and return a client; ``shutdown()`` takes it all down.

    ``settings_overrides`` are :class:`~raysys.config.Settings` fields (``data_dir``,
    ``namespace``, ``lease_ttl_s``, ``reaper_interval_s``, ``handlers``, ...). Secrets cannot be
    passed here (the actors would receive them as arguments): set them in the environment.
    If Ray is already initialised in this process, its cluster is used (and left running).
    """
    import ray

    settings, config, server = _prepare(settings_overrides, batch, capacity, ledger)
    ray_started = False
    temp: Path | None = None
    try:
        if not ray.is_initialized():
            # A private temp dir: a plain ray.init() would attach to another local cluster.
            temp = ray_temp_dir or Path(tempfile.mkdtemp(prefix="raysys-ray-"))
            ray.init(namespace=settings.namespace, include_dashboard=False,
                     log_to_driver=log_to_driver, _temp_dir=str(temp))
            ray_started = True
    except BaseException:
        if server is not None:
            server.stop()
        raise
    owned = _Owned(server, ray_started, temp if ray_temp_dir is None else None)
    return _deployed(Client(settings.namespace, None, None, config, owned=owned,
                            ray_connected=ray_started), workers)


def up(address: str = "auto", workers: int = 2, *, batch: int = 50, capacity: int | None = None,
       **settings_overrides: Any) -> Client:
    """Start (or find) the named actors on a running Ray cluster (``raysys up``).

    The actors are detached: they outlive this process; ``Client.down()`` removes them. With no
    Redis configured, the embedded one is started in the data dir and left running (single
    machine only: actors on other nodes cannot reach it).
    """

    settings, config, server = _prepare(settings_overrides, batch, capacity, False)
    if server is not None:
        log.warning("started the embedded Redis in %s for the cluster; it keeps running",
                    settings.data_dir)
    connected = _join_cluster(address, settings.namespace)
    return _deployed(Client(settings.namespace, None, None, config, ray_connected=connected),
                     workers)


def connect(address: str = "auto", namespace: str | None = None, *,
            settings: Settings | None = None) -> Client:
    """Attach to running actors (``raysys up``) of ``namespace`` (default RAYSYS_NAMESPACE)."""
    import ray

    factory = _actors_factory()

    namespace = namespace or (settings or load_settings()).namespace
    connected = _join_cluster(address, namespace)
    try:
        coordinator = factory.get_actor(factory.COORDINATOR, namespace)
        distributor = factory.get_actor(factory.DISTRIBUTOR, namespace)
    except ValueError:
        if connected:
            ray.shutdown()
        raise RayUnavailable(f"no raysys actors in namespace {namespace!r}: run `raysys up` "
                             "first") from None
    client = Client(namespace, coordinator, distributor, None, ray_connected=connected)
    client.config = client._call(lambda: coordinator.actor_config.remote())
    return client


def _deployed(client: Client, workers: int) -> Client:
    """Start or find the client's actors; on failure release what the client holds."""
    try:
        client._deploy(workers)
    except BaseException:
        client.shutdown()
        raise
    return client


def _join_cluster(address: str, namespace: str) -> bool:
    """``ray.init`` onto an existing cluster unless already connected; True if this call did."""
    import ray

    if ray.is_initialized():
        return False
    _check_ray_reachable(address)
    try:
        ray.init(address=address, namespace=namespace, log_to_driver=False)
    except ConnectionError as exc:
        raise RayUnavailable(f"cannot reach the Ray cluster at {address!r}: {exc}") from None
    except ray.exceptions.AuthenticationError:
        raise RayUnavailable(f"the Ray cluster at {address!r} refused this client's token: "
                             "set RAY_AUTH_TOKEN or RAY_AUTH_TOKEN_PATH to the cluster's token "
                             "(`ray get-auth-token` on the head)") from None
    return True


def _running_gcs_address() -> str:
    """The GCS address of the one Ray cluster running on this machine, found as Ray does."""
    try:
        from ray._private.services import find_gcs_addresses
    except ImportError:
        return ""
    addresses = sorted(find_gcs_addresses())  # type: ignore[no-untyped-call, unused-ignore]
    return str(addresses[0]) if len(addresses) == 1 else ""


def _port_free(host: str, port: int) -> bool:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        try:
            sock.bind((host, port))
        except OSError:
            return False
    return True


def _check_ray_reachable(address: str, timeout_s: float = 3.0) -> None:
    """Fail fast with one line: ``ray.init`` retries an absent GCS for minutes, not seconds.

    ``auto`` needs ``RAY_ADDRESS`` or a local cluster's address file; ``host:port`` must accept
    a TCP connection. Other forms (``ray://``, ``http://``) are left to Ray.
    """
    target = address
    if address == "auto":
        target = os.environ.get("RAY_ADDRESS", "")
        if not target:
            current = Path(os.environ.get("RAY_TMPDIR", tempfile.gettempdir())) / "ray" / (
                "ray_current_cluster")
            target = current.read_text().strip() if current.is_file() else ""
        if not target and "RAY_TMPDIR" not in os.environ:
            # `ray start --temp-dir X` writes its address file under X: find it as Ray does
            target = _running_gcs_address()
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
