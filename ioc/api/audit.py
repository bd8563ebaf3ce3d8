"""The audit trail of the API: every successful change (POST, PUT, PATCH, DELETE answered
below 400) by an authenticated caller is written to ``audit_log`` — actor, role, the route
template as the action, the path's ids as the target, the status and the caller's
``X-Request-ID`` — and administrators read it at ``GET /api/v1/audit``.

Written after the answer, by an ASGI middleware, so no route can forget it; the cost is that a
crash between a change's commit and this insert loses the audit row (the change itself keeps
its own history: alert_events, incident_events). A failing insert is logged, never turned
into an error for a change that already happened.
"""

from __future__ import annotations

import logging
from datetime import datetime
from typing import Annotated, Any

from fastapi import APIRouter, Depends, Query, Request
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from ioc.api.auth import Caller, require_admin
from ioc.api.context import runtime_of
from ioc.core.localtime import iso_local
from ioc.core.logs import request_id
from ioc.storage import audit

log = logging.getLogger(__name__)

_CHANGES = frozenset({"POST", "PUT", "PATCH", "DELETE"})


class AuditMiddleware:
    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http" or scope["method"] not in _CHANGES:
            await self.app(scope, receive, send)
            return
        scope.setdefault("state", {})  # where authenticate() leaves the caller
        answered: dict[str, int] = {}

        async def send_and_note(message: Message) -> None:
            if message["type"] == "http.response.start":
                answered["status"] = message["status"]
            await send(message)

        await self.app(scope, receive, send_and_note)
        caller = scope["state"].get("caller")
        status = answered.get("status", 500)
        if not isinstance(caller, Caller) or status >= 400:
            return
        route = scope.get("route")
        template = getattr(route, "path", scope["path"])
        params = scope.get("path_params") or {}
        try:
            runtime = scope["app"].state.runtime
            async with runtime.pool.connection() as conn:
                await audit.record(
                    conn,
                    actor=caller.actor,
                    role=caller.role,
                    action=f"{scope['method']} {template}",
                    target=",".join(f"{k}={v}" for k, v in sorted(params.items())) or None,
                    status=status,
                    request_id=request_id.get(),
                )
        except Exception:
            log.exception("audit: could not record %s %s by %s", scope["method"], template,
                          caller.actor)  # fmt: skip


router = APIRouter(prefix="/api/v1", tags=["audit"])


@router.get("/audit")
async def audit_entries(
    request: Request,
    _: Annotated[str, Depends(require_admin)],
    actor: str | None = None,
    action: Annotated[str | None, Query(description="substring: ack, /silences, token.")] = None,
    since: datetime | None = None,
    before_id: int | None = None,
    limit: Annotated[int, Query(ge=1, le=1000)] = 200,
) -> list[dict[str, Any]]:
    """Who changed what, newest first (administrators only)."""
    async with runtime_of(request).pool.connection() as conn:
        rows = await audit.entries(
            conn, actor=actor, action=action, since=since, before_id=before_id, limit=limit
        )
    return [{**r, "time": iso_local(r["time"])} for r in rows]
