"""Fuzzed submissions (hypothesis) through every door: the Python API, the CLI and the HTTP API.

Whatever a caller sends, the answer is a stored task or a typed, clear error — never a crash, a
traceback, a 500 or a half-stored task:

- Python: ``Client.submit`` (validated in the caller) and the Coordinator actor's
  ``submit_many`` called directly with raw fields (a caller that skips the client): a task id,
  or :class:`raysys.errors.ValidationError` with a one-line message;
- CLI: ``raysys submit`` (``--payload`` or ``--file``): exit 0 with the id, or exit 3 with
  exactly one ``raysys: error: …`` line on stderr and nothing on stdout;
- HTTP: ``POST /tasks`` with the token: 200 with the id(s), or 422 with ``detail`` messages;
  with any other ``Authorization`` header: 401.

After each, the namespace holds exactly the tasks that were accepted (no worker runs, so
nothing executes). The time each rejection takes is recorded as a figure (p50/p99), not
asserted.
"""

from __future__ import annotations

import json
import math
import re
import subprocess
import threading
import time
import uuid
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest
import ray
import redis
from hypothesis import HealthCheck, given, settings
from hypothesis import seed as hypothesis_seed
from hypothesis import strategies as st

import raysys
from raysys.client import Client
from raysys.errors import ValidationError
from raysys.models import MAX_PAYLOAD_BYTES
from raysys.redis_server.attach import attach_or_start
from raysys.redis_server.binary import free_port
from raysys.store.keyspace import Keyspace, drop_keys, glob_escape
from tests.security.security_results import security_row
from tests.support.cli import raysys_script
from tests.support.http import request
from tests.support.polling import wait_until
from tests.support.processes import private_env
from tests.support.results import ResultsFile, environment

pytestmark = [pytest.mark.security, pytest.mark.slow, pytest.mark.timeout(300)]

HOST = "127.0.0.1"
TASK_ID = re.compile(r"^[0-9a-f]{32}$")
FUZZ = settings(deadline=None, database=None, print_blob=True,
                suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large,
                                       HealthCheck.filter_too_much])


# ---- what callers may send --------------------------------------------------------------------
json_scalars = st.one_of(st.none(), st.booleans(), st.integers(-(2**63), 2**63 - 1),
                         st.floats(allow_nan=False, allow_infinity=False), st.text(max_size=20))
json_values = st.recursive(json_scalars, lambda inner: st.one_of(
    st.lists(inner, max_size=4), st.dictionaries(st.text(max_size=8), inner, max_size=4)),
    max_leaves=12)


def nested(depth: int) -> Any:
    value: Any = 0
    for _ in range(depth):
        value = [value]
    return value


# Values JSON (and the payload limits) cannot take, beside ordinary ones.
bad_payloads = st.one_of(
    st.just(float("nan")), st.just(float("inf")), st.just(nested(40)), st.just(2**70),
    st.just("x" * (MAX_PAYLOAD_BYTES + 1)), st.just({"s": "\ud800"}), st.just({1: "int key"}),
    st.just(b"bytes"), st.just({"a", "set"}), st.just((1, 2)), st.just(object()),
    st.just(Ellipsis))
payloads = st.one_of(json_values, bad_payloads)
kinds = st.one_of(st.from_regex(r"\A[A-Za-z0-9_.:-]{1,128}\Z"), st.text(max_size=140),
                  st.just(""), st.just("a" * 129), st.just("echo\n"), st.just("echo "),
                  st.integers(), st.none(), st.binary(max_size=8))
priorities = st.one_of(st.integers(-1500, 1500), st.just(10**30), st.floats(), st.booleans(),
                       st.text(max_size=4), st.none())
idem_keys = st.one_of(st.none(), st.text(max_size=220), st.just(""), st.integers())
extras = st.dictionaries(
    st.sampled_from(["max_attempts", "timeout_s", "colour", "id", "ns", "state", "fence"]),
    st.one_of(st.integers(-5, 150), st.floats(), st.text(max_size=5), st.none()), max_size=2)


@st.composite
def submissions(draw: st.DrawFn) -> dict[str, Any]:
    """Keyword arguments for ``Client.submit``: any mix of good and bad fields."""
    return {"kind": draw(kinds), "payload": draw(payloads), "priority": draw(priorities),
            "idempotency_key": draw(idem_keys), **draw(extras)}


