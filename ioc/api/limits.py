"""Input limits at the HTTP edge: request body size and a request rate per token.

- **Body size**: a declared ``Content-Length`` over ``IOC_HTTP_MAX_BODY`` is answered 413 before
  the body is read; a chunked body is read up to the limit (413 beyond it) and handed on whole.
- **Rate**: a token bucket per bearer token (per client address when there is none — Open311
  apps and the public CAP feed), ``IOC_HTTP_RATE_PER_S`` refilled per second, up to
  ``IOC_HTTP_RATE_BURST`` at once; over it, 429 with ``Retry-After``. Buckets live in each API
  process (N processes allow N × the rate); at most ``_MAX_BUCKETS`` are kept, the least
  recently used dropped first (a dropped bucket starts full again: the limit errs on the side
  of serving). ``/healthz`` is never limited (load balancers poll it).
"""

from __future__ import annotations

import hashlib
import math
import time
from collections import OrderedDict
from collections.abc import Callable

import orjson
from starlette.types import ASGIApp, Message, Receive, Scope, Send

_MAX_BUCKETS = 10_000
_UNLIMITED_PATHS = frozenset({"/healthz"})


async def _answer(send: Send, status: int, error: str, message: str, **headers: str) -> None:
    body = orjson.dumps({"error": error, "message": message})
    raw = [(b"content-type", b"application/json"), (b"content-length", str(len(body)).encode())]
    raw += [(k.lower().replace("_", "-").encode(), v.encode()) for k, v in headers.items()]
    await send({"type": "http.response.start", "status": status, "headers": raw})
    await send({"type": "http.response.body", "body": body})


class RateLimiter:
    """Token buckets keyed by caller; ``clock`` is passed in so tests can drive it."""

    def __init__(
        self, rate_per_s: float, burst: int, clock: Callable[[], float] = time.monotonic
    ) -> None:
        self.rate = rate_per_s
        self.burst = float(burst)
        self._clock = clock
        self._buckets: OrderedDict[bytes, tuple[float, float]] = OrderedDict()  # key → (tokens, at)

    def take(self, key: bytes) -> float:
        """0 when the request may go; else the seconds until it could."""
        now = self._clock()
        tokens, at = self._buckets.pop(key, (self.burst, now))
        tokens = min(self.burst, tokens + (now - at) * self.rate)
        wait = 0.0
        if tokens >= 1.0:
            tokens -= 1.0
        else:
            wait = (1.0 - tokens) / self.rate
        self._buckets[key] = (tokens, now)
        if len(self._buckets) > _MAX_BUCKETS:
            self._buckets.popitem(last=False)
        return wait


class LimitsMiddleware:
    def __init__(self, app: ASGIApp, *, max_body: int, limiter: RateLimiter) -> None:
        self.app = app
        self.max_body = max_body
        self.limiter = limiter

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http" or scope["path"] in _UNLIMITED_PATHS:
            await self.app(scope, receive, send)
            return
        headers = dict(scope.get("headers") or [])
        wait = self.limiter.take(_caller_key(scope, headers))
        if wait > 0:
            await _answer(
                send, 429, "too_many_requests",
                f"over {self.limiter.rate:g} requests/s for this token; retry in {wait:.1f} s",
                retry_after=str(math.ceil(wait)),
            )  # fmt: skip
            return
        declared = headers.get(b"content-length")
        if declared is not None and declared.isdigit() and int(declared) > self.max_body:
            too_big = f"request body of {int(declared)} bytes is over {self.max_body}"
            await _answer(send, 413, "payload_too_large", too_big)
            return
        if declared is None and scope["method"] in ("POST", "PUT", "PATCH", "DELETE"):
            # a chunked body: read it here, up to the limit, then hand it on as one message
            # (the application would turn an error raised while it reads into its own 400)
            body = bytearray()
            while True:
                message = await receive()
                if message["type"] != "http.request":
                    break
                body += message.get("body", b"")
                if len(body) > self.max_body:
                    too_big = f"request body is over {self.max_body} bytes"
                    await _answer(send, 413, "payload_too_large", too_big)
                    return
                if not message.get("more_body", False):
                    break
            receive = _replay(bytes(body), receive)
        await self.app(scope, receive, send)


def _replay(body: bytes, receive: Receive) -> Receive:
    sent = False

    async def replay() -> Message:
        nonlocal sent
        if not sent:
            sent = True
            return {"type": "http.request", "body": body, "more_body": False}
        return await receive()  # then the disconnect, when it comes

    return replay


def _caller_key(scope: Scope, headers: dict[bytes, bytes]) -> bytes:
    """The bearer token (hashed: the bucket table never holds secrets), else the client
    address (websocket clients pass the token in the query, and are keyed by address)."""
    scheme, _, token = headers.get(b"authorization", b"").partition(b" ")
    if scheme.lower() == b"bearer" and token.strip():
        return b"t:" + hashlib.blake2b(token.strip(), digest_size=16).digest()
    client = scope.get("client") or ("?", 0)
    return f"a:{client[0]}".encode()
