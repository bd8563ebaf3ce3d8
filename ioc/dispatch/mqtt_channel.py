"""The MQTT channel: the envelope published at QoS 1 to ``{IOC_DISPATCH_MQTT_PREFIX}/{agency}``.

One paho-mqtt 2.x client per worker, MQTT v5, clean start (a publisher needs no session: what
is not acknowledged is still pending in the outbox). A delivery counts as delivered only when
the broker's PUBACK arrives with a success reason code. The idempotency key travels twice: as
the envelope's ``id`` and as the user property ``idempotency-key``.

paho calls ``on_publish`` in its network thread; the PUBACK is handed to the event loop with
``call_soon_threadsafe``. ``publish`` is called on the event loop and the future is registered
before the loop can run that hand-off, so no acknowledgement can arrive unclaimed.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import secrets
import time
from datetime import datetime

import paho.mqtt.client as mqtt
from paho.mqtt.packettypes import PacketTypes
from paho.mqtt.properties import Properties
from paho.mqtt.reasoncodes import ReasonCode

from ioc.dispatch.delivery import Attempt, Delivery, Outcome
from ioc.dispatch.envelope import envelope
from ioc.settings import Settings

log = logging.getLogger(__name__)

QOS = 1
IDEMPOTENCY_PROPERTY = "idempotency-key"
CLIENT_SUFFIX = "-dispatch-"
# paho keeps unacknowledged QoS 1 messages to resend after a reconnect; past this many it refuses
# new ones (MQTT_ERR_QUEUE_SIZE → the delivery retries later) instead of growing without bound.
MAX_QUEUED = 1000


class MqttChannel:
    def __init__(self, settings: Settings) -> None:
        self._settings = settings
        self._timeout_s = settings.dispatch_timeout_s
        self._address = settings.mqtt if settings.mqtt_url else None
        self._loop: asyncio.AbstractEventLoop | None = None
        self._acks: dict[int, asyncio.Future[ReasonCode]] = {}
        self._connected = asyncio.Event()
        self.last_error: str | None = None
        # a fresh id per process: workers in several processes must not kick each other off
        self.client_id = settings.mqtt_client_id + CLIENT_SUFFIX + secrets.token_hex(4)
        client = mqtt.Client(
            mqtt.CallbackAPIVersion.VERSION2, client_id=self.client_id, protocol=mqtt.MQTTv5
        )
        if self._address is not None:
            self._address.configure(client)
        client.reconnect_delay_set(min_delay=1, max_delay=15)
        client.max_queued_messages_set(MAX_QUEUED)
        client.on_connect = self._handle_connect
        client.on_disconnect = self._handle_disconnect
        client.on_publish = self._handle_publish
        self._client = client

    def start(self) -> None:
        self._loop = asyncio.get_running_loop()
        if self._address is None:
            self.last_error = "no broker configured (IOC_MQTT_URL is unset)"
            return
        self._client.connect_async(
            self._address.host,
            self._address.port,
            keepalive=self._settings.mqtt_keepalive_s,
            clean_start=True,
        )
        self._client.loop_start()  # retries the first connection too

    async def stop(self) -> None:
        """DISCONNECT and stop paho's thread (blocking calls: off the event loop)."""
        if self._address is None:
            return
        await asyncio.to_thread(self._client.disconnect)
        await asyncio.to_thread(self._client.loop_stop)
        self._fail_waiting("channel stopped")

    @property
    def connected(self) -> bool:
        return self._connected.is_set()

    async def send(self, delivery: Delivery, now: datetime) -> Attempt:
        started = time.monotonic()

        def retry(error: str) -> Attempt:
            return Attempt(Outcome.RETRY, time.monotonic() - started, error=error)

        if self._address is None:
            return retry(self.last_error or "no broker configured")
        if not self._connected.is_set():
            # just started or reconnecting: wait a little rather than log a pointless retry
            try:
                await asyncio.wait_for(self._connected.wait(), self._timeout_s)
            except TimeoutError:
                return retry(f"broker not connected ({self.last_error or 'connecting'})")
        props = Properties(PacketTypes.PUBLISH)
        props.UserProperty = [(IDEMPOTENCY_PROPERTY, delivery.idempotency_key)]
        props.ContentType = "application/json"
        props.PayloadFormatIndicator = 1
        info = self._client.publish(
            delivery.target, envelope(delivery, now), qos=QOS, properties=props
        )
        if info.rc != mqtt.MQTT_ERR_SUCCESS:
            return retry(f"publish refused: {mqtt.error_string(info.rc)}")
        # registered before any await: the PUBACK hand-off cannot run before this line
        assert self._loop is not None
        ack: asyncio.Future[ReasonCode] = self._loop.create_future()
        self._acks[info.mid] = ack
        try:
            reason = await asyncio.wait_for(ack, self._timeout_s)
        except TimeoutError:
            return retry(f"no PUBACK within {self._timeout_s:g} s")
        except ConnectionError as exc:
            return retry(str(exc))
        finally:
            self._acks.pop(info.mid, None)
        if reason.is_failure:
            return Attempt(
                Outcome.RETRY, time.monotonic() - started, error=f"broker refused: {reason}"
            )
        return Attempt(Outcome.DELIVERED, time.monotonic() - started)

    # -- paho callbacks (network thread) -----------------------------------------------------

    def _handle_connect(
        self,
        client: mqtt.Client,
        userdata: object,
        flags: mqtt.ConnectFlags,
        reason: ReasonCode,
        properties: Properties | None,
    ) -> None:
        if reason.is_failure:
            self.last_error = f"broker refused connection: {reason}"
            log.error("dispatch MQTT: %s", self.last_error)
            return
        self.last_error = None
        log.info("dispatch MQTT connected as %s", self.client_id)
        self._call(self._connected.set)

    def _handle_disconnect(
        self,
        client: mqtt.Client,
        userdata: object,
        flags: mqtt.DisconnectFlags,
        reason: ReasonCode,
        properties: Properties | None,
    ) -> None:
        if reason.is_failure:
            self.last_error = f"disconnected: {reason}"
            log.warning("dispatch MQTT %s; paho reconnects", self.last_error)
        self._call(self._connected.clear)
        # a PUBACK for these can no longer come on this connection: retry them from the outbox
        self._call(self._fail_waiting, "connection lost before PUBACK")

    def _handle_publish(
        self,
        client: mqtt.Client,
        userdata: object,
        mid: int,
        reason: ReasonCode,
        properties: Properties | None,
    ) -> None:
        self._call(self._resolve, mid, reason)

    # -- on the event loop -------------------------------------------------------------------

    def _call(self, fn: object, *args: object) -> None:
        loop = self._loop
        if loop is not None and not loop.is_closed():
            # the loop may close between the check and the call (process ending): nothing to tell
            with contextlib.suppress(RuntimeError):
                loop.call_soon_threadsafe(fn, *args)  # type: ignore[arg-type]

    def _resolve(self, mid: int, reason: ReasonCode) -> None:
        ack = self._acks.get(mid)
        if ack is not None and not ack.done():
            ack.set_result(reason)

    def _fail_waiting(self, why: str) -> None:
        for ack in self._acks.values():
            if not ack.done():
                ack.set_exception(ConnectionError(why))
