"""The registry of task kinds: ``@raysys.task`` and the lookups the workers make.

A handler is ``fn(payload, ctx) -> result`` (a plain function, or ``async def``); the result must
be JSON. Only registered kinds run; a task of an unknown kind fails without retry. Registering a
kind twice replaces it (a reloaded module); the options are validated at registration.
"""

from __future__ import annotations

import importlib
import inspect
import re
import threading
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any, TypeVar, overload

from raysys.errors import ConfigurationError
from raysys.handlers.context import TaskContext
from raysys.handlers.options import KindOptions
from raysys.models import KIND_PATTERN

HandlerFn = Callable[[Any, TaskContext], Any]
F = TypeVar("F", bound=Callable[..., Any])


@dataclass(frozen=True, slots=True)
class Handler:
    """A registered kind: its name, function and options."""

    name: str
    fn: HandlerFn
    options: KindOptions
    is_async: bool = False

    @property
    def max_attempts(self) -> int:
        return self.options.max_attempts

    @property
    def timeout_s(self) -> float:
        return self.options.timeout_s


_REGISTRY: dict[str, Handler] = {}
_LOCK = threading.Lock()


@overload
def task(name: F, /) -> F: ...


@overload
def task(name: str | None = None, *, max_attempts: int | None = None,
         timeout_s: float | None = None, concurrency: int | None = None,
         max_in_flight: int | None = None, schedule_to_start_s: float | None = None,
         num_cpus: float | None = None, num_gpus: float | None = None,
         memory: int | None = None, resources: Mapping[str, float] | None = None,
         runtime_env: Mapping[str, Any] | None = None) -> Callable[[F], F]: ...


def task(name: Any = None, **options: Any) -> Any:
    """Register a handler as kind ``name`` (default: the function's name).

    ``max_attempts`` (default 3) and ``timeout_s`` (default 300, counted from the handler's
    start) are the kind's defaults; a submission may lower them. ``concurrency``: tasks of the
    kind at once per worker; ``max_in_flight``: leased at once across the cluster;
    ``schedule_to_start_s``: a task not started this long after submission ends ``dead``.
    ``num_cpus``, ``num_gpus``, ``memory``, ``resources``, ``runtime_env``: as on
    ``@ray.remote``; any of them makes the kind run as a Ray task Ray places. Usable bare
    (``@raysys.task``) or called. Raises ConfigurationError for a bad name or option.
    """
    if callable(name):
        return _register(name.__name__, name, {})
    if name is not None and not isinstance(name, str):
        raise ConfigurationError(f"task name must be a string, not {name!r}")

    def decorate(fn: F) -> F:
        return _register(name or fn.__name__, fn, options)

    return decorate


def _register(kind: str, fn: F, options: Mapping[str, Any]) -> F:
    if not re.match(KIND_PATTERN, kind):
        raise ConfigurationError(f"task name {kind!r} must match {KIND_PATTERN}")
    if not callable(fn):
        raise ConfigurationError(f"task {kind}: {fn!r} is not a function")
    handler = Handler(kind, fn, KindOptions.build(kind, **options),
                      is_async=inspect.iscoroutinefunction(fn))
    with _LOCK:
        _REGISTRY[kind] = handler
    return fn


def get_handler(kind: str) -> Handler | None:
    return _REGISTRY.get(kind)


def registered_kinds() -> list[str]:
    return sorted(_REGISTRY)


def handlers() -> list[Handler]:
    """Every registered handler, by kind."""
    with _LOCK:
        return [_REGISTRY[kind] for kind in sorted(_REGISTRY)]


def import_handler_modules(modules: list[str]) -> None:
    """Import the modules named in RAYSYS_HANDLERS; a missing one is a configuration error."""
    for module in modules:
        try:
            importlib.import_module(module)
        except ImportError as exc:
            raise ConfigurationError(
                f"RAYSYS_HANDLERS names {module!r}, which cannot be imported: {exc}") from None
