"""What a task kind asks for: attempts, time limit, concurrency, and Ray resources.

:class:`KindOptions` holds the options of ``@raysys.task``, validated once, at registration: a
bad value is one :class:`~raysys.errors.ConfigurationError` naming the option, before any task
of the kind is stored. The Ray options (``num_cpus``, ``num_gpus``, ``memory``, ``resources``,
``runtime_env``) mean what they mean on ``@ray.remote``; a kind that sets any of them runs as a
Ray task placed by Ray's scheduler (``remote``), under the lease of the worker that started it.
Ray's own retries stay off (``max_retries=0``): raysys counts attempts.
"""

from __future__ import annotations

import math
import re
from collections.abc import Mapping
from dataclasses import dataclass, field, fields
from typing import Any

from raysys.errors import ConfigurationError
from raysys.models import DEFAULT_MAX_ATTEMPTS, DEFAULT_TIMEOUT_S

MAX_ATTEMPTS_LIMIT = 100
MAX_TIMEOUT_S = 86_400.0
MAX_CONCURRENCY = 10_000
RESOURCE_NAME = re.compile(r"^[A-Za-z0-9_.:/-]{1,128}$")
# Ray spells these as options of their own (num_cpus, num_gpus, memory): not in ``resources``.
RESERVED_RESOURCES = frozenset({"CPU", "GPU", "memory", "object_store_memory"})
# runtime_env fields Ray 2.60 knows (its RuntimeEnv.known_fields without the private ones).
RUNTIME_ENV_FIELDS = frozenset({
    "working_dir", "py_modules", "py_executable", "pip", "uv", "conda", "container",
    "image_uri", "env_vars", "excludes", "config", "java_jars", "worker_process_setup_hook",
})
# Ray logs runtime_env: a secret set there would be written to its logs (DESIGN.md).
SECRET_VARIABLES = frozenset({"RAYSYS_SIGNING_KEYS", "RAYSYS_API_TOKEN", "RAYSYS_REDIS_URL",
                              "REDIS_PASSWORD"})


@dataclass(frozen=True)
class KindOptions:
    """The options of one kind. Build it with :meth:`build` (validates)."""

    max_attempts: int = DEFAULT_MAX_ATTEMPTS
    timeout_s: float = DEFAULT_TIMEOUT_S
    concurrency: int | None = None  # tasks of this kind at once per worker (None: no own cap)
    max_in_flight: int | None = None  # tasks of this kind leased at once, cluster-wide
    schedule_to_start_s: float | None = None  # dead if not started this long after submission
    num_cpus: float | None = None
    num_gpus: float | None = None
    memory: int | None = None  # bytes
    resources: Mapping[str, float] = field(default_factory=dict)
    runtime_env: Mapping[str, Any] | None = None

    @classmethod
    def build(cls, kind: str, **options: Any) -> KindOptions:
        """Validated options; ConfigurationError naming the kind and the option at fault."""
        known = {f.name for f in fields(cls)}
        unknown = sorted(set(options) - known)
        if unknown:
            raise ConfigurationError(f"task {kind}: unknown option {', '.join(unknown)}; "
                                     f"known: {', '.join(sorted(known))}")
        values = {k: v for k, v in options.items() if v is not None}
        try:
            _check(values)
        except ValueError as exc:
            raise ConfigurationError(f"task {kind}: {exc}") from None
        if "resources" in values:
            values["resources"] = {str(k): float(v) for k, v in values["resources"].items()}
        if "runtime_env" in values:
            values["runtime_env"] = dict(values["runtime_env"])
        return cls(**values)

    @property
    def remote(self) -> bool:
        """True when the kind runs as a Ray task (it sets a Ray option)."""
        return (self.num_cpus is not None or self.num_gpus is not None
                or self.memory is not None or bool(self.resources)
                or self.runtime_env is not None)

    def ray_options(self) -> dict[str, Any]:
        """Options for ``ray.remote(...).options(...)``: the kind's, and ``max_retries=0``."""
        out: dict[str, Any] = {"max_retries": 0}
        for name in ("num_cpus", "num_gpus", "memory", "runtime_env"):
            value = getattr(self, name)
            if value is not None:
                out[name] = value
        if self.resources:
            out["resources"] = dict(self.resources)
        return out

    def requirement(self) -> dict[str, float]:
        """What one task needs from a node, in Ray's resource names (a Ray task takes one
        CPU unless it says otherwise); {} for a kind that runs inside the worker."""
        if not self.remote:
            return {}
        need = {"CPU": 1.0 if self.num_cpus is None else float(self.num_cpus),
                "GPU": float(self.num_gpus or 0), "memory": float(self.memory or 0),
                **self.resources}
        return {name: amount for name, amount in need.items() if amount > 0}

    def to_doc(self) -> dict[str, Any]:
        """The registry's description of the kind (JSON; runtime_env is not needed there)."""
        return {"max_attempts": self.max_attempts, "timeout_s": self.timeout_s,
                "concurrency": self.concurrency, "max_in_flight": self.max_in_flight,
                "schedule_to_start_s": self.schedule_to_start_s, "remote": self.remote,
                "requirement": self.requirement()}


