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
import signal
import stat
import time
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import TYPE_CHECKING

import pytest
import redis

from raysys.models import TaskSpec
from raysys.redis_server.binary import free_port
from raysys.redis_server.embedded import EmbeddedRedis
from raysys.signing.envelope import Sealer
from raysys.signing.keyring import load_keyring_file
from raysys.worker_loop import WorkerLoop
from tests.support.cli import (
    TASK_ID,
    Cli,
    Run,
    assert_no_embedded_server_left,
    make_cli,
    read_line,
)
from tests.support.processes import alive, processes_working_in
from tests.support.stores import flip_record_bit, store_over

if TYPE_CHECKING:
    from tests.support.redis_servers import RedisServerFactory

pytestmark = [pytest.mark.unit, pytest.mark.timeout(60)]

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
    "zero-attempts": (("submit", "noop", "--max-attempts", "0"), "max_attempts"),
    "negative-start-limit": (("submit", "noop", "--schedule-to-start", "-1"),
                             "schedule_to_start_s"),
    "bad-cancel-id": (("cancel", "not-an-id"), "not a task id"),
    "negative-delay": (("submit", "noop", "--delay=-5s"), "negative"),
    "delay-and-at": (("submit", "noop", "--delay", "5s", "--at", "2030-01-01T00:00:00Z"),
                     "not allowed with"),
    "at-in-the-past": (("submit", "noop", "--at", "2001-01-01T00:00:00Z"), "in the past"),
    "at-without-zone": (("submit", "noop", "--at", "2030-01-01T00:00:00"), "no time zone"),
    "at-not-a-time": (("submit", "noop", "--at", "tomorrow"), "not an ISO-8601 time"),
    "bad-cron": (("schedule", "add", "x", "--cron", "61 * * * *", "noop"), "does not parse"),
    "bad-zone": (("schedule", "add", "x", "--cron", "* * * * *", "noop", "--tz", "Mars/Base"),
                 "does not exist"),
    "bad-catchup": (("schedule", "add", "x", "--cron", "* * * * *", "noop", "--catchup",
                     "some"), "invalid choice"),
    "unknown-state": (("tasks", "--state", "finished"), "unknown state"),
    "bad-since": (("tasks", "--since", "yesterday"), "--since"),
    "bad-older-than": (("purge", "--older-than", "soon"), "not a duration"),
    "purge-live-state": (("purge", "--older-than", "1d", "--state", "pending"),
                         "invalid choice"),
    "redrive-live-state": (("redrive", "--state", "pending"), "invalid choice"),
    "redrive-bad-id": (("redrive", "--id", "nope"), "not a task id"),
    "every-not-dividing": (("snapshot", "save", "--every", "7s"), "does not divide"),
    "every-with-out": (("snapshot", "save", "--every", "1h", "--out", "x.rsnap"), "use --dir"),
    "at-out-of-range": (("submit", "noop", "--at", "0001-01-01T00:00:00+05:00"), "out of range"),
    "cursor-too-long": (("tasks", "--cursor", "1:" + "9" * 20), "cursor"),
}


@pytest.mark.parametrize("redis_server", ["redis"], indirect=True)
@pytest.mark.parametrize(("args", "says"), BAD_INPUT.values(), ids=BAD_INPUT.keys())
def test_bad_input_is_one_clear_line(configured: Cli, args: tuple[str, ...], says: str) -> None:
    # when: the command is given bad input
    run = configured.run(*args, "--json")

    # then: one line naming what is wrong, exit 3, nothing on stdout
    assert says in run.error_line(3)


def test_cancel_ends_a_pending_task_and_leaves_a_final_one_alone(configured: Cli) -> None:
    # given: two pending tasks, one of them already cancelled
    first = configured.run("submit", "noop", "--json").json()["id"]
    second = configured.run("submit", "noop", "--json").json()["id"]
    assert configured.run("cancel", second).returncode == 0

    # when: both, and an unknown id, are cancelled in one command
    unknown = "0123456789abcdef0123456789abcdef"
    run = configured.run("cancel", first, second, unknown, "--json")

    # then: one JSON object saying what happened to each; the unknown id makes the exit 8
    assert run.returncode == 8 and len(run.stdout.splitlines()) == 1
    results = {r["id"]: r for r in json.loads(run.stdout)["results"]}
    assert results[first] == {"id": first, "before": "pending", "state": "cancelled",
                              "cancelled": True}
    assert results[second]["cancelled"] is False and results[second]["state"] == "cancelled"
    assert results[unknown]["before"] is None
    status = configured.run("status", first, "--json").json()
    assert status["state"] == "cancelled"

    # and the text form says it in words
    text = configured.run("cancel", first).stdout
    assert "already cancelled: nothing to cancel" in text


