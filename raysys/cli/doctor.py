"""``raysys doctor``: check Redis (reachable, credentials, TLS, eviction policy) and the keys;
one line per check, exit 1 when any fails."""

from __future__ import annotations

import argparse
import logging
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import Any

import redis

from raysys.cli.common import add_json_flag, emit
from raysys.config import Settings
from raysys.core import open_core
from raysys.errors import RaysysError
from raysys.redis_server.connection import server_policy_warnings
from raysys.signing.envelope import Sealer
from raysys.signing.keyring import Keyring, generate_key
from raysys.signing.keysource import load_keyring


def register(sub: Any) -> None:
    p = sub.add_parser("doctor", help="check Redis, credentials, TLS, keys; say what is wrong")
    add_json_flag(p)
    p.set_defaults(handler=cmd_doctor)


def cmd_doctor(args: argparse.Namespace, settings: Settings) -> int:
    checks = [run_check("redis", lambda: check_redis(settings)),
              run_check("keys", lambda: check_keys(settings))]
    failed = [c for c in checks if c["status"] != "ok"]
    emit({"ok": not failed, "checks": checks}, args.json,
         "\n".join(f"{c['status'].upper():4} {c['check']:6} {c['detail']}" for c in checks))
    return 0 if not failed else 1


def run_check(name: str, check: Callable[[], str]) -> dict[str, str]:
    """``{"check", "status": ok|fail, "detail"}``: the check's detail, or what went wrong."""
    try:
        return {"check": name, "status": "ok", "detail": check()}
    except RaysysError as exc:
        detail = str(exc)
    except redis.RedisError as exc:  # e.g. an ACL user without +info: report, do not crash
        first = str(exc).strip().splitlines()[0] if str(exc).strip() else ""
        detail = f"{type(exc).__name__}: {first}"
    return {"check": name, "status": "fail", "detail": detail}


def check_keys(settings: Settings) -> str:
    ring = load_keyring(settings, create=False)
    sealer = Sealer(ring)
    sealer.open(sealer.seal("doctor", {"ok": True}), "doctor")
    return f"active key {ring.active.kid} ({ring.active.alg}); {len(ring.keys())} in ring"


def check_redis(settings: Settings) -> str:
    with open_core(settings, keyring=Keyring([generate_key()])) as core:
        with _logger_muted("raysys.redis_server.connection"):  # open_core logged it already
            warnings = server_policy_warnings(core.client)
        if warnings:
            raise RaysysError(warnings[0])
        info = core.client.info("server")
        host, port = settings.redis_endpoint()
        where = "embedded" if core.embedded else f"{host}:{port}"
        return f"{where} answers (server {info.get('redis_version')}), noeviction set"


@contextmanager
def _logger_muted(name: str) -> Iterator[None]:
    logger = logging.getLogger(name)
    was = logger.disabled
    logger.disabled = True
    try:
        yield
    finally:
        logger.disabled = was
