"""`raysys up` (and `raysys doctor`) from a process that sends no token, against a head with
token auth on (issue 17).

The head is started the way Ray 2.60 does it by default: a token in ``~/.ray/auth_token`` and
``ray start --head`` run without ``RAY_AUTH_MODE``, which then turns token auth on by itself.
``raysys up --address HOST:PORT`` without ``RAY_AUTH_MODE=token`` is refused by the GCS; Ray
itself says only "Failed to connect to Ray cluster at ...". raysys must say it is the token and
what to set. The head runs in a private temp dir with its own ``HOME`` and explicit free ports,
and is stopped selectively (by its marker, never ``ray stop``); see tests/support/ray_cluster.py.
"""

from __future__ import annotations

import json
import subprocess
from collections.abc import Iterator
from typing import Any

import pytest

from raysys.redis_server.binary import free_port
from tests.support.processes import wait_until_gone
from tests.support.ray_cluster import RayHead, ray_head

pytestmark = [pytest.mark.integration, pytest.mark.slow, pytest.mark.timeout(600)]

UP_TIMEOUT_S = 180


@pytest.fixture(scope="module")
def head() -> Iterator[RayHead]:
    with ray_head("rsa-", default_auth=True, head_args=["--num-cpus=1"]) as started:
        yield started
        started.stop()
        assert wait_until_gone(started.marker, started.root) == []


def raysys_up(head: RayHead, env: dict[str, str]) -> subprocess.CompletedProcess[str]:
    """`raysys up --address HOST:PORT`; asserts the refusal was found before `ray.init` (which
    would retry for about 20 s, logging each refusal from Ray's gcs_client)."""
    data = {"RAYSYS_DATA_DIR": str(head.root / "data"), "RAYSYS_NAMESPACE": "token-auth"}
    run = head.run("raysys", "up", f"--address={head.address}", "--workers=1", "--json",
                   env=env | data, timeout=UP_TIMEOUT_S)
    assert "gcs_client" not in run.stderr, run.stderr[-3000:]
    return run


def error_line(run: subprocess.CompletedProcess[str]) -> str:
    """The one ``raysys: error:`` line of a refused command (exit 5, nothing on stdout)."""
    assert run.returncode == 5, f"exit {run.returncode}\n{run.stdout}\n{run.stderr[-3000:]}"
    assert "Traceback" not in run.stderr and run.stdout == ""
    errors = [line for line in run.stderr.splitlines() if line.startswith("raysys: error:")]
    assert len(errors) == 1, run.stderr[-3000:]
    return errors[0]


def test_the_head_turned_token_auth_on_by_itself(head: RayHead) -> None:
    # given: `ray start --head` ran without RAY_AUTH_MODE, a token in HOME/.ray/auth_token
    # when / then: its job API refuses a request without the token, and takes one with it
    assert head.api("/api/jobs/", None)[0] == 401
    assert head.api("/api/jobs/", head.token)[0] == 200


def test_up_without_auth_mode_names_ray_auth_mode_and_the_token_file(head: RayHead) -> None:
    # given: the same HOME as the head (its ~/.ray/auth_token holds the right token), but no
    # RAY_AUTH_MODE: Ray sends no token to an explicit address
    env = {k: v for k, v in head.env.items() if not k.startswith("RAY_AUTH")}
    token_file = head.root / "home" / ".ray" / "auth_token"

    # when
    line = error_line(raysys_up(head, env))

    # then: one line that says it is token auth, what to set, and the token file found here
    assert "requires token authentication" in line and "RAY_AUTH_MODE=token" in line, line
    assert str(token_file) in line and "that file exists here" in line, line
    assert head.address in line


def test_up_with_no_token_anywhere_says_where_the_token_goes(head: RayHead) -> None:
    # given: a HOME of its own (no ~/.ray/auth_token) and no RAY_AUTH_* variable
    env, _ = head.tokenless_envs(RAYSYS_DATA_DIR=str(head.root / "data"))
    bare_file = head.root / "bare-home" / ".ray" / "auth_token"

    # when
    line = error_line(raysys_up(head, env))

    # then: token auth named, with every place Ray reads a token from
    assert "requires token authentication" in line and "RAY_AUTH_MODE=token" in line, line
    assert str(bare_file) in line and "RAY_AUTH_TOKEN_PATH" in line, line
    assert "RAY_AUTH_TOKEN" in line.replace("RAY_AUTH_TOKEN_PATH", "")


