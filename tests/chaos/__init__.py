"""Faults (kill -9, SIGSTOP, Redis restarts, partitions, resends) over a record of every attempt."""
