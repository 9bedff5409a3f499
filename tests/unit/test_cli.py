"""The ``raysys`` console script, run as a real subprocess against real Redis servers.

Each test runs the installed entry point (``<venv>/bin/raysys``; one test also runs
``python -m raysys.cli``) in a private environment: no ``RAYSYS_*``/``REDIS_*`` variables from
the caller, a temporary ``HOME``, ``RAYSYS_DATA_DIR`` and ``TMPDIR``, a unique
``RAYSYS_NAMESPACE``, and ``cwd`` in the test's directory so no stray ``.env`` is read. "Configured"
tests point ``RAYSYS_REDIS_URL`` at the session's fixture server (Debian redis-server and valkey)
with a keyring made by ``raysys keys new``; the others use the embedded default.

What is checked is the public surface (DESIGN.md, "Public surface", guarantees 5 and 6): ``--json``
prints exactly one JSON object on stdout; an error is one ``raysys: error:`` line on stderr with
its documented exit code, never a traceback, never a secret; and no embedded Redis outlives the
command that started it.
"""

from __future__ import annotations

import json
import os
import re
import selectors
import signal
import stat
import subprocess
import sys
import uuid
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import TYPE_CHECKING, Any

import pytest
import redis

from raysys.embedded import EmbeddedRedis, free_port

if TYPE_CHECKING:
    from tests.conftest import RedisServerFactory

pytestmark = [pytest.mark.unit, pytest.mark.timeout(60)]

RUN_TIMEOUT_S = 45.0
TASK_ID = re.compile(r"^[0-9a-f]{32}$")
STARTED_PID = re.compile(r"embedded Redis started: pid=(\d+)")
REPORT_FIELDS = {
    "tasks",
    "succeeded",
    "dead",
    "cancelled",
    "quarantined",
    "lost",
    "duplicate_commits",
    "retries",
    "tasks_per_s",
    "latency_ms",
    "settings",
}
SETTINGS_FIELDS = {"fsync", "signing", "serve", "audit", "workers", "batch"}
# The caller's configuration must not leak into the command under test.
CLEARED_PREFIXES = ("RAYSYS_", "REDIS_")
CLEARED_NAMES = ("LOG_LEVEL", "COORDINATOR_ID", "DISTRIBUTOR_ID", "WORKER_ID", "TMPDIR")


def raysys_script() -> Path:
    """The console script pip installed next to this interpreter."""
    script = Path(sys.executable).with_name("raysys")
    if not (script.is_file() and os.access(script, os.X_OK)):
        pytest.fail(f"no `raysys` entry point at {script}: pip install -e . into this venv")
    return script


# ---- running the CLI --------------------------------------------------------------------------
@dataclass(frozen=True)
class Run:
    """One finished command."""

    args: tuple[str, ...]
    returncode: int
    stdout: str
    stderr: str

    @property
    def output(self) -> str:
        return self.stdout + self.stderr

    def json(self) -> dict[str, Any]:
        """The single JSON object stdout holds; fails if stdout holds anything else."""
        assert self.returncode == 0, (
            f"raysys {' '.join(self.args)} exited {self.returncode}:\n{self.stderr}"
        )
        lines = self.stdout.splitlines()
        assert len(lines) == 1, f"stdout must be one JSON object, got:\n{self.stdout}"
        doc = json.loads(lines[0])
        assert isinstance(doc, dict), f"stdout must be a JSON object, got {doc!r}"
        return doc

    def error_line(self, exit_code: int) -> str:
        """The one stderr line of a failed command; checks the code and that nothing else shows."""
        assert self.returncode == exit_code, (
            f"raysys {' '.join(self.args)}: expected exit {exit_code}, got {self.returncode}\n"
            f"stdout: {self.stdout}\nstderr: {self.stderr}"
        )
        assert "Traceback" not in self.output
        assert self.stdout == ""
        lines = self.stderr.splitlines()
        assert len(lines) == 1, f"expected one line on stderr, got:\n{self.stderr}"
        assert lines[0].startswith("raysys: error: "), lines[0]
        return lines[0]

    def started_pids(self) -> list[int]:
        """Pids of the embedded servers this command started (from its INFO log on stderr)."""
        return [int(pid) for pid in STARTED_PID.findall(self.stderr)]


