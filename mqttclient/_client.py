"""The client's implementation: one connection at a time, reconnected with backoff, no threads.

Bounds and policies (each stated where it is enforced):
- incoming messages: an ``asyncio.Queue`` of ``max_queued`` records; when full the reader stops
  reading, so TCP pushes back on the broker (which also never sends more than our Receive
  Maximum unacknowledged QoS 1 messages);
- outgoing QoS 1: at most the broker's Receive Maximum in flight; beyond that, publishes wait in
  one FIFO queue (``publish`` callers: one entry each, so bounded by the callers;
  ``publish_nowait``: at most ``max_queued_publishes`` entries, then :class:`PublishQueueFull`).
  Each PUBACK sends exactly the next queued publish: one freed slot, one message, no herd of
  woken waiters;
- outgoing bytes (PUBLISHes and PUBACKs): collected and written together once per event-loop
  turn; the socket's buffer holds at most a window of publishes and a window of acks;
- read buffer: one packet plus one socket read (the broker honours our Maximum Packet Size).
"""

from __future__ import annotations

import asyncio
import contextlib
import random
import ssl as ssl_module
import time
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass
from types import TracebackType
from typing import NamedTuple

import mqtt5
from mqtt5 import QoS, Will

_READ_CHUNK = 256 * 1024


class MqttError(Exception):
    """Base of every error this client raises."""


class ConnectRefused(MqttError):
    def __init__(self, reason_code: int, reason: str | None = None) -> None:
        super().__init__(f"CONNECT refused: reason code 0x{reason_code:02x} {reason or ''}".strip())
        self.reason_code = reason_code
        self.reason = reason


def suback_reason(code: int) -> str:
    """A SUBACK reason code as ``0x87 not authorized`` (MQTT v5 §3.9.3)."""
    try:
        name = mqtt5.SubAckReasonCode(code).name.lower().replace("_", " ")
    except ValueError:
        name = "unknown reason code"
    return f"0x{code:02x} {name}"


class SubscribeRefused(MqttError):
    """A SUBACK with a failure code; ``reasons`` are the codes in words, one per filter."""

    def __init__(self, topic_filters: list[str], reason_codes: list[int]) -> None:
        self.topic_filters = topic_filters
        self.reason_codes = reason_codes
        self.reasons = [suback_reason(c) for c in reason_codes]
        pairs = zip(topic_filters, self.reasons, strict=True)
        super().__init__("SUBSCRIBE refused: " + "; ".join(f"{f}: {r}" for f, r in pairs))


class PublishRefused(MqttError):
    def __init__(self, topic: str, reason_code: int) -> None:
        super().__init__(f"PUBLISH to {topic!r} refused: reason code 0x{reason_code:02x}")
        self.topic = topic
        self.reason_code = reason_code


class PacketTooLarge(MqttError):
    def __init__(self, size: int, maximum: int) -> None:
        super().__init__(
            f"packet of {size} bytes exceeds the broker's Maximum Packet Size {maximum}"
        )
        self.size = size
        self.maximum = maximum


class ProtocolError(MqttError):
    def __init__(self, detail: str) -> None:
        super().__init__(f"MQTT protocol error: {detail}")
        self.detail = detail


class ConnectionLost(MqttError):
    """Raised by calls that need a connection when the client has been closed."""


class ConnectTimeout(MqttError, TimeoutError):
    """No CONNACK (or no TCP/TLS connection) within ``connect_timeout_s``."""

    def __init__(self, host: str, port: int, timeout_s: float) -> None:
        super().__init__(f"no CONNACK from {host}:{port} within {timeout_s:g} s")
        self.host, self.port, self.timeout_s = host, port, timeout_s


class PublishQueueFull(MqttError):
    """``publish_nowait`` with ``max_queued_publishes`` publishes already waiting for a slot."""

    def __init__(self, limit: int) -> None:
        super().__init__(f"{limit} publishes already wait for the in-flight window")
        self.limit = limit