def test_unknown_task_id_is_not_found(configured: Cli) -> None:
    # when
    run = configured.run("status", "0123456789abcdef0123456789abcdef", "--json")

    # then: not found (8), naming the id and the namespace searched
    line = run.error_line(8)
    assert "0123456789abcdef0123456789abcdef" in line and configured.namespace in line


def test_status_of_a_tampered_record_reports_the_integrity_failure_and_exits_6(
    configured: Cli, redis_client: redis.Redis, keyring_file: Path
) -> None:
    # given: a queued task whose stored signed record an attacker changed by one bit (the
    # record's last byte: inside the signed JSON, so the signature no longer matches)
    task_id = configured.run("submit", "echo", "--payload", '"pay me"', "--json").json()["id"]
    store = store_over(redis_client, Sealer(load_keyring_file(keyring_file)), configured.namespace)
    flip_record_bit(redis_client, configured.namespace, task_id)

    # when: its status is asked for, as JSON and as text
    as_json = configured.run("status", task_id, "--json")
    as_text = configured.run("status", task_id)

    # then: exit 6 (integrity), the document names the failure, one error line says the task
    # will never run, and nothing else shows (no traceback)
    for run in (as_json, as_text):
        assert run.returncode == 6, run.output
        assert "Traceback" not in run.output
        (line,) = run.stderr.splitlines()
        assert line == (f"raysys: error: task {task_id} failed verification: bad_signature "
                        "(task record); state pending; it will never run (a worker that leases "
                        "it quarantines it)")
    (out,) = as_json.stdout.splitlines()
    doc = json.loads(out)
    assert doc["state"] == "pending" and doc["integrity"] == "failed: bad_signature (task record)"
    assert "never run" in doc["error"] and doc["result"] is None
    assert "integrity: \"failed: bad_signature (task record)\"" in as_text.stdout

    # when: a worker leases it (the store quarantines it instead of running it)
    assert store.acquire("tamper-worker", 10, 30) == []  # nothing to run
    quarantined = configured.run("status", task_id, "--json")

    # then: state quarantined, still exit 6 with the reason
    doc = json.loads(quarantined.stdout)
    assert doc["state"] == "quarantined"
    assert doc["integrity"] == "failed: bad_signature (task record)"
    assert quarantined.returncode == 6
    assert quarantined.stderr.splitlines() == [
        f"raysys: error: task {task_id} failed verification: bad_signature (task record); "
        "state quarantined; it never ran"]


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


def test_status_watch_shows_live_counts_and_throughput(
    configured: Cli, redis_client: redis.Redis, keyring_file: Path
) -> None:
    # given: 300 queued tasks in the CLI's namespace, and `status --watch --json` running
    store = store_over(redis_client, Sealer(load_keyring_file(keyring_file)), configured.namespace)
    store.submit_many([TaskSpec.build(kind="noop", payload=i) for i in range(300)])
    stderr_file = configured.root / "watch.err"
    proc = configured.popen("status", "--watch", "--json", stderr_file=stderr_file)
    try:
        first = json.loads(read_line(proc, timeout=20))
        # when: a worker finishes them while the watch runs
        loop = WorkerLoop(store, "watch-worker", batch=10)
        lines = []
        while len(lines) < 3:
            loop.run_once()
            lines.append(json.loads(read_line(proc, timeout=20)))
            while loop.run_once():
                pass
    finally:
        proc.terminate()
        proc.communicate(timeout=30)
    # then: one JSON object per refresh, counts moving to succeeded, a positive throughput
    assert first["counts"]["pending"] == 300 and first["tasks_per_s"] == 0.0
    assert lines[-1]["counts"]["succeeded"] == 300
    assert max(doc["tasks_per_s"] for doc in lines) > 0


