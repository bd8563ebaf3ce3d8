"""The HTTP API (FastAPI): /api/v1, health, metrics, OpenAPI at /docs (served offline)."""

from __future__ import annotations

from fastapi import FastAPI, Request
from fastapi.encoders import jsonable_encoder
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from psycopg_pool import PoolTimeout
from starlette.exceptions import HTTPException

import ioc
from ioc.api import (
    alerts,
    audit,
    cap,
    dead_letters,
    devices,
    docs,
    health,
    incidents,
    kpi,
    lighting,
    limits,
    live,
    open311,
    rules,
    site,
    tides,
)
from ioc.api import dispatch as dispatch_api  # agency dispatch deliveries
from ioc.api.context import ApiRuntime
from ioc.api.http_metrics import HttpMetricsMiddleware
from ioc.core.logs import RequestIdMiddleware


def create_app(runtime: ApiRuntime) -> FastAPI:
    """``runtime`` is the composition root's ``Runtime`` (settings, pool, site, ingest)."""
    app = FastAPI(
        title="Hậu Giang IOC API",
        version=ioc.__version__,
        description="Devices, readings, alerts, incidents, agencies, KPIs and public warnings of "
        "the Vị Thanh / Ngã Bảy IOC. /api/v1 routes need `Authorization: Bearer <token>` (roles: "
        "admin, operator, viewer, agency:{code}, open311) except the public CAP feed and "
        "messages under /api/v1/cap/; Open311 GeoReport v2 is at /open311/v2/ (api_key). Times "
        "are RFC 3339 with offset, shown in Asia/Ho_Chi_Minh (+07:00).",
        # Swagger UI from the package, ReDoc not at all: the defaults load from a CDN, which the
        # IOC's closed network cannot reach (ioc/api/docs.py).
        docs_url=None,
        redoc_url=None,
    )
    app.state.runtime = runtime
    docs.install(app)  # /docs and its assets
    app.include_router(health.router)
    app.include_router(devices.router)
    app.include_router(dead_letters.router)
    app.include_router(live.router)
    app.include_router(alerts.router)
    app.include_router(rules.router)
    app.include_router(incidents.router)
    app.include_router(cap.router)
    app.include_router(kpi.router)
    app.include_router(open311.router)
    app.include_router(dispatch_api.router)  # /api/v1/deliveries
    app.include_router(audit.router)
    app.include_router(site.router)  # /api/v1/site, /api/v1/whoami, /wall/
    app.include_router(lighting.router)  # /api/v1/lighting/energy
    app.include_router(tides.router)  # /api/v1/flood/stations/{device_id}/tide
    app.add_middleware(audit.AuditMiddleware)  # every successful change, by whom
    settings = runtime.settings
    # Added last, so it runs first: a refused request costs no auth lookup and no audit row.
    app.add_middleware(
        limits.LimitsMiddleware,
        max_body=settings.http_max_body,
        limiter=limits.RateLimiter(settings.http_rate_per_s, settings.http_rate_burst),
    )
    # Counts every answer, refusals by the limits included, by route template and status.
    app.add_middleware(HttpMetricsMiddleware)
    app.add_middleware(RequestIdMiddleware)  # outermost: every line of a request carries its id

    @app.exception_handler(RequestValidationError)
    async def _invalid(request: Request, exc: RequestValidationError) -> JSONResponse:
        # One readable line per problem, naming the field, plus FastAPI's structured list.
        problems = [f"{'.'.join(str(p) for p in e['loc'])}: {e['msg']}" for e in exc.errors()]
        return JSONResponse(
            {
                "error": "invalid_request",
                "message": "; ".join(problems),
                "detail": jsonable_encoder(exc.errors()),
            },
            status_code=422,
        )

    @app.exception_handler(HTTPException)
    async def _http(request: Request, exc: HTTPException) -> JSONResponse:
        return JSONResponse(
            {"error": _ERROR_NAMES.get(exc.status_code, "error"), "message": exc.detail},
            status_code=exc.status_code,
            headers=exc.headers,
        )

    @app.exception_handler(PoolTimeout)
    async def _busy(request: Request, exc: PoolTimeout) -> JSONResponse:
        return JSONResponse(
            {"error": "database_unavailable", "message": "database unavailable, retry later"},
            status_code=503,
            headers={"Retry-After": "5"},
        )

    return app


_ERROR_NAMES = {
    401: "unauthorized",
    403: "forbidden",
    404: "not_found",
    409: "conflict",
    422: "invalid_request",
}
