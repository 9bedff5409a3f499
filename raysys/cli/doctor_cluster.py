"""``raysys doctor``'s cluster checks: ``ray``, ``actors``, ``workers`` and ``http``.

- ``ray``: a Ray cluster answers at ``--address`` (``auto``: ``RAY_ADDRESS``, else the one on
  this machine) and lets this process in. A cluster that wants a token this process does not
  send is said in one line naming ``RAY_AUTH_MODE=token`` and the token file
  (:mod:`raysys.client.ray_auth`), in a few ms rather than after Ray's 20 s of retries.
- ``actors``: the namespace's named Coordinator and Distributor exist and answer.
- ``workers``: live workers (a heartbeat within the lease TTL), as the Coordinator counts them,
  against the pool it keeps (an autoscaled pool may rest at 0).
- ``http``: ``GET /health`` where the cluster's Serve listens (a wildcard bind: the head's
  address), else at ``RAYSYS_HTTP_HOST:RAYSYS_HTTP_PORT``: healthy is ok, degraded a warning,
  unhealthy or no answer a failure.

Each check raises (a :class:`~raysys.errors.RaysysError` fails, :class:`CheckWarning` warns)
or returns its detail, and waits a few seconds at most. Without a cluster, ``actors`` and
``workers`` fail as skipped. Ray is imported inside the checks only.
"""

from __future__ import annotations

import json
import urllib.error
import urllib.request
from typing import TYPE_CHECKING, Any

from raysys.config import Settings
from raysys.errors import RaysysError, RayUnavailable

if TYPE_CHECKING:
    from raysys.client.handles import CoordinatorHandle, Ref

CALL_TIMEOUT_S = 5.0
HTTP_TIMEOUT_S = 3.0
NO_RAY = "skipped: no Ray cluster (see the ray check)"
NO_COORDINATOR = "skipped: the Coordinator does not answer (see the actors check)"


class CheckWarning(Exception):
    """A check that passed but found something to fix (status ``warn``)."""


class ClusterProbe:
    """The Ray-side checks, run in order: each uses what the one before found. ``close``
    disconnects from the cluster if :meth:`ray` connected."""

    def __init__(self, address: str, namespace: str) -> None:
        self.address = address
        self.namespace = namespace
        self.reached = False
        self.connected = False  # this probe ran ray.init, so close() runs ray.shutdown
        self.coordinator: CoordinatorHandle | None = None
        self.target = ""  # the GCS's HOST:PORT once ray() resolved it

    def ray(self) -> str:
        import ray

        from raysys.client.launch import check_ray_reachable, join_cluster, resolved_address

        check_ray_reachable(self.address)  # one line when nothing listens there
        target = self.target = resolved_address(self.address)
        auth = _token_auth(self.address, target)
        self.connected = join_cluster(self.address, self.namespace)
        self.reached = True
        nodes: list[dict[str, Any]] = ray.nodes()  # type: ignore[no-untyped-call]  # no hints
        alive = len([node for node in nodes if node.get("Alive")])
        return f"Ray {ray.__version__} at {target}: {alive} node(s) alive, {auth}"

    def actors(self) -> str:
        if not self.reached:
            raise RayUnavailable(NO_RAY)
        from raysys.actors.factory import COORDINATOR, DISTRIBUTOR

        coordinator = self._named(COORDINATOR, "Coordinator")
        distributor = self._named(DISTRIBUTOR, "Distributor")
        pids = [_answer(coordinator.pid.remote(), "the Coordinator"),
                _answer(distributor.pid.remote(), "the Distributor")]
        self.coordinator = coordinator
        return (f"Coordinator (pid {pids[0]}) and Distributor (pid {pids[1]}) of namespace "
                f"{self.namespace!r} answer")

    def workers(self) -> str:
        if self.coordinator is None:
            raise RayUnavailable(NO_COORDINATOR if self.reached else NO_RAY)
        beats = _answer(self.coordinator.workers.remote(), "the Coordinator")
        config = _answer(self.coordinator.actor_config.remote(), "the Coordinator")
        live = [w for w in beats if w.get("live")]
        pool = (f"pool {config.min_workers}:{config.max_workers}"
                if config.max_workers != config.min_workers else f"pool of {config.min_workers}")
        draining = sum(1 for w in live if w.get("draining"))
        detail = (f"{len(live)} live (heartbeat within the lease TTL) of {len(beats)} known, "
                  f"{pool}" + (f", {draining} draining" if draining else ""))
        if not live and config.min_workers > 0:
            raise RaysysError(f"no live worker: {detail}; tasks wait until one runs "
                              "(`raysys workers` shows the last heartbeats)")
        if len(live) < config.min_workers:
            raise CheckWarning(f"fewer live workers than the pool keeps: {detail}")
        return detail

    def serve_endpoint(self) -> tuple[str, int] | None:
        """Where the cluster's Serve listens, as reachable from here (a wildcard bind is the
        head's address); None without a cluster or Serve (then the settings say where)."""
        if not self.reached:
            return None
        try:
            from raysys.serve.app import running_http

            found = running_http()
        except Exception:  # Serve's controller gone or not answering: use the settings
            return None
        if found is None:
            return None
        host, port = found
        if host in ("", "0.0.0.0", "::"):
            host = self.target.rsplit(":", 1)[0] or host
        return host, port

    def close(self) -> None:
        if self.connected:
            import ray

            ray.shutdown()
            self.connected = False

    def _named(self, name: str, role: str) -> Any:
        from raysys.actors.factory import get_actor

        try:
            return get_actor(name, self.namespace)
        except ValueError:
            raise RayUnavailable(f"no {role} in namespace {self.namespace!r}: start the actors "
                                 "(`raysys up`), or set RAYSYS_NAMESPACE to theirs") from None


