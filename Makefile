# One entry point that runs what CI runs (.ci/run): lint, type check, tests.
# Uses `python -m`, so it works with whichever venv is active: make check PYTHON=.venv/bin/python
PYTHON ?= python

.PHONY: check lint typecheck test

check: lint typecheck test

lint:
	$(PYTHON) -m ruff check .

typecheck:  # mypy --strict over raysys, raysys.actors and raysys.serve as one package
	PYTHON=$(PYTHON) .ci/typecheck

test:
	$(PYTHON) -m pytest
