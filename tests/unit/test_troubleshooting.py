"""docs/TROUBLESHOOTING.md tells people to ``grep -F`` for fixed parts of raysys's messages: each
must still be a fixed part of a message in the code (a renamed log line fails here, not in an
incident)."""

from __future__ import annotations

import ast
import re
from pathlib import Path

import pytest

pytestmark = pytest.mark.unit
REPO = Path(__file__).resolve().parents[2]
DOC = REPO / "docs" / "TROUBLESHOOTING.md"
_GREP = re.compile(r"grep -F '([^']+)'")


def _message_texts() -> list[str]:
    """Every string literal of the code, f-strings with each placeholder as one NUL."""
    texts: list[str] = []
    for folder in ("raysys", "actors", "serve"):
        for path in (REPO / folder).rglob("*.py"):
            for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
                if isinstance(node, ast.Constant) and isinstance(node.value, str):
                    texts.append(node.value)
                elif isinstance(node, ast.JoinedStr):
                    texts.append("".join(part.value if isinstance(part, ast.Constant)
                                         else "\0" for part in node.values))
    return texts


def test_the_doc_greps_for_fixed_strings() -> None:
    patterns = _GREP.findall(DOC.read_text(encoding="utf-8"))
    assert len(patterns) >= 20, patterns


@pytest.mark.parametrize("pattern", sorted(set(_GREP.findall(DOC.read_text(encoding="utf-8")))))
def test_every_grep_of_the_doc_matches_a_message_in_the_code(pattern: str) -> None:
    texts = _message_texts()
    assert any(pattern in text for text in texts), (
        f"docs/TROUBLESHOOTING.md greps for {pattern!r}, which no message in the code contains")
