"""Helpers the suites share, imported as ``tests.support.<module>``; fixtures stay in conftest.py.

- ``cli``: the ``raysys`` console script run as a subprocess in a private environment.
- ``http``: one HTTP request, answered with its status and body.
- ``manifest_redis``: the manifests' redis.conf and sentinel.conf, as directives for loopback.
- ``metrics``: the canonical metric names, and those the alert rules and dashboard query.
- ``polling``: ``wait_until``, the one poller.
- ``prerequisites``: a missing tool fails under ``CI=true`` and skips elsewhere.
- ``processes``: processes, ports and environments for programs a test starts.
- ``ray_cluster``: private Ray clusters (in this process, or ``ray start --head``), data dirs.
- ``redis_servers``: the Redis binaries the tests run, and a factory of servers.
- ``redis_tls``: a TLS-only redis-server with the documented ACL user.
- ``resend``: cores whose writing scripts are each sent twice, as a resend delivers them.
- ``results``: the results file the chaos and security suites write.
- ``schemas``: the shared JSON Schemas of the deploy tests, and their errors.
- ``sentinels``: a primary, replicas and Sentinels on loopback (``RedisGroup``).
- ``stores``: stores and cores over a real Redis client; the audit stream.
"""
