"""Task kinds: ``@raysys.task``, the context a handler gets, the built-in kinds.

Imports the foundation only. Importing it registers the built-ins (``noop``, ``echo``,
``sleep``, ``spin``, ``fail``, ``flaky``).
"""

from raysys.handlers import builtins as _builtins
from raysys.handlers.context import CancelSignal, TaskContext
from raysys.handlers.options import KindOptions
from raysys.handlers.registry import (
    Handler,
    HandlerFn,
    get_handler,
    handlers,
    import_handler_modules,
    registered_kinds,
    task,
)
from raysys.models import DEFAULT_MAX_ATTEMPTS, DEFAULT_TIMEOUT_S

del _builtins
__all__ = [
    "DEFAULT_MAX_ATTEMPTS",
    "DEFAULT_TIMEOUT_S",
    "CancelSignal",
    "Handler",
    "HandlerFn",
    "KindOptions",
    "TaskContext",
    "get_handler",
    "handlers",
    "import_handler_modules",
    "registered_kinds",
    "task",
]
