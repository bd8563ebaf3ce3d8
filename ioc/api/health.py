"""/healthz (process alive, no auth), /readyz (database and broker usable), /metrics (Prometheus).

/readyz and /metrics need the bearer token like the rest of the API (Prometheus sends it with
``authorization: {credentials: ...}``): their bodies name hosts, users and error details.
"""

from __future__ import annotations

import asyncio

from fastapi import APIRouter, Depends, Request, Response
from fastapi.responses import JSONResponse
from prometheus_client import CONTENT_TYPE_LATEST, generate_latest

from ioc.api.auth import require_admin
from ioc.api.context import runtime_of

router = APIRouter(tags=["health"])


@router.get("/healthz")
async def healthz() -> dict[str, str]:
    return {"status": "ok"}


@router.get("/readyz", dependencies=[Depends(require_admin)])
async def readyz(request: Request) -> JSONResponse:
    runtime = runtime_of(request)
    checks: dict[str, dict[str, object]] = {}
    try:
        async with asyncio.timeout(2.0):
            async with runtime.pool.connection() as conn:
                await conn.execute("SELECT 1")
        checks["database"] = {"ok": True}
    except Exception as exc:
        checks["database"] = {"ok": False, "error": str(exc) or type(exc).__name__}
    if runtime.ingest is not None:
        h = runtime.ingest.health()
        checks["broker"] = {"ok": h.broker_connected, "error": h.broker_error}
        checks["ingest_writer"] = {
            "ok": h.database_ok,
            "error": h.database_error,
            "queue_depth": h.queue_depth,
        }
    ready = all(bool(c["ok"]) for c in checks.values())
    return JSONResponse({"ready": ready, "checks": checks}, status_code=200 if ready else 503)


@router.get("/metrics", include_in_schema=False, dependencies=[Depends(require_admin)])
async def metrics() -> Response:
    return Response(generate_latest(), media_type=CONTENT_TYPE_LATEST)