def test_sigterm_shuts_the_embedded_server_down(cli: Cli) -> None:
    # given: a long-running command that owns an embedded server
    stderr_file = cli.root / "watch.err"
    with cli.running("status", "--watch", "--json", stderr_file=stderr_file) as proc:
        first = json.loads(read_line(proc, timeout=20))
        state = json.loads((cli.data_dir / "redis" / "embedded.json").read_text())
        assert first["total"] == 0 and alive(state["pid"])

        # when: it is terminated (kubectl delete, systemd stop, a closed terminal's SIGHUP)
        proc.send_signal(signal.SIGTERM)
        proc.communicate(timeout=30)

    # then: exit 128+15 with one line, and the server was shut down, not orphaned
    stderr = stderr_file.read_text()
    assert proc.returncode == 128 + signal.SIGTERM, stderr
    assert "Traceback" not in stderr and "raysys: stopped by SIGTERM" in stderr
    assert not alive(state["pid"])
    assert_no_embedded_server_left(cli)


def test_a_closed_stdout_ends_the_command_quietly(cli: Cli) -> None:
    # given: `raysys status --watch --json | head -1`
    stderr_file = cli.root / "watch.err"
    with cli.running("status", "--watch", "--json", stderr_file=stderr_file) as proc:
        assert json.loads(read_line(proc, timeout=20))["total"] == 0

        # when: the reader goes away
        assert proc.stdout is not None
        proc.stdout.close()
        proc.wait(timeout=30)

    # then: no "internal error", no traceback; exit 128+SIGPIPE; the server stopped
    stderr = stderr_file.read_text()
    assert proc.returncode == 128 + signal.SIGPIPE, stderr
    assert "error" not in stderr.lower() and "Traceback" not in stderr
    assert "Exception ignored" not in stderr
    assert_no_embedded_server_left(cli)


# ---- demo, bench, doctor ------------------------------------------------------------------------
REDIS_CHECKS = ("redis", "memory", "keys", "retention")
CLUSTER_CHECKS = ("ray", "actors", "workers", "http")


def doctor(cli: Cli, *args: str) -> Run:
    """`raysys doctor` where no Ray cluster and no HTTP app answer: an --address and an HTTP
    port nobody listens on (never "auto", which would find any cluster on this machine)."""
    return cli.with_env(RAYSYS_HTTP_PORT=str(free_port())).run(
        "doctor", "--address", f"127.0.0.1:{free_port()}", *args)


def test_doctor_checks_redis_then_fails_without_a_ray_cluster(configured: Cli) -> None:
    # when
    run = doctor(configured, "--json")

    # then: the Redis side passes (the test server has no maxmemory: a warning, not a
    # failure); with no cluster, each cluster check fails, and so does doctor
    doc = json.loads(run.stdout)
    assert run.returncode == 1 and doc["ok"] is False and doc["warnings"] == 1
    assert len(run.stdout.splitlines()) == 1 and "Traceback" not in run.output
    statuses = {c["check"]: c["status"] for c in doc["checks"]}
    assert statuses == {"redis": "ok", "memory": "warn", "keys": "ok", "retention": "ok",
                        "ray": "fail", "actors": "fail", "workers": "fail", "http": "fail"}
    details = {c["check"]: c["detail"] for c in doc["checks"]}
    assert "maxmemory is 0" in details["memory"] and "7 days" in details["retention"]
    assert "no Ray cluster answers at 127.0.0.1:" in details["ray"]
    assert details["actors"] == details["workers"] == "skipped: no Ray cluster (see the ray check)"
    assert "nothing answers at http://127.0.0.1:" in details["http"]


