"""Core logic without Ray; real Redis where storage is involved."""
