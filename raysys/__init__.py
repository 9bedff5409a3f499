"""raysys: run tasks on a Ray cluster so that none is lost and none is committed twice."""

from pathlib import Path

from raysys.errors import (
    ConfigurationError,
    IntegrityError,
    LeaseError,
    LeaseLost,
    NotFound,
    RaysysError,
    RayUnavailable,
    RedisUnavailable,
    TaskFailed,
    ValidationError,
)
from raysys.handlers import TaskContext, task
from raysys.models import TaskSpec, TaskState, TaskStatus

__version__ = "0.1.0"
__all__ = [
    "ConfigurationError",
    "IntegrityError",
    "LeaseError",
    "LeaseLost",
    "NotFound",
    "RayUnavailable",
    "RaysysError",
    "RedisUnavailable",
    "TaskContext",
    "TaskFailed",
    "TaskSpec",
    "TaskState",
    "TaskStatus",
    "ValidationError",
    "__version__",
    "task",
]

# pyproject maps actors/ and serve/ to raysys.actors and raysys.serve. A source checkout on
# sys.path (Ray puts the driver's cwd there) shadows any install with this bare folder, so there
# the checkout root joins this package's path and the mapping still holds (DESIGN.md, "Layers").
_here = Path(__file__).resolve().parent
if (_here.parent / "actors").is_dir() and not (_here / "actors").is_dir():
    __path__.append(str(_here.parent))
