"""The whole demo on hardened transports, and no secret in anything it prints or logs.

- Redis over mutual TLS as the documented ACL user: ``raysys demo --tasks 200 --json`` with the
  ``REDIS_*`` TLS variables pointing at a TLS-only ``redis-server`` (certificates from
  ``raysys certs``) whose ``raysys`` user is the redis.conf line of ``docs/redis-security.md``
  plus its documented ledger rule. The transport checks themselves (plain TCP refused, wrong CA
  refused, ``FLUSHALL``/``CONFIG`` denied) are in ``test_redis_tls_acl.py``.
- Ray with mutual TLS (``RAY_USE_TLS=1``, ``RAY_TLS_*`` from ``raysys certs --ip <node IP>``)
  and token authentication: ``raysys demo --tasks 100 --json`` runs end to end, and while it
  runs its GCS port speaks only TLS to clients holding a certificate from the CA. A
  ``ray start --head`` with TLS and a token refuses ``ray job submit`` without the token.
- The same run holds known secrets — a password in ``RAYSYS_REDIS_URL``, ``RAYSYS_API_TOKEN``,
  the Ray token, a keyring file, the TLS private keys — with ``LOG_LEVEL=DEBUG``: none of them
  appears in its stdout, its stderr, the raysys log files, or Ray's session logs.

Each run gets a short private root (``HOME``, ``TMPDIR``, ``RAYSYS_DATA_DIR``), its own HTTP
port, and leaves nothing running. Ray processes started here are stopped selectively (never
``ray stop``).
"""

from __future__ import annotations

import base64
import contextlib
import json
import secrets
import shutil
import socket
import ssl
import subprocess
import sys
import tempfile
import time
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
import redis

from raysys.bench.workload import demo_specs
from raysys.redis_server.binary import free_port
from raysys.redis_server.embedded import EmbeddedRedis
from raysys.signing.certs import CertFiles, write_dev_certs
from raysys.signing.keyring import Keyring, generate_key, write_keyring_file
from tests.security.security_results import security_row
from tests.support.cli import check_report
from tests.support.processes import (
    MARKER_VAR,
    clean_env,
    private_env,
    stop_selectively,
    wait_no_processes,
    wait_until_gone,
)
from tests.support.ray_cluster import RayHead, ray_head
from tests.support.redis_tls import (
    USER,
    TlsServer,
    acl_denials,
    ledger_rule,
    server_binary,
    start_tls_server,
    text,
)
from tests.support.results import ResultsFile, environment

pytestmark = [pytest.mark.security, pytest.mark.slow, pytest.mark.timeout(300)]

RUN_TIMEOUT_S = 240
RAYSYS = Path(sys.executable).with_name("raysys")
# `raysys demo` removes the private Ray temp dir it made when it ends; this runs the same
# command but keeps that directory (only that one) so Ray's session logs can be scanned.
KEEP_RAY_LOGS = """\
import shutil, sys
import raysys.client.client as client
class _KeepRayTemp:
    def __getattr__(self, name):
        return getattr(shutil, name)
    def rmtree(self, path, *args, **kwargs):
        if "raysys-ray-" not in str(path):
            shutil.rmtree(path, *args, **kwargs)
client.shutil = _KeepRayTemp()
from raysys.cli import main
sys.exit(main(sys.argv[1:]))
"""


def node_ip() -> str:
    """The address Ray advertises for this node (it rewrites 127.0.0.1 to it)."""
    from ray._private.services import get_node_ip_address

    return str(get_node_ip_address())


def raysys_certs(directory: Path, *ips: str) -> CertFiles:
    """Certificates made by the command a user runs: ``raysys certs DIR --ip ... --json``."""
    args = [arg for ip in ips for arg in ("--ip", ip)]
    run = subprocess.run([str(RAYSYS), "certs", str(directory), *args, "--dns", "localhost",
                          "--json"], capture_output=True, text=True, timeout=60, check=False,
                         env=clean_env(ray=True, HOME=str(directory.parent)))
    assert run.returncode == 0, run.stderr
    assert sorted(json.loads(run.stdout)["ip"]) == sorted(ips)
    return CertFiles(directory)


