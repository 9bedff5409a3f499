"""Helpers the suites share (imported as ``tests.support.<module>``): stores and cores over real
Redis servers, processes, ports and environments, polling, results files."""
