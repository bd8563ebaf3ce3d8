"""mqttclient's outgoing QoS 1 window against a scripted broker (it announces a small Receive
Maximum and acknowledges only when the test says so), so every step is observed, not timed;
then the same window under 1,000 publishers against the real Mosquitto."""

from __future__ import annotations

import asyncio
import functools
import uuid
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

import mqtt5
import pytest

from ioc.embedded.ports import LOOPBACK
from mqttclient import (
    Client,
    ConnectionLost,
    ConnectTimeout,
    PublishQueueFull,
    PublishRefused,
    SubscribeRefused,
)
from tests.conftest import eventually
from tests.test_mqtt_client import _addr


class ScriptedBroker:
    """Accepts connections, answers CONNECT with ``receive_max`` (or never, when ``silent``),
    records every PUBLISH and acknowledges one only through :meth:`ack`."""

    def __init__(self, receive_max: int, *, silent: bool = False, suback: int = 1) -> None:
        self.receive_max = receive_max
        self.silent = silent
        self.suback = suback  # the reason code of every SUBACK
        self.published: list[mqtt5.PublishPacket] = []
        self.connects = 0
        self._writers: list[asyncio.StreamWriter] = []
        self.port = 0

    async def _serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self._writers.append(writer)
        buffer = bytearray()
        while chunk := await reader.read(65536):
            buffer += chunk
            while True:
                try:
                    packet, used = mqtt5.read(memoryview(buffer))
                except IndexError:
                    break
                del buffer[:used]
                if isinstance(packet, mqtt5.ConnectPacket):
                    self.connects += 1
                    if not self.silent:
                        writer.write(mqtt5.ConnAckPacket(receive_max=self.receive_max).write())
                elif isinstance(packet, mqtt5.PublishPacket):
                    self.published.append(packet)
                elif isinstance(packet, mqtt5.SubscribePacket):
                    codes = [mqtt5.SubAckReasonCode(self.suback)] * len(packet.topic_filters)
                    writer.write(mqtt5.SubAckPacket(packet.packet_id, codes).write())
                elif isinstance(packet, mqtt5.PingReqPacket):
                    writer.write(mqtt5.PingRespPacket().write())

    def ack(self, packet: mqtt5.PublishPacket, reason: int = 0) -> None:
        code = mqtt5.PubAckReasonCode(reason)
        self._writers[-1].write(mqtt5.PubAckPacket(packet.packet_id, reason_code=code).write())

    def payloads(self) -> list[bytes]:
        return [p.payload for p in self.published]

    @asynccontextmanager
    async def running(self) -> AsyncIterator[ScriptedBroker]:
        server = await asyncio.start_server(self._serve, LOOPBACK, 0)
        self.port = server.sockets[0].getsockname()[1]
        try:
            yield self
        finally:
            for w in self._writers:
                w.transport.abort()
            server.close()


def _client(port: int, **options: object) -> Client:
    return Client(
        LOOPBACK,
        port,
        client_id=f"window-{uuid.uuid4().hex[:8]}",
        clean_start=True,
        session_expiry_s=0,
        **options,  # type: ignore[arg-type]
    )


async def _count(broker: ScriptedBroker, n: int) -> bool:
    return len(broker.published) >= n


async def test_one_puback_lets_out_exactly_the_next_queued_publish() -> None:
    async with ScriptedBroker(receive_max=2).running() as broker, _client(broker.port) as c:
        tasks = [asyncio.create_task(c.publish("w/t", f"{i}".encode())) for i in range(8)]
        await eventually(lambda: _count(broker, 2))
        assert broker.payloads() == [b"0", b"1"]
        assert c.outstanding == 8 and len(c._inflight) == 2
        tasks[3].cancel()  # a caller that gives up while queued: its message is never sent

        broker.ack(broker.published[0])
        await tasks[0]
        await eventually(lambda: _count(broker, 3))
        assert broker.payloads() == [b"0", b"1", b"2"]  # the oldest waiter, and only it
        assert len(c._inflight) == 2
        assert [t.done() for t in tasks] == [True, False, False, True] + [False] * 4

        broker.ack(broker.published[1])
        await eventually(lambda: _count(broker, 4))
        assert broker.payloads()[3] == b"4"  # 3 was cancelled: skipped

        for acked in range(3, 8):  # acknowledge the rest one by one; each lets out the next
            broker.ack(broker.published[acked - 1])
            await eventually(functools.partial(_count, broker, min(acked + 2, 7)))
            assert len(c._inflight) <= 2
        await asyncio.gather(*(t for i, t in enumerate(tasks) if i != 3))
        assert broker.payloads() == [f"{i}".encode() for i in range(8) if i != 3]
        assert c.outstanding == 0


