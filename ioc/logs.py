"""Logging for every ``ioc`` command: plain lines for a terminal, or one JSON object per line
(``IOC_LOG_FORMAT=json``) for a log collector, each carrying the request's correlation id.

The correlation id is the caller's ``X-Request-ID`` (or a new one), set per HTTP request by
:class:`RequestIdMiddleware`, returned in the answer's ``X-Request-ID`` header and written into
every log line of that request and into the audit log.
"""

from __future__ import annotations

import contextvars
import logging
import uuid
from datetime import UTC, datetime

import orjson
from starlette.types import ASGIApp, Message, Receive, Scope, Send

request_id: contextvars.ContextVar[str | None] = contextvars.ContextVar("request_id", default=None)

_MAX_ID = 200  # a caller's id is echoed back and logged: keep it bounded


class JsonFormatter(logging.Formatter):
    def format(self, record: logging.LogRecord) -> str:
        doc = {
            "time": datetime.fromtimestamp(record.created, UTC).isoformat(timespec="milliseconds"),
            "level": record.levelname,
            "logger": record.name,
            "message": record.getMessage(),
        }
        rid = request_id.get()
        if rid is not None:
            doc["request_id"] = rid
        if record.exc_info:
            doc["exception"] = self.formatException(record.exc_info)
        return orjson.dumps(doc).decode()


class _PlainWithId(logging.Formatter):
    def format(self, record: logging.LogRecord) -> str:
        line = super().format(record)
        rid = request_id.get()
        return f"{line} [req {rid}]" if rid is not None else line


def configure(level: str, fmt: str) -> None:
    """Root logging for a command; ``fmt`` is ``plain`` or ``json``."""
    handler = logging.StreamHandler()
    if fmt == "json":
        handler.setFormatter(JsonFormatter())
    else:
        handler.setFormatter(_PlainWithId("%(asctime)s %(levelname)s %(name)s: %(message)s"))
    root = logging.getLogger()
    root.handlers[:] = [handler]
    root.setLevel(level.upper())
    # httpx logs every request at INFO (the demo's simulated agencies make several a second);
    # its warnings and errors still show
    logging.getLogger("httpx").setLevel(max(logging.WARNING, root.level))


class RequestIdMiddleware:
    """Sets :data:`request_id` for the request and echoes it in the answer."""

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] not in ("http", "websocket"):
            await self.app(scope, receive, send)
            return
        given = dict(scope.get("headers") or []).get(b"x-request-id", b"")
        rid = given.decode("latin-1")[:_MAX_ID] or uuid.uuid4().hex
        token = request_id.set(rid)

        async def send_with_id(message: Message) -> None:
            if message["type"] == "http.response.start":
                message["headers"] = [*message.get("headers", []), (b"x-request-id", rid.encode())]
            await send(message)

        try:
            await self.app(scope, receive, send_with_id)
        finally:
            request_id.reset(token)
