"""``python -m raysys.cli``: the same as the ``raysys`` console script."""

from raysys.cli.main import main

raise SystemExit(main())