@dataclass(frozen=True)
class Cli:
    """Runs ``raysys`` in a private environment rooted at ``root``."""

    root: Path
    env: Mapping[str, str]
    namespace: str
    script: Path = field(default_factory=raysys_script)

    @property
    def data_dir(self) -> Path:
        return Path(self.env["RAYSYS_DATA_DIR"])

    @property
    def tmpdir(self) -> Path:
        return Path(self.env["TMPDIR"])

    def with_env(self, **changes: str | None) -> Cli:
        """A copy with variables set (a str) or removed (None)."""
        env = dict(self.env)
        for name, value in changes.items():
            if value is None:
                env.pop(name, None)
            else:
                env[name] = value
        return replace(self, env=env)

    def command(self, args: Sequence[str], module: bool = False) -> list[str]:
        entry = [sys.executable, "-m", "raysys.cli"] if module else [str(self.script)]
        return [*entry, *args]

    def run(self, *args: str, module: bool = False, timeout: float = RUN_TIMEOUT_S) -> Run:
        proc = subprocess.run(
            self.command(args, module),
            cwd=self.root,
            env=dict(self.env),
            capture_output=True,
            text=True,
            timeout=timeout,
            stdin=subprocess.DEVNULL,
            check=False,
        )
        return Run(tuple(args), proc.returncode, proc.stdout, proc.stderr)

    def popen(self, *args: str, stderr_file: Path) -> subprocess.Popen[str]:
        with stderr_file.open("w") as err:
            return subprocess.Popen(
                self.command(args),
                cwd=self.root,
                env=dict(self.env),
                text=True,
                stdin=subprocess.DEVNULL,
                stdout=subprocess.PIPE,
                stderr=err,
            )


def clean_environment(root: Path) -> dict[str, str]:
    env = {
        name: value
        for name, value in os.environ.items()
        if not name.startswith(CLEARED_PREFIXES) and name not in CLEARED_NAMES
    }
    for sub in ("home", "data", "tmp"):
        (root / sub).mkdir(parents=True, exist_ok=True)
    env.update(
        HOME=str(root / "home"),
        RAYSYS_DATA_DIR=str(root / "data"),
        TMPDIR=str(root / "tmp"),
        PYTHONUNBUFFERED="1",
    )
    return env


def make_cli(root: Path) -> Cli:
    namespace = "cli" + uuid.uuid4().hex[:10]
    env = clean_environment(root)
    env["RAYSYS_NAMESPACE"] = namespace
    return Cli(root, env, namespace)


# ---- processes --------------------------------------------------------------------------------
def _alive(pid: int) -> bool:
    stat_file = Path(f"/proc/{pid}/stat")
    if Path("/proc/self").exists():
        try:
            state = stat_file.read_text().rsplit(")", 1)[1].split()[0]
        except (OSError, IndexError):
            return False
        return state != "Z"
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    return True


def processes_working_in(directory: Path) -> list[str]:
    """Processes whose working directory is inside ``directory`` (redis-server chdirs to its
    ``--dir`` and rewrites its command line, so the cwd is what identifies it)."""
    if not Path("/proc/self").exists():
        return []
    found = []
    root = str(directory.resolve())
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            cwd = os.readlink(entry / "cwd")
            cmdline = (entry / "cmdline").read_bytes().replace(b"\0", b" ").decode(errors="replace")
        except OSError:
            continue
        if cwd == root or cwd.startswith(root + os.sep):
            found.append(f"pid {entry.name} in {cwd}: {cmdline}")
    return found