def is_one_line(text: str) -> bool:
    return bool(text.strip()) and "\n" not in text.strip() and "Traceback" not in text


# ---- accounting -------------------------------------------------------------------------------
@dataclass
class Tally:
    """What one door did: accepted ids, rejection times, and anything that broke the rules."""

    door: str
    accepted: list[str] = field(default_factory=list)
    rejections_s: list[float] = field(default_factory=list)
    problems: list[str] = field(default_factory=list)
    examples: int = 0
    accepted_examples: int = 0

    def bad(self, what: str) -> None:
        if len(self.problems) < 20:
            self.problems.append(what)


def stored_ids(conn: redis.Redis, namespace: str) -> set[str]:
    prefix = Keyspace(namespace).task("")
    return {k.decode()[len(prefix):] for k in conn.scan_iter(
        match=glob_escape(prefix) + "*", count=5000)}


def check_store(tally: Tally, conn: redis.Redis, namespace: str, before: set[str]) -> None:
    """Exactly the accepted tasks were stored: a rejection left nothing behind."""
    new = stored_ids(conn, namespace) - before
    if new != set(tally.accepted):
        tally.bad(f"stored {len(new)} new tasks but accepted {len(set(tally.accepted))}: "
                  f"extra {sorted(new - set(tally.accepted))[:3]}")


def record(tally: Tally, results: ResultsFile, row_id: str, scenario: str, seed: int,
           conn: redis.Redis, unit: str, began: float) -> None:
    rejected = len(tally.rejections_s)
    results.put(security_row(
        row_id, scenario, size=f"{tally.examples} fuzzed submissions", seed=seed,
        attempted=tally.examples, executed=0, rejected=rejected, audited=None,
        problems=tally.problems, latencies_s=tally.rejections_s, latency_what=unit,
        duration_s=time.monotonic() - began, env=environment(conn),
        notes=f"{tally.accepted_examples} valid submissions accepted ({len(set(tally.accepted))} "
              f"tasks stored), {rejected} rejected with a typed error, nothing else; nothing "
              "stored by a rejection", accepted=tally.accepted_examples))


# ---- a deployment with no workers (nothing runs) ------------------------------------------------
@dataclass
class Deployment:
    client: Client
    conn: redis.Redis
    url: str
    token: str | None
    data_dir: Path

    @property
    def namespace(self) -> str:
        return self.client.namespace


@pytest.fixture(scope="module")
def deployment(security_ray: str | None, security_data_dir: Path) -> Iterator[Deployment]:
    namespace = "fuzz" + uuid.uuid4().hex[:8]
    conn = redis.Redis.from_url(attach_or_start(security_data_dir)[0])
    client = raysys.start(0, data_dir=security_data_dir, namespace=namespace)
    url = client.serve(HOST, free_port())
    assert url is not None
    wait_until(lambda: request("GET", url + "/health")[0] == 200, 90, "the HTTP app to come up",
               interval=0.3)
    yield Deployment(client, conn, url, security_ray, security_data_dir)
    client.shutdown()
    drop_keys(conn, Keyspace(namespace).pattern())
    conn.close()