def test_doctor_without_a_cluster_is_one_line_per_check_quickly(cli: Cli) -> None:
    # when: the text report, on the embedded default (no keyring yet)
    started = time.monotonic()
    run = doctor(cli)

    # then: exit 1, one OK/WARN/FAIL line per check in order, no traceback, within seconds
    assert run.returncode == 1 and "Traceback" not in run.output
    lines = run.stdout.splitlines()
    assert [line.split()[1] for line in lines] == [*REDIS_CHECKS, *CLUSTER_CHECKS]
    assert all(line.split()[0] in ("OK", "WARN", "FAIL") for line in lines)
    assert all(line.startswith("FAIL") for line in lines[len(REDIS_CHECKS):])
    assert time.monotonic() - started < 20
    assert_no_embedded_server_left(cli, run)


@pytest.mark.parametrize(("maxmemory", "status", "says"), [
    ("1gb", "ok", "of maxmemory 1024.0 MiB"),
    ("1200kb", "warn", "when full it refuses every write"),
])
def test_doctor_reports_memory_against_maxmemory(
    cli: Cli, keyring_file: Path, redis_server_factory: RedisServerFactory, redis_binary: str,
    maxmemory: str, status: str, says: str,
) -> None:
    # given: a server with a memory limit, far from it or close to it (an empty Redis uses ~1 MB)
    server = redis_server_factory(redis_binary, extra_args=["--maxmemory", maxmemory])
    env = cli.with_env(RAYSYS_REDIS_URL=server.url, RAYSYS_SIGNING_KEY_FILE=str(keyring_file))

    # when
    run = doctor(env, "--json")

    # then: the memory check says so; only the cluster checks fail (no cluster here)
    checks = json.loads(run.stdout)["checks"]
    memory = next(c for c in checks if c["check"] == "memory")
    assert memory["status"] == status and says in memory["detail"], memory
    assert {c["check"] for c in checks if c["status"] == "fail"} == set(CLUSTER_CHECKS)


def test_doctor_says_loudly_that_retention_zero_keeps_everything(configured: Cli) -> None:
    # when
    run = doctor(configured.with_env(RAYSYS_RETENTION_S="0"))

    # then: a WARN line
    line = next(x for x in run.stdout.splitlines() if "retention" in x)
    assert line.startswith("WARN") and "kept for ever" in line


def test_doctor_names_an_evicting_maxmemory_policy(
    cli: Cli, keyring_file: Path, redis_server_factory: RedisServerFactory, redis_binary: str
) -> None:
    # given: a server that may evict keys (the seed guide's allkeys-lru)
    server = redis_server_factory(redis_binary, extra_args=["--maxmemory-policy", "allkeys-lru"])
    evicting = cli.with_env(RAYSYS_REDIS_URL=server.url, RAYSYS_SIGNING_KEY_FILE=str(keyring_file))

    # when
    run = doctor(evicting)

    # then: it fails, naming the policy and the fix; the keys check still runs
    assert run.returncode != 0
    assert "Traceback" not in run.output
    failed = [line for line in run.stdout.splitlines()
              if line.startswith("FAIL") and line.split()[1] in REDIS_CHECKS]
    assert len(failed) == 1
    assert "redis" in failed[0] and "allkeys-lru" in failed[0] and "noeviction" in failed[0]
    assert any(line.startswith("OK") and "keys" in line for line in run.stdout.splitlines())
    assert run.stderr.count("allkeys-lru") <= 1  # warned once, not once per check


def test_bad_bench_rate_is_bad_input_in_one_line(cli: Cli) -> None:
    # when: an offered load that is not a positive number, or a missing command
    runs = [cli.run("bench", "--tasks", "10", "--rate", rate) for rate in ("0", "nan")]

    # then: bad input (3), one line naming the option, before any server is started
    for run in runs:
        assert "--rate" in run.error_line(3)
        assert not run.started_pids()
    assert "required" in cli.run().error_line(3)


def test_bench_settings_flags_refuse_what_cannot_apply(configured: Cli) -> None:
    # when: --signing asks for an algorithm while configured keys would sign the run, or
    # --fsync names no appendfsync policy
    signing = configured.run("bench", "--tasks", "10", "--signing", "ed25519")
    fsync = configured.run("bench", "--tasks", "10", "--fsync", "sometimes")

    # then: one line each naming the option, before anything starts
    assert "configured keys sign" in signing.error_line(3)
    assert "--fsync" in fsync.error_line(3) and "everysec" in fsync.stderr
    assert not signing.started_pids() and not fsync.started_pids()


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
