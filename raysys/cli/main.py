"""The ``raysys`` command line: one parser, and one mapping of errors to exit codes.

Every error is one line on stderr and a documented exit code (see ``raysys.errors``):
2 configuration, 3 bad input, 4 Redis unavailable, 5 Ray unavailable, 6 integrity, 7 lease,
8 not found, 1 a run that did not account for every task, 70 an internal error (a bug: please
report it; ``LOG_LEVEL=DEBUG`` shows the traceback), 130 interrupted (Ctrl-C), 141 stdout closed
(a pipe reader quit), 143 terminated (SIGTERM; SIGHUP gives 129). On a signal the command unwinds
like on Ctrl-C, so an embedded Redis it started is shut down cleanly, never left running.
Each command group lives in its own module and registers its parsers; a composition root, the
CLI may import Ray (through the client) inside commands only.
"""

from __future__ import annotations

import argparse
import logging
import os
import signal
import sys
import threading
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from types import FrameType
from typing import NoReturn

from raysys.cli import (
    certs,
    cluster,
    doctor,
    keys,
    listing,
    retention,
    run,
    schedule,
    snapshot,
    tasks,
)
from raysys.cli.common import EXIT_BAD_INPUT, EXIT_INTERNAL, EXIT_INTERRUPTED, Handler
from raysys.config import load_settings
from raysys.errors import RaysysError

log = logging.getLogger(__name__)
EXIT_BROKEN_PIPE = 128 + signal.SIGPIPE
STOP_SIGNALS = (signal.SIGTERM, signal.SIGHUP)
COMMAND_GROUPS = (run, tasks, listing, retention, schedule, keys, doctor, certs, snapshot,
                  cluster)


class Terminated(BaseException):
    """Control-flow signal: SIGTERM/SIGHUP arrived; unwind (closing stores) and exit 128+signum.

    A BaseException, like KeyboardInterrupt, so ``except Exception`` blocks do not swallow it.
    """

    def __init__(self, signum: int) -> None:
        super().__init__(signum)
        self.signum = signum


class UsageError(Exception):
    """A command line argparse refused: bad input, reported in one line (exit 3)."""


class _Parser(argparse.ArgumentParser):
    """argparse, but a bad argument is one ``raysys: error:`` line and exit 3, not a usage dump
    and exit 2 (which raysys keeps for configuration errors). ``--help`` is unchanged."""

    def error(self, message: str) -> NoReturn:
        raise UsageError(f"{self.prog}: {message} (see `{self.prog} --help`)")


def build_parser() -> argparse.ArgumentParser:
    parser = _Parser(prog="raysys",
                     description="Durable, signed, lease-based task execution on Ray.")
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND",
                                parser_class=_Parser)
    for group in COMMAND_GROUPS:
        group.register(sub)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    try:
        args = build_parser().parse_args(argv)
    except UsageError as exc:
        print(f"raysys: error: {exc}", file=sys.stderr)
        return EXIT_BAD_INPUT
    try:
        with _stop_signals_unwind():
            handler: Handler = args.handler
            # `certs` runs without settings: it makes the files the TLS settings will name.
            settings = load_settings() if getattr(args, "needs_settings", True) else None
            _setup_logging(settings.log_level if settings is not None else "INFO")
            code = handler(args, settings)  # type: ignore[arg-type]  # None only for certs
            sys.stdout.flush()  # a closed pipe must fail here, inside the try, not at exit
            return code
    except RaysysError as exc:
        print(f"raysys: error: {exc}", file=sys.stderr)
        return exc.exit_code
    except KeyboardInterrupt:
        print("raysys: interrupted", file=sys.stderr)
        return EXIT_INTERRUPTED
    except Terminated as exc:
        print(f"raysys: stopped by {signal.Signals(exc.signum).name}", file=sys.stderr)
        return 128 + exc.signum
    except BrokenPipeError:  # the reader of stdout quit (`raysys status --watch | head -1`)
        _discard_stdout()
        return EXIT_BROKEN_PIPE
    except Exception as exc:  # a bug: one line for the user, the traceback at DEBUG
        log.debug("internal error", exc_info=True)
        print(f"raysys: internal error: {type(exc).__name__}: {exc} "
              "(LOG_LEVEL=DEBUG shows the traceback)", file=sys.stderr)
        return EXIT_INTERNAL


@contextmanager
def _stop_signals_unwind() -> Iterator[None]:
    """While the command runs, SIGTERM/SIGHUP raise :class:`Terminated` in the main thread.

    The embedded Redis runs in its own session (so Ctrl-C cannot kill it before SHUTDOWN); a
    process killed by the default SIGTERM action would leave it running for good. Raising
    instead unwinds ``open_core``, which stops it. A second signal during that clean-up is
    ignored, so the shutdown is not cut short.
    """
    if threading.current_thread() is not threading.main_thread():
        yield
        return

    def on_signal(signum: int, frame: FrameType | None) -> None:
        for sig in STOP_SIGNALS:
            signal.signal(sig, signal.SIG_IGN)
        raise Terminated(signum)

    previous = {sig: signal.signal(sig, on_signal) for sig in STOP_SIGNALS}
    try:
        yield
    finally:
        for sig, handler in previous.items():
            if handler is not None:  # None: installed outside Python; leave ours
                signal.signal(sig, handler)


def _discard_stdout() -> None:
    """Point stdout at /dev/null so the interpreter's final flush does not fail again."""
    try:
        devnull = os.open(os.devnull, os.O_WRONLY)
        os.dup2(devnull, sys.stdout.fileno())
        os.close(devnull)
    except (OSError, ValueError):
        pass


def _setup_logging(level: str) -> None:
    logging.basicConfig(stream=sys.stderr, level=getattr(logging, level),
                        format="%(asctime)s %(levelname)s %(name)s: %(message)s")


if __name__ == "__main__":
    raise SystemExit(main())
