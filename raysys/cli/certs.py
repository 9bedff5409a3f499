"""``raysys certs DIR [--ip IP ...] [--dns NAME ...] [--days N] [--force]``: development TLS
files (the library part is :mod:`raysys.signing.certs`)."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path
from typing import Any

from raysys.cli.common import add_json_flag, emit, int_between
from raysys.config import Settings
from raysys.signing.certs import DEFAULT_DAYS, MAX_DAYS, DevCerts, shell_quote, write_dev_certs


def register(sub: Any) -> None:
    p = sub.add_parser(
        "certs",
        help="write a dev CA and server/client certificates (Redis TLS, Ray mTLS)",
        description="Write a development CA (ca.pem, ca-key.pem), a server certificate "
        "(server.pem, server-key.pem) and a client certificate (client.pem, client-key.pem) "
        "into DIR. Private keys are mode 0600. For development and tests, not production.",
    )
    p.add_argument("dir", type=Path, metavar="DIR", help="where to write the files")
    p.add_argument("--ip", action="append", default=[], metavar="IP",
                   help="an IP address the server certificate names (repeatable; "
                   "default with no --ip/--dns: 127.0.0.1 and localhost)")
    p.add_argument("--dns", action="append", default=[], metavar="NAME",
                   help="a DNS name the server certificate names (repeatable)")
    p.add_argument("--days", type=int_between(1, MAX_DAYS), default=DEFAULT_DAYS,
                   help=f"validity in days (default {DEFAULT_DAYS}, at most {MAX_DAYS})")
    p.add_argument("--force", action="store_true", help="replace existing files in DIR")
    add_json_flag(p)
    p.set_defaults(handler=cmd_certs, needs_settings=False)


def cmd_certs(args: argparse.Namespace, settings: Settings | None) -> int:
    """Write the files; print their paths and the variables to set."""
    result = write_dev_certs(args.dir, ips=args.ip, dns_names=args.dns, days=args.days,
                             force=args.force)
    emit(result.to_json(), args.json, lambda: _describe(result))
    if not args.json:
        print(f"keep {result.files.ca_key.name} private: whoever holds it can mint trusted "
              "certificates", file=sys.stderr)
    return 0


def _describe(result: DevCerts) -> str:
    files = result.files
    lines = [f"wrote a development CA and certificates to {files.directory} "
             f"(valid until {result.not_after:%Y-%m-%d}):"]
    lines += [f"  {role:10} {path}" for role, path in files.all().items()]
    lines.append(f"the server certificate names: {', '.join([*result.dns_names, *result.ips])}")
    lines.append("raysys clients (add REDIS_USERNAME / REDIS_PASSWORD for the ACL user):")
    lines += [f"  export {name}={shell_quote(value)}"
              for name, value in files.client_env().items()]
    lines.append("redis.conf for a TLS-only server:")
    lines += [f"  {line}" for line in files.redis_conf()]
    return "\n".join(lines)