def _token_auth(address: str, target: str) -> str:
    """How this process and the GCS at ``target`` stand on token auth, asked in one quick
    question before ``ray.init`` (which retries a refusal for 20 s): RayUnavailable, in one
    line, when the GCS refuses what this process would send.

    The question carries this process's token when ``RAY_AUTH_MODE=token`` (Ray's channel adds
    it), none otherwise; with ``auto`` and a token file Ray turns token auth on by itself, so a
    refusal of the bare question is no verdict then.
    """
    from raysys.client.ray_auth import (
        gcs_refuses_without_token,
        refused_message,
        sends_token,
        token_mode_on,
        wrong_token_message,
    )

    refused = gcs_refuses_without_token(target)
    if refused and token_mode_on():
        raise RayUnavailable(wrong_token_message(target))
    if refused and not sends_token(address):
        raise RayUnavailable(refused_message(target))
    if token_mode_on():
        return "token sent (RAY_AUTH_MODE=token)"
    if refused:
        return "token auth on (a token file found)"
    return "token auth not checked" if "://" in target else "token auth off"


def _answer(ref: Ref[Any], who: str) -> Any:
    """The value of one actor call, or RayUnavailable in one line within CALL_TIMEOUT_S."""
    import ray

    from raysys.client.calls import first_line
    from raysys.client.handles import get

    try:
        return get(ref, timeout=CALL_TIMEOUT_S)
    except ray.exceptions.GetTimeoutError:
        raise RayUnavailable(f"{who} does not answer within {CALL_TIMEOUT_S:g} s") from None
    except RaysysError:
        raise
    except Exception as exc:
        raise RayUnavailable(f"{who} does not answer: {first_line(exc)}") from None


def check_http(settings: Settings, endpoint: tuple[str, int] | None = None) -> str:
    """``/health`` of the HTTP app: at ``endpoint`` (where the cluster's Serve listens), else
    at RAYSYS_HTTP_HOST:RAYSYS_HTTP_PORT."""
    host, port = endpoint or (settings.http_host, settings.http_port)
    url = f"http://{_connect_host(host)}:{port}/health"
    status, doc = _get_json(url)
    state = doc.get("status")
    workers = doc.get("live_workers")
    if status == 200 and doc.get("namespace") not in (None, settings.namespace):
        raise CheckWarning(f"{url} serves namespace {doc.get('namespace')!r}, not "
                           f"RAYSYS_NAMESPACE {settings.namespace!r}: {state}")
    if status == 200 and state == "healthy":
        return f"{url}: healthy, {workers} live workers"
    if status == 200 and state == "degraded":
        raise CheckWarning(f"{url}: degraded ({'; '.join(_degraded_reasons(doc))})")
    why = "; ".join(_unhealthy_reasons(doc)) or f"answered {status}"
    raise RaysysError(f"{url}: {state or 'unhealthy'} ({why})")


def _get_json(url: str) -> tuple[int, dict[str, Any]]:
    """(HTTP status, JSON object) of ``GET url``, through no proxy; RaysysError when nothing
    answers."""
    opener = urllib.request.build_opener(urllib.request.ProxyHandler({}))
    try:
        with opener.open(url, timeout=HTTP_TIMEOUT_S) as reply:
            status, body = int(reply.status), reply.read()
    except urllib.error.HTTPError as exc:
        status, body = exc.code, exc.read()
    except (OSError, ValueError) as exc:  # refused, timed out, not HTTP
        reason = getattr(exc, "reason", None) or exc
        raise RaysysError(f"nothing answers at {url} ({reason}): deploy the HTTP app "
                          "(`raysys up` serves it), or set RAYSYS_HTTP_HOST/RAYSYS_HTTP_PORT "
                          "to where it runs") from None
    try:
        doc = json.loads(body)
    except ValueError:
        doc = None
    return status, doc if isinstance(doc, dict) else {}


def _connect_host(host: str) -> str:
    """Where to connect for a bind address: loopback for a wildcard, brackets for IPv6."""
    if host in ("", "0.0.0.0"):
        return "127.0.0.1"
    if host == "::":
        return "[::1]"
    return f"[{host}]" if ":" in host else host


def _degraded_reasons(doc: dict[str, Any]) -> list[str]:
    actors = doc.get("actors") or {}
    reasons = ["the Distributor is not alive"] if actors.get("distributor") is False else []
    if doc.get("live_workers") == 0:
        reasons.append("no live worker")
    waiting = [kind for kind, why in (doc.get("waiting") or {}).items()
               if isinstance(why, dict) and why.get("reason") == "resources"]
    if waiting:
        reasons.append(f"no node can place {', '.join(sorted(waiting))}")
    return reasons or [f"the reaper lags {doc.get('reaper_lag_s')} s behind"]


def _unhealthy_reasons(doc: dict[str, Any]) -> list[str]:
    reasons = ["the app cannot reach Redis"] if doc.get("redis_connected") is False else []
    if (doc.get("actors") or {}).get("coordinator") is False:
        reasons.append("the Coordinator is not alive")
    return reasons
