"""mqttclient: a QoS 1 publish resent after a reconnect keeps its properties (the dispatch
channel's ``idempotency-key`` user property must survive redelivery). paho, an independent
client, reads what the broker forwarded."""

from __future__ import annotations

import asyncio
import uuid

from mqttclient import Client
from tests.conftest import eventually
from tests.proxy import TcpProxy
from tests.test_dispatch import subscribed, user_properties
from tests.test_mqtt_client import _addr


async def _value(value: bool) -> bool:
    return value


async def test_publish_queued_while_disconnected_is_resent_with_its_properties(
    mqtt_url: str,
) -> None:
    host, port = _addr(mqtt_url)
    topic = f"conformance/{uuid.uuid4().hex[:10]}/props"
    proxy = TcpProxy(host, port)
    await proxy.start()
    try:
        async with (
            subscribed(mqtt_url, topic) as peer,
            Client(
                "127.0.0.1",
                proxy.port,
                client_id=f"conf-props-{uuid.uuid4().hex[:8]}",
                clean_start=True,
                session_expiry_s=0,
                backoff_initial_s=0.01,
                backoff_maximum_s=0.05,
            ) as c,
        ):
            await proxy.stop()
            await eventually(lambda: _value(not c.connected))
            sending = asyncio.create_task(
                c.publish(
                    topic,
                    b'{"id":"k-1"}',
                    qos=1,
                    content_type="application/json",
                    payload_format_indicator=1,
                    user_properties=[("idempotency-key", "k-1")],
                )
            )
            await asyncio.sleep(0.1)
            assert not sending.done()  # no connection: held in flight, not acknowledged
            await proxy.start()  # same port: the client reconnects and resends with DUP
            await asyncio.wait_for(sending, 30)
            await eventually(lambda: _value(len(peer.messages) >= 1))
        (got,) = peer.messages
        assert got.payload == b'{"id":"k-1"}'
        assert user_properties(got) == {"idempotency-key": "k-1"}
        assert got.properties is not None
        assert got.properties.ContentType == "application/json"
    finally:
        await proxy.stop()
