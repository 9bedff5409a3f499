"""``GET /docs``: Swagger UI for ``/openapi.json``, offline.

FastAPI's own ``/docs`` loads Swagger UI from a CDN; this one serves the files shipped in the
wheel (``serve/static/swagger``: swagger-ui-dist, see its VERSION file) under
``/docs/assets/``, so the page works on a cluster with no way out.
"""

from pathlib import Path

from fastapi import APIRouter, HTTPException
from fastapi.openapi.docs import get_swagger_ui_html
from fastapi.responses import FileResponse, HTMLResponse

ASSETS = Path(__file__).parent / "static" / "swagger"
SERVED = {"swagger-ui-bundle.js": "text/javascript", "swagger-ui.css": "text/css"}

router = APIRouter(include_in_schema=False)


@router.get("/docs")
async def swagger() -> HTMLResponse:
    return get_swagger_ui_html(openapi_url="/openapi.json", title="raysys API",
                               swagger_js_url="/docs/assets/swagger-ui-bundle.js",
                               swagger_css_url="/docs/assets/swagger-ui.css",
                               swagger_favicon_url="/ui/assets/favicon.svg")


@router.get("/docs/assets/{name}")
async def asset(name: str) -> FileResponse:
    if name not in SERVED:
        raise HTTPException(404, f"no asset {name}")
    return FileResponse(ASSETS / name, media_type=SERVED[name],
                        headers={"Cache-Control": "public, max-age=86400"})