@dataclass
class Root:
    """A private, short root for one run: home, tmp, data."""

    path: Path

    @property
    def home(self) -> Path:
        return self.path / "home"

    @property
    def tmp(self) -> Path:
        return self.path / "tmp"

    @property
    def data(self) -> Path:
        return self.path / "data"

    def env(self, **extra: str) -> dict[str, str]:
        """A Ray-clean environment in this root, its own HTTP port, then ``extra``."""
        return private_env(self.path, ray=True, RAYSYS_HTTP_PORT=str(free_port()),
                           RAY_USAGE_STATS_ENABLED="0", **extra)


@pytest.fixture
def root() -> Iterator[Root]:
    path = Path(tempfile.mkdtemp(prefix="rss-"))  # short: Ray's socket paths must fit 107 B
    yield Root(path)
    shutil.rmtree(path, ignore_errors=True)


def check_demo(report: dict[str, Any], tasks: int) -> None:
    """The demo's report accounts for every task, and each reached the outcome its kind means:
    the ``fail`` tasks dead after their attempts, every other one succeeded (flaky ones on a
    retry). A deployment that runs nothing would still account for every task (dead by lease
    expiry), so the outcomes are what show the demo worked."""
    check_report(report, tasks=tasks, workers=2)
    doomed = sum(1 for spec in demo_specs(tasks) if spec.kind == "fail")
    assert (report["succeeded"], report["dead"]) == (tasks - doomed, doomed), report


def one_json(stdout: str) -> dict[str, Any]:
    lines = stdout.splitlines()
    assert len(lines) == 1, f"stdout must be one JSON object:\n{stdout[-3000:]}"
    doc: dict[str, Any] = json.loads(lines[0])
    return doc


# ================================================================================================
# 5. the demo over Redis TLS, as the documented ACL user
# ================================================================================================
def test_demo_runs_over_redis_tls_as_the_documented_acl_user(
        root: Root, tmp_path: Path, security_results: ResultsFile, security_seed: int) -> None:
    began = time.monotonic()
    # given: a TLS-only redis-server (mutual TLS, certificates from `raysys certs`) whose
    # `raysys` user is the documented redis.conf line, plus the documented ledger rule
    files = raysys_certs(tmp_path / "certs", "127.0.0.1")
    server = start_tls_server(tmp_path / "redis", server_binary("redis"), files)
    tls = TlsServer(server, files)
    admin = tls.admin()
    try:
        admin.execute_command("ACL", "SETUSER", USER, *ledger_rule())
        admin.execute_command("ACL", "LOG", "RESET")
        before = set(admin.keys("*"))

        # when: the whole demo runs against it, configured by the REDIS_* variables only
        env = root.env(**tls.env())
        run = subprocess.run([str(RAYSYS), "demo", "--tasks", "200", "--json", "--no-dashboard"],
                             env=env, cwd=root.path, capture_output=True, text=True,
                             timeout=RUN_TIMEOUT_S, stdin=subprocess.DEVNULL, check=False)

        # then: every task is accounted for, and the ACL refused nothing the demo did
        denials = [{k: text(v) for k, v in entry.items()} for entry in acl_denials(admin)]
        problems = []
        if run.returncode != 0:
            problems.append(f"demo exited {run.returncode}: {run.stderr[-1500:]}")
        if denials:
            problems.append("the ACL refused: " + ", ".join(sorted(
                {f"{d.get('object')} ({d.get('reason')})" for d in denials})))
        report = one_json(run.stdout) if run.returncode == 0 else {}
        left = set(admin.keys("*")) - before
        if left:
            problems.append(f"the run left {len(left)} keys: {sorted(left)[:3]}")
        security_results.put(security_row(
            "5-redis-tls-acl",
            "`raysys demo` end to end over mutual-TLS Redis as the documented ACL user "
            "(plus the ledger rule); plain TCP, a wrong CA, FLUSHALL and CONFIG are refused "
            "(test_redis_tls_acl.py)",
            size="200 tasks, 2 workers", seed=security_seed, attempted=200,
            executed=report.get("succeeded", 0) + report.get("dead", 0),
            rejected=0, audited=None, problems=problems, duration_s=time.monotonic() - began,
            env=environment(admin), attack=False,
            notes=f"report: lost {report.get('lost')}, duplicate commits "
                  f"{report.get('duplicate_commits')}, {report.get('tasks_per_s')} tasks/s; "
                  f"ACL denials: {len(denials)}"))
        assert run.returncode == 0, run.stderr[-4000:]
        check_demo(report, 200)
        assert report["settings"]["fsync"] == "server-configured"
        assert not denials, denials
        assert not left, left  # a configured Redis keeps no trace of the run (ledger included)
        assert wait_no_processes(root.path, timeout=30.0) == []
    finally:
        admin.close()
        server.stop()


