"""The task API's bearer token: ``Authorization: Bearer <RAYSYS_API_TOKEN>``.

Every route but the open ones (:data:`OPEN_PATHS`: health, metrics, the API's docs and the
console's assets) depends on :func:`caller`, which answers 401 (list-shaped, with
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

from raysys.serve.backend import Api, backend
from raysys.serve.http_errors import ApiError

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


def refused(request: Request) -> ApiError | None:
    """For a request that failed validation before its route ran: the 401 its route would have
    given (None on an open path, or with the right token)."""
    if request.url.path.startswith(OPEN_PATHS):
        return None
    return denied(backend().token, request.headers.get("authorization", ""))


Who = Annotated[Caller, Depends(caller)]  # a route's caller parameter: the route needs the token
