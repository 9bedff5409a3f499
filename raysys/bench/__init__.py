"""Workloads run end to end through the actors (``raysys demo``, ``raysys bench``): the task
mixes, the submitter, the progress bar, and the report accounted by the commit ledger.

Imports the foundation and ``ledger``; the client it drives is passed in.
"""
