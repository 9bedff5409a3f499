"""What the Ray suites stand on: a private local Ray cluster, and an embedded Redis data dir.

The integration, chaos and security suites each start a cluster (its own ``HOME``, where Ray
writes ``~/.ray/auth_token``, and its own short temp dir), so none attaches to, or disturbs,
another cluster on the machine; Ray gets private random ports, never Redis's 6379. The process
is left behind as a fresh one would be.
"""

from __future__ import annotations

import os
import shutil
import tempfile
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from pathlib import Path

from raysys.redis_server.attach import attach_or_start


@contextmanager
def private_ray(home: Path, namespace: str, *, temp_prefix: str,
                env: Mapping[str, str] | None = None) -> Iterator[None]:
    """``ray.init`` under ``home`` with ``env`` set (the cluster's processes inherit both).

    On exit: Ray shut down, its temp dir removed, the environment restored, and the token
    ``ray.init`` cached reset, so a later cluster in this process (under another ``HOME``)
    starts from a clean slate instead of without a token.
    """
    import ray

    extra = dict(env or {})
    saved = {name: os.environ.get(name) for name in ("HOME", "RAY_AUTH_MODE", *extra)}
    os.environ["HOME"] = str(home)
    os.environ.update(extra)
    temp = Path(tempfile.mkdtemp(prefix=temp_prefix))  # short: socket paths must fit 107 B
    try:
        ray.init(num_cpus=4, include_dashboard=False, namespace=namespace, log_to_driver=False,
                 _temp_dir=str(temp))
        yield None
    finally:
        ray.shutdown()
        shutil.rmtree(temp, ignore_errors=True)
        for name, value in saved.items():
            if value is None:
                os.environ.pop(name, None)
            else:
                os.environ[name] = value
        from ray._raylet import AuthenticationTokenLoader

        AuthenticationTokenLoader.instance().reset_cache()


@contextmanager
def served_data_dir(path: Path) -> Iterator[Path]:
    """``path`` as a raysys data dir whose embedded Redis (``everysec``: tests, not durability
    claims) runs until the block ends; a server already serving it is left running."""
    _, server = attach_or_start(path, appendfsync="everysec")
    try:
        yield path
    finally:
        if server is not None:
            server.stop()
