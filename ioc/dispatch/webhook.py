"""The webhook channel: a signed JSON POST to the agency's HTTPS endpoint.

Headers: ``Idempotency-Key`` (the same on every attempt of one delivery), ``X-IOC-Timestamp``
(Unix seconds) and ``X-IOC-Signature: sha256=<hex>`` (:mod:`ioc.dispatch.signature`). The answer
is classified by :func:`ioc.dispatch.retry.classify_status`; redirects are not followed.
"""

from __future__ import annotations

import asyncio
import time
from dataclasses import dataclass
from datetime import datetime
from urllib.parse import urlsplit

import httpx

import ioc
from ioc.core.settings import Settings
from ioc.dispatch.delivery import Attempt, Delivery, Outcome
from ioc.dispatch.envelope import body as wire_body
from ioc.dispatch.notification_routes import load_routes, routes_file
from ioc.dispatch.retry import classify_status, parse_retry_after
from ioc.dispatch.signature import IDEMPOTENCY_HEADER, SIGNATURE_HEADER, TIMESTAMP_HEADER, sign

_ERROR_BODY_BYTES = 300  # of a refusal's body kept in the delivery log


class DispatchConfigError(ValueError):
    """``IOC_AGENCY_WEBHOOKS`` names an agency without a usable ``url`` or ``secret``."""

    def __init__(self, agency: str, field: str, problem: str) -> None:
        super().__init__(f"IOC_AGENCY_WEBHOOKS[{agency!r}].{field}: {problem}")
        self.agency = agency
        self.field = field


@dataclass(frozen=True, slots=True)
class Webhook:
    url: str
    secret: str


def webhook_targets(settings: Settings) -> dict[str, Webhook]:
    """The agencies' webhooks from settings, checked; :class:`DispatchConfigError` names the
    first bad entry."""
    out: dict[str, Webhook] = {}
    for agency, entry in settings.agency_webhooks.items():
        url = entry.get("url", "")
        parts = urlsplit(url)
        if parts.scheme not in ("https", "http") or not parts.hostname:
            raise DispatchConfigError(agency, "url", f"{url!r} is not an http(s):// URL")
        secret = entry.get("secret", "")
        if not secret:
            raise DispatchConfigError(agency, "secret", "missing (every delivery is signed)")
        out[agency] = Webhook(url, secret)
    return out


class WebhookChannel:
    """One pooled HTTP client for all agencies; ``send`` makes one attempt."""

    def __init__(self, settings: Settings, *, max_connections: int) -> None:
        self._settings = settings
        self._timeout_s = settings.dispatch_timeout_s
        self._webhooks = webhook_targets(settings)
        # notification receivers (ioc.dispatch.notification_routes): outbox agency_id
        # receiver:{name}
        for r in load_routes(routes_file(settings.notification_routes_file)).receivers.values():
            if r.channel == "webhook" and r.secret is not None:
                self._webhooks[r.outbox_id] = Webhook(r.target, r.secret)
        self._client = httpx.AsyncClient(
            timeout=httpx.Timeout(self._timeout_s),
            follow_redirects=False,
            limits=httpx.Limits(max_connections=max_connections),
            headers={"User-Agent": f"hau-giang-ioc/{ioc.__version__}"},
        )

    async def aclose(self) -> None:
        await self._client.aclose()

    async def send(self, delivery: Delivery, now: datetime) -> Attempt:
        webhook = self._webhooks.get(delivery.agency_id)
        if webhook is None:
            # configuration changed since the row was written: nothing to sign with
            return Attempt(
                Outcome.FAILED,
                0.0,
                error=f"no webhook configured for agency {delivery.agency_id!r} "
                "(IOC_AGENCY_WEBHOOKS, or the notification routes file)",
            )
        body = wire_body(delivery, now)
        timestamp = int(now.timestamp())
        headers = {
            "Content-Type": "application/json",
            IDEMPOTENCY_HEADER: delivery.idempotency_key,
            TIMESTAMP_HEADER: str(timestamp),
            SIGNATURE_HEADER: sign(webhook.secret, timestamp, body),
        }
        started = time.monotonic()
        try:
            # httpx's timeout bounds each phase; this bounds the whole attempt (a receiver that
            # trickles its answer byte by byte would otherwise hold a slot for ever)
            async with asyncio.timeout(self._timeout_s):
                async with self._client.stream(
                    "POST", delivery.target, content=body, headers=headers
                ) as response:
                    head = b""
                    if not 200 <= response.status_code < 300:
                        async for chunk in response.aiter_bytes():
                            head += chunk
                            if len(head) >= _ERROR_BODY_BYTES:
                                break
        except (TimeoutError, httpx.TimeoutException):
            return Attempt(
                Outcome.RETRY,
                time.monotonic() - started,
                error=f"timeout: no answer within {self._timeout_s:g} s",
            )
        except httpx.HTTPError as exc:
            return Attempt(
                Outcome.RETRY,
                time.monotonic() - started,
                error=f"{type(exc).__name__}: {exc}" if str(exc) else type(exc).__name__,
            )
        duration = time.monotonic() - started
        status = response.status_code
        outcome = classify_status(status)
        if outcome is Outcome.DELIVERED:
            return Attempt(outcome, duration, status_code=status)
        text = head[:_ERROR_BODY_BYTES].decode("utf-8", "replace").strip()
        error = f"HTTP {status}" + (f": {text}" if text else "")
        return Attempt(
            outcome,
            duration,
            status_code=status,
            error=error,
            retry_after_s=parse_retry_after(response.headers.get("retry-after"), now)
            if outcome is Outcome.RETRY
            else None,
        )
