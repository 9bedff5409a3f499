"""Every error of the HTTP API in one shape: ``{"detail": [{"loc"?, "msg", "type"?}, ...]}``.

:class:`ApiError` is what routes raise; :func:`install_handlers` makes FastAPI answer it, its
own request validation errors (422, naming the field) and Starlette's HTTP errors (404 for an
unknown path, 405 with ``Allow``) in that shape.
"""

import logging
from collections.abc import Sequence
from typing import Any

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from fastapi.routing import APIRoute
from starlette.exceptions import HTTPException
from starlette.routing import BaseRoute, Match, Route

log = logging.getLogger(__name__)

# Union members of POST /tasks's body, named by its discriminator: dropped from an error's loc
# so it reads ["body", "kind"] as before the body was typed.
BODY_TAGS = ("task", "batch")


class ApiError(Exception):
    """An HTTP error answer: ``status`` and the ``detail`` list."""

    def __init__(self, status: int, detail: Sequence[dict[str, Any]], *,
                 headers: dict[str, str] | None = None) -> None:
        super().__init__(f"{status}: {detail}")
        self.status = status
        self.detail = list(detail)
        self.headers = headers


def error_response(status: int, detail: Sequence[dict[str, Any]],
                   headers: dict[str, str] | None = None) -> JSONResponse:
    return JSONResponse({"detail": list(detail)}, status_code=status, headers=headers)


def unavailable(what: str, exc: BaseException) -> ApiError:
    """503 for a failure the caller may retry (Redis down or failing over, an actor restarting);
    the cause goes to the log, not to the caller."""
    log.warning("%s failed: %s", what, exc)
    return ApiError(503, [{"msg": f"{what} unavailable; retry"}])


def field_errors(errors: Sequence[Any]) -> list[dict[str, Any]]:
    """Pydantic/FastAPI errors as ``{"loc", "msg", "type"}`` (never the input echoed back)."""
    out = []
    for error in errors:
        loc = list(error.get("loc", ()))
        if len(loc) > 1 and loc[0] == "body" and loc[1] in BODY_TAGS:
            del loc[1]
        out.append({"loc": loc, "msg": str(error.get("msg", "invalid")),
                    "type": str(error.get("type", "value_error"))})
    return out


def allowed_methods(request: Request, routes: Sequence[BaseRoute]) -> list[str]:
    """The methods the app answers on the request's path: those of the routes with that very
    path when there are any (``/tasks/redrive``), else of the templates it fits."""
    fits = [r for r in routes if isinstance(r, APIRoute | Route)
            and r.matches(request.scope)[0] != Match.NONE]
    exact = [r for r in fits if r.path == request.url.path]
    return sorted({m for r in exact or fits for m in (r.methods or ())})


def install_handlers(app: FastAPI, routes: Sequence[BaseRoute]) -> None:
    """Answer errors in the one shape (the token was checked before: ``auth.BearerGate``);
    ``routes``: every route of the app (a 405 lists the methods they answer on the path)."""

    async def api_error(_request: Request, exc: Exception) -> JSONResponse:
        assert isinstance(exc, ApiError)
        return error_response(exc.status, exc.detail, exc.headers)

    async def invalid(request: Request, exc: Exception) -> JSONResponse:
        assert isinstance(exc, RequestValidationError)
        errors = exc.errors()
        if all(e.get("loc", ("",))[0] == "path" for e in errors):
            methods = allowed_methods(request, routes)  # e.g. GET /tasks/redrive: a POST-only path
            if request.method not in methods:
                return error_response(405, [{"msg": "Method Not Allowed"}],
                                      {"Allow": ", ".join(methods)})
        return error_response(422, field_errors(errors))

    async def http_error(request: Request, exc: Exception) -> JSONResponse:
        assert isinstance(exc, HTTPException)
        if exc.status_code == 400:  # FastAPI could not decode the body (not UTF-8 JSON)
            return error_response(422, [{"loc": ["body"], "msg": "the body is not JSON "
                                         "(UTF-8)", "type": "json_invalid"}])
        headers = dict(exc.headers or {})
        if exc.status_code == 405:  # every method the path has, not only the first route's
            headers["Allow"] = ", ".join(allowed_methods(request, routes))
        return error_response(exc.status_code, [{"msg": str(exc.detail)}], headers or None)

    app.add_exception_handler(ApiError, api_error)
    app.add_exception_handler(RequestValidationError, invalid)
    app.add_exception_handler(HTTPException, http_error)
