"""raysys: run tasks on a Ray cluster so that none is lost and none is committed twice."""

from pathlib import Path
from typing import TYPE_CHECKING, Any

from raysys.errors import (
    ConfigurationError,
    Fail,
    IntegrityError,
    LeaseError,
    LeaseLost,
    NotFound,
    RaysysError,
    RayUnavailable,
    RedisUnavailable,
    Retry,
    TaskCancelled,
    TaskDead,
    TaskFailed,
    TaskNotSucceeded,
    TaskQuarantined,
    ValidationError,
)
from raysys.handlers import CancelSignal, TaskContext, task
from raysys.models import TaskSpec, TaskState, TaskStatus

if TYPE_CHECKING:
    from raysys import aio
    from raysys.client import Client


def start(workers: int | str | tuple[int, int] = 2, **options: Any) -> "Client":
    """Run raysys on this machine (embedded Redis, local Ray, the actors); see raysys.client."""
    from raysys.client import start as _start

    return _start(workers, **options)


def up(address: str = "auto", workers: int | str | tuple[int, int] = 2,
       **options: Any) -> "Client":
    """Start (or find) the named actors on a running Ray cluster (`raysys up`); see client."""
    from raysys.client import up as _up

    return _up(address, workers, **options)


def connect(address: str = "auto", namespace: str | None = None, **options: Any) -> "Client":
    """Attach to actors a `raysys up` left running on a Ray cluster; see raysys.client."""
    from raysys.client import connect as _connect

    return _connect(address, namespace, **options)


def __getattr__(name: str) -> Any:
    """``raysys.aio`` (the async client), imported on first use like ``raysys.client``."""
    if name == "aio":
        import importlib

        return importlib.import_module("raysys.aio")
    raise AttributeError(f"module 'raysys' has no attribute {name!r}")


__version__ = "0.1.0"
__all__ = [
    "CancelSignal",
    "ConfigurationError",
    "Fail",
    "IntegrityError",
    "LeaseError",
    "LeaseLost",
    "NotFound",
    "RayUnavailable",
    "RaysysError",
    "RedisUnavailable",
    "Retry",
    "TaskCancelled",
    "TaskContext",
    "TaskDead",
    "TaskFailed",
    "TaskNotSucceeded",
    "TaskQuarantined",
    "TaskSpec",
    "TaskState",
    "TaskStatus",
    "ValidationError",
    "__version__",
    "aio",
    "connect",
    "start",
    "task",
    "up",
]

# pyproject maps actors/ and serve/ to raysys.actors and raysys.serve. A source checkout on
# sys.path (Ray puts the driver's cwd there) shadows any install with this bare folder, so there
# the checkout root joins this package's path and the mapping still holds (DESIGN.md, "Layers").
_here = Path(__file__).resolve().parent
if (_here.parent / "actors").is_dir() and not (_here / "actors").is_dir():
    __path__.append(str(_here.parent))
