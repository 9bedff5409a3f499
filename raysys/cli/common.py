"""What every command shares: exit codes, argument types, and ``emit`` (``--json`` or text).

``--json`` prints exactly one JSON object on stdout; text goes to stdout too, while logs,
progress and advice go to stderr. A command handler is ``handler(args, settings) -> exit code``.
"""

from __future__ import annotations

import argparse
import json
from collections.abc import Callable, Mapping
from typing import Any

from raysys.config import Settings

EXIT_OK = 0
EXIT_UNACCOUNTED = 1  # a run or a wait that did not end with every task accounted for
EXIT_BAD_INPUT = 3  # raysys.errors.ValidationError's code
EXIT_INTERNAL = 70
EXIT_INTERRUPTED = 130

Handler = Callable[[argparse.Namespace, Settings], int]


def emit(doc: Mapping[str, Any], as_json: bool, text: str | Callable[[], str] | None = None,
         *, flush: bool = False) -> None:
    """Print ``doc`` as one JSON object (``as_json``) or ``text`` (a string, or a function
    making one: only called for text output); without ``text``, ``doc`` as ``key: value``
    lines."""
    if as_json:
        print(json.dumps(doc), flush=flush)
        return
    if text is None:
        body = "\n".join(f"{key}: {json.dumps(value)}" for key, value in doc.items())
    else:
        body = text() if callable(text) else text
    print(body, flush=flush)


def add_json_flag(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--json", action="store_true", help="print one JSON object on stdout")


def positive_int(text: str) -> int:
    """argparse type: a whole number of at least 1."""
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not a whole number") from None
    if value < 1:
        raise argparse.ArgumentTypeError("must be at least 1")
    return value


def positive_float(text: str) -> float:
    """argparse type: a finite number above 0."""
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not a number") from None
    if not value > 0 or value == float("inf"):
        raise argparse.ArgumentTypeError("must be a finite number above 0")
    return value


def workers_arg(text: str) -> tuple[int, int]:
    """argparse type: N or MIN:MAX workers."""
    from raysys.actor_config import pool_size
    from raysys.errors import ConfigurationError

    try:
        low, high = pool_size(text)
    except ConfigurationError as exc:
        raise argparse.ArgumentTypeError(str(exc)) from None
    if high < 1:
        raise argparse.ArgumentTypeError("at least one worker (MAX >= 1)")
    return low, high


def int_between(low: int, high: int) -> Callable[[str], int]:
    """argparse type: a whole number in ``[low, high]``."""

    def parse(text: str) -> int:
        try:
            value = int(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"{text!r} is not a whole number") from None
        if not low <= value <= high:
            raise argparse.ArgumentTypeError(f"must be between {low} and {high}")
        return value

    return parse
