"""``raysys doctor``: check Redis (reachable, credentials, TLS, eviction policy, memory), the
keys and the retention, then the cluster (:mod:`raysys.cli.doctor_cluster`: Ray reachable and
letting us in, the named actors, live workers, the HTTP app's ``/health``); one line per check
(ok, warn or fail), exit 1 when any fails (warnings alone exit 0). A check that raises anything
is a ``fail`` line, never a traceback."""

from __future__ import annotations

import argparse
import logging
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import Any

from raysys.cli.common import add_json_flag, emit
from raysys.cli.doctor_cluster import CheckWarning, ClusterProbe, check_http
from raysys.config import Settings
from raysys.core import open_core
from raysys.errors import RaysysError
from raysys.redis_server.connection import server_policy_warnings
from raysys.signing.envelope import Sealer
from raysys.signing.keyring import Keyring, generate_key
from raysys.signing.keysource import load_keyring

log = logging.getLogger(__name__)


def register(sub: Any) -> None:
    p = sub.add_parser("doctor", help="check Redis, credentials, TLS, keys, Ray, the actors, "
                       "workers and the HTTP app; say what is wrong")
    p.add_argument("--address", default="auto",
                   help="the Ray head's GCS address HOST:PORT; auto: RAY_ADDRESS, else the "
                   "cluster running on this machine (default: auto)")
    add_json_flag(p)
    p.set_defaults(handler=cmd_doctor)


def cmd_doctor(args: argparse.Namespace, settings: Settings) -> int:
    checks = [run_check("redis", lambda: check_redis(settings)),
              run_check("memory", lambda: check_memory(settings)),
              run_check("keys", lambda: check_keys(settings)),
              run_check("retention", lambda: check_retention(settings))]
    probe = ClusterProbe(args.address, settings.namespace)
    try:
        checks += [run_check("ray", probe.ray), run_check("actors", probe.actors),
                   run_check("workers", probe.workers)]
        endpoint = probe.serve_endpoint()
    finally:
        probe.close()
    checks.append(run_check("http", lambda: check_http(settings, endpoint)))
    failed = [c for c in checks if c["status"] == "fail"]
    warned = [c for c in checks if c["status"] == "warn"]
    emit({"ok": not failed, "warnings": len(warned), "checks": checks}, args.json,
         "\n".join(f"{c['status'].upper():4} {c['check']:9} {c['detail']}" for c in checks))
    return 0 if not failed else 1


def run_check(name: str, check: Callable[[], str]) -> dict[str, str]:
    """``{"check", "status": ok|warn|fail, "detail"}``: the check's detail, or what is wrong."""
    try:
        return {"check": name, "status": "ok", "detail": _one_line(check())}
    except CheckWarning as exc:
        return {"check": name, "status": "warn", "detail": _one_line(str(exc))}
    except RaysysError as exc:
        detail = _one_line(str(exc))
    except Exception as exc:  # e.g. an ACL user without +info: report, do not crash
        log.debug("doctor: the %s check raised", name, exc_info=True)
        first = str(exc).strip().splitlines()[0] if str(exc).strip() else ""
        detail = f"{type(exc).__name__}: {first}"
    return {"check": name, "status": "fail", "detail": detail}


def _one_line(text: str) -> str:
    """A detail as one line (Ray's errors may span several)."""
    return " ".join(line.strip() for line in text.splitlines() if line.strip())


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


MEMORY_WARN_RATIO = 0.8


def check_memory(settings: Settings) -> str:
    with (_logger_muted("raysys.redis_server.connection"),  # the redis check said it already
          open_core(settings, keyring=Keyring([generate_key()])) as core):
        info = core.client.info("memory")
    used, limit = int(info.get("used_memory", 0)), int(info.get("maxmemory", 0))
    if limit <= 0:
        raise CheckWarning(f"maxmemory is 0 (no limit): Redis uses {_mib(used)} and grows "
                           "until the machine runs out of memory; set maxmemory (keep "
                           "noeviction) and watch raysys_redis_used_memory_bytes")
    if used > MEMORY_WARN_RATIO * limit:
        raise CheckWarning(f"Redis uses {_mib(used)} of maxmemory {_mib(limit)} "
                           f"({used / limit:.0%}); when full it refuses every write: lower "
                           "RAYSYS_RETENTION_S, run `raysys purge --older-than 1d`, or raise "
                           "maxmemory")
    return f"Redis uses {_mib(used)} of maxmemory {_mib(limit)} ({used / limit:.0%})"


def check_retention(settings: Settings) -> str:
    if not settings.retention_s:
        raise CheckWarning("RAYSYS_RETENTION_S=0: finished tasks are kept for ever and Redis "
                           "grows by about 1 KiB per task without bound; `raysys purge` leaves "
                           "tombstones that are never removed")
    audit = (f"audit entries after {_days(settings.audit_retention_s)}"
             if settings.audit_retention_s else "audit by length only")
    keep = (f"the newest {settings.snapshot_keep} stored snapshots kept"
            if settings.snapshot_keep else "every stored snapshot kept")
    return (f"finished tasks removed {_days(settings.retention_s)} after they finish "
            f"(the replay window); {audit}; {keep}")


def _mib(n: int) -> str:
    return f"{n / (1 << 20):.1f} MiB"


def _days(seconds: float) -> str:
    return f"{seconds / 86400:g} days" if seconds >= 86400 else f"{seconds:g} s"


@contextmanager
def _logger_muted(name: str) -> Iterator[None]:
    logger = logging.getLogger(name)
    was = logger.disabled
    logger.disabled = True
    try:
        yield
    finally:
        logger.disabled = was