# ================================================================================================
# 6 + 7. Ray mutual TLS and token auth, and no secret anywhere
# ================================================================================================
def tls_context(files: CertFiles, *, client_cert: bool = True,
                ca: Path | None = None, cert: CertFiles | None = None) -> ssl.SSLContext:
    ctx = ssl.create_default_context(cafile=str(ca or files.ca_cert))
    ctx.check_hostname = False  # the probe dials 127.0.0.1 or the node IP; the chain is checked
    if client_cert:
        source = cert or files
        ctx.load_cert_chain(str(source.server_cert), str(source.server_key))
    ctx.set_alpn_protocols(["h2"])
    return ctx


H2_PREFACE = b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n\x00\x00\x00\x04\x00\x00\x00\x00\x00"


def speaks_grpc(port: int, ctx: ssl.SSLContext | None) -> str:
    """What a client gets from a gRPC port: ``h2`` (a SETTINGS frame), ``refused`` (closed or
    reset without one) or ``tls-error: ...`` (our side refused the server)."""
    try:
        with contextlib.ExitStack() as stack:
            sock: Any = stack.enter_context(socket.create_connection(("127.0.0.1", port),
                                                                     timeout=5))
            if ctx is not None:
                sock = stack.enter_context(ctx.wrap_socket(sock))
            sock.settimeout(5)
            sock.sendall(H2_PREFACE)
            data = sock.recv(64)
    except ssl.SSLCertVerificationError as exc:
        return f"tls-error: {exc.reason}"
    except (ssl.SSLError, ConnectionError, TimeoutError, OSError):
        return "refused"
    return "h2" if len(data) >= 9 and data[3] == 0x04 else "refused"


def probe_matrix(port: int, files: CertFiles, other: CertFiles) -> dict[str, str]:
    return {
        "mutual TLS with the cluster's CA": speaks_grpc(port, tls_context(files)),
        "plain TCP": speaks_grpc(port, None),
        "TLS without a client certificate": speaks_grpc(port, tls_context(
            files, client_cert=False)),
        "TLS with a certificate of another CA": speaks_grpc(port, tls_context(
            files, cert=other)),
        "client trusting another CA": speaks_grpc(port, tls_context(files, ca=other.ca_cert)),
    }


EXPECTED_PROBES = {
    "mutual TLS with the cluster's CA": "h2", "plain TCP": "refused",
    "TLS without a client certificate": "refused",
    "TLS with a certificate of another CA": "refused",
}


