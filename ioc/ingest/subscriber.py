"""The MQTT side of intake: one ``mqttclient`` client, persistent MQTT v5 session, manual PUBACK.

The client runs on the service's event loop (no thread): its reader parses packets with the
``mqtt5`` codec, a pump task hands each message to ``on_message`` (which decodes it once), and
the writer acknowledges after COMMIT through ``ack``; the PUBACKs of one event-loop turn go out
in one socket write. A caller without an event loop (a script, the subscriber's own test) gets
the same subscriber on a private loop in one thread.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import threading
from collections.abc import Awaitable, Callable

from ioc.core.backoff import Backoff
from ioc.core.settings import MqttAddress
from ioc.ingest import instruments
from mqttclient import Client, ConnectionLost, ConnectRefused, MqttError, SubscribeRefused

log = logging.getLogger(__name__)

# topic, payload, mid, qos, generation → None, or an awaitable to wait for before the next
# message is handed over (backpressure: the consumer is full)
OnMessage = Callable[[str, bytes, int, int, int], Awaitable[None] | None]

# Messages taken from the client's queue per event-loop turn before yielding.
_PUMP_BATCH = 1000


class MqttSubscriber:
    """Messages are stamped with the connection they arrived on (``generation``): a PUBACK is
    only sent on that same connection. Packet ids are per connection — after a reconnect onto a
    lost session the broker numbers new messages from 1 again, and acking an old id there would
    acknowledge a message not yet committed."""

    def __init__(
        self,
        address: MqttAddress,
        *,
        client_id: str,
        topic_filters: list[str],
        on_message: OnMessage,
        receive_maximum: int,
        session_expiry_s: int,
        keepalive_s: int = 30,
    ) -> None:
        self._address = address
        self._client_id = client_id
        self._filters = topic_filters
        self._on_message = on_message
        self._receive_maximum = receive_maximum
        self._session_expiry_s = session_expiry_s
        self._keepalive_s = keepalive_s
        # Set once the broker granted every subscription at QoS 1 (SUBACK), not on CONNACK:
        # before that nothing arrives, and a QoS 0 grant would silently void durability. A
        # threading.Event so that a caller on another thread may wait on it.
        self.connected = threading.Event()
        self.last_error: str | None = None
        self._client: Client | None = None
        self._loop: asyncio.AbstractEventLoop | None = None
        self._task: asyncio.Task[None] | None = None
        self._thread: threading.Thread | None = None
        self._stopping: asyncio.Event | None = None
        self._subscribing: set[asyncio.Task[None]] = set()

    @property
    def generation(self) -> int:
        """The current connection (counts connections since start)."""
        return self._client.generation if self._client is not None else 0

    def start(self) -> None:
        """On the running event loop, as a task; without one, on a private loop in a thread."""
        try:
            loop = asyncio.get_running_loop()
        except RuntimeError:
            loop = None
        if loop is not None:
            self._loop, self._stopping = loop, asyncio.Event()
            self._task = loop.create_task(self._run(), name=f"mqtt-subscriber:{self._client_id}")
            return
        started = threading.Event()

        async def main() -> None:
            self._loop, self._stopping = asyncio.get_running_loop(), asyncio.Event()
            started.set()
            await self._run()

        self._thread = threading.Thread(
            target=asyncio.run, args=(main(),), name="mqtt-subscriber", daemon=True
        )
        self._thread.start()
        started.wait()

    def ack(self, mid: int, qos: int, generation: int) -> bool:
        """PUBACK on the connection the message came on; False (not sent) if that is gone —
        the broker then redelivers the message and the primary key absorbs the duplicate."""
        if qos == 0:
            return True
        client = self._client
        # Gated on the connection, not on the SUBACK (``connected``): a resumed session's queued
        # messages arrive before our SUBACK, and an ack refused then would pin them un-acked in
        # the broker's window until the next reconnect.
        if client is None or generation != client.generation or not client.connected:
            return False
        if self._thread is None:
            return client.ack_packet(mid, generation)
        assert self._loop is not None
        self._loop.call_soon_threadsafe(client.ack_packet, mid, generation)
        return True

    async def aclose(self) -> None:
        """Stop taking messages, send the queued PUBACKs, then DISCONNECT (session kept)."""
        if self._stopping is not None:
            self._stopping.set()
        if self._task is not None:
            await self._task
        self._mark_disconnected()

    def stop(self) -> None:
        """:meth:`aclose` for the threaded mode (a caller without an event loop)."""
        if self._thread is not None and self._loop is not None and self._stopping is not None:
            self._loop.call_soon_threadsafe(self._stopping.set)
            self._thread.join()
        self._mark_disconnected()

    # -- on the event loop -----------------------------------------------------------------

    async def _run(self) -> None:
        assert self._stopping is not None
        backoff = Backoff()
        backoff.initial_s, backoff.maximum_s = 1.0, 15.0  # as paho's reconnect delays were
        backoff.reset()
        while not self._stopping.is_set():
            client = Client(
                **self._address.client_options(),
                client_id=self._client_id,
                clean_start=False,
                session_expiry_s=self._session_expiry_s,
                keep_alive_s=self._keepalive_s,
                # Our Receive Maximum is the broker's in-flight window towards us. With manual
                # acks the broker's default (20 for mosquitto) would cap every batch at 20.
                receive_maximum=self._receive_maximum,
                max_queued=self._receive_maximum,
                manual_ack=True,
                backoff_initial_s=1.0,
                backoff_maximum_s=15.0,
                on_connect=self._handle_connect,
                on_disconnect=self._handle_disconnect,
            )
            self._client = client
            try:
                async with client:
                    pump = asyncio.create_task(self._pump(client), name="mqtt-pump")
                    stop = asyncio.create_task(self._stopping.wait())
                    await asyncio.wait({pump, stop}, return_when=asyncio.FIRST_COMPLETED)
                    if pump.done() and pump.exception() is not None:
                        log.error("MQTT intake stopped", exc_info=pump.exception())
                    pump.cancel()
                    stop.cancel()
                    with contextlib.suppress(asyncio.CancelledError):
                        await pump
                    for task in list(self._subscribing):
                        task.cancel()
                    return
            except (OSError, MqttError) as exc:
                # The first connection failed (later ones are the client's own reconnects).
                self.last_error = f"cannot connect: {exc}"
                log.warning("MQTT %s; retrying", self.last_error)
            except BaseException:
                if not self._stopping.is_set():
                    # the client's own tasks failed (its TaskGroup cancels us): say so, loudly
                    self.last_error = "MQTT client stopped unexpectedly"
                    log.exception("%s", self.last_error)
                    self._mark_disconnected()
                raise
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._stopping.wait(), backoff.next_delay())

    async def _pump(self, client: Client) -> None:
        on_message = self._on_message
        while True:
            first = await client.next_message()
            for m in (first, *client.drain_queued(_PUMP_BATCH)):
                wait = on_message(m.topic, m.payload, m.packet_id or 0, m.qos, m.generation)
                if wait is not None:
                    await wait

    def _handle_connect(self, session_present: bool) -> None:
        log.info(
            "connected to mqtt://%s:%s (session present: %s)",
            self._address.host,
            self._address.port,
            session_present,
        )
        # Subscribing again on a resumed session is harmless and repairs a session the broker
        # lost (e.g. restarted without persistence); the SUBACK tells whether QoS 1 is granted.
        task = asyncio.get_running_loop().create_task(self._subscribe())
        self._subscribing.add(task)
        task.add_done_callback(self._subscribing.discard)

    async def _subscribe(self) -> None:
        client = self._client
        assert client is not None
        generation = client.generation
        refused: list[str] = []
        try:
            for f in self._filters:
                granted = await client.subscribe(f, qos=1)
                if granted != 1:
                    refused.append(f"{f}: granted QoS {granted}")
        except SubscribeRefused as exc:
            refused += [
                f"{f}: refused {r}" for f, r in zip(exc.topic_filters, exc.reasons, strict=True)
            ]
        except (ConnectionLost, ConnectRefused):
            return  # the connection went away: the next one subscribes again
        if generation != client.generation:
            return
        if refused:
            self.last_error = "subscription not granted at QoS 1: " + "; ".join(refused)
            log.error("%s", self.last_error)
            return
        self.last_error = None
        log.info("subscribed at QoS 1: %s", ", ".join(self._filters))
        self.connected.set()
        instruments.BROKER_CONNECTED.set(1)

    def _handle_disconnect(self) -> None:
        self._mark_disconnected()
        if self._stopping is not None and not self._stopping.is_set():
            self.last_error = "disconnected: connection lost"
            log.warning("MQTT %s; reconnecting", self.last_error)

    def _mark_disconnected(self) -> None:
        self.connected.clear()
        instruments.BROKER_CONNECTED.set(0)
