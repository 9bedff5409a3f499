"""Validation of the deployment artifacts and packaging."""
