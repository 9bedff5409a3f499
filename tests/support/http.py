"""HTTP from the tests: :func:`request` (and :func:`get`) answer with the status and the body.

Used on the raysys task API and health endpoints, Ray's dashboard job API and Ray's metrics
export. An error status is an answer like any other (its body is returned too); a server that is
not listening (yet) answers status 0 with the reason, so a poller can wait for it.
"""

from __future__ import annotations

import json
import urllib.error
import urllib.request
from typing import Any

TIMEOUT_S = 30.0


def request(method: str, url: str, *, body: Any = None, data: bytes | None = None,
            token: str | None = None, headers: dict[str, str] | None = None,
            timeout: float = TIMEOUT_S) -> tuple[int, Any]:
    """(status, body) of one request: the body parsed as JSON where it is JSON, else text.

    ``body``: sent as JSON; ``data``: sent as is (a body that may not be JSON at all); either
    goes as ``Content-Type: application/json``. ``token``: ``Authorization: Bearer <token>``;
    ``headers``: any others, verbatim (they win over both).
    """
    if data is None and body is not None:
        data = json.dumps(body).encode()
    req = urllib.request.Request(url, data=data, method=method)
    if data is not None:
        req.add_header("Content-Type", "application/json")
    if token is not None:
        req.add_header("Authorization", f"Bearer {token}")
    for name, value in (headers or {}).items():
        req.add_header(name, value)
    try:
        with urllib.request.urlopen(req, timeout=timeout) as resp:
            payload, status = resp.read(), resp.status
    except urllib.error.HTTPError as exc:
        with exc:
            payload, status = exc.read(), exc.code
    except (urllib.error.URLError, OSError) as exc:  # not listening (yet)
        return 0, str(exc)
    text = payload.decode(errors="replace")
    try:
        return status, json.loads(text)
    except ValueError:
        return status, text


def get(url: str, token: str | None = None) -> tuple[int, Any]:
    """``GET url`` (with the bearer ``token`` when given): (status, body)."""
    return request("GET", url, token=token)