@dataclass(frozen=True, slots=True)
class Message:
    """One incoming PUBLISH. ``generation`` names the connection it arrived on: acknowledging it
    after a reconnect is a no-op, because its packet id means nothing on the new connection."""

    topic: str
    payload: bytes
    qos: int
    retain: bool
    duplicate: bool
    packet_id: int | None
    generation: int


class _Message(NamedTuple):
    """What one publish sends; the packet id is given when it enters the in-flight window."""

    topic: str
    payload: bytes
    retain: bool
    content_type: str | None
    payload_format_indicator: int
    user_properties: list[tuple[str, str]] | None

    def packet(self, qos: QoS, packet_id: int | None = None) -> mqtt5.PublishPacket:
        return mqtt5.PublishPacket(
            self.topic,
            self.payload,
            qos=qos,
            retain=self.retain,
            packet_id=packet_id,
            content_type=self.content_type,
            payload_format_indicator=self.payload_format_indicator,
            user_properties=self.user_properties,
        )


# A QoS 1 publish waiting for a slot in the in-flight window, and the future its PUBACK resolves.
_Queued = tuple[_Message, asyncio.Future[None]]


class _Backoff:
    # Duplicated from ioc/core/backoff.py on purpose (8 lines): this package must not import ioc.
    def __init__(self, initial_s: float, maximum_s: float) -> None:
        self._initial, self._maximum, self._next = initial_s, maximum_s, initial_s

    def next_delay(self) -> float:
        delay = random.uniform(0, self._next)
        self._next = min(self._next * 2, self._maximum)
        return delay

    def reset(self) -> None:
        self._next = self._initial


