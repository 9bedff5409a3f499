"""The ``raysys`` command line: one parser, one error-to-exit-code mapping, one ``emit`` for
``--json`` and text output, and a module per command group.

A composition root: it may import Ray (through the client) inside commands only.
"""

from raysys.cli.main import build_parser, main

__all__ = ["build_parser", "main"]
