"""Every option, positional and subcommand of the ``raysys`` parser says what it is for.

The walk covers the whole tree ``raysys.cli.main.build_parser`` builds (every subparser, at any
depth, every action but ``-h``), so a future option added without ``help=`` fails here, named.
One run of the installed entry point checks what a user sees (issue 17: ``raysys demo --help``
listed ``--tasks`` and ``--workers`` with no words).
"""

from __future__ import annotations

import argparse
from collections.abc import Iterator
from pathlib import Path

import pytest

from raysys.cli.main import build_parser
from tests.support.cli import make_cli

pytestmark = [pytest.mark.unit, pytest.mark.timeout(60)]


def parsers(parser: argparse.ArgumentParser, path: str = "raysys"
            ) -> Iterator[tuple[str, argparse.ArgumentParser]]:
    """(command path, parser) of ``parser`` and every subparser under it, depth first."""
    yield path, parser
    for action in parser._actions:
        if isinstance(action, argparse._SubParsersAction):
            for name, child in action.choices.items():
                yield from parsers(child, f"{path} {name}")


def missing_help(path: str, parser: argparse.ArgumentParser) -> Iterator[str]:
    """``<command> <option>`` for each action of ``parser`` (not -h) with no help text, and
    ``<command> <subcommand>`` for each subcommand its listing shows without words."""
    for action in parser._actions:
        if isinstance(action, argparse._HelpAction):
            continue
        if isinstance(action, argparse._SubParsersAction):
            listed = {choice.dest: choice.help for choice in action._choices_actions}
            yield from (f"{path} {name}" for name in action.choices
                        if not (listed.get(name) or "").strip())
            continue
        text = action.help if action.help is not argparse.SUPPRESS else None
        if not (text or "").strip():
            yield f"{path} {'/'.join(action.option_strings) or action.dest}"


def test_every_option_and_subcommand_has_help_text() -> None:
    # given: the one parser the console script uses
    tree = list(parsers(build_parser()))

    # when: every parser in it is searched for actions without help text
    bare = [item for path, parser in tree for item in missing_help(path, parser)]

    # then: none; and the walk did reach the nested subcommands (it is not vacuous)
    assert not bare, f"options or subcommands without help text (add help=...): {bare}"
    paths = {path for path, _ in tree}
    assert {"raysys demo", "raysys schedule pause", "raysys snapshot restore",
            "raysys keys revoke"} <= paths


def test_demo_help_describes_tasks_and_workers(tmp_path: Path) -> None:
    # when: the installed entry point prints `raysys demo --help`
    run = make_cli(tmp_path).run("demo", "--help")

    # then: each option's line carries words, its default among them
    assert run.returncode == 0, run.output
    lines = run.stdout.splitlines()
    for option in ("--tasks TASKS", "--workers WORKERS"):
        (line,) = [text for text in lines if text.strip().startswith(option)]
        words = line.strip().removeprefix(option).strip()
        assert "(default " in words, f"{option} has no help text: {line!r}"
