"""The task API's bearer token: ``Authorization: Bearer <RAYSYS_API_TOKEN>``.

Every request but those on the open paths (:data:`OPEN_PATHS`: health, metrics, the API's docs
and the console's files) passes :class:`BearerGate` first, and every route of them depends on
:func:`caller`; both answer 401 (list-shaped, with
``WWW-Authenticate: Bearer``) when the header is missing or wrong, and always when the server
has no token (the task API is then off). The token is compared in constant time. A caller is
named in the audit by the token's id (a hash prefix, never the token) and its address.
"""

import hashlib
import hmac
from dataclasses import dataclass
from typing import Annotated

from fastapi import Depends, Request, Security
from fastapi.security import HTTPAuthorizationCredentials, HTTPBearer
from starlette.datastructures import Headers
from starlette.types import ASGIApp, Receive, Scope, Send

from raysys.serve.backend import Api, backend, installed
from raysys.serve.http_errors import ApiError, error_response

OPEN_PATHS = ("/health", "/metrics", "/docs", "/openapi.json", "/ui")
CHALLENGE = {"WWW-Authenticate": "Bearer"}

bearer = HTTPBearer(auto_error=False, scheme_name="token",
                    description="The server's RAYSYS_API_TOKEN")


@dataclass(frozen=True)
class Caller:
    """Who made a request: the id of the token it showed, and its address."""

    token_id: str
    address: str

    def __str__(self) -> str:
        return f"token {self.token_id} from {self.address}"


def token_id(token: bytes) -> str:
    """A short, stable name for a token that does not reveal it (sha256 prefix)."""
    return hashlib.sha256(token).hexdigest()[:12]


def denied(token: bytes | None, header: str) -> ApiError | None:
    """The 401 for an ``Authorization`` header that is not ``Bearer <token>``; None if it is."""
    if token is None:
        return ApiError(401, [{"msg": "the task API is disabled: the server has no "
                               "RAYSYS_API_TOKEN"}], headers=CHALLENGE)
    scheme, _, given = header.partition(" ")
    if scheme.lower() != "bearer" or not hmac.compare_digest(given.strip().encode(), token):
        return ApiError(401, [{"msg": "missing or wrong bearer token"}], headers=CHALLENGE)
    return None


def caller(request: Request,
           _credentials: Annotated[HTTPAuthorizationCredentials | None, Security(bearer)],
           api: Api) -> Caller:
    """The request's caller (a FastAPI dependency); :class:`ApiError` 401 without the token."""
    refusal = denied(api.token, request.headers.get("authorization", ""))
    if refusal is not None:
        raise refusal
    assert api.token is not None
    address = request.client.host if request.client is not None else "unknown"
    forwarded = request.headers.get("x-forwarded-for")
    if forwarded:
        address += f" (for {forwarded.split(',')[0].strip()[:64]})"
    return Caller(token_id(api.token), address)


def is_open(path: str) -> bool:
    """Whether ``path`` is one of :data:`OPEN_PATHS` or under one."""
    return any(path == p or path.startswith(p + "/") for p in OPEN_PATHS)


class BearerGate:
    """ASGI middleware: a request on any path but the open ones without the right token is
    answered 401 before anything else happens (its body is not even read); routes still
    depend on :func:`caller` for who is asking."""

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "http" and not is_open(scope["path"]) and installed():
            headers = Headers(scope=scope)
            refusal = denied(backend().token, headers.get("authorization", ""))
            if refusal is not None:
                answer = error_response(refusal.status, refusal.detail, refusal.headers)
                await answer(scope, receive, send)
                return
        await self.app(scope, receive, send)


Who = Annotated[Caller, Depends(caller)]  # a route's caller parameter: the route needs the token