def assert_no_embedded_server_left(cli: Cli, *runs: Run) -> None:
    for run in runs:
        for pid in run.started_pids():
            assert not _alive(pid), f"embedded Redis pid {pid} outlived `raysys {run.args}`"
    state = cli.data_dir / "redis" / "embedded.json"
    if state.exists():
        pid = json.loads(state.read_text())["pid"]
        assert not _alive(pid), f"{state} names a live server, pid {pid}"
    assert processes_working_in(cli.root) == []


def read_line(proc: subprocess.Popen[str], timeout: float) -> str:
    """The next stdout line of ``proc`` within ``timeout`` seconds."""
    assert proc.stdout is not None
    with selectors.DefaultSelector() as sel:
        sel.register(proc.stdout, selectors.EVENT_READ)
        if not sel.select(timeout):
            proc.kill()
            pytest.fail(f"no output within {timeout} s")
    return proc.stdout.readline()


# ---- fixtures ---------------------------------------------------------------------------------
@pytest.fixture
def cli(tmp_path: Path) -> Iterator[Cli]:
    """The embedded default: no Redis configured, private HOME/data dir/TMPDIR."""
    runner = make_cli(tmp_path)
    yield runner
    leftovers = processes_working_in(tmp_path)
    for line in leftovers:  # never leave a server behind, even when the test failed
        os.kill(int(line.split()[1]), signal.SIGKILL)
    assert leftovers == [], f"processes left running: {leftovers}"