def _check(values: Mapping[str, Any]) -> None:
    _check_int(values, "max_attempts", 1, MAX_ATTEMPTS_LIMIT)
    _check_int(values, "concurrency", 1, MAX_CONCURRENCY)
    _check_int(values, "max_in_flight", 1, 10_000_000)
    for name, high in (("timeout_s", MAX_TIMEOUT_S), ("schedule_to_start_s", 365 * 86_400.0)):
        if name in values:
            value = _number(values[name], name)
            if not 0 < value <= high:
                raise ValueError(f"{name} must be above 0 and at most {high:g}, not {value!r}")
    for name in ("num_cpus", "num_gpus"):
        if name in values:
            _check_quantity(name, values[name])
    if "memory" in values:
        memory = values["memory"]
        if isinstance(memory, bool) or not isinstance(memory, int) or memory < 0:
            raise ValueError(f"memory must be a whole number of bytes >= 0, not {memory!r}")
    if "resources" in values:
        _check_resources(values["resources"])
    if "runtime_env" in values:
        check_runtime_env(values["runtime_env"])


def _check_int(values: Mapping[str, Any], name: str, low: int, high: int) -> None:
    if name not in values:
        return
    value = values[name]
    if isinstance(value, bool) or not isinstance(value, int) or not low <= value <= high:
        raise ValueError(f"{name} must be a whole number from {low} to {high}, not {value!r}")


def _number(value: Any, name: str) -> float:
    if isinstance(value, bool) or not isinstance(value, int | float) or not math.isfinite(value):
        raise ValueError(f"{name} must be a finite number, not {value!r}")
    return float(value)


def _check_quantity(name: str, value: Any) -> None:
    """A Ray resource quantity: >= 0; above 1 a whole number (Ray's rule)."""
    amount = _number(value, name)
    if amount < 0:
        raise ValueError(f"{name} must not be negative, not {value!r}")
    if amount > 1 and not amount.is_integer():
        raise ValueError(f"{name} above 1 must be a whole number (Ray's rule), not {value!r}")


def _check_resources(resources: Any) -> None:
    if not isinstance(resources, Mapping):
        raise ValueError(f"resources must be a mapping of name to amount, not {resources!r}")
    for name, amount in resources.items():
        if not isinstance(name, str) or not RESOURCE_NAME.match(name):
            raise ValueError(f"resource name {name!r} must match {RESOURCE_NAME.pattern}")
        if name in RESERVED_RESOURCES:
            raise ValueError(f"resource {name!r} is set with its own option (num_cpus, "
                             "num_gpus, memory), not in resources")
        _check_quantity(f"resources[{name!r}]", amount)


def check_runtime_env(env: Any) -> None:
    """Raise ValueError unless ``env`` has the shape Ray accepts for a runtime_env (the fields
    and types checked offline; Ray itself checks the rest when the task is submitted)."""
    if not isinstance(env, Mapping):
        raise ValueError(f"runtime_env must be a mapping, not {env!r}")
    unknown = sorted(str(k) for k in env if k not in RUNTIME_ENV_FIELDS)
    if unknown:
        raise ValueError(f"runtime_env has unknown field {', '.join(unknown)}; Ray knows "
                         f"{', '.join(sorted(RUNTIME_ENV_FIELDS))}")
    env_vars = env.get("env_vars", {})
    if not isinstance(env_vars, Mapping) or not all(
            isinstance(k, str) and isinstance(v, str) for k, v in env_vars.items()):
        raise ValueError("runtime_env env_vars must map names to strings")
    secret = sorted(SECRET_VARIABLES.intersection(env_vars))
    if secret:
        raise ValueError(f"runtime_env env_vars must not carry {', '.join(secret)}: Ray logs "
                         "runtime_env; secrets reach nodes as files or node environment")
    for name in ("working_dir", "image_uri", "py_executable"):
        if name in env and not isinstance(env[name], str):
            raise ValueError(f"runtime_env {name} must be a string")
    for name in ("py_modules", "excludes", "java_jars"):
        if name in env and not (isinstance(env[name], list)
                                and all(isinstance(x, str) for x in env[name])):
            raise ValueError(f"runtime_env {name} must be a list of strings")
    for name in ("pip", "uv"):
        if name in env and not isinstance(env[name], str | list | dict):
            raise ValueError(f"runtime_env {name} must be a string, a list or a mapping")
    if "conda" in env and not isinstance(env["conda"], str | dict):
        raise ValueError("runtime_env conda must be a string or a mapping")