def test_when_ray_init_itself_is_refused_the_line_still_names_token_auth(head: RayHead) -> None:
    # given: `--address auto` resolved through RAY_ADDRESS (no question asked before ray.init:
    # with auto, Ray turns token auth on by itself when it finds a token file), and no token
    env, _ = head.tokenless_envs(RAY_ADDRESS=head.address)

    # when: ray.init is refused (Ray retries, then says "Failed to connect")
    run = head.run("raysys", "workers", "--json", env=env | {"RAYSYS_NAMESPACE": "token-auth"},
                   timeout=UP_TIMEOUT_S)

    # then: Ray's error chain is read: token auth named, and what to set
    line = error_line(run)
    assert "requires token authentication" in line and "RAY_AUTH_MODE=token" in line, line


def test_with_the_token_the_same_address_connects(head: RayHead) -> None:
    # given: the token holder's environment (RAY_AUTH_MODE=token, the token in HOME)
    # when: it asks for the workers of a namespace where nothing was started
    run = head.run("raysys", "workers", f"--address={head.address}", "--json",
                   env=head.env | {"RAYSYS_NAMESPACE": "token-auth"}, timeout=UP_TIMEOUT_S)

    # then: Ray let it in: what is missing is the actors, not the token
    line = error_line(run)
    assert "no raysys actors" in line and "RAY_AUTH_MODE" not in line, line


def doctor_checks(head: RayHead, env: dict[str, str]) -> dict[str, dict[str, Any]]:
    """`raysys doctor --address HOST:PORT --json` (no actors, no HTTP app: it fails); its checks
    by name. The token question is asked before `ray.init`, whose retries never show."""
    data = {"RAYSYS_DATA_DIR": str(head.root / "data"), "RAYSYS_NAMESPACE": "token-auth",
            "RAYSYS_HTTP_PORT": str(free_port())}
    run = head.run("raysys", "doctor", f"--address={head.address}", "--json", env=env | data,
                   timeout=UP_TIMEOUT_S)
    assert run.returncode == 1, f"exit {run.returncode}\n{run.stdout}\n{run.stderr[-3000:]}"
    assert "gcs_client" not in run.stderr and "Traceback" not in run.stderr, run.stderr[-3000:]
    assert len(run.stdout.splitlines()) == 1
    return {check["check"]: check for check in json.loads(run.stdout)["checks"]}


def test_doctor_without_auth_mode_names_token_auth_in_its_ray_line(head: RayHead) -> None:
    # given: the head's HOME (its token file) but no RAY_AUTH_MODE, as for `up` above
    env = {k: v for k, v in head.env.items() if not k.startswith("RAY_AUTH")}
    token_file = head.root / "home" / ".ray" / "auth_token"

    # when
    checks = doctor_checks(head, env)

    # then: the ray line says token auth, what to set and the token file; the actors and
    # workers lines say they were skipped
    ray = checks["ray"]
    assert ray["status"] == "fail", ray
    assert "requires token authentication" in ray["detail"], ray
    assert "RAY_AUTH_MODE=token" in ray["detail"] and str(token_file) in ray["detail"], ray
    for name in ("actors", "workers"):
        assert checks[name]["status"] == "fail"
        assert checks[name]["detail"].startswith("skipped: no Ray cluster"), checks[name]


def test_doctor_with_a_wrong_token_says_the_token_was_refused(head: RayHead) -> None:
    # given: RAY_AUTH_MODE=token with a token that is not the head's
    _, wrong = head.tokenless_envs()

    # when
    ray = doctor_checks(head, wrong)["ray"]

    # then
    assert ray["status"] == "fail" and "refused this client's token" in ray["detail"], ray
    assert "RAY_AUTH_TOKEN" in ray["detail"]


def test_doctor_with_the_token_reaches_ray_and_finds_no_actors(head: RayHead) -> None:
    # when: the token holder asks about a namespace where nothing was started
    checks = doctor_checks(head, head.env)

    # then: Ray let it in; what is missing is the actors (and so the workers' answer)
    assert checks["ray"]["status"] == "ok", checks["ray"]
    assert "1 node(s) alive" in checks["ray"]["detail"]
    assert "token sent" in checks["ray"]["detail"]
    assert checks["actors"]["status"] == "fail"
    assert "no Coordinator in namespace 'token-auth'" in checks["actors"]["detail"]
    assert checks["workers"]["detail"].startswith("skipped: the Coordinator does not answer")
