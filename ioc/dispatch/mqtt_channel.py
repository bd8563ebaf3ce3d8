"""The MQTT channel: the envelope published at QoS 1 to ``{IOC_DISPATCH_MQTT_PREFIX}/{agency}``.

One :mod:`mqttclient` client per worker, MQTT v5, clean start (a publisher needs no session: what
is not acknowledged is still pending in the outbox). A delivery counts as delivered only when
the broker's PUBACK arrives with a success reason code. The idempotency key travels twice: as
the envelope's ``id`` and as the user property ``idempotency-key``.

Everything runs on the event loop (no thread): one task keeps the client open, retrying the first
connection with backoff; after that the client reconnects by itself and resends an unacknowledged
publish with DUP set. A publish still waiting when ``dispatch_timeout_s`` runs out is left to the
outbox's retry (the agency deduplicates by the idempotency key).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import secrets
import time
from datetime import datetime

from ioc.core.backoff import Backoff
from ioc.core.settings import Settings
from ioc.dispatch.delivery import Attempt, Delivery, Outcome
from ioc.dispatch.envelope import body
from mqttclient import Client, ConnectRefused, MqttError, PublishRefused

log = logging.getLogger(__name__)

QOS = 1
IDEMPOTENCY_PROPERTY = "idempotency-key"
CLIENT_SUFFIX = "-dispatch-"
# Outgoing QoS 1 is bounded by the broker's Receive Maximum inside the client (a publish waits
# for a free slot), and the outbox worker sends one delivery at a time per target.


class MqttChannel:
    def __init__(self, settings: Settings) -> None:
        self._settings = settings
        self._timeout_s = settings.dispatch_timeout_s
        self._address = settings.mqtt if settings.mqtt_url else None
        self._client: Client | None = None
        self._opened = asyncio.Event()  # set while ``_client`` is an open client
        self._stopping = asyncio.Event()
        self._task: asyncio.Task[None] | None = None
        self.last_error: str | None = None
        # a fresh id per process: workers in several processes must not kick each other off
        self.client_id = settings.mqtt_client_id + CLIENT_SUFFIX + secrets.token_hex(4)

    def start(self) -> None:
        if self._address is None:
            self.last_error = "no broker configured (IOC_MQTT_URL is unset)"
            return
        self._task = asyncio.get_running_loop().create_task(
            self._run(), name=f"dispatch-mqtt:{self.client_id}"
        )

    async def stop(self) -> None:
        """Ordered DISCONNECT (in-flight publishes get a moment to be acknowledged)."""
        self._stopping.set()
        if self._task is not None:
            await self._task
            self._task = None

    @property
    def connected(self) -> bool:
        return self._client is not None and self._client.connected

    async def send(self, delivery: Delivery, now: datetime) -> Attempt:
        started = time.monotonic()

        def retry(error: str) -> Attempt:
            return Attempt(Outcome.RETRY, time.monotonic() - started, error=error)

        if self._address is None:
            return retry(self.last_error or "no broker configured")
        try:
            async with asyncio.timeout(self._timeout_s):
                # just started or reconnecting: wait a little rather than log a pointless retry
                client = await self._connected_client()
        except TimeoutError:
            return retry(f"broker not connected ({self.last_error or 'connecting'})")
        try:
            async with asyncio.timeout(self._timeout_s):
                await client.publish(
                    delivery.target,
                    body(delivery, now),
                    qos=QOS,
                    content_type="application/json",
                    payload_format_indicator=1,
                    user_properties=[(IDEMPOTENCY_PROPERTY, delivery.idempotency_key)],
                )
        except TimeoutError:
            return retry(f"no PUBACK within {self._timeout_s:g} s")
        except PublishRefused as exc:
            return retry(f"broker refused: reason code 0x{exc.reason_code:02x}")
        except MqttError as exc:
            return retry(str(exc))
        return Attempt(Outcome.DELIVERED, time.monotonic() - started)

    async def _connected_client(self) -> Client:
        while True:
            await self._opened.wait()
            client = self._client
            if client is not None:
                await client.wait_connected()
                return client

    async def _run(self) -> None:
        assert self._address is not None
        address = self._address
        tls = address.ssl_context() if address.tls else None
        backoff = Backoff()
        while not self._stopping.is_set():
            try:
                async with Client(
                    address.host,
                    address.port,
                    client_id=self.client_id,
                    username=address.username,
                    password=address.password,
                    ssl=tls,
                    clean_start=True,
                    session_expiry_s=0,
                    keep_alive_s=self._settings.mqtt_keepalive_s,
                    backoff_maximum_s=15.0,
                    disconnect_timeout_s=min(self._timeout_s, 5.0),
                ) as client:
                    self._client = client
                    self._opened.set()
                    self.last_error = None
                    backoff.reset()
                    log.info("dispatch MQTT connected as %s", self.client_id)
                    await self._stopping.wait()
                return
            except ConnectRefused as exc:
                self.last_error = f"broker refused connection: {exc}"
                log.error("dispatch MQTT: %s", self.last_error)
            except (OSError, MqttError) as exc:
                self.last_error = f"broker unreachable: {exc}"
                log.warning("dispatch MQTT: %s; retrying", self.last_error)
            finally:
                self._opened.clear()
                self._client = None
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._stopping.wait(), backoff.next_delay())
