"""The API's own documentation, offline: Swagger UI from the package, and the bearer scheme.

The IOC network is closed, so FastAPI's default /docs (scripts and styles from a CDN) is a blank
page there. Swagger UI is vendored under ``static/swagger-ui`` (swagger-ui-dist from npm, the
version and licence in its ``SOURCE.md``) and served at ``/docs/assets/``; the page names no other
host (``validatorUrl: null``: Swagger UI would otherwise send the document to its public
validator). ReDoc is not served (``redoc_url=None``): it too comes from a CDN by default.

The bearer scheme (``bearerAuth``) comes from :data:`ioc.api.auth.BEARER`, a dependency of every
token check, so the OpenAPI document marks exactly the operations that need a token and Swagger
UI's "Authorize" button sends it (``persistAuthorization``: kept across reloads of the page).
"""

from __future__ import annotations

from pathlib import Path

from fastapi import FastAPI
from fastapi.openapi.docs import get_swagger_ui_html, get_swagger_ui_oauth2_redirect_html
from fastapi.responses import HTMLResponse
from starlette.staticfiles import StaticFiles

ASSETS = Path(__file__).parent / "static" / "swagger-ui"
ASSETS_URL = "/docs/assets"
DOCS_URL = "/docs"


def install(app: FastAPI) -> None:
    """Serve Swagger UI and its assets from the package. ``app`` must be built with
    ``docs_url=None, redoc_url=None`` (FastAPI's own pages load from a CDN)."""
    app.mount(ASSETS_URL, StaticFiles(directory=ASSETS), name="swagger-ui-assets")
    redirect_url = f"{DOCS_URL}/oauth2-redirect"

    @app.get(DOCS_URL, include_in_schema=False)
    async def swagger_ui() -> HTMLResponse:
        return get_swagger_ui_html(
            openapi_url=app.openapi_url or "/openapi.json",
            title=f"{app.title} — Swagger UI",
            oauth2_redirect_url=redirect_url,
            swagger_js_url=f"{ASSETS_URL}/swagger-ui-bundle.js",
            swagger_css_url=f"{ASSETS_URL}/swagger-ui.css",
            swagger_favicon_url=f"{ASSETS_URL}/favicon-32x32.png",
            swagger_ui_parameters={"validatorUrl": None, "persistAuthorization": True},
        )

    @app.get(redirect_url, include_in_schema=False)
    async def swagger_ui_redirect() -> HTMLResponse:
        return get_swagger_ui_oauth2_redirect_html()