# ---- Python API -------------------------------------------------------------------------------
def test_python_api_answers_fuzz_with_a_task_or_a_validation_error(
        deployment: Deployment, security_results: ResultsFile, security_seed: int) -> None:
    began = time.monotonic()
    client, tally, actor = deployment.client, Tally("python"), Tally("actor")
    before = stored_ids(deployment.conn, deployment.namespace)

    def attempt(tally: Tally, call: Callable[[], Any]) -> None:
        tally.examples += 1
        t0 = time.perf_counter()
        try:
            result = call()
        except ValidationError as exc:
            tally.rejections_s.append(time.perf_counter() - t0)
            if not is_one_line(str(exc)):
                tally.bad(f"unclear ValidationError: {str(exc)[:200]!r}")
            return
        except Exception as exc:  # anything but a ValidationError breaks the contract
            tally.bad(f"{type(exc).__name__}: {str(exc)[:200]}")
            return
        ids = result if isinstance(result, list) else [result]
        if not all(isinstance(i, str) and TASK_ID.match(i) for i in ids):
            tally.bad(f"accepted but returned {result!r}")
        tally.accepted += ids
        tally.accepted_examples += 1

    def remote(fields: dict[str, Any]) -> Any:
        try:  # what the actor raises arrives as a RayTaskError that is also the raysys error
            return ray.get(client.coordinator.submit_many.remote([fields]), timeout=60)
        except ray.exceptions.RayTaskError as exc:
            cause = getattr(exc, "cause", None)
            raise (cause if isinstance(cause, Exception) else exc) from None

    @settings(FUZZ, max_examples=150)
    @given(fields=submissions())
    def through_the_client(fields: dict[str, Any]) -> None:
        attempt(tally, lambda: client.submit(**fields))

    @settings(FUZZ, max_examples=60)
    @given(fields=submissions())
    def straight_to_the_coordinator(fields: dict[str, Any]) -> None:
        attempt(actor, lambda: remote(fields))

    hypothesis_seed(security_seed)(through_the_client)()
    hypothesis_seed(security_seed)(straight_to_the_coordinator)()
    check_store(tally, deployment.conn, deployment.namespace,
                before | set(actor.accepted))
    check_store(actor, deployment.conn, deployment.namespace, before | set(tally.accepted))

    record(tally, security_results, "4-python", "fuzzed submissions through the Python API "
           "(`Client.submit`, hypothesis)", security_seed, deployment.conn,
           "Client.submit raising ValidationError", began)
    record(actor, security_results, "4-actor", "fuzzed raw fields sent straight to the "
           "Coordinator actor's submit_many (a caller skipping the client)", security_seed,
           deployment.conn, "Coordinator.submit_many round trip raising ValidationError", began)
    assert not tally.problems, "\n".join(tally.problems)
    assert not actor.problems, "\n".join(actor.problems)
    assert tally.rejections_s and tally.accepted, "the fuzz must reach both outcomes"


# ---- HTTP API ---------------------------------------------------------------------------------
@st.composite
def http_bodies(draw: st.DrawFn) -> bytes:
    """Request bodies: arbitrary bytes, arbitrary JSON, and near-valid tasks and batches."""
    choice = draw(st.integers(0, 3))
    if choice == 0:
        return draw(st.binary(max_size=64))
    if choice == 1:
        return json.dumps(draw(json_values)).encode()

    def task() -> dict[str, Any]:
        doc: dict[str, Any] = {"kind": draw(kinds.filter(lambda k: not isinstance(k, bytes))),
                               "payload": draw(json_values)}
        for name, values in (("priority", priorities), ("idempotency_key", idem_keys)):
            if draw(st.booleans()):
                doc[name] = draw(values.filter(lambda v: not (
                    isinstance(v, float) and not math.isfinite(v))))
        if draw(st.booleans()):
            doc[draw(st.sampled_from(["colour", "max_attempts", "tasks", "id"]))] = draw(
                json_scalars)
        return doc

    body: Any = task() if choice == 2 else {"tasks": [task() for _ in range(draw(
        st.integers(0, 3)))]}
    return json.dumps(body).encode()


def fuzz_task_bodies(deployment: Deployment, seed: int) -> Tally:
    """``POST /tasks`` with the token and fuzzed bodies: each answered 200 with the id(s), or
    422 with ``detail`` messages."""
    tally = Tally("http")
    assert deployment.token is not None
    good = {"Authorization": f"Bearer {deployment.token}", "Content-Type": "application/json"}

    @settings(FUZZ, max_examples=200)
    @given(body=http_bodies())
    def post(body: bytes) -> None:
        tally.examples += 1
        t0 = time.perf_counter()
        status, doc = request("POST", deployment.url + "/tasks", data=body, headers=good)
        took = time.perf_counter() - t0
        if status == 200 and isinstance(doc, dict) and ("id" in doc or "ids" in doc):
            tally.accepted += [doc["id"]] if "id" in doc else list(doc["ids"])
            tally.accepted_examples += 1
        elif status == 422 and isinstance(doc, dict) and doc.get("detail") and all(
                isinstance(d, dict) and d.get("msg") for d in doc["detail"]):
            tally.rejections_s.append(took)
        else:
            tally.bad(f"{body[:120]!r} -> {status} {str(doc)[:200]}")

    hypothesis_seed(seed)(post)()
    return tally