def check_probes(probes: dict[str, str]) -> list[str]:
    out = [f"{what}: {got} (expected {EXPECTED_PROBES[what]})"
           for what, got in probes.items() if what in EXPECTED_PROBES
           and got != EXPECTED_PROBES[what]]
    if not probes["client trusting another CA"].startswith("tls-error"):
        out.append(f"client trusting another CA: {probes['client trusting another CA']}")
    return out


def ray_tls_env(files: CertFiles) -> dict[str, str]:
    return {"RAY_USE_TLS": "1", "RAY_TLS_SERVER_CERT": str(files.server_cert),
            "RAY_TLS_SERVER_KEY": str(files.server_key), "RAY_TLS_CA_CERT": str(files.ca_cert)}


@dataclass
class HardenedRun:
    """One `raysys demo` on Ray mTLS + token, Redis with a password, DEBUG logs."""

    root: Root
    files: CertFiles
    secrets: dict[str, list[bytes]]
    returncode: int
    stdout: str
    stderr: str
    probes: dict[str, str]
    duration_s: float
    redis_info: redis.Redis

    def scanned_files(self) -> list[Path]:
        """Every file the run logged to: raysys's kept logs, and Ray's whole temp dir."""
        return sorted(p for top in (self.root.data / "logs", self.root.tmp)
                      for p in top.rglob("*") if p.is_file() and not p.is_symlink())


def gcs_port(tmp: Path) -> int | None:
    for path in tmp.glob("raysys-ray-*/session_*/gcs_server_port_*"):
        text = path.read_text().strip()
        if text.isdigit():
            return int(text)
    return None


@pytest.fixture(scope="module")
def hardened_run(tmp_path_factory: pytest.TempPathFactory) -> Iterator[HardenedRun]:
    base = tmp_path_factory.mktemp("hardened")
    root = Root(Path(tempfile.mkdtemp(prefix="rsx-")))
    marker = uuid.uuid4().hex
    files = raysys_certs(base / "certs", "127.0.0.1", node_ip())
    other = write_dev_certs(base / "other").files
    redis_password = "Rp-" + secrets.token_hex(20)
    server = EmbeddedRedis(base / "redis", password=redis_password, appendfsync="everysec")
    server.start()
    api_token, ray_token = "Api-" + secrets.token_hex(24), "Ray-" + secrets.token_hex(24)
    keyfile = base / "keys.json"
    key = generate_key()
    write_keyring_file(keyfile, Keyring([key]))
    url = f"redis://:{redis_password}@127.0.0.1:{server.port}/0"
    env = root.env(LOG_LEVEL="DEBUG", RAYSYS_REDIS_URL=url, RAYSYS_API_TOKEN=api_token,
                   RAYSYS_SIGNING_KEY_FILE=str(keyfile), RAY_AUTH_MODE="token",
                   RAY_AUTH_TOKEN=ray_token, **ray_tls_env(files)) | {MARKER_VAR: marker}
    assert key.secret is not None
    pem_lines = [line.encode() for pem in (files.server_key, files.client_key, files.ca_key)
                 for line in pem.read_text().splitlines() if "-----" not in line and line]
    known = {
        "Redis password": [redis_password.encode()],
        "Redis URL": [url.encode()],
        "API token": [api_token.encode()],
        "Ray token": [ray_token.encode()],
        "signing key": [key.secret, key.secret.hex().encode(),
                        base64.b64encode(key.secret)],
        "TLS private keys": pem_lines,
    }
    began = time.monotonic()
    try:
        with (base / "stdout").open("w+") as out, (base / "stderr").open("w+") as err:
            proc = subprocess.Popen([sys.executable, "-c", KEEP_RAY_LOGS, "demo", "--tasks",
                                     "100", "--json", "--no-dashboard"], env=env,
                                    cwd=root.path, stdout=out, stderr=err,
                                    stdin=subprocess.DEVNULL, text=True)
            # while it runs: what does the demo's own GCS port let in?
            probes: dict[str, str] = {}
            deadline = time.monotonic() + RUN_TIMEOUT_S
            while proc.poll() is None and time.monotonic() < deadline:
                port = gcs_port(root.tmp)
                if port is not None and not probes:
                    time.sleep(1.0)  # listening by the time the file is read, but be kind
                    probes = probe_matrix(port, files, other)
                time.sleep(0.2)
            try:
                proc.wait(timeout=max(1.0, deadline - time.monotonic()))
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()
            out.seek(0)
            err.seek(0)
            run = HardenedRun(root, files, known, proc.returncode, out.read(), err.read(),
                              probes, time.monotonic() - began,
                              redis.Redis.from_url(url))
        yield run
    finally:
        stop_selectively(marker, root.path)
        server.stop()
        shutil.rmtree(root.path, ignore_errors=True)


