"""The embedded server's command line and the configuration it reads on standard input.

Settings the embedded default always has: bound to 127.0.0.1, AOF on with the chosen
``appendfsync``, RDB snapshots off, ``maxmemory-policy noeviction``, compact task hashes. The
password and any extra redis.conf lines (an ACL ``user`` line) travel on stdin, never on the
command line, so no secret shows in the process list.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

from raysys.redis_server.binary import HOST


def server_command(binary: Path, port: int, redis_dir: Path, log_file: Path, *,
                   appendfsync: str, tls: tuple[Path, Path, Path] | None = None,
                   extra_args: Sequence[str] = ()) -> list[str]:
    """The argv of a server on ``port``; ``tls`` = (cert, key, CA) makes it TLS only."""
    # fmt: off
    if tls is not None:  # TLS only: no plain TCP listener at all
        cert, key, ca = tls
        listen = [
            "--port", "0",
            "--tls-port", str(port),
            "--tls-cert-file", str(cert),
            "--tls-key-file", str(key),
            "--tls-ca-cert-file", str(ca),
            "--tls-auth-clients", "yes",
        ]
    else:
        listen = ["--port", str(port)]
    args = [
        str(binary),
        "--bind", HOST,
        *listen,
        "--dir", str(redis_dir),
        "--appendonly", "yes",
        "--appendfsync", appendfsync,
        "--save", "",
        "--maxmemory-policy", "noeviction",
        # A task hash holds its ~450-byte signed record: kept a listpack, not a hash table,
        # it takes ~25 % less memory (benchmarks/memory_bench.py, docs/PERFORMANCE.md).
        "--hash-max-listpack-value", "1024",
        "--protected-mode", "yes",
        "--daemonize", "no",
        "--logfile", str(log_file),
        *extra_args,
    ]
    # fmt: on
    # The password goes in the config read from stdin ("-" must be the last argument),
    # so it never shows in the process list.
    return [*args, "-"]


def stdin_config(password: str | None, config_lines: Sequence[str]) -> str:
    """The redis.conf text the server reads from stdin: the password, then ``config_lines``."""
    config = f"requirepass {config_quote(password)}\n" if password else ""
    return config + "".join(f"{line}\n" for line in config_lines)


def config_quote(value: str) -> str:
    """Quote ``value`` for a redis.conf line (``sdssplitargs`` syntax)."""
    out = []
    for ch in value:
        if ch.isascii() and ch.isprintable() and ch not in '"\\':
            out.append(ch)
        else:
            out.extend(f"\\x{b:02x}" for b in ch.encode())
    return '"' + "".join(out) + '"'
