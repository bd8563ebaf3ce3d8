"""Logging for every ``ioc`` command: plain lines for a terminal, or one JSON object per line
(``IOC_LOG_FORMAT=json``) for a log collector, each carrying the request's correlation id.

The correlation id is the caller's ``X-Request-ID`` (or a new one), set per HTTP request by
:class:`RequestIdMiddleware`, returned in the answer's ``X-Request-ID`` header and written into
every log line of that request and into the audit log.
"""

from __future__ import annotations

import contextvars
import logging
import re
import sys
import uuid
from datetime import UTC, datetime
from types import TracebackType
from typing import Any

import orjson
from starlette.types import ASGIApp, Message, Receive, Scope, Send

request_id: contextvars.ContextVar[str | None] = contextvars.ContextVar("request_id", default=None)

_MAX_ID = 200  # a caller's id is echoed back and logged: keep it bounded


# Attributes every LogRecord has; anything else on a record came from ``extra=`` and is kept.
_RECORD_ATTRS = frozenset(
    vars(logging.LogRecord("", 0, "", 0, "", None, None)).keys() | {"message", "asctime"}
)
# uvicorn's extras that only restate the message with terminal colours.
_DROPPED_EXTRAS = frozenset({"color_message"})
# uvicorn.access's arguments, named (its message is '%s - "%s %s HTTP/%s" %d').
_ACCESS_FIELDS = ("client", "method", "path", "http_version", "status")


class JsonFormatter(logging.Formatter):
    """One JSON object per record: time (UTC), level, logger, message, the request id, the
    record's ``extra=`` fields, the exception; a value JSON cannot hold is written as its str."""

    def format(self, record: logging.LogRecord) -> str:
        doc: dict[str, object] = {
            "time": datetime.fromtimestamp(record.created, UTC).isoformat(timespec="milliseconds"),
            "level": record.levelname,
            "logger": record.name,
            "message": record.getMessage(),
        }
        rid = request_id.get()
        if rid is not None:
            doc["request_id"] = rid
        for key, value in vars(record).items():
            if key not in _RECORD_ATTRS and key not in _DROPPED_EXTRAS and key not in doc:
                doc[key] = value
        if (
            record.name == "uvicorn.access"
            and isinstance(record.args, tuple)
            and len(record.args) == len(_ACCESS_FIELDS)
        ):
            for key, value in zip(_ACCESS_FIELDS, record.args, strict=True):
                doc.setdefault(key, value)
        if record.exc_info:
            doc["exception"] = self.formatException(record.exc_info)
        if record.stack_info:
            doc["stack"] = self.formatStack(record.stack_info)
        return orjson.dumps(doc, default=str, option=orjson.OPT_NON_STR_KEYS).decode()


class _PlainWithId(logging.Formatter):
    def format(self, record: logging.LogRecord) -> str:
        line = super().format(record)
        rid = request_id.get()
        return f"{line} [req {rid}]" if rid is not None else line


# Query parameters that carry a credential (the /ws token, Open311's api_key): never logged.
_SECRET_PARAMS = re.compile(r"([?&](?:token|api_key|access_token)=)[^&#]*", re.IGNORECASE)


class _RedactSecrets(logging.Filter):
    """Masks credentials in the path of uvicorn's access lines (it logs the query string)."""

    def filter(self, record: logging.LogRecord) -> bool:
        args = record.args
        if isinstance(args, tuple) and len(args) == len(_ACCESS_FIELDS) and isinstance(
            args[2], str
        ):
            record.args = (*args[:2], _SECRET_PARAMS.sub(r"\1***", args[2]), *args[3:])
        return True


class _StderrHandler(logging.StreamHandler):
    """Writes to whatever ``sys.stderr`` is at the time (like logging's last resort): a harness
    that swaps stderr (pytest's capture, an in-process ``ioc`` call) never leaves it writing
    to a closed stream."""

    def __init__(self) -> None:
        super().__init__(sys.stderr)

    @property
    def stream(self) -> Any:
        return sys.stderr

    @stream.setter
    def stream(self, value: Any) -> None:
        pass  # always the current sys.stderr


# Loggers that libraries give handlers of their own; their records must reach the root handler
# instead, so that every line has the chosen format (uvicorn's error and access loggers).
_OWN_HANDLERS = ("uvicorn", "uvicorn.error", "uvicorn.access", "uvicorn.asgi")


def configure(level: str, fmt: str) -> None:
    """Root logging for a command; ``fmt`` is ``plain`` or ``json``. Every logger goes through
    the one root handler (on stderr), Python's warnings too."""
    handler = _StderrHandler()
    if fmt == "json":
        handler.setFormatter(JsonFormatter())
    else:
        handler.setFormatter(_PlainWithId("%(asctime)s %(levelname)s %(name)s: %(message)s"))
    root = logging.getLogger()
    root.handlers[:] = [handler]
    root.setLevel(level.upper())
    for name in _OWN_HANDLERS:
        lib = logging.getLogger(name)
        lib.handlers.clear()
        lib.propagate = True
    access = logging.getLogger("uvicorn.access")
    if not any(isinstance(f, _RedactSecrets) for f in access.filters):
        access.addFilter(_RedactSecrets())
    # uvicorn.error's INFO lines ("Started server process", "Uvicorn running on") restate the
    # service's own start-up line; its warnings (invalid requests) and errors still show.
    logging.getLogger("uvicorn.error").setLevel(max(logging.WARNING, root.level))
    logging.captureWarnings(True)  # warnings.warn(...) as log records, not raw stderr text
    sys.excepthook = _log_uncaught  # a crash's traceback as one record too
    # httpx logs every request at INFO (the demo's simulated agencies make several a second);
    # its warnings and errors still show
    logging.getLogger("httpx").setLevel(max(logging.WARNING, root.level))


def _log_uncaught(
    kind: type[BaseException], exc: BaseException, tb: TracebackType | None
) -> None:
    if issubclass(kind, KeyboardInterrupt):
        sys.__excepthook__(kind, exc, tb)
        return
    logging.getLogger("ioc").critical("uncaught exception", exc_info=(kind, exc, tb))


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