def test_demo_runs_end_to_end_on_ray_mutual_tls_with_token_auth(
        hardened_run: HardenedRun, security_results: ResultsFile, security_seed: int) -> None:
    run = hardened_run
    problems = check_probes(run.probes) if run.probes else [
        "the demo's GCS port was never found to probe"]
    report: dict[str, Any] = {}
    if run.returncode != 0:
        problems.append(f"demo exited {run.returncode}: {run.stderr[-1500:]}")
    else:
        report = one_json(run.stdout)
    ray_logs = "".join(p.read_text(errors="replace") for p in run.root.tmp.glob(
        "raysys-ray-*/session_*/logs/gcs_server.out"))
    security_results.put(security_row(
        "7-ray-tls-demo",
        "`raysys demo` on Ray with mutual TLS (RAY_USE_TLS, certificates from `raysys "
        "certs --ip`) and token auth; its GCS port probed during the run",
        size="100 tasks, 2 workers; 5 probes", seed=security_seed, attempted=len(run.probes) - 1,
        executed=0, rejected=sum(1 for w, g in run.probes.items()
                                 if w != "mutual TLS with the cluster's CA" and g != "h2"),
        audited=None, problems=problems, duration_s=run.duration_s, env=environment(
            run.redis_info),
        notes=f"probes: {run.probes}; report: lost {report.get('lost')}, duplicate commits "
              f"{report.get('duplicate_commits')}"))
    assert run.returncode == 0, run.stderr[-4000:]
    check_demo(report, 100)
    assert "mTLS enabled" in ray_logs  # Ray itself says it runs with TLS
    assert not (run.root.home / ".ray" / "auth_token").exists()  # the token came from the env
    assert not problems, problems
    assert wait_no_processes(run.root.path, timeout=30.0) == []


def test_no_secret_in_any_output_or_log_of_a_full_run(
        hardened_run: HardenedRun, security_results: ResultsFile, security_seed: int) -> None:
    run = hardened_run
    files = run.scanned_files()
    streams = {"stdout": run.stdout.encode(), "stderr": run.stderr.encode()}
    found: list[str] = []
    scanned_bytes = 0
    texts: list[bytes] = list(streams.values())
    for path in files:
        data = path.read_bytes()
        scanned_bytes += len(data)
        texts.append(data)
        found += [f"{name} in {path.relative_to(run.root.path)}"
                  for name, forms in run.secrets.items() if any(f in data for f in forms)]
    for stream, data in streams.items():
        found += [f"{name} in {stream}" for name, forms in run.secrets.items()
                  if any(f in data for f in forms)]
    everything = b"".join(texts)
    # the scan saw real logs: raysys's DEBUG trace and Ray's session logs (workers, GCS)
    seen = {"raysys DEBUG lines": b"redis script acquire" in everything,
            "Ray worker logs": any(p.name.startswith("worker-") for p in files),
            "GCS log": any(p.name == "gcs_server.out" for p in files),
            "raysys log files": any(p.name.startswith("agent_system-") for p in files)}
    problems = [f"secret leaked: {f}" for f in found] + [
        f"the scan did not see {what}" for what, ok in seen.items() if not ok]
    security_results.put(security_row(
        "6-secrets",
        "secrets (Redis password and URL, API token, Ray token, signing key, TLS private "
        "keys) searched for in stdout, stderr, raysys log files and Ray session logs of a full "
        "`raysys demo` with LOG_LEVEL=DEBUG",
        size=f"{len(files)} files + 2 streams, {scanned_bytes // 1024} KiB; "
             f"{sum(len(v) for v in run.secrets.values())} secret strings",
        seed=security_seed, attempted=len(run.secrets), executed=0,
        rejected=len(run.secrets) - len({f.split(' in ')[0] for f in found}), audited=None,
        problems=problems, duration_s=run.duration_s, env=environment(run.redis_info),
        notes="rejected = secrets found nowhere; the task API's 401s are in rows 4-http-auth "
              "and tests/integration/test_serve.py"))
    assert run.returncode == 0, run.stderr[-3000:]
    assert not problems, "\n".join(problems)