async def test_publish_nowait_queues_within_its_bound_and_reports_refusals() -> None:
    async with (
        ScriptedBroker(receive_max=2).running() as broker,
        _client(broker.port, max_queued_publishes=3) as c,
    ):
        futures = [c.publish_nowait("w/n", f"{i}".encode()) for i in range(5)]
        assert c.outstanding == 5  # 2 in the window, 3 queued: the bound
        with pytest.raises(PublishQueueFull) as full:
            c.publish_nowait("w/n", b"one too many")
        assert full.value.limit == 3
        await eventually(lambda: _count(broker, 2))
        broker.ack(broker.published[0], reason=0x87)  # not authorised
        with pytest.raises(PublishRefused) as refused:
            await futures[0]
        assert refused.value.reason_code == 0x87 and refused.value.topic == "w/n"
        for k in range(1, 5):
            await eventually(functools.partial(_count, broker, min(k + 2, 5)))
            broker.ack(broker.published[k])
        await asyncio.gather(*futures[1:])
        assert c.outstanding == 0


async def test_publishes_queued_at_close_fail_with_connection_lost() -> None:
    async with ScriptedBroker(receive_max=1).running() as broker:
        async with _client(broker.port, disconnect_timeout_s=0.05) as c:
            futures = [c.publish_nowait("w/c", b"x") for _ in range(3)]
        for f in futures:
            with pytest.raises(ConnectionLost):
                await f


async def test_a_subscribe_refused_by_the_broker_is_a_typed_error() -> None:
    async with (
        ScriptedBroker(receive_max=5, suback=0x87).running() as broker,
        _client(broker.port) as c,
    ):
        with pytest.raises(SubscribeRefused) as refused:
            await c.subscribe("w/forbidden", qos=1)
        assert refused.value.topic_filters == ["w/forbidden"]
        assert refused.value.reason_codes == [0x87]
        assert c.connected  # a refusal is not a connection fault
        assert "w/forbidden" not in c._subscriptions  # not renewed after a reconnect


async def test_connect_timeout_is_a_typed_error() -> None:
    async with ScriptedBroker(receive_max=10, silent=True).running() as broker:
        with pytest.raises(ConnectTimeout) as timed_out:
            async with _client(broker.port, connect_timeout_s=0.2):
                pass
        assert isinstance(timed_out.value, TimeoutError)
        assert (timed_out.value.port, timed_out.value.timeout_s) == (broker.port, 0.2)
        assert broker.connects == 1
    with pytest.raises(ValueError, match="connect_timeout_s"):
        _client(1883, connect_timeout_s=0)


async def test_a_thousand_publishers_share_the_window_in_order(mqtt_url: str) -> None:
    """1,000 coroutines each awaiting its PUBACK (the load that woke every waiter on every PUBACK
    when the window was an Event): all acknowledged, in the order they called, the window never
    above the broker's Receive Maximum."""
    host, port = _addr(mqtt_url)
    topic = f"conformance/{uuid.uuid4().hex[:10]}/herd"
    n = 1000
    async with (
        Client(host, port, client_id=f"herd-sub-{uuid.uuid4().hex[:8]}", clean_start=True) as sub,
        Client(host, port, client_id=f"herd-pub-{uuid.uuid4().hex[:8]}", clean_start=True) as c,
    ):
        await sub.subscribe(topic, qos=1)
        peak = 0

        def watch(*_: object) -> None:
            nonlocal peak
            peak = max(peak, len(c._inflight))

        tasks = [asyncio.create_task(c.publish(topic, f"{i}".encode())) for i in range(n)]
        for t in tasks:
            t.add_done_callback(watch)
        async with asyncio.timeout(120):
            await asyncio.gather(*tasks)
            got = [(await sub.next_message()).payload for _ in range(n)]
    assert got == [f"{i}".encode() for i in range(n)]
    assert 0 < peak <= c._broker_receive_max
