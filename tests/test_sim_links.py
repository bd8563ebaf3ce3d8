"""The simulators' connections (``_LinkPool``/``_Link`` on mqttclient) against the real broker:
bounded publishing, a storm's cut (will, automatic reconnect), a retired device's link (will,
stays down) and its revival; a broker that cannot be reached ends the start with an error."""

from __future__ import annotations

import asyncio
import random
import uuid

import pytest

from ioc.core.settings import MqttAddress
from ioc.embedded.ports import free_port
from ioc.simulators.runner import SimulationError, _Link, _LinkPool
from mqttclient import Client, Message
from tests.conftest import eventually
from tests.test_mqtt_client import _addr


async def _take(client: Client, n: int) -> list[Message]:
    async with asyncio.timeout(30):
        return [await client.next_message() for _ in range(n)]


async def test_link_publishes_bounded_survives_a_cut_and_a_retirement(mqtt_url: str) -> None:
    host, port = _addr(mqtt_url)
    tag = uuid.uuid4().hex[:10]
    status, data = f"simlinks/{tag}/status", f"simlinks/{tag}/data"
    ups: list[_Link] = []
    downs: list[_Link] = []
    async with Client(host, port, client_id=f"simlinks-watch-{tag}", clean_start=True) as watch:
        await watch.subscribe(f"simlinks/{tag}/#", qos=1)
        async with _LinkPool(
            MqttAddress(mqtt_url),
            keepalive_s=30,
            max_outstanding=10,
            on_up=ups.append,
            on_down=downs.append,
        ) as pool:
            link = pool.add(f"simlinks-{tag}", [], will_topic=status)
            await pool.start()
            assert link.up.is_set() and ups == [link]
            peak = 0
            for i in range(50):
                await pool.ready(link)
                link.publish(data, f"{i}".encode())
                peak = max(peak, link.outstanding)
            assert peak <= 10  # the producer waited for space
            assert await pool.drain(30) == 0 and pool.acked == 50
            assert [m.payload for m in await _take(watch, 50)] == [
                f"{i}".encode() for i in range(50)
            ]

            # a storm: cut without DISCONNECT; the will fires, the link comes back by itself
            assert pool.storm(1.0, random.Random(1)) == 1
            assert (await _take(watch, 1))[0].payload == b"offline"

            async def reconnected() -> bool:
                return link.connects == 2 and link.up.is_set()

            await eventually(reconnected)
            assert pool.reconnects == 1 and downs == [link]

            # a device going dark: its messages leave first, then the will; it stays down
            link.publish(data, b"last words")
            pool.retire(link)
            got = await _take(watch, 2)
            assert [m.payload for m in got] == [b"last words", b"offline"]
            await asyncio.sleep(0.3)  # several reconnect backoffs: it did not come back
            assert not link.up.is_set() and link.connects == 2
            pool.revive(link)

            async def revived() -> bool:
                return link.connects == 3 and link.up.is_set()

            await eventually(revived)
            assert pool.refused == 0


async def test_start_fails_plainly_when_the_broker_cannot_be_reached() -> None:
    port = free_port()  # nothing listens there
    nothing = list[_Link]().append
    async with _LinkPool(
        MqttAddress(f"mqtt://127.0.0.1:{port}"),
        keepalive_s=30,
        max_outstanding=10,
        on_up=nothing,
        on_down=nothing,
    ) as pool:
        pool.add("simlinks-unreachable", [])
        with pytest.raises(
            SimulationError, match=rf"cannot connect simlinks-unreachable to 127\.0\.0\.1:{port}"
        ):
            await pool.start(attempts=2, timeout_s=5.0)