class Client:
    """An MQTT v5 client. ``async with Client(...) as c`` connects (raising :class:`ConnectRefused`
    or ``OSError`` if the first attempt fails) and runs its loops in one TaskGroup; leaving the
    block sends DISCONNECT after waiting up to ``disconnect_timeout_s`` for in-flight publishes."""

    def __init__(
        self,
        host: str,
        port: int = 1883,
        *,
        client_id: str,
        username: str | None = None,
        password: str | None = None,
        ssl: ssl_module.SSLContext | None = None,
        clean_start: bool = False,
        session_expiry_s: int = 3600,
        keep_alive_s: int = 30,
        receive_maximum: int = 1000,
        max_packet_size: int | None = None,
        max_queued: int = 10_000,
        will: Will | None = None,
        manual_ack: bool = False,
        reconnect: bool = True,
        backoff_initial_s: float = 0.1,
        backoff_maximum_s: float = 10.0,
        disconnect_timeout_s: float = 5.0,
        connect_timeout_s: float = 30.0,
        max_queued_publishes: int = 100_000,
        on_connect: Callable[[bool], None] | None = None,
        on_disconnect: Callable[[], None] | None = None,
    ) -> None:
        """``on_connect(session_present)`` runs after each CONNACK accepted (first connection and
        every reconnect), ``on_disconnect()`` when a connection is lost or closed; both on the
        event loop, so keep them quick. A PINGREQ unanswered for ``keep_alive_s`` while the
        reader is not paused by backpressure and nothing else arrived drops the connection (a
        half-open link is detected and the client reconnects). Each connection attempt (TCP, TLS
        and CONNACK) gets ``connect_timeout_s``, then fails with :class:`ConnectTimeout`."""
        if connect_timeout_s <= 0:
            raise ValueError(f"connect_timeout_s must be positive, got {connect_timeout_s}")
        if max_queued_publishes < 1:
            raise ValueError(f"max_queued_publishes must be ≥ 1, got {max_queued_publishes}")
        self._host, self._port, self._ssl = host, port, ssl
        self._connect = mqtt5.ConnectPacket(
            client_id,
            username=username,
            password=password.encode() if password is not None else None,
            clean_start=clean_start,
            will=will,
            keep_alive=keep_alive_s,
            session_expiry_interval=session_expiry_s,
            receive_max=receive_maximum,
            max_packet_size=max_packet_size,
        )
        self._keep_alive_s = keep_alive_s
        self._manual_ack = manual_ack
        self._reconnect = reconnect
        self._backoff = _Backoff(backoff_initial_s, backoff_maximum_s)
        self._disconnect_timeout_s = disconnect_timeout_s
        self._connect_timeout_s = connect_timeout_s
        self._max_queued_publishes = max_queued_publishes
        self._messages: asyncio.Queue[Message] = asyncio.Queue(max_queued)
        self._reader: asyncio.StreamReader | None = None
        self._writer: asyncio.StreamWriter | None = None
        self._generation = 0
        self._connected = asyncio.Event()
        self._closing = False
        self._session_present = False
        self._broker_receive_max = 65535
        self._broker_max_packet: int | None = None
        self._inflight: dict[int, tuple[mqtt5.PublishPacket, asyncio.Future[None]]] = {}
        self._queue: deque[_Queued] = deque()  # QoS 1 publishes waiting for a window slot
        self._idle = asyncio.Event()  # nothing queued, nothing in flight
        self._idle.set()
        self._requests: dict[int, tuple[list[str], asyncio.Future[list[int]]]] = {}
        self._subscriptions: dict[str, QoS] = {}
        self._next_id = 0
        self._out = bytearray()  # PUBLISHes and PUBACKs of this event-loop turn, written at its end
        self._flush_scheduled = False
        self._leftover = b""
        self._tasks: asyncio.TaskGroup | None = None
        self._loops: list[asyncio.Task[None]] = []
        self._fatal: BaseException | None = None
        self._on_connect = on_connect
        self._on_disconnect = on_disconnect
        self._ping_sent_at: float | None = None  # monotonic time of the unanswered PINGREQ
        self._read_since_ping = False
        self._paused = False  # the reader waits for room in the incoming queue
        self._stay_down = False  # drop_connection(stay_down=True): no reconnect until asked
        self._resume = asyncio.Event()  # reconnect_now(): skip the backoff (or the stay-down)

    # -- public -------------------------------------------------------------------------------

    @property
    def session_present(self) -> bool:
        """The CONNACK's Session Present flag of the current connection."""
        return self._session_present

    @property
    def connected(self) -> bool:
        """True while a connection is up (False between a loss and the next CONNACK)."""
        return self._connected.is_set()

    @property
    def outstanding(self) -> int:
        """QoS 1 publishes not yet acknowledged: queued for the window plus in flight."""
        return len(self._queue) + len(self._inflight)

    async def wait_connected(self) -> None:
        """Return once a connection is up (at once if it is)."""
        await self._connected.wait()

    @property
    def generation(self) -> int:
        """Counts connections; a :class:`Message` carries the one it arrived on."""
        return self._generation

    async def __aenter__(self) -> Client:
        await self._open()
        self._tasks = asyncio.TaskGroup()
        await self._tasks.__aenter__()
        name = self._connect.client_id
        self._loops = [
            self._tasks.create_task(self._run(), name=f"mqtt-connection:{name}"),
            self._tasks.create_task(self._keep_alive(), name=f"mqtt-keepalive:{name}"),
        ]
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        if self._connected.is_set():
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(self._disconnect_timeout_s):
                    await self._idle.wait()
        self._closing = True
        self._flush()
        if self._writer is not None and self._connected.is_set():
            with contextlib.suppress(OSError):
                self._writer.write(mqtt5.DisconnectPacket().write())
                await self._writer.drain()
        self._connection_closed()
        assert self._tasks is not None
        for task in self._loops:
            task.cancel()
        await self._tasks.__aexit__(None, None, None)
        futures = [f for _, f in self._inflight.values()] + [f for _, f in self._queue]
        self._queue.clear()
        for future in futures:
            if not future.done():
                future.set_exception(ConnectionLost("client closed before PUBACK"))

    def __aiter__(self) -> Client:
        return self

    async def __anext__(self) -> Message:
        return await self.next_message()

    async def next_message(self) -> Message:
        if self._fatal is not None:
            raise self._fatal
        return await self._messages.get()

    def drain_queued(self, limit: int) -> list[Message]:
        """Up to ``limit`` messages already queued, without waiting (for batching consumers)."""
        out: list[Message] = []
        while len(out) < limit:
            try:
                out.append(self._messages.get_nowait())
            except asyncio.QueueEmpty:
                break
        return out

    def ack(self, message: Message) -> None:
        """Queue the PUBACK for ``message`` (manual-ack mode). All acks queued in one event-loop
        turn go out in one socket write. A message from an earlier connection is ignored."""
        if message.packet_id is not None:
            self.ack_packet(message.packet_id, message.generation)

    def ack_packet(self, packet_id: int, generation: int) -> bool:
        """:meth:`ack` by packet id and connection generation (for consumers that keep those
        rather than the :class:`Message`). False, and nothing sent, when ``generation`` is not
        the current connection or no connection is up."""
        if generation != self._generation or not self._connected.is_set():
            return False
        self._out += mqtt5.PubAckPacket(packet_id).write()
        self._schedule_flush()
        return True

    def drop_connection(self, *, stay_down: bool = False) -> bool:
        """Abort the TCP connection at once, without DISCONNECT, as a device losing its link
        does: the broker publishes the Will and keeps the session. The client reconnects by its
        policy (backoff), or, with ``stay_down``, only once :meth:`reconnect_now` is called.
        Unacknowledged publishes stay in flight and are sent again with DUP after the
        reconnect. False when no connection was up (``stay_down`` still applies)."""
        writer = self._writer
        if writer is None or not self._connected.is_set():
            self._stay_down = self._stay_down or stay_down
            return False
        self._stay_down = stay_down
        self._resume.clear()
        writer.transport.abort()  # the reader sees EOF; the connection loop takes over
        self._connection_closed()
        return True

    def reconnect_now(self) -> None:
        """End a stay-down and skip the current backoff wait: connect again at once (no-op
        while connected)."""
        self._stay_down = False
        self._resume.set()

    async def subscribe(self, topic_filter: str, qos: int = 1) -> int:
        """Subscribe (``$share/<group>/<filter>`` for a shared subscription); raises
        :class:`SubscribeRefused` when the SUBACK carries a failure code, else returns the
        granted QoS (which may be lower than asked)."""
        (granted,) = await self._subscribe_on_connection({topic_filter: QoS(qos)})
        self._subscriptions[topic_filter] = QoS(qos)
        return granted

    async def publish(
        self,
        topic: str,
        payload: bytes,
        *,
        qos: int = 1,
        retain: bool = False,
        content_type: str | None = None,
        payload_format_indicator: int = 0,
        user_properties: list[tuple[str, str]] | None = None,
    ) -> None:
        """QoS 0 returns once written; QoS 1 returns when the PUBACK arrives (surviving reconnects:
        an unacknowledged publish is sent again with DUP set, with the same properties)."""
        if self._closing:
            raise ConnectionLost("client is closing")
        message = _Message(
            topic, payload, retain, content_type, payload_format_indicator, user_properties
        )
        if qos == 0:
            data = message.packet(QoS.AT_MOST_ONCE).write()
            self._check_size(len(data))
            await self._write(data)
            return
        if qos != 1:
            raise ValueError(f"qos must be 0 or 1, got {qos}")
        await self._enqueue(message)

    def publish_nowait(
        self,
        topic: str,
        payload: bytes,
        *,
        retain: bool = False,
        content_type: str | None = None,
        payload_format_indicator: int = 0,
        user_properties: list[tuple[str, str]] | None = None,
    ) -> asyncio.Future[None]:
        """A QoS 1 publish that does not wait: sent now if the in-flight window has room, else
        queued (FIFO); returns the future its PUBACK resolves (:class:`PublishRefused` on a
        failure code, :class:`ConnectionLost` if the client closes first). Raises
        :class:`PublishQueueFull` when ``max_queued_publishes`` already wait: bound what you
        have outstanding (:attr:`outstanding`) below it. Retrieve every future's result or
        exception (asyncio logs the ones never retrieved)."""
        if self._closing:
            raise ConnectionLost("client is closing")
        if len(self._queue) >= self._max_queued_publishes:
            raise PublishQueueFull(self._max_queued_publishes)
        return self._enqueue(
            _Message(
                topic, payload, retain, content_type, payload_format_indicator, user_properties
            )
        )

    def _enqueue(self, message: _Message) -> asyncio.Future[None]:
        if self._broker_max_packet is not None:  # refuse now, not when a slot frees
            self._check_size(len(message.packet(QoS.AT_LEAST_ONCE, packet_id=1).write()))
        future: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        self._idle.clear()
        if not self._queue and len(self._inflight) < self._broker_receive_max and self.connected:
            # room in the window and nobody waiting before us: straight out
            self._send_publish(message, future)
            self._schedule_flush()
        else:
            self._queue.append((message, future))
        return future

    def _send_publish(self, message: _Message, future: asyncio.Future[None]) -> None:
        """Into the window: a packet id, the in-flight table, this turn's outgoing bytes."""
        packet_id = self._allocate_id()
        packet = message.packet(QoS.AT_LEAST_ONCE, packet_id)
        self._out += packet.write()
        self._inflight[packet_id] = (packet, future)

    def _pump(self) -> None:
        """Move queued publishes into the in-flight window while it has room (FIFO)."""
        if not self._connected.is_set():
            return
        queue, inflight, limit = self._queue, self._inflight, self._broker_receive_max
        sent = False
        while queue and len(inflight) < limit:
            message, future = queue.popleft()
            if future.done():
                continue  # its caller was cancelled while it waited: never sent
            self._send_publish(message, future)
            sent = True
        if sent:
            self._schedule_flush()
        elif not queue and not inflight:
            self._idle.set()

    def _on_puback(self, packet: mqtt5.PubAckPacket) -> None:
        entry = self._inflight.pop(packet.packet_id, None)
        if entry is None:
            return
        publish, future = entry
        if not future.done():
            if int(packet.reason_code) >= 0x80:
                future.set_exception(PublishRefused(publish.topic, int(packet.reason_code)))
            else:
                future.set_result(None)
        if self._queue:
            self._pump()  # the freed slot goes to the next queued publish, and only to it
        elif not self._inflight:
            self._idle.set()

    # -- connection ---------------------------------------------------------------------------

    async def _open(self) -> None:
        try:
            async with asyncio.timeout(self._connect_timeout_s):
                await self._open_connection()
        except TimeoutError as e:
            if isinstance(e, ConnectTimeout):
                raise
            raise ConnectTimeout(self._host, self._port, self._connect_timeout_s) from None

    def _closed_before_connack(self, how: str) -> ConnectionResetError:
        # Under TLS 1.3 a broker that refuses our certificate (or wants one) sends its alert
        # after our side of the handshake is done, then closes; when our CONNECT is still
        # unread there, the reset may overtake the alert, so say what it likely means.
        hint = (
            " (over TLS: the broker may require a client certificate, or not trust ours)"
            if self._ssl is not None
            else ""
        )
        return ConnectionResetError(f"the broker {how} the connection before CONNACK{hint}")

    async def _open_connection(self) -> None:
        reader, writer = await asyncio.open_connection(self._host, self._port, ssl=self._ssl)
        try:
            writer.write(self._connect.write())
            buffer = bytearray()
            while True:
                try:
                    chunk = await reader.read(_READ_CHUNK)
                except ssl_module.SSLError:
                    raise  # the broker's TLS alert, e.g. TLSV13_ALERT_CERTIFICATE_REQUIRED
                except ConnectionResetError as e:
                    raise self._closed_before_connack("reset") from e
                if not chunk:
                    raise self._closed_before_connack("closed")
                buffer += chunk
                try:
                    packet, used = mqtt5.read(memoryview(buffer))
                except IndexError:
                    continue
                except ValueError as e:
                    raise ProtocolError(str(e)) from e
                break
            if not isinstance(packet, mqtt5.ConnAckPacket):
                raise ProtocolError(f"expected CONNACK, got {type(packet).__name__}")
            if int(packet.reason_code) >= 0x80:
                raise ConnectRefused(int(packet.reason_code), packet.reason_str)
        except BaseException:
            writer.close()
            raise
        self._reader, self._writer = reader, writer
        self._generation += 1
        self._out.clear()  # acks of the old connection must never reach the new one
        self._session_present = packet.session_present
        self._broker_receive_max = packet.receive_max
        self._broker_max_packet = packet.max_packet_size
        # Queued deliveries may arrive in the same read as the CONNACK: keep them for the reader.
        self._leftover = bytes(buffer[used:])
        if not packet.session_present and self._subscriptions:
            self._connected.set()
            # The broker forgot us (expired or restarted without persistence): subscribe again.
            for topic_filter, qos in self._subscriptions.items():
                self._send_subscribe({topic_filter: qos})
        for packet_id, (publish, _) in self._inflight.items():
            writer.write(
                mqtt5.PublishPacket(
                    publish.topic,
                    publish.payload,
                    qos=publish.qos,
                    retain=publish.retain,
                    packet_id=packet_id,
                    duplicate=True,
                    content_type=publish.content_type,
                    payload_format_indicator=publish.payload_format_indicator,
                    user_properties=publish.user_properties,
                ).write()
            )
        self._connected.set()
        self._ping_sent_at = None
        self._backoff.reset()
        self._pump()  # the window may have room (a larger Receive Maximum, or none was sent)
        if self._on_connect is not None:
            self._on_connect(packet.session_present)

    def _connection_closed(self) -> None:
        was_connected = self._connected.is_set()
        self._connected.clear()
        self._out.clear()  # in-flight publishes are resent from _inflight; acks are void
        if self._writer is not None:
            self._writer.close()
        self._reader = self._writer = None
        for _, future in self._requests.values():
            if not future.done():
                future.set_exception(ConnectionLost("connection lost before SUBACK"))
        self._requests.clear()
        if was_connected and self._on_disconnect is not None:
            self._on_disconnect()

    async def _run(self) -> None:
        while not self._closing:
            try:
                await self._read_loop()
            except (OSError, asyncio.IncompleteReadError, ProtocolError):
                pass
            self._connection_closed()
            if self._closing:
                return
            if not self._reconnect:
                self._fatal = ConnectionLost("connection lost and reconnect is off")
                return
            while not self._closing:
                if self._stay_down:
                    await self._resume.wait()
                else:
                    with contextlib.suppress(TimeoutError):
                        async with asyncio.timeout(self._backoff.next_delay()):
                            await self._resume.wait()
                self._resume.clear()
                if self._stay_down:
                    continue
                try:
                    await self._open()
                except (OSError, MqttError):  # refused, timed out, protocol: try again later
                    continue
                if self._stay_down:  # dropped for good while this attempt was under way
                    self.drop_connection(stay_down=True)
                    continue
                break

    async def _read_loop(self) -> None:
        reader = self._reader
        if reader is None:  # dropped (drop_connection) before this loop first ran
            raise ConnectionResetError("connection dropped")
        buffer = bytearray(self._leftover)
        self._leftover = b""
        pending = bool(buffer)
        while True:
            if not pending:
                chunk = await reader.read(_READ_CHUNK)
                if not chunk:
                    raise ConnectionResetError("broker closed the connection")
                buffer += chunk
                self._read_since_ping = True
            pending = False
            view = memoryview(buffer)
            offset = 0
            try:
                while True:
                    try:
                        packet, used = mqtt5.read(view[offset:])
                    except IndexError:
                        break
                    except ValueError as e:
                        raise ProtocolError(str(e)) from e
                    offset += used
                    if type(packet) is mqtt5.PubAckPacket:
                        self._on_puback(packet)  # the publisher's hot path: no coroutine
                    else:
                        await self._handle(packet)
            finally:
                view.release()
            del buffer[:offset]
            if self._out:
                # the publishes these PUBACKs let out, and our acks, leave now rather than one
                # loop turn later: the window is small (mosquitto: 20), so latency is throughput
                self._flush()

    async def _handle(self, packet: mqtt5.Packet) -> None:
        if isinstance(packet, mqtt5.PublishPacket):
            message = Message(
                packet.topic,
                packet.payload,
                int(packet.qos),
                packet.retain,
                packet.duplicate,
                packet.packet_id,
                self._generation,
            )
            if self._messages.full():
                self._paused = True  # the keep-alive must not mistake this for a dead link
                try:
                    await self._messages.put(message)  # backpressure: stop reading until consumed
                finally:
                    self._paused = False
            else:
                self._messages.put_nowait(message)
            if not self._manual_ack and int(packet.qos) == 1:
                self.ack(message)
        elif isinstance(packet, mqtt5.PubAckPacket):
            self._on_puback(packet)
        elif isinstance(packet, mqtt5.SubAckPacket):
            request = self._requests.pop(packet.packet_id, None)
            if request is not None and not request[1].done():
                request[1].set_result([int(code) for code in packet.reason_codes])
        elif isinstance(packet, mqtt5.DisconnectPacket):
            raise ConnectionResetError(f"broker sent DISCONNECT 0x{int(packet.reason_code):02x}")
        elif isinstance(packet, mqtt5.PingRespPacket):
            self._ping_sent_at = None
        else:
            raise ProtocolError(f"unexpected {type(packet).__name__}")

    async def _keep_alive(self) -> None:
        if self._keep_alive_s <= 0:
            return
        ping = mqtt5.PingReqPacket().write()
        while True:
            await asyncio.sleep(self._keep_alive_s / 2)
            if not self._connected.is_set() or self._writer is None:
                continue
            sent_at = self._ping_sent_at
            if sent_at is not None and time.monotonic() - sent_at >= self._keep_alive_s:
                if self._read_since_ping or self._paused:
                    # Bytes arrived (the PINGRESP is behind them) or we stopped reading: alive.
                    self._ping_sent_at = None
                else:
                    # Half-open link: no PINGRESP and nothing else for a whole keep-alive. Abort
                    # the transport; the reader sees EOF and the connection loop reconnects.
                    self._writer.transport.abort()
                    continue
            if self._ping_sent_at is None:
                self._ping_sent_at = time.monotonic()
                self._read_since_ping = False
            self._writer.write(ping)

    # -- helpers ------------------------------------------------------------------------------

    def _schedule_flush(self) -> None:
        if not self._flush_scheduled:
            self._flush_scheduled = True
            asyncio.get_running_loop().call_soon(self._flush)

    def _flush(self) -> None:
        self._flush_scheduled = False
        if self._out and self._writer is not None and self._connected.is_set():
            # hand the buffer over (the transport may keep a view of it) and start a new one
            data, self._out = self._out, bytearray()
            self._writer.write(data)
        else:
            self._out.clear()

    def _check_size(self, size: int) -> None:
        if self._broker_max_packet is not None and size > self._broker_max_packet:
            raise PacketTooLarge(size, self._broker_max_packet)

    def _allocate_id(self) -> int:
        for _ in range(65535):
            self._next_id = self._next_id % 65535 + 1
            if self._next_id not in self._inflight and self._next_id not in self._requests:
                return self._next_id
        raise ProtocolError("no free packet identifier")

    def _send_subscribe(self, filters: dict[str, QoS]) -> asyncio.Future[list[int]]:
        packet_id = self._allocate_id()
        future: asyncio.Future[list[int]] = asyncio.get_running_loop().create_future()
        self._requests[packet_id] = (list(filters), future)
        packet = mqtt5.SubscribePacket(
            packet_id, [mqtt5.TopicFilter(f, max_qos=q) for f, q in filters.items()]
        )
        assert self._writer is not None
        self._writer.write(packet.write())
        return future

    async def _subscribe_on_connection(self, filters: dict[str, QoS]) -> list[int]:
        await self._connected.wait()
        codes = await self._send_subscribe(filters)
        if any(code >= 0x80 for code in codes):
            raise SubscribeRefused(list(filters), codes)
        return codes

    async def _write(self, data: bytes) -> None:
        await self._connected.wait()
        assert self._writer is not None
        self._flush()  # after what this turn queued, in order
        self._writer.write(data)
        await self._writer.drain()
