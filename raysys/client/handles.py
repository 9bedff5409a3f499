"""Typed views of the actor handles (Ray's own handles are untyped).

A Ray actor handle exposes each method as an object with ``.remote(...)`` returning an
``ObjectRef``. These Protocols say, for the Coordinator, the Distributor and a Worker, which
methods the client and the tools call and what each returns, so ``ray.get`` results are typed
at the one place that unwraps them (:func:`get`), and ``await ref`` (the async client) is typed
by :class:`Ref` itself. The actors themselves are plain classes in
``raysys.actors``; the factory there returns its handles as these types.
"""

from __future__ import annotations

from collections.abc import Generator, Sequence
from typing import TYPE_CHECKING, Any, ParamSpec, Protocol, TypeVar, cast

from raysys.actor_config import ActorConfig
from raysys.models import TaskSpec, TaskState, TaskStatus
from raysys.store.listing import TaskPage
from raysys.store.redrive import RedriveReport

if TYPE_CHECKING:
    from concurrent.futures import Future

T = TypeVar("T")
T_co = TypeVar("T_co", covariant=True)
P = ParamSpec("P")


class Ref(Protocol[T_co]):
    """A Ray ``ObjectRef`` whose value is a ``T_co`` (opaque; unwrap with :func:`get`, or
    ``await`` it inside an event loop)."""

    def future(self) -> Future[Any]: ...

    def __await__(self) -> Generator[Any, None, T_co]: ...


class Method(Protocol[P, T_co]):
    """One actor method, as a handle exposes it."""

    def remote(self, *args: P.args, **kwargs: P.kwargs) -> Ref[T_co]: ...


class CoordinatorHandle(Protocol):
    submit_many: Method[[Sequence[TaskSpec]], list[str]]
    status: Method[[str], TaskStatus]
    statuses: Method[[Sequence[str]], list[TaskStatus | None]]
    cancel: Method[[str], TaskState]
    cancel_many: Method[[Sequence[str]], list[TaskState | None]]
    waiting: Method[[], dict[str, dict[str, Any]]]
    tasks: Method[..., TaskPage]
    history: Method[[str], list[dict[str, Any]]]
    redrive: Method[..., RedriveReport]
    schedules: Method[..., Any]
    keep_pool: Method[[], dict[str, Any]]
    counts: Method[[], dict[str, int]]
    stats: Method[[], dict[str, int]]
    workers: Method[[], list[dict[str, Any]]]
    actor_config: Method[[], ActorConfig]
    publish_metrics: Method[[], int]
    reset_pool: Method[[], None]
    ping: Method[[], str]
    pid: Method[[], int]
    stop: Method[[], None]


class DistributorHandle(Protocol):
    pause: Method[[], None]
    resume: Method[[], None]
    info: Method[[], dict[str, Any]]
    pid: Method[[], int]
    stop: Method[[], None]


class WorkerHandle(Protocol):
    assign: Method[[bytes], int]
    attempt_started: Method[[str, int, float], None]
    load: Method[[], dict[str, Any]]
    info: Method[[], dict[str, Any]]
    drain: Method[[float], bool]
    undrain: Method[[], None]
    pid: Method[[], int]
    stop: Method[[], None]


def kill(handle: object) -> None:
    """``ray.kill`` an actor for good (no restart)."""
    import ray

    ray.kill(cast(Any, handle), no_restart=True)


def get(ref: Ref[T], timeout: float | None = None) -> T:
    """``ray.get`` of one typed reference."""
    import ray

    return cast(T, ray.get(cast(Any, ref), timeout=timeout))


def get_all(refs: Sequence[Ref[T]], timeout: float | None = None) -> list[T]:
    """``ray.get`` of several references of one type, in order."""
    import ray

    return cast(list[T], ray.get(cast(Any, list(refs)), timeout=timeout))
