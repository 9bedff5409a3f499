"""The raysys test suites (``pytest`` runs them all; markers select one)."""