def fuzz_authorization(deployment: Deployment, seed: int) -> Tally:
    """``POST /tasks`` and ``GET /tasks/{id}`` with fuzzed or missing ``Authorization``
    headers (anything but the token): each answered 401."""
    auth = Tally("http-auth")
    token = deployment.token
    assert token is not None

    @settings(FUZZ, max_examples=60)
    @given(header=st.one_of(
        st.none(), st.text(st.characters(min_codepoint=32, max_codepoint=126), max_size=80),
        st.sampled_from(["Bearer", "Bearer ", f"Basic {token}", f"Bearer {token[:-1]}",
                         f"Bearer {token}x", f"Bearer {token.upper()}", f"Token {token}",
                         f"Bearer{token}", f"Bearer {token[1:]}", f"Bearer \t{token[:8]}"])))
    def unauthorised(header: str | None) -> None:
        scheme, _, given = (header or "").partition(" ")
        if scheme.lower() == "bearer" and given.strip() == token:
            return  # the one right answer (any spacing, any case of "Bearer") is no fuzz case
        auth.examples += 1
        headers = {"Content-Type": "application/json"}
        if header is not None:
            headers["Authorization"] = header
        t0 = time.perf_counter()
        status, _ = request("POST", deployment.url + "/tasks",
                            data=b'{"kind": "echo", "payload": 1}', headers=headers)
        took = time.perf_counter() - t0
        if status == 401:
            auth.rejections_s.append(took)
        else:
            auth.bad(f"Authorization {header!r} -> {status}")
        status, _ = request("GET", f"{deployment.url}/tasks/{'0' * 32}", headers=headers)
        if status != 401:
            auth.bad(f"GET with Authorization {header!r} -> {status}")

    hypothesis_seed(seed)(unauthorised)()
    return auth


def test_http_api_answers_fuzz_with_200_or_422_and_anything_unauthorised_with_401(
        deployment: Deployment, security_results: ResultsFile, security_seed: int) -> None:
    if deployment.token is None:
        pytest.skip("the running Ray cluster has no RAYSYS_API_TOKEN in its environment")
    began = time.monotonic()
    before = stored_ids(deployment.conn, deployment.namespace)

    # when: fuzzed bodies are posted with the token, and requests with anything but the token
    tally = fuzz_task_bodies(deployment, security_seed)
    auth = fuzz_authorization(deployment, security_seed)

    # then: 200 or 422 with the token, 401 without, and exactly the accepted tasks stored
    check_store(tally, deployment.conn, deployment.namespace, before)
    record(tally, security_results, "4-http", "fuzzed `POST /tasks` bodies with the token "
           "(arbitrary bytes and JSON, near-valid tasks and batches)", security_seed,
           deployment.conn, "HTTP round trip of a 422", began)
    record(auth, security_results, "4-http-auth", "`POST /tasks` and `GET /tasks/{id}` with "
           "fuzzed or missing Authorization headers", security_seed, deployment.conn,
           "HTTP round trip of a 401", began)
    assert not tally.problems, "\n".join(tally.problems)
    assert not auth.problems, "\n".join(auth.problems)
    assert tally.rejections_s and tally.accepted, "the fuzz must reach both outcomes"


# ---- CLI --------------------------------------------------------------------------------------
argv_text = st.text(st.characters(blacklist_categories=("Cs",), blacklist_characters="\x00"),
                    max_size=40)
json_texts = st.one_of(json_values.map(json.dumps), argv_text, st.sampled_from([
    "NaN", "Infinity", "[" * 40 + "]" * 40, "1e400", str(2**70), '{"a": 1', "", " ",
    '"\\ud800"', "[1,]", "{'a': 1}"]))


