"""Per-process log files: every ``raysys.*`` module's lines reach the file and stderr."""

from __future__ import annotations

import logging
from collections.abc import Iterator
from pathlib import Path

import pytest

from raysys import logs

pytestmark = pytest.mark.unit


@pytest.fixture
def root_logger() -> Iterator[logging.Logger]:
    """The ``raysys`` logger, put back as it was afterwards (handlers, level, propagation)."""
    logger = logging.getLogger(logs.ROOT_LOGGER)
    saved = (list(logger.handlers), logger.level, logger.propagate, set(logs._configured))
    logger.handlers = []  # as in a fresh process: earlier tests may have configured it
    logs._configured.clear()
    yield logger
    for handler in logger.handlers:
        if handler not in saved[0]:
            handler.close()
    logger.handlers, logger.level, logger.propagate = saved[0], saved[1], saved[2]
    logs._configured.clear()
    logs._configured.update(saved[3])


def test_a_submodules_lines_reach_the_process_log_file(
        tmp_path: Path, root_logger: logging.Logger, capfd: pytest.CaptureFixture[str]) -> None:
    # given logging configured for a role at DEBUG
    path = logs.configure("DEBUG", "unit-logs", tmp_path)
    assert path is not None
    # when modules deep in the package log, and one outside it
    logging.getLogger("raysys.messaging.messenger").debug("send a -> b type=assign")
    logging.getLogger("raysys.actors.worker").info("worker up")
    logging.getLogger("somebody.else").warning("not ours")
    for handler in root_logger.handlers:
        handler.flush()
    # then both raysys lines are in the file and on stderr, the outsider's is not in the file
    text = path.read_text()
    assert "send a -> b type=assign" in text and "worker up" in text
    assert "not ours" not in text
    assert "worker up" in capfd.readouterr().err
