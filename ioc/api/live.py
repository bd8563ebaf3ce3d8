"""/ws (the live feed over WebSocket), and / sending browsers to the wall screen (/wall/).

Authentication is the API's admin bearer token, sent as ``Authorization: Bearer <token>`` or, for
browsers (which cannot set headers on a WebSocket), as ``?token=``. A refused connection is
accepted and closed at once with code 4401, so a browser can tell it from a network failure.
Protocol: README.md (section "Live feed (/ws)"); design: docs/architecture.md.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging

from fastapi import APIRouter, WebSocket, WebSocketDisconnect
from fastapi.responses import RedirectResponse

from ioc.api.auth import VIEWERS, identify
from ioc.api.context import runtime_of
from ioc.live import instruments
from ioc.live.frames import FeedFilter
from ioc.live.session import (
    CLOSE_BAD_REQUEST,
    CLOSE_FORBIDDEN,
    CLOSE_UNAUTHORIZED,
    RESYNC_GRACE_S,
    stream,
)

log = logging.getLogger(__name__)
router = APIRouter(tags=["live"])


@router.get("/", include_in_schema=False)
async def index() -> RedirectResponse:
    """The one live client is the wall screen (dashboards/wall/). The first page that lived here
    repeated its feed client; old bookmarks (/#token=…) keep working: a browser carries the
    fragment over a redirect whose Location has none."""
    return RedirectResponse("/wall/", status_code=307)


class _BadRequest(ValueError):
    pass


def _token(ws: WebSocket) -> str | None:
    header = ws.headers.get("authorization", "")
    scheme, _, token = header.partition(" ")
    if scheme.lower() == "bearer" and token.strip():
        return token.strip()
    return ws.query_params.get("token") or None


def _set(ws: WebSocket, name: str) -> frozenset[str] | None:
    values = [v.strip() for raw in ws.query_params.getlist(name) for v in raw.split(",")]
    values = [v for v in values if v]
    return frozenset(values) if values else None


def _wards(ws: WebSocket) -> frozenset[str] | None:
    asked = _set(ws, "ward")
    if asked is None:
        return None
    site = runtime_of(ws).site
    return frozenset(i for w in asked for i in site.ward_ids(w))


def _params(ws: WebSocket) -> tuple[FeedFilter, int | None]:
    raw = ws.query_params.get("since")
    since: int | None = None
    if raw not in (None, ""):
        try:
            since = int(raw)
        except ValueError:
            raise _BadRequest(f"since: {raw!r} is not a feed seq (an integer)") from None
        if since < 0:
            raise _BadRequest(f"since: {raw!r} must not be negative")
    flt = FeedFilter(
        types=_set(ws, "types"),
        cities=_set(ws, "city"),
        # a former ward id follows the unit that absorbed it (frames carry the current id)
        wards=_wards(ws),
        kinds=_set(ws, "kind"),
    )
    return flt, since


@router.websocket("/ws")
async def live_feed(ws: WebSocket) -> None:
    runtime = runtime_of(ws)
    hub = runtime.live
    await ws.accept()
    token = _token(ws)
    caller = await identify(ws, token) if token is not None else None
    if caller is None:
        await ws.close(
            CLOSE_UNAUTHORIZED,
            "missing bearer token" if token is None else "invalid bearer token",
        )
        return
    if caller.role not in VIEWERS:
        # agency and Open311 tokens see their own work through their APIs, not the whole city
        await ws.close(CLOSE_FORBIDDEN, f"role {caller.role!r} may not watch the live feed")
        return
    try:
        flt, since = _params(ws)
    except _BadRequest as exc:
        await ws.close(CLOSE_BAD_REQUEST, str(exc))
        return
    if hub is None or hub.stopped:
        await ws.close(1013, "live feed not running in this process")
        return
    instruments.CLIENTS.inc()
    sender = asyncio.create_task(stream(hub, ws.send_text, flt, since), name="ws-stream")
    receiver = asyncio.create_task(_until_disconnect(ws), name="ws-receive")
    try:
        await asyncio.wait({sender, receiver}, return_when=asyncio.FIRST_COMPLETED)
    finally:
        instruments.CLIENTS.dec()
        receiver.cancel()
        sender.cancel()
        await asyncio.gather(sender, receiver, return_exceptions=True)
    if sender.done() and not sender.cancelled() and sender.exception() is None:
        code, reason = sender.result()
        with contextlib.suppress(Exception):
            async with asyncio.timeout(RESYNC_GRACE_S):  # a stuck socket does not hold us
                await ws.close(code, reason)
    elif sender.done() and not sender.cancelled():
        error = sender.exception()
        if not isinstance(error, WebSocketDisconnect | OSError | RuntimeError):
            log.error("live stream failed", exc_info=error)


async def _until_disconnect(ws: WebSocket) -> None:
    """Clients send nothing we use; read (and ignore) until they go."""
    while True:
        message = await ws.receive()
        if message["type"] == "websocket.disconnect":
            return