@st.composite
def cli_cases(draw: st.DrawFn) -> tuple[list[str], list[str] | None]:
    """(argv after ``submit``, JSONL lines for ``--file`` or None). Options use ``--opt=VALUE``
    and the kind comes after ``--``, so values starting with ``-`` stay values."""
    args: list[str] = []
    lines = None
    if draw(st.booleans()):
        args.append("--payload=" + draw(json_texts))
    elif draw(st.booleans()):
        lines = draw(st.lists(json_texts.filter(lambda t: "\n" not in t and "\r" not in t),
                              min_size=1, max_size=4))
    if draw(st.booleans()):
        args.append(f"--priority={draw(st.integers(-3000, 3000))}")
    if draw(st.booleans()):
        args.append(f"--max-attempts={draw(st.integers(-5, 150))}")
    if draw(st.booleans()):
        args.append("--idempotency-key=" + draw(st.one_of(argv_text, st.just(""),
                                                          st.just("k" * 201))))
    kind = draw(st.one_of(st.from_regex(r"\A[A-Za-z0-9_.:-]{1,20}\Z"), argv_text))
    return [*args, "--json", "--", kind], lines


def test_cli_answers_fuzz_with_an_id_or_exit_3_and_one_line(
        deployment: Deployment, tmp_path: Path, security_results: ResultsFile,
        security_seed: int) -> None:
    began = time.monotonic()
    tally = Tally("cli")
    script = raysys_script()
    env = private_env(tmp_path, RAYSYS_DATA_DIR=str(deployment.data_dir),
                      RAYSYS_NAMESPACE=deployment.namespace, PYTHONIOENCODING="utf-8",
                      PYTHONUTF8="1")
    before = stored_ids(deployment.conn, deployment.namespace)
    counter = iter(range(10**6))
    lock = threading.Lock()

    def run(case: tuple[list[str], list[str] | None]) -> None:
        args, lines = case
        if lines is not None:
            path = tmp_path / f"tasks-{next(counter)}.jsonl"
            path.write_text("\n".join(lines) + "\n", encoding="utf-8")
            args = [f"--file={path}", *args]
        t0 = time.perf_counter()
        proc = subprocess.run([str(script), "submit", *args], env=env, capture_output=True,
                              timeout=60, stdin=subprocess.DEVNULL, check=False)
        took = time.perf_counter() - t0
        out = proc.stdout.decode("utf-8", "replace")
        err = proc.stderr.decode("utf-8", "replace")
        with lock:  # three runs at a time
            tally.examples += 1
            if proc.returncode == 0:
                doc = json.loads(out)
                tally.accepted += [doc["id"]] if "id" in doc else list(doc["ids"])
                tally.accepted_examples += 1
            elif (proc.returncode == 3 and out == "" and len(err.splitlines()) == 1
                  and err.startswith("raysys: error: ") and "Traceback" not in err):
                tally.rejections_s.append(took)
            else:
                tally.bad(f"raysys submit {args} -> exit {proc.returncode}, stdout "
                          f"{out[:100]!r}, stderr {err[-300:]!r}")

    @settings(FUZZ, max_examples=4)
    @given(cases=st.lists(cli_cases(), min_size=3, max_size=3))
    def submit(cases: list[tuple[list[str], list[str] | None]]) -> None:
        with ThreadPoolExecutor(len(cases)) as pool:
            list(pool.map(run, cases))

    hypothesis_seed(security_seed)(submit)()
    check_store(tally, deployment.conn, deployment.namespace, before)
    record(tally, security_results, "4-cli", "fuzzed `raysys submit` arguments and JSONL "
           "files (kind, payload, priority, max attempts, idempotency key)", security_seed,
           deployment.conn, "the whole `raysys submit` process (start-up included) exiting 3",
           began)
    assert not tally.problems, "\n".join(tally.problems)


def test_cli_rejects_a_non_number_option_as_bad_input_in_one_line(
        deployment: Deployment, tmp_path: Path) -> None:
    """``--priority high`` is bad input like ``--priority 5000``: exit 3, one line."""
    env = private_env(tmp_path, RAYSYS_DATA_DIR=str(deployment.data_dir),
                      RAYSYS_NAMESPACE=deployment.namespace)
    script = raysys_script()
    for bad in (["--priority=high"], ["--max-attempts=3.5"]):
        proc = subprocess.run([str(script), "submit", *bad, "echo"], env=env, text=True,
                              capture_output=True, timeout=60, check=False)
        lines = proc.stderr.splitlines()
        assert (proc.returncode, len(lines)) == (3, 1), (bad, proc.returncode, proc.stderr)
        assert lines[0].startswith("raysys: error: ") and proc.stdout == ""

