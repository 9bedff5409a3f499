"""``/ui``: the web console, served by the app on its own host and port, offline.

The page and its script and style ship in the wheel (``serve/static/ui``); no CDN. The console
reads the same token-protected API as the CLI and the clients (the browser keeps the token the
operator types for the tab's session), never Redis. These routes are open: they hold no data.
"""

from pathlib import Path

from fastapi import APIRouter, HTTPException
from fastapi.responses import FileResponse, RedirectResponse

ASSETS = Path(__file__).parent / "static" / "ui"
TYPES = {".js": "text/javascript", ".css": "text/css", ".svg": "image/svg+xml",
         ".html": "text/html"}
# Strict: the console runs only its own files and talks only to this origin.
POLICY = ("default-src 'self'; img-src 'self' data:; style-src 'self'; script-src 'self'; "
          "connect-src 'self'; frame-ancestors 'none'; base-uri 'none'; form-action 'none'")

router = APIRouter(include_in_schema=False)


@router.get("/ui")
async def root() -> RedirectResponse:
    return RedirectResponse("/ui/")


@router.get("/ui/")
async def page() -> FileResponse:
    return FileResponse(ASSETS / "index.html", media_type="text/html",
                        headers={"Content-Security-Policy": POLICY,
                                 "X-Content-Type-Options": "nosniff",
                                 "Cache-Control": "no-cache"})


@router.get("/ui/assets/{name}")
async def asset(name: str) -> FileResponse:
    path = ASSETS / name
    if "/" in name or name.startswith(".") or path.suffix not in TYPES or not path.is_file():
        raise HTTPException(404, f"no asset {name}")
    return FileResponse(path, media_type=TYPES[path.suffix],
                        headers={"X-Content-Type-Options": "nosniff",
                                 "Cache-Control": "no-cache"})