@pytest.fixture(scope="module")
def keyring_file(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A keyring made by `raysys keys new`, shared (read-only) by the configured tests."""
    root = tmp_path_factory.mktemp("cli-keyring")
    path = root / "keys.json"
    runner = make_cli(root).with_env(RAYSYS_SIGNING_KEY_FILE=str(path))
    run = runner.run("keys", "new", "--json")
    assert run.json()["status"] == "active"
    return path


@pytest.fixture
def configured(
    cli: Cli, redis_server: EmbeddedRedis, redis_client: redis.Redis, keyring_file: Path
) -> Cli:
    """The CLI pointed at the session's fixture Redis (emptied after the test)."""
    return cli.with_env(
        RAYSYS_REDIS_URL=redis_server.url, RAYSYS_SIGNING_KEY_FILE=str(keyring_file)
    )


def check_report(report: dict[str, Any], tasks: int, workers: int) -> None:
    """The demo/bench report of DESIGN.md: every field, and every task accounted for."""
    assert set(report) >= REPORT_FIELDS, f"missing: {REPORT_FIELDS - set(report)}"
    assert set(report["latency_ms"]) == {"p50", "p95", "p99"}
    assert set(report["settings"]) >= SETTINGS_FIELDS
    assert report["settings"]["workers"] == workers
    assert report["tasks"] == tasks
    assert report["tasks"] == sum(
        report[k] for k in ("succeeded", "dead", "cancelled", "quarantined", "lost")
    )
    assert report["lost"] == 0
    assert report["duplicate_commits"] == 0
    assert report["tasks_per_s"] > 0
    assert (
        0
        <= report["latency_ms"]["p50"]
        <= report["latency_ms"]["p95"]
        <= report["latency_ms"]["p99"]
    )


# ---- keys -------------------------------------------------------------------------------------
def test_keys_new_then_list_never_shows_a_secret(cli: Cli) -> None:
    # given: no keyring yet
    path = cli.root / "secret" / "ring.json"
    ring = cli.with_env(RAYSYS_SIGNING_KEY_FILE=str(path))

    # when: a first key is made and listed
    first = ring.run("keys", "new", "--json")
    listed = ring.run("keys", "list", "--json")

    # then: it signs, the file is private, and list is one object of ids (no secrets)
    made = first.json()
    assert made["status"] == "active" and made["alg"] == "hmac-sha256"
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    assert listed.json() == {
        "keys": [{"kid": made["kid"], "alg": "hmac-sha256", "status": "active"}]
    }

    # when: a second key is made
    second = ring.run("keys", "new", "--alg", "ed25519", "--json")
    listed_again = ring.run("keys", "list", "--json")
    human = ring.run("keys", "list")

    # then: it verifies only (rotation adds it before it signs); both are listed
    assert second.json()["status"] == "verify-only"
    keys = listed_again.json()["keys"]
    assert [(k["kid"], k["alg"], k["status"]) for k in keys] == [
        (made["kid"], "hmac-sha256", "active"),
        (second.json()["kid"], "ed25519", "verify-only"),
    ]
    assert all(set(k) == {"kid", "alg", "status"} for k in keys)
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    secrets = [
        v
        for k in json.loads(path.read_text())["keys"]
        for name, v in k.items()
        if name in ("secret", "private") and v
    ]
    assert len(secrets) == 2
    for run in (first, listed, second, listed_again, human):
        assert run.returncode == 0
        assert not any(secret in run.output for secret in secrets)


def test_keys_list_without_a_keyring_says_how_to_make_one(cli: Cli) -> None:
    # given: a keyring file that does not exist
    ring = cli.with_env(RAYSYS_SIGNING_KEY_FILE=str(cli.root / "absent.json"))

    # when
    run = ring.run("keys", "list")

    # then: configuration error, with the fix
    assert "raysys keys new" in run.error_line(2)


# ---- submit and status (configured Redis) -------------------------------------------------------
def test_submit_prints_one_id_and_status_sees_it_pending(configured: Cli) -> None:
    # when: one task is submitted with --json, then resubmitted under the same idempotency key
    # (a client retrying after a timeout)
    args = (
        "submit",
        "echo",
        "--payload",
        '{"hello": 1}',
        "--idempotency-key",
        "order-42",
        "--json",
    )
    doc = configured.run(*args).json()
    again = configured.run(*args).json()

    # then: stdout is exactly {"id": ...}, the same id both times
    assert list(doc) == ["id"] and TASK_ID.match(doc["id"])
    assert again == doc

    # when: its status, then the counts, are asked for
    one = configured.run("status", doc["id"], "--json").json()
    counts = configured.run("status", "--json").json()

    # then: the task waits (no workers run), stored once, in this namespace
    assert one["id"] == doc["id"] and one["state"] == "pending" and one["kind"] == "echo"
    assert one["attempts"] == 0 and one["result"] is None and one["error"] is None
    assert counts["namespace"] == configured.namespace
    assert counts["counts"]["pending"] == 1 and counts["total"] == 1


def test_submit_file_submits_every_line_and_is_rerun_safe(configured: Cli) -> None:
    # given: a JSONL file with three payloads and a blank line
    tasks = configured.root / "tasks.jsonl"
    tasks.write_text('{"i": 1}\n\n[1, 2]\n"three"\n')

    # when: it is submitted twice under one idempotency key
    first = configured.run(
        "submit", "echo", "--file", str(tasks), "--idempotency-key", "b7", "--json"
    ).json()
    second = configured.run(
        "submit", "echo", "--file", str(tasks), "--idempotency-key", "b7", "--json"
    ).json()
    counts = configured.run("status", "--json").json()

    # then: one id per line, the same ids again, three tasks stored
    assert list(first) == ["ids"] and len(first["ids"]) == 3
    assert all(TASK_ID.match(i) for i in first["ids"]) and len(set(first["ids"])) == 3
    assert second == first
    assert counts["counts"]["pending"] == 3 and counts["total"] == 3


def test_submit_file_with_one_bad_line_stores_nothing(configured: Cli) -> None:
    # given: a file whose third line is not JSON
    tasks = configured.root / "tasks.jsonl"
    tasks.write_text('{"i": 1}\n{"i": 2}\n{"i": \n{"i": 4}\n')

    # when
    run = configured.run("submit", "echo", "--file", str(tasks), "--json")
    counts = configured.run("status", "--json").json()

    # then: bad input (3) naming the file and line, and not one task stored
    line = run.error_line(3)
    assert "tasks.jsonl line 3" in line and "not valid JSON" in line
    assert counts["total"] == 0


# Rejected before Redis is touched, so one server binary is enough.
BAD_INPUT = {
    "malformed-payload": (("submit", "echo", "--payload", '{"a": '), "not valid JSON"),
    "too-deep-payload": (("submit", "echo", "--payload", "[" * 40 + "]" * 40), "deeper than 32"),
    "priority-out-of-range": (("submit", "noop", "--priority", "1001"), "priority"),
    "bad-kind": (("submit", "no such kind!"), "kind"),
}


@pytest.mark.parametrize("redis_server", ["redis"], indirect=True)
@pytest.mark.parametrize(("args", "says"), BAD_INPUT.values(), ids=BAD_INPUT.keys())
def test_bad_input_is_one_clear_line(configured: Cli, args: tuple[str, ...], says: str) -> None:
    # when: the command is given bad input
    run = configured.run(*args, "--json")

    # then: one line naming what is wrong, exit 3, nothing on stdout
    assert says in run.error_line(3)


def test_unknown_task_id_is_not_found(configured: Cli) -> None:
    # when
    run = configured.run("status", "0123456789abcdef0123456789abcdef", "--json")

    # then: not found (8), naming the id and the namespace searched
    line = run.error_line(8)
    assert "0123456789abcdef0123456789abcdef" in line and configured.namespace in line


# ---- bad environment ----------------------------------------------------------------------------
@pytest.mark.parametrize("module", [False, True], ids=["entry-point", "python-m"])
def test_redis_refusing_connections_is_one_line_with_the_fix(
    cli: Cli, keyring_file: Path, module: bool
) -> None:
    # given: a Redis URL where nothing listens
    port = free_port()
    down = cli.with_env(
        RAYSYS_REDIS_URL=f"redis://127.0.0.1:{port}/0", RAYSYS_SIGNING_KEY_FILE=str(keyring_file)
    )

    # when
    run = down.run("submit", "noop", "--json", module=module)

    # then: Redis unavailable (4), naming the endpoint and how to fix it
    line = run.error_line(4)
    assert f"127.0.0.1:{port}" in line and "connection refused" in line
    assert "REDIS_HOST" in line or "RAYSYS_REDIS_URL" in line


def test_wrong_redis_password_is_exit_4_and_never_printed(
    cli: Cli, keyring_file: Path, redis_server_factory: RedisServerFactory, redis_binary: str
) -> None:
    # given: a server with a password, and clients holding a wrong one
    right = "right-" + uuid.uuid4().hex
    wrong = "wrong-" + uuid.uuid4().hex
    server = redis_server_factory(redis_binary, password=right)
    base = cli.with_env(RAYSYS_SIGNING_KEY_FILE=str(keyring_file))
    by_url = base.with_env(RAYSYS_REDIS_URL=f"redis://:{wrong}@127.0.0.1:{server.port}/0")
    by_parts = base.with_env(
        REDIS_HOST="127.0.0.1", REDIS_PORT=str(server.port), REDIS_PASSWORD=wrong
    )
    good = base.with_env(RAYSYS_REDIS_URL=server.url, LOG_LEVEL="DEBUG")

    # when
    runs = [by_url.run("status", "--json"), by_parts.run("submit", "noop")]
    ok = good.run("submit", "noop", "--json")

    # then: credentials refused (4) with the variables to check; no password anywhere, even
    # in a DEBUG log of a successful run
    for run in runs:
        line = run.error_line(4)
        assert "refused the credentials" in line and "REDIS_PASSWORD" in line
        assert f"127.0.0.1:{server.port}" in line
    assert ok.returncode == 0, ok.stderr
    for run in [*runs, ok]:
        assert wrong not in run.output and right not in run.output


@pytest.mark.parametrize(
    "tls",
    [
        {"RAYSYS_REDIS_URL": "rediss://127.0.0.1:6390/0"},
        {"REDIS_HOST": "127.0.0.1", "REDIS_PORT": "6390", "REDIS_USE_TLS": "true"},
    ],
    ids=["rediss-url", "use-tls"],
)
def test_tls_without_certificate_checks_needs_insecure_dev(
    cli: Cli, keyring_file: Path, tls: dict[str, str]
) -> None:
    # given: TLS with certificate checks off, and no RAYSYS_INSECURE_DEV
    insecure = cli.with_env(
        REDIS_SSL_CERT_REQS="none", RAYSYS_SIGNING_KEY_FILE=str(keyring_file), **tls
    )

    # when
    run = insecure.run("status")

    # then: a configuration error (2) that names the variable and the way out
    line = run.error_line(2)
    assert "REDIS_SSL_CERT_REQS" in line and "RAYSYS_INSECURE_DEV" in line


def test_missing_keyring_with_a_configured_redis_says_run_keys_new(
    cli: Cli, redis_server: EmbeddedRedis, redis_client: redis.Redis
) -> None:
    # given: a configured Redis and a keyring path with no file (production keys are deployed)
    absent = cli.root / "deployed" / "keys.json"
    nokeys = cli.with_env(RAYSYS_REDIS_URL=redis_server.url, RAYSYS_SIGNING_KEY_FILE=str(absent))

    # when
    run = nokeys.run("submit", "noop", "--json")

    # then: configuration error (2) telling what to run; no key invented
    line = run.error_line(2)
    assert str(absent) in line and "raysys keys new" in line
    assert not absent.exists()


# ---- embedded default ---------------------------------------------------------------------------
def test_embedded_default_keeps_tasks_between_processes(cli: Cli) -> None:
    # given: no Redis configured, only a data dir (DEBUG logs name each server's pid)
    cli = cli.with_env(LOG_LEVEL="DEBUG")

    # when: one process submits and another asks for the task
    submitted = cli.run("submit", "echo", "--payload", '{"kept": true}', "--json")
    task_id = submitted.json()["id"]
    status = cli.run("status", task_id, "--json")

    # then: the second process sees it (the server's AOF survived its restart) ...
    doc = status.json()
    assert doc["id"] == task_id and doc["state"] == "pending"
    # ... a keyring was made for the embedded default, privately ...
    keys = cli.data_dir / "keys.json"
    assert stat.S_IMODE(keys.stat().st_mode) == 0o600
    # ... and each process stopped the server it started
    assert submitted.started_pids() and status.started_pids()
    assert not (cli.data_dir / "redis" / "embedded.json").exists()
    assert_no_embedded_server_left(cli, submitted, status)


def test_sigterm_shuts_the_embedded_server_down(cli: Cli) -> None:
    # given: a long-running command that owns an embedded server
    stderr_file = cli.root / "watch.err"
    proc = cli.popen("status", "--watch", "--json", stderr_file=stderr_file)
    try:
        first = json.loads(read_line(proc, timeout=20))
        state = json.loads((cli.data_dir / "redis" / "embedded.json").read_text())
        assert first["total"] == 0 and _alive(state["pid"])

        # when: it is terminated (kubectl delete, systemd stop, a closed terminal's SIGHUP)
        proc.send_signal(signal.SIGTERM)
        proc.communicate(timeout=30)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()

    # then: exit 128+15 with one line, and the server was shut down, not orphaned
    stderr = stderr_file.read_text()
    assert proc.returncode == 128 + signal.SIGTERM, stderr
    assert "Traceback" not in stderr and "raysys: stopped by SIGTERM" in stderr
    assert not _alive(state["pid"])
    assert_no_embedded_server_left(cli)


def test_a_closed_stdout_ends_the_command_quietly(cli: Cli) -> None:
    # given: `raysys status --watch --json | head -1`
    stderr_file = cli.root / "watch.err"
    proc = cli.popen("status", "--watch", "--json", stderr_file=stderr_file)
    try:
        assert json.loads(read_line(proc, timeout=20))["total"] == 0

        # when: the reader goes away
        assert proc.stdout is not None
        proc.stdout.close()
        proc.wait(timeout=30)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()

    # then: no "internal error", no traceback; exit 128+SIGPIPE; the server stopped
    stderr = stderr_file.read_text()
    assert proc.returncode == 128 + signal.SIGPIPE, stderr
    assert "error" not in stderr.lower() and "Traceback" not in stderr
    assert "Exception ignored" not in stderr
    assert_no_embedded_server_left(cli)


# ---- demo, bench, doctor ------------------------------------------------------------------------
def test_demo_reports_every_task_as_one_json_object(cli: Cli) -> None:
    # when: the main job runs on the embedded default (DEBUG logs name the server's pid)
    cli = cli.with_env(LOG_LEVEL="DEBUG")
    run = cli.run("demo", "--tasks", "300", "--workers", "2", "--json")

    # then: one JSON report on stdout with every task accounted for by the ledger ...
    report = run.json()
    check_report(report, tasks=300, workers=2)
    assert report["dead"] > 0 and report["retries"] > 0  # the mix holds failing and flaky tasks
    assert report["succeeded"] > report["dead"]
    assert set(report["settings"]) >= SETTINGS_FIELDS
    assert report["settings"]["fsync"] == "always"
    # ... the progress bar on stderr only ...
    assert "300/300" in run.stderr and "[#" not in run.stdout
    # ... and the private server and its directory are gone
    assert run.started_pids()
    assert list(cli.tmpdir.iterdir()) == []
    assert_no_embedded_server_left(cli, run)


def test_bench_reports_one_json_object_and_leaves_no_keys(
    configured: Cli, redis_client: redis.Redis
) -> None:
    # given: the keys the configured Redis holds before the run
    before = set(redis_client.keys("*"))

    # when
    run = configured.run("bench", "--tasks", "500", "--json")

    # then: the same report fields, every noop task succeeded ...
    report = run.json()
    check_report(report, tasks=500, workers=report["settings"]["workers"])
    assert report["succeeded"] == 500 and report["dead"] == 0
    # ... and the run's namespace and ledger were dropped from the user's Redis
    assert set(redis_client.keys("*")) == before


def test_doctor_passes_against_a_healthy_redis(configured: Cli) -> None:
    # when
    run = configured.run("doctor", "--json")

    # then
    doc = run.json()
    assert doc["ok"] is True
    assert {c["check"]: c["status"] for c in doc["checks"]} == {"redis": "ok", "keys": "ok"}
    assert "Traceback" not in run.stderr


def test_doctor_names_an_evicting_maxmemory_policy(
    cli: Cli, keyring_file: Path, redis_server_factory: RedisServerFactory, redis_binary: str
) -> None:
    # given: a server that may evict keys (the seed guide's allkeys-lru)
    server = redis_server_factory(redis_binary, extra_args=["--maxmemory-policy", "allkeys-lru"])
    evicting = cli.with_env(RAYSYS_REDIS_URL=server.url, RAYSYS_SIGNING_KEY_FILE=str(keyring_file))

    # when
    run = evicting.run("doctor")

    # then: it fails, naming the policy and the fix; the keys check still runs
    assert run.returncode != 0
    assert "Traceback" not in run.output
    failed = [line for line in run.stdout.splitlines() if line.startswith("FAIL")]
    assert len(failed) == 1
    assert "redis" in failed[0] and "allkeys-lru" in failed[0] and "noeviction" in failed[0]
    assert any(line.startswith("OK") and "keys" in line for line in run.stdout.splitlines())
    assert run.stderr.count("allkeys-lru") <= 1  # warned once, not once per check


def test_bad_bench_rate_is_a_usage_error(cli: Cli) -> None:
    # when: an offered load that is not a positive number
    runs = [cli.run("bench", "--tasks", "10", "--rate", rate) for rate in ("0", "nan")]

    # then: argparse's usage error (2), before any server is started
    for run in runs:
        assert run.returncode == 2 and "--rate" in run.stderr
        assert "Traceback" not in run.output and not run.started_pids()


# ---- key rotation -------------------------------------------------------------------------------
def test_keys_rotate_then_revoke_keeps_queued_work_runnable(
    cli: Cli, redis_server: EmbeddedRedis, redis_client: redis.Redis
) -> None:
    # given: a private keyring and queued tasks signed by its first key
    path = cli.root / "rotating.json"
    ring = cli.with_env(RAYSYS_REDIS_URL=redis_server.url, RAYSYS_SIGNING_KEY_FILE=str(path))
    old_kid = ring.run("keys", "new", "--json").json()["kid"]
    ids = [ring.run("submit", "echo", "--payload", str(i), "--json").json()["id"]
           for i in range(3)]

    # when: the key is rotated, then the old key revoked
    rotated = ring.run("keys", "rotate", "--json").json()
    revoked = ring.run("keys", "revoke", old_kid, "--json").json()

    # then: everything was re-signed under the new key, the old one is revoked ...
    assert rotated["previous"] == old_kid and rotated["active"] != old_kid
    assert rotated["resigned_records"] == 3 and rotated["unverifiable"] == 0
    assert revoked["revoked"] == old_kid
    keys = {k["kid"]: k["status"] for k in ring.run("keys", "list", "--json").json()["keys"]}
    assert keys == {old_kid: "revoked", rotated["active"]: "active"}
    # ... and the queued tasks still verify (status reads their records)
    for task_id in ids:
        doc = ring.run("status", task_id, "--json").json()
        assert doc["state"] == "pending" and doc["kind"] == "echo" and doc["error"] is None

    # and: the active key cannot be revoked
    assert "rotate" in ring.run("keys", "revoke", rotated["active"]).error_line(3)


# ---- snapshots ----------------------------------------------------------------------------------
def test_snapshot_file_survives_flushall_and_a_changed_byte_is_refused(
    configured: Cli, redis_client: redis.Redis
) -> None:
    # given: a task and a snapshot saved to a file
    task_id = configured.run("submit", "echo", "--payload", '"keep me"', "--json").json()["id"]
    out = configured.root / "backup.snap"
    saved = configured.run("snapshot", "save", "--out", str(out), "--json").json()
    assert saved["tasks"] == 1 and out.stat().st_mode & 0o777 == 0o600

    # when: a copy with one changed byte is restored into the emptied Redis
    redis_client.flushall()
    tampered = configured.root / "tampered.snap"
    data = bytearray(out.read_bytes())
    data[len(data) // 2] ^= 0x01
    tampered.write_bytes(bytes(data))
    refused = configured.run("snapshot", "restore", str(tampered))

    # then: refused as an integrity failure, nothing written ...
    assert "raysys: error:" in refused.error_line(6)
    assert redis_client.dbsize() == 0

    # ... and the genuine file brings the task back
    configured.run("snapshot", "restore", str(out), "--json").json()
    assert configured.run("status", task_id, "--json").json()["state"] == "pending"


# ---- Ray unreachable ----------------------------------------------------------------------------
@pytest.mark.parametrize("command", ["workers", "down", "drain"])
def test_an_unreachable_ray_cluster_is_one_line_and_exit_5_not_a_hang(cli: Cli,
                                                                      command: str) -> None:
    # given: nothing listens on the address, and no local cluster's address file exists
    port = free_port()
    closed = cli.with_env(RAY_TMPDIR=str(cli.root / "no-ray"), RAY_ADDRESS=None)

    # when / then: Ray's own retries (minutes) are not waited for
    assert "no Ray cluster answers" in closed.run(command, "--address",
                                                  f"127.0.0.1:{port}").error_line(5)
    assert "no running Ray cluster" in closed.run(command).error_line(5)
