"""Why a Ray cluster refuses this process: token authentication, said in one line.

Ray 2.60's ``ray start --head`` turns token authentication on by itself when
``~/.ray/auth_token`` exists (a first local ``ray.init()`` writes that file), while
``ray.init(address=HOST:PORT)`` never turns it on for the client: without
``RAY_AUTH_MODE=token`` the client sends no token, the GCS answers ``UNAUTHENTICATED`` (checked
against a real head: tests/integration/test_ray_token_auth.py), and Ray retries for about 20 s,
logging each refusal, then says only "Failed to connect to Ray cluster at ...", which points at
the network.

:func:`check_token_accepted` asks the GCS one question without a token (``GetClusterId``, a
few ms) before ``ray.init`` and fails at once, naming ``RAY_AUTH_MODE=token`` and where the
token goes; :func:`unreachable_message` words a ``ray.init`` failure the same way when Ray's
error (or the same question) shows the refusal. Neither ever sends or prints a token.
"""

from __future__ import annotations

import os
from pathlib import Path

from raysys.errors import RayUnavailable

AUTH_MODE = "RAY_AUTH_MODE"
TOKEN_VARIABLE = "RAY_AUTH_TOKEN"
TOKEN_PATH_VARIABLE = "RAY_AUTH_TOKEN_PATH"
PROBE_TIMEOUT_S = 3.0
# How Ray 2.60 words the refusal in the error chain of ray.init (lower case)
REFUSAL_WORDS = ("unauthenticated", "invalidauthtoken", "authentication token is missing")


def default_token_file() -> Path:
    """Where Ray looks for the token without RAY_AUTH_TOKEN(_PATH): ``~/.ray/auth_token``."""
    return Path.home() / ".ray" / "auth_token"


def token_mode_on() -> bool:
    """This process sends a token (``RAY_AUTH_MODE=token``)."""
    return os.environ.get(AUTH_MODE, "").strip().lower() == "token"


def sends_token(address: str) -> bool:
    """Whether ``ray.init(address=address)`` from this process sends a token: with
    ``RAY_AUTH_MODE`` set, when it is ``token``; unset, only for ``auto`` (Ray then turns token
    auth on when it finds a token: ``RAY_AUTH_TOKEN``, ``RAY_AUTH_TOKEN_PATH`` or
    ``~/.ray/auth_token``)."""
    if os.environ.get(AUTH_MODE) is not None:
        return token_mode_on()
    if address != "auto":
        return False
    path = os.environ.get(TOKEN_PATH_VARIABLE)
    return bool(os.environ.get(TOKEN_VARIABLE)) or Path(path or default_token_file()).is_file()


def check_token_accepted(address: str) -> None:
    """Before ``ray.init(address=HOST:PORT)``: raise RayUnavailable (one line: token auth, what
    to set) when this process sends no token and the GCS refuses a question without one.

    Only for an explicit HOST:PORT: with ``auto`` Ray itself turns token auth on when it finds
    a token file, and ``ray://`` addresses are Ray Client's. Any other answer, or none, lets
    ``ray.init`` go ahead and speak for itself.
    """
    if address == "auto" or "://" in address or token_mode_on():
        return
    if gcs_refuses_without_token(address):
        raise RayUnavailable(refused_message(address))


def refused_message(address: str) -> str:
    """The line for a cluster whose GCS refused this process for want of a token."""
    return (f"the Ray cluster at {address!r} requires token authentication and this process "
            f"sends no token ({AUTH_MODE} is not token): {token_fix()}")


def wrong_token_message(address: str) -> str:
    """The line for a cluster that refused the token this process sent."""
    return (f"the Ray cluster at {address!r} refused this client's token: set "
            f"{TOKEN_VARIABLE} or {TOKEN_PATH_VARIABLE} to the cluster's token "
            "(`ray get-auth-token` on the head)")


def unreachable_message(address: str, exc: BaseException) -> str:
    """The one line for a ``ray.init(address=...)`` that failed with ``exc`` (a ConnectionError)
    although the GCS port accepted a connection.

    Token auth refused us (the GCS said so, or Ray's error does): say so, and what to set. This
    process sends no token (RAY_AUTH_MODE is not ``token``) but the cause is unknown: Ray's
    error, then the token auth fix as a possibility. Otherwise: Ray's error as it is.
    """
    if token_mode_on():
        return f"cannot reach the Ray cluster at {address!r}: {exc}"
    if refused_for_token(address, exc):
        return refused_message(address)
    return (f"cannot reach the Ray cluster at {address!r}: {exc}; if it uses token "
            f"authentication (Ray's `ray start --head` turns it on when ~/.ray/auth_token "
            f"exists), {token_fix()}")


def token_fix() -> str:
    """What to set, naming the token this process would use (or where to put one)."""
    if os.environ.get(TOKEN_VARIABLE):
        where = f"{TOKEN_VARIABLE} (set here) holding the cluster's token"
    elif os.environ.get(TOKEN_PATH_VARIABLE):
        where = f"the cluster's token in {os.environ[TOKEN_PATH_VARIABLE]} ({TOKEN_PATH_VARIABLE})"
    elif default_token_file().is_file():
        where = f"the cluster's token in {default_token_file()} (that file exists here)"
    else:
        where = (f"the cluster's token in {default_token_file()}, or in a file named by "
                 f"{TOKEN_PATH_VARIABLE}, or in {TOKEN_VARIABLE} (`ray get-auth-token` on the "
                 "head prints it)")
    return f"set {AUTH_MODE}=token, with {where}"


def refused_for_token(address: str, exc: BaseException) -> bool:
    """Ray's error chain names an authentication refusal, or the GCS refuses a question
    asked without a token with ``UNAUTHENTICATED``."""
    chain: BaseException | None = exc
    while chain is not None:
        if any(word in str(chain).lower() for word in REFUSAL_WORDS):
            return True
        chain = chain.__cause__ or chain.__context__
    return gcs_refuses_without_token(address)


def gcs_refuses_without_token(address: str, timeout_s: float = PROBE_TIMEOUT_S) -> bool:
    """Ask the GCS at ``address`` (HOST:PORT) for its cluster id without a token: True only
    when it answers ``UNAUTHENTICATED``. False on any other answer, or when it cannot ask
    (no such Ray modules, a ``ray://`` address, no answer in ``timeout_s``)."""
    if "://" in address:
        return False
    try:
        import grpc  # type: ignore[import-untyped]  # grpcio ships no hints
        from ray._private.gcs_utils import create_gcs_channel
        from ray.core.generated import gcs_service_pb2, gcs_service_pb2_grpc
    except ImportError:
        return False
    try:
        channel = create_gcs_channel(address)
    except Exception:  # a malformed address, TLS files missing: not a token question
        return False
    try:
        stub = gcs_service_pb2_grpc.NodeInfoGcsServiceStub(channel)  # type: ignore[no-untyped-call]
        request = gcs_service_pb2.GetClusterIdRequest()  # type: ignore[attr-defined]
        stub.GetClusterId(request, timeout=timeout_s)
    except grpc.RpcError as err:
        return bool(err.code() == grpc.StatusCode.UNAUTHENTICATED)
    except Exception:
        return False
    finally:
        channel.close()
    return False
