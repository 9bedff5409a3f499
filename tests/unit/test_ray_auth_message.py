"""The line raysys prints when ``ray.init(address=...)`` fails: token auth named when it is (or
may be) the cause (issue 17).

No cluster here: what a token-auth head really answers is checked against a real
``ray start --head`` in tests/integration/test_ray_token_auth.py. These tests pin the wording
for each environment (``RAY_AUTH_MODE``, ``RAY_AUTH_TOKEN``, ``RAY_AUTH_TOKEN_PATH``,
``~/.ray/auth_token``) and that the probe of a port where no GCS listens says "not a refusal".
"""

from __future__ import annotations

from pathlib import Path

import pytest

from raysys.client.ray_auth import (
    check_token_accepted,
    gcs_refuses_without_token,
    token_fix,
    unreachable_message,
)
from raysys.redis_server.binary import free_port

pytestmark = [pytest.mark.unit, pytest.mark.timeout(60)]

RAY_SAYS = "Failed to connect to Ray cluster at 127.0.0.1:1"


@pytest.fixture
def home(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """A private HOME and none of Ray's auth variables."""
    monkeypatch.setenv("HOME", str(tmp_path))
    for name in ("RAY_AUTH_MODE", "RAY_AUTH_TOKEN", "RAY_AUTH_TOKEN_PATH"):
        monkeypatch.delenv(name, raising=False)
    return tmp_path


def test_the_fix_names_the_token_this_process_would_use(home: Path,
                                                        monkeypatch: pytest.MonkeyPatch) -> None:
    # given no token anywhere, then one in each place Ray reads it from
    # when / then: RAY_AUTH_MODE=token always, and where the token is (or goes)
    default = home / ".ray" / "auth_token"
    bare = token_fix()
    assert bare.startswith("set RAY_AUTH_MODE=token, with the cluster's token in ")
    assert str(default) in bare and "RAY_AUTH_TOKEN_PATH" in bare
    assert "ray get-auth-token" in bare

    default.parent.mkdir()
    default.write_text("t" * 64)
    assert token_fix() == (f"set RAY_AUTH_MODE=token, with the cluster's token in {default} "
                           "(that file exists here)")

    monkeypatch.setenv("RAY_AUTH_TOKEN_PATH", "/run/secrets/ray-token")
    assert "/run/secrets/ray-token (RAY_AUTH_TOKEN_PATH)" in token_fix()

    monkeypatch.setenv("RAY_AUTH_TOKEN", "t" * 64)
    fix = token_fix()
    assert "RAY_AUTH_TOKEN (set here)" in fix and "t" * 64 not in fix  # never the token


def test_an_error_that_names_the_refusal_is_token_auth(home: Path) -> None:
    # given Ray's error, caused by a GCS refusal for want of a token
    try:
        try:
            raise RuntimeError("Failed to connect to GCS. Last connection error: "
                               "RpcError: UNAUTHENTICATED: Invalid or missing authentication token")
        except RuntimeError as cause:
            raise ConnectionError(RAY_SAYS) from cause
    except ConnectionError as exc:
        error = exc

    # when / then: the line says token auth, and what to set
    line = unreachable_message("127.0.0.1:1", error)
    assert line.startswith("the Ray cluster at '127.0.0.1:1' requires token authentication "
                           "and this process sends no token (RAY_AUTH_MODE is not token): "
                           "set RAY_AUTH_MODE=token")


def test_an_unexplained_failure_keeps_rays_words_and_adds_the_token_fix(home: Path) -> None:
    # given a port where nothing listens (no GCS to ask), and no RAY_AUTH_MODE here
    address = f"127.0.0.1:{free_port()}"

    # when
    line = unreachable_message(address, ConnectionError(RAY_SAYS))

    # then: Ray's error, then token auth as a possibility, with the fix
    assert line.startswith(f"cannot reach the Ray cluster at {address!r}: {RAY_SAYS}; if it uses "
                           "token authentication")
    assert "RAY_AUTH_MODE=token" in line and "\n" not in line


def test_with_token_mode_on_the_failure_is_not_blamed_on_a_missing_token(
        home: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    # given RAY_AUTH_MODE=token (a wrong token is Ray's AuthenticationError, said elsewhere)
    monkeypatch.setenv("RAY_AUTH_MODE", "token")

    # when / then: Ray's error as it is
    line = unreachable_message("127.0.0.1:1", ConnectionError(RAY_SAYS))
    assert line == f"cannot reach the Ray cluster at '127.0.0.1:1': {RAY_SAYS}"


def test_the_probe_of_a_closed_port_or_a_ray_client_address_is_not_a_refusal(home: Path) -> None:
    # when / then: no GCS answered UNAUTHENTICATED, so no claim is made
    assert gcs_refuses_without_token(f"127.0.0.1:{free_port()}", timeout_s=2.0) is False
    assert gcs_refuses_without_token("ray://127.0.0.1:10001") is False


def test_the_check_before_ray_init_claims_nothing_without_a_refusal(
        home: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    # given addresses where no GCS refuses: a closed port, auto, a Ray Client address
    closed = f"127.0.0.1:{free_port()}"

    # when / then: no error; ray.init goes ahead and speaks for itself
    for address in (closed, "auto", "ray://127.0.0.1:10001"):
        check_token_accepted(address)
    monkeypatch.setenv("RAY_AUTH_MODE", "token")
    check_token_accepted(closed)
