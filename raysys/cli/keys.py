"""``raysys keys new | list | rotate | revoke KID``: the signing keyring (docs/keys.md)."""

from __future__ import annotations

import argparse
import sys
from typing import Any

from raysys.cli.common import add_json_flag, emit
from raysys.config import Settings
from raysys.core import open_core
from raysys.errors import IntegrityError, ValidationError
from raysys.signing.keyring import (
    ALGORITHMS,
    Keyring,
    generate_key,
    load_keyring_file,
    write_keyring_file,
)
from raysys.signing.keysource import keyring_path, keyring_source, load_keyring


def register(sub: Any) -> None:
    p = sub.add_parser("keys", help="manage the signing keyring")
    keys = p.add_subparsers(dest="keys_command", required=True, metavar="ACTION")
    k = keys.add_parser("new", help="add a key (active if none is, else verify-only)")
    k.add_argument("--alg", choices=ALGORITHMS, default="hmac-sha256",
                   help="signature algorithm (default hmac-sha256)")
    add_json_flag(k)
    k.set_defaults(handler=cmd_keys_new)
    k = keys.add_parser("list", help="key ids, algorithms and status (never secrets)")
    add_json_flag(k)
    k.set_defaults(handler=cmd_keys_list)
    k = keys.add_parser("rotate", help="make a new active key (old one: verify-only) and "
                        "re-sign every record and result under it")
    k.add_argument("--alg", choices=ALGORITHMS, default=None,
                   help="algorithm of the new key (default: the current active key's)")
    add_json_flag(k)
    k.set_defaults(handler=cmd_keys_rotate)
    k = keys.add_parser("revoke", help="revoke a key once nothing depends on it any more")
    k.add_argument("kid", help="the key id to revoke (see `raysys keys list`)")
    add_json_flag(k)
    k.set_defaults(handler=cmd_keys_revoke)


def cmd_keys_new(args: argparse.Namespace, settings: Settings) -> int:
    if settings.signing_keys is not None:
        raise ValidationError("keys come from RAYSYS_SIGNING_KEYS; edit that variable instead "
                              "(keys new writes a keyring file)")
    path = keyring_path(settings)
    existing = load_keyring_file(path).keys() if path.exists() else []
    has_active = any(key.status == "active" for key in existing)
    key = generate_key(args.alg, status="verify-only" if has_active else "active")
    write_keyring_file(path, Keyring([*existing, key]))
    doc = {"kid": key.kid, "alg": key.alg, "status": key.status, "file": str(path)}
    emit(doc, args.json, f"added {key.alg} key {key.kid} ({key.status}) to {path}")
    if has_active and not args.json:
        print("it verifies only until it becomes active (key rotation)", file=sys.stderr)
    return 0


def cmd_keys_rotate(args: argparse.Namespace, settings: Settings) -> int:
    """File keyring: add a new active key, then re-sign. Variable keyring: re-sign only (the
    deployment already made the new key active in RAYSYS_SIGNING_KEYS)."""
    from raysys.rotation import resign_all, rotate_keyring_file

    old_kid: str | None = None
    if settings.signing_keys is None:
        new_key, old_kid = rotate_keyring_file(keyring_path(settings), args.alg)
        print(f"new active key {new_key.kid} ({new_key.alg}); {old_kid or 'no key'} is now "
              "verify-only", file=sys.stderr)
    with open_core(settings, keyring=keyring_source(settings, create=False)) as core:
        report = resign_all(core)
        active = core.sealer.keyring.active.kid
    doc = {"active": active, "previous": old_kid, **report.to_json()}
    emit(doc, args.json, f"active key {active}: re-signed {report.resigned_records} records "
         f"and {report.resigned_results} results ({report.unverifiable} unverifiable left "
         "untouched)")
    if old_kid and not args.json:
        print(f"once every node has reloaded the keyring (within 5 s), "
              f"`raysys keys revoke {old_kid}` retires the old key", file=sys.stderr)
    return 0


def cmd_keys_revoke(args: argparse.Namespace, settings: Settings) -> int:
    from raysys.rotation import count_signed_by, resign_all, revoke_in_file

    if settings.signing_keys is not None:
        raise ValidationError("keys come from RAYSYS_SIGNING_KEYS: mark the key revoked there "
                              "(after `raysys keys rotate` re-signed what it signed)")
    path = keyring_path(settings)
    with open_core(settings, keyring=keyring_source(settings, create=False)) as core:
        key = core.sealer.keyring.get(args.kid)
        if key is None:
            raise ValidationError(f"no key {args.kid} in {path}")
        if key.status == "active":
            raise ValidationError(f"key {args.kid} is the active key: run `raysys keys rotate` "
                                  "first")
        report = resign_all(core)  # catch what was written since the rotation
        left = count_signed_by(core, args.kid)
        if left:
            raise IntegrityError(
                f"{left} records or results signed by {args.kid} could not be re-signed "
                "(changing under load?); run `raysys keys revoke` again", reason="key_in_use")
        revoke_in_file(path, args.kid)
    doc = {"revoked": args.kid, **report.to_json()}
    emit(doc, args.json, f"revoked {args.kid}; nothing in namespace {settings.namespace} "
         f"depends on it (re-signed {report.resigned_records} records, "
         f"{report.resigned_results} results)")
    return 0


def cmd_keys_list(args: argparse.Namespace, settings: Settings) -> int:
    ring = load_keyring(settings, create=False)
    rows = [{"kid": k.kid, "alg": k.alg, "status": k.status} for k in ring.keys()]
    emit({"keys": rows}, args.json,
         "\n".join(f"{row['kid']:16} {row['alg']:12} {row['status']}" for row in rows))
    return 0