# ---- a `ray start --head` with TLS and a token --------------------------------------------------
def submit_job(head: RayHead, env: dict[str, str], *extra: str) -> subprocess.CompletedProcess[str]:
    return head.ray("job", "submit", "--address", head.url, *extra, "--", "python", "-c",
                    "print('job ran')", env=env, timeout=120)


def submission_problems(refused: list[subprocess.CompletedProcess[str]],
                        accepted: subprocess.CompletedProcess[str]) -> list[str]:
    """Each submission without the right token refused for it, the token holder's job run."""
    problems = [f"job submit without the right token: exit {r.returncode}, "
                f"{r.stderr[-300:]!r}" for r in refused if r.returncode == 0 or not (
                    "Unauthorized" in r.stderr or "authentication" in r.stderr.lower())]
    if accepted.returncode != 0 or "job ran" not in accepted.stdout:
        problems.append(f"the token holder's job failed: {accepted.stderr[-500:]}")
    return problems


def test_a_tls_head_with_token_refuses_job_submit_without_the_token(
        tmp_path: Path, security_results: ResultsFile, security_seed: int) -> None:
    began = time.monotonic()
    # given: a head with mutual TLS (certificates from `raysys certs --ip`) and token auth
    files = raysys_certs(tmp_path / "certs", "127.0.0.1", node_ip())
    other = write_dev_certs(tmp_path / "other").files
    with ray_head("rsj-tls-", env=ray_tls_env(files), head_args=["--num-cpus=1"]) as head:
        # when: clients without the token submit a job: none at all, and a wrong one
        refused = [submit_job(head, env, "--no-wait")
                   for env in head.tokenless_envs(**ray_tls_env(files))]
        # ... while the token holder's job runs (the refusals are about the token)
        accepted = submit_job(head, head.env)
        probes = probe_matrix(head.ports.gcs, files, other)

        # then: both refused, the token holder's job ran, and the GCS port lets in only mTLS
        problems = submission_problems(refused, accepted) + check_probes(probes)
        security_results.put(security_row(
            "7-ray-tls-head", "`ray start --head` with mutual TLS and token auth: `ray job submit` "
            "without the token or with a wrong one, and the GCS port probed",
            size="2 job submissions + 5 probes", seed=security_seed, attempted=2 + 4,
            executed=sum(r.returncode == 0 for r in refused),
            rejected=sum(r.returncode != 0 for r in refused) + sum(
                1 for w, g in probes.items()
                if w != "mutual TLS with the cluster's CA" and g != "h2"),
            audited=None, problems=problems, duration_s=time.monotonic() - began,
            notes=f"probes: {probes}; the token holder's job "
                  f"{'succeeded' if accepted.returncode == 0 else 'failed'}"))
        assert not problems, "\n".join(problems)
        head.stop()  # stopped by marker and temp dir, never `ray stop`
        assert wait_until_gone(head.marker, head.root) == []
