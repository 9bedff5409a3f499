"""The ``raysys`` command line. A composition root: it may import Ray lazily, inside commands.

Every error is one line on stderr and a documented exit code (see ``raysys.errors``):
2 configuration, 3 bad input, 4 Redis unavailable, 5 Ray unavailable, 6 integrity, 7 lease,
8 not found, 1 a run that did not account for every task, 70 an internal error (a bug: please
report it; ``LOG_LEVEL=DEBUG`` shows the traceback), 130 interrupted (Ctrl-C), 141 stdout closed
(a pipe reader quit), 143 terminated (SIGTERM; SIGHUP gives 129). On a signal the command unwinds
like on Ctrl-C, so an embedded Redis it started is shut down cleanly, never left running.
``--json`` prints exactly one JSON object on stdout; logs and progress go to stderr.
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import signal
import sys
import threading
import time
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from pathlib import Path
from types import FrameType
from typing import Any, NoReturn

from raysys.certs import add_certs_command
from raysys.cluster_cli import add_cluster_commands
from raysys.config import Settings, load_settings
from raysys.errors import IntegrityError, RaysysError, ValidationError
from raysys.keyring import ALGORITHMS, Keyring, generate_key, load_keyring_file, write_keyring_file
from raysys.models import FINAL_STATES, MAX_BATCH, TaskSpec, TaskState, parse_json_payload
from raysys.run_cli import add_run_commands
from raysys.snapshot_cli import add_snapshot_command

log = logging.getLogger("raysys.cli")
EXIT_INTERNAL = 70
EXIT_UNACCOUNTED = 1
EXIT_BAD_INPUT = 3  # raysys.errors.ValidationError's code
EXIT_INTERRUPTED = 130
EXIT_BROKEN_PIPE = 128 + signal.SIGPIPE
STOP_SIGNALS = (signal.SIGTERM, signal.SIGHUP)


class Terminated(BaseException):
    """Control-flow signal: SIGTERM/SIGHUP arrived; unwind (closing stores) and exit 128+signum.

    A BaseException, like KeyboardInterrupt, so ``except Exception`` blocks do not swallow it.
    """

    def __init__(self, signum: int) -> None:
        super().__init__(signum)
        self.signum = signum


class UsageError(Exception):
    """A command line argparse refused: bad input, reported in one line (exit 3)."""


class _Parser(argparse.ArgumentParser):
    """argparse, but a bad argument is one ``raysys: error:`` line and exit 3, not a usage dump
    and exit 2 (which raysys keeps for configuration errors). ``--help`` is unchanged."""

    def error(self, message: str) -> NoReturn:
        raise UsageError(f"{self.prog}: {message} (see `{self.prog} --help`)")


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser()
    try:
        args = parser.parse_args(argv)
    except UsageError as exc:
        print(f"raysys: error: {exc}", file=sys.stderr)
        return EXIT_BAD_INPUT
    try:
        with _stop_signals_unwind():
            handler: Callable[[argparse.Namespace, Settings | None], int] = args.handler
            # `certs` runs without settings: it makes the files the TLS settings will name.
            needs = getattr(args, "needs_settings", True)
            settings = load_settings() if needs else None
            _setup_logging(settings.log_level if settings is not None else "INFO")
            code = handler(args, settings)
            sys.stdout.flush()  # a closed pipe must fail here, inside the try, not at exit
            return code
    except RaysysError as exc:
        print(f"raysys: error: {exc}", file=sys.stderr)
        return exc.exit_code
    except KeyboardInterrupt:
        print("raysys: interrupted", file=sys.stderr)
        return EXIT_INTERRUPTED
    except Terminated as exc:
        print(f"raysys: stopped by {signal.Signals(exc.signum).name}", file=sys.stderr)
        return 128 + exc.signum
    except BrokenPipeError:  # the reader of stdout quit (`raysys status --watch | head -1`)
        _discard_stdout()
        return EXIT_BROKEN_PIPE
    except Exception as exc:  # a bug: one line for the user, the traceback at DEBUG
        log.debug("internal error", exc_info=True)
        print(f"raysys: internal error: {type(exc).__name__}: {exc} "
              "(LOG_LEVEL=DEBUG shows the traceback)", file=sys.stderr)
        return EXIT_INTERNAL


def build_parser() -> argparse.ArgumentParser:
    parser = _Parser(
        prog="raysys", description="Durable, signed, lease-based task execution on Ray.")
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND",
                                parser_class=_Parser)

    add_run_commands(sub, _positive_float)

    p = sub.add_parser("submit", help="submit tasks (works with no workers running)")
    p.add_argument("kind")
    src = p.add_mutually_exclusive_group()
    src.add_argument("--payload", help="the payload as JSON (default: null)")
    src.add_argument("--file", type=Path, help="JSON Lines: one payload per line")
    p.add_argument("--priority", type=int, default=0)
    p.add_argument("--max-attempts", type=int, default=3)
    p.add_argument("--idempotency-key", help="resubmitting with this key returns the same task "
                   "(with --file, line N uses KEY-N)")
    p.add_argument("--wait", action="store_true", help="wait until the task is final")
    p.add_argument("--timeout", type=float, default=300.0, help="seconds --wait waits")
    p.add_argument("--json", action="store_true")
    p.set_defaults(handler=cmd_submit)

    p = sub.add_parser("status", help="one task, or counts by state")
    p.add_argument("task_id", nargs="?")
    p.add_argument("--json", action="store_true")
    p.add_argument("--watch", action="store_true", help="refresh every second until Ctrl-C")
    p.set_defaults(handler=cmd_status)

    p = sub.add_parser("keys", help="manage the signing keyring")
    keys = p.add_subparsers(dest="keys_command", required=True, metavar="ACTION")
    k = keys.add_parser("new", help="add a key (active if none is, else verify-only)")
    k.add_argument("--alg", choices=ALGORITHMS, default="hmac-sha256")
    k.add_argument("--json", action="store_true")
    k.set_defaults(handler=cmd_keys_new)
    k = keys.add_parser("list", help="key ids, algorithms and status (never secrets)")
    k.add_argument("--json", action="store_true")
    k.set_defaults(handler=cmd_keys_list)
    k = keys.add_parser("rotate", help="make a new active key (old one: verify-only) and "
                        "re-sign every record and result under it")
    k.add_argument("--alg", choices=ALGORITHMS, default=None,
                   help="algorithm of the new key (default: the current active key's)")
    k.add_argument("--json", action="store_true")
    k.set_defaults(handler=cmd_keys_rotate)
    k = keys.add_parser("revoke", help="revoke a key once nothing depends on it any more")
    k.add_argument("kid")
    k.add_argument("--json", action="store_true")
    k.set_defaults(handler=cmd_keys_revoke)

    p = sub.add_parser("doctor", help="check Redis, credentials, TLS, keys; say what is wrong")
    p.add_argument("--json", action="store_true")
    p.set_defaults(handler=cmd_doctor)
    add_certs_command(sub)
    add_snapshot_command(sub)
    add_cluster_commands(sub)
    return parser


# ---- commands ---------------------------------------------------------------------------------
def cmd_submit(args: argparse.Namespace, settings: Settings) -> int:
    from raysys.runtime import open_store

    specs = _specs_from_args(args)  # everything validated before anything is stored
    with open_store(settings) as handle:
        ids: list[str] = []
        for offset in range(0, len(specs), MAX_BATCH):
            ids += handle.store.submit_many(specs[offset:offset + MAX_BATCH])
        if args.wait:
            results = [_wait_final(handle.store, task_id, args.timeout) for task_id in ids]
            doc: dict[str, Any] = (results[0] if args.file is None else {"results": results})
        else:
            doc = {"id": ids[0]} if args.file is None else {"ids": ids}
    if args.json:
        print(json.dumps(doc))
    else:
        print("\n".join(ids) if not args.wait else json.dumps(doc, indent=2))
    if args.wait:
        states = [r["state"] for r in (doc.get("results") or [doc])]
        return 0 if all(s == TaskState.SUCCEEDED for s in states) else EXIT_UNACCOUNTED
    return 0


def _specs_from_args(args: argparse.Namespace) -> list[TaskSpec]:
    common = {"kind": args.kind, "priority": args.priority, "max_attempts": args.max_attempts}
    if args.file is None:
        payload = parse_json_payload(args.payload) if args.payload is not None else None
        return [TaskSpec.build(payload=payload, idempotency_key=args.idempotency_key, **common)]
    try:
        lines = args.file.read_text(encoding="utf-8").splitlines()
    except OSError as exc:
        raise ValidationError(f"cannot read {args.file}: {exc.strerror}") from None
    except UnicodeDecodeError:
        raise ValidationError(f"{args.file} is not UTF-8 text") from None
    specs = []
    for number, line in enumerate(lines, start=1):
        if not line.strip():
            continue
        try:
            key = f"{args.idempotency_key}-{number}" if args.idempotency_key else None
            specs.append(TaskSpec.build(payload=parse_json_payload(line), idempotency_key=key,
                                        **common))
        except ValidationError as exc:
            raise ValidationError(f"{args.file} line {number}: {exc}") from None
    if not specs:
        raise ValidationError(f"{args.file} holds no tasks")
    return specs


def _wait_final(store: Any, task_id: str, timeout: float) -> dict[str, Any]:
    deadline = time.monotonic() + timeout
    while True:
        status = store.status(task_id)
        if status.state in FINAL_STATES or time.monotonic() > deadline:
            return dict(status.to_json())
        time.sleep(0.2)


def cmd_status(args: argparse.Namespace, settings: Settings) -> int:
    """One task, or counts by state; ``--watch`` refreshes every second with the throughput
    (tasks reaching a final state per second) until Ctrl-C (one JSON object per line)."""
    from raysys.runtime import open_store

    with open_store(settings) as handle:
        last: tuple[float, int] | None = None
        while True:
            if args.task_id:
                doc = handle.store.status(args.task_id).to_json()
            else:
                counts = handle.store.counts()
                doc = {"namespace": handle.store.namespace, "counts": counts,
                       "total": sum(counts.values())}
                if args.watch:
                    now, final = time.monotonic(), sum(counts[s.value] for s in FINAL_STATES)
                    doc["tasks_per_s"] = (round((final - last[1]) / (now - last[0]), 1)
                                          if last is not None else 0.0)
                    last = (now, final)
            if args.json:
                print(json.dumps(doc), flush=True)
            else:
                _print_status(doc)
            if not args.watch:
                return 0
            time.sleep(1.0)


def _print_status(doc: dict[str, Any]) -> None:
    if "counts" in doc:
        rate = f"  {doc['tasks_per_s']:,.1f} tasks/s" if "tasks_per_s" in doc else ""
        print("  ".join(f"{state} {n}" for state, n in doc["counts"].items())
              + f"  (total {doc['total']}){rate}", flush=True)
    else:
        print("\n".join(f"{key}: {json.dumps(value)}" for key, value in doc.items()), flush=True)


def cmd_keys_new(args: argparse.Namespace, settings: Settings) -> int:
    from raysys.runtime import keyring_path

    if settings.signing_keys is not None:
        raise ValidationError("keys come from RAYSYS_SIGNING_KEYS; edit that variable instead "
                              "(keys new writes a keyring file)")
    path = keyring_path(settings)
    existing = load_keyring_file(path).keys() if path.exists() else []
    has_active = any(key.status == "active" for key in existing)
    key = generate_key(args.alg, status="verify-only" if has_active else "active")
    write_keyring_file(path, Keyring([*existing, key]))
    doc = {"kid": key.kid, "alg": key.alg, "status": key.status, "file": str(path)}
    if args.json:
        print(json.dumps(doc))
    else:
        print(f"added {key.alg} key {key.kid} ({key.status}) to {path}")
        if has_active:
            print("it verifies only until it becomes active (key rotation)", file=sys.stderr)
    return 0


def cmd_keys_rotate(args: argparse.Namespace, settings: Settings) -> int:
    """File keyring: add a new active key, then re-sign. Variable keyring: re-sign only (the
    deployment already made the new key active in RAYSYS_SIGNING_KEYS)."""
    from raysys.rotation import resign_all, rotate_keyring_file
    from raysys.runtime import keyring_path, keyring_source, open_store

    new_kid: str | None = None
    old_kid: str | None = None
    if settings.signing_keys is None:
        new_key, old_kid = rotate_keyring_file(keyring_path(settings), args.alg)
        new_kid = new_key.kid
        print(f"new active key {new_kid} ({new_key.alg}); {old_kid or 'no key'} is now "
              "verify-only", file=sys.stderr)
    with open_store(settings, keyring=keyring_source(settings, create=False)) as handle:
        report = resign_all(handle.store)
        active = handle.store.sealer.keyring.active.kid
    doc = {"active": active, "previous": old_kid, **report.to_json()}
    if args.json:
        print(json.dumps(doc))
    else:
        print(f"active key {active}: re-signed {report.resigned_records} records and "
              f"{report.resigned_results} results ({report.unverifiable} unverifiable left "
              "untouched)")
        if old_kid:
            print(f"once every node has reloaded the keyring (within 5 s), "
                  f"`raysys keys revoke {old_kid}` retires the old key", file=sys.stderr)
    return 0


def cmd_keys_revoke(args: argparse.Namespace, settings: Settings) -> int:
    from raysys.rotation import count_signed_by, resign_all, revoke_in_file
    from raysys.runtime import keyring_path, keyring_source, open_store

    if settings.signing_keys is not None:
        raise ValidationError("keys come from RAYSYS_SIGNING_KEYS: mark the key revoked there "
                              "(after `raysys keys rotate` re-signed what it signed)")
    path = keyring_path(settings)
    with open_store(settings, keyring=keyring_source(settings, create=False)) as handle:
        key = handle.store.sealer.keyring.get(args.kid)
        if key is None:
            raise ValidationError(f"no key {args.kid} in {path}")
        if key.status == "active":
            raise ValidationError(f"key {args.kid} is the active key: run `raysys keys rotate` "
                                  "first")
        report = resign_all(handle.store)  # catch what was written since the rotation
        left = count_signed_by(handle.store, args.kid)
        if left:
            raise IntegrityError(
                f"{left} records or results signed by {args.kid} could not be re-signed "
                "(changing under load?); run `raysys keys revoke` again", reason="key_in_use")
        revoke_in_file(path, args.kid)
    doc = {"revoked": args.kid, **report.to_json()}
    if args.json:
        print(json.dumps(doc))
    else:
        print(f"revoked {args.kid}; nothing in namespace {settings.namespace} depends on it "
              f"(re-signed {report.resigned_records} records, {report.resigned_results} results)")
    return 0


def cmd_keys_list(args: argparse.Namespace, settings: Settings) -> int:
    from raysys.runtime import load_keyring

    ring = load_keyring(settings, create=False)
    rows = [{"kid": k.kid, "alg": k.alg, "status": k.status} for k in ring.keys()]
    if args.json:
        print(json.dumps({"keys": rows}))
    else:
        for row in rows:
            print(f"{row['kid']:16} {row['alg']:12} {row['status']}")
    return 0


def cmd_doctor(args: argparse.Namespace, settings: Settings) -> int:
    import redis

    from raysys.envelope import Sealer
    from raysys.redis_conn import server_policy_warnings
    from raysys.runtime import load_keyring, open_store

    checks: list[dict[str, str]] = []

    def check(name: str, fn: Callable[[], str]) -> bool:
        try:
            detail = fn()
            checks.append({"check": name, "status": "ok", "detail": detail})
            return True
        except RaysysError as exc:
            checks.append({"check": name, "status": "fail", "detail": str(exc)})
        except redis.RedisError as exc:  # e.g. an ACL user without +info: report, do not crash
            detail = str(exc).strip().splitlines()[0] if str(exc).strip() else ""
            checks.append({"check": name, "status": "fail",
                           "detail": f"{type(exc).__name__}: {detail}"})
        return False

    def keys() -> str:
        ring = load_keyring(settings, create=False)
        sealer = Sealer(ring)
        sealer.open(sealer.seal("doctor", {"ok": True}), "doctor")
        return f"active key {ring.active.kid} ({ring.active.alg}); {len(ring.keys())} in ring"

    def redis_check() -> str:
        with open_store(settings, keyring=Keyring([generate_key()])) as handle:
            with _logger_muted("raysys.redis"):  # open_store has logged the warning already
                warnings = server_policy_warnings(handle.client)
            if warnings:
                raise RaysysError(warnings[0])
            info = handle.client.info("server")
            host, port = settings.redis_endpoint()
            where = "embedded" if handle.embedded else f"{host}:{port}"
            return f"{where} answers (server {info.get('redis_version')}), noeviction set"

    check("redis", redis_check)
    check("keys", keys)
    failed = [c for c in checks if c["status"] != "ok"]
    if args.json:
        print(json.dumps({"ok": not failed, "checks": checks}))
    else:
        for c in checks:
            print(f"{c['status'].upper():4} {c['check']:6} {c['detail']}")
    return 0 if not failed else 1


# ---- helpers ----------------------------------------------------------------------------------
def _positive_float(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not a number") from None
    if not value > 0 or value == float("inf"):
        raise argparse.ArgumentTypeError("must be a finite number above 0")
    return value


@contextmanager
def _logger_muted(name: str) -> Iterator[None]:
    logger = logging.getLogger(name)
    was = logger.disabled
    logger.disabled = True
    try:
        yield
    finally:
        logger.disabled = was


@contextmanager
def _stop_signals_unwind() -> Iterator[None]:
    """While the command runs, SIGTERM/SIGHUP raise :class:`Terminated` in the main thread.

    The embedded Redis runs in its own session (so Ctrl-C cannot kill it before SHUTDOWN); a
    process killed by the default SIGTERM action would leave it running for good. Raising
    instead unwinds ``open_store``, which stops it. A second signal during that clean-up is
    ignored, so the shutdown is not cut short.
    """
    if threading.current_thread() is not threading.main_thread():
        yield
        return

    def on_signal(signum: int, frame: FrameType | None) -> None:
        for sig in STOP_SIGNALS:
            signal.signal(sig, signal.SIG_IGN)
        raise Terminated(signum)

    previous = {sig: signal.signal(sig, on_signal) for sig in STOP_SIGNALS}
    try:
        yield
    finally:
        for sig, handler in previous.items():
            if handler is not None:  # None: installed outside Python; leave ours
                signal.signal(sig, handler)


def _discard_stdout() -> None:
    """Point stdout at /dev/null so the interpreter's final flush does not fail again."""
    try:
        devnull = os.open(os.devnull, os.O_WRONLY)
        os.dup2(devnull, sys.stdout.fileno())
        os.close(devnull)
    except (OSError, ValueError):
        pass


def _setup_logging(level: str) -> None:
    logging.basicConfig(stream=sys.stderr, level=getattr(logging, level),
                        format="%(asctime)s %(levelname)s %(name)s: %(message)s")


if __name__ == "__main__":
    raise SystemExit(main())
