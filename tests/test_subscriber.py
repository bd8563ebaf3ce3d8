"""The MQTT subscriber on the real broker: acknowledgements belong to one connection."""

from __future__ import annotations

import threading
import time
import uuid

import paho.mqtt.client as mqtt
from paho.mqtt.packettypes import PacketTypes
from paho.mqtt.properties import Properties

from ioc.core.settings import MqttAddress
from ioc.ingest.subscriber import MqttSubscriber
from tests.conftest import MqttPublisher


def test_ack_from_an_old_connection_is_not_sent_and_the_message_comes_back(
    mqtt_url: str, topic_prefix: str, publisher: MqttPublisher
) -> None:
    got: list[tuple[bytes, int, int]] = []
    arrived = threading.Condition()

    def on_message(topic: str, payload: bytes, mid: int, qos: int, generation: int) -> None:
        with arrived:
            got.append((payload, mid, generation))
            arrived.notify_all()

    client_id = f"sub-{uuid.uuid4().hex[:8]}"
    sub = MqttSubscriber(
        MqttAddress(mqtt_url),
        client_id=client_id,
        topic_filters=[f"{topic_prefix}/#"],
        on_message=on_message,
        receive_maximum=100,
        session_expiry_s=60,
    )
    sub.start()
    try:
        assert sub.connected.wait(20)
        publisher.publish(f"{topic_prefix}/x", b"first")
        with arrived:
            assert arrived.wait_for(lambda: len(got) == 1, timeout=20)
        _first, mid, generation = got[0]
        # Another client takes the session over: the broker drops our connection; paho
        # reconnects (taking it back) on a new connection.
        addr = MqttAddress(mqtt_url)
        thief = mqtt.Client(
            mqtt.CallbackAPIVersion.VERSION2, client_id=client_id, protocol=mqtt.MQTTv5
        )
        keep = Properties(PacketTypes.CONNECT)
        keep.SessionExpiryInterval = 60  # without it the session would end with the thief
        thief.connect(addr.host, addr.port, clean_start=False, properties=keep)
        thief.disconnect()
        deadline = time.monotonic() + 30
        while sub.generation == generation and time.monotonic() < deadline:
            time.sleep(0.02)
        assert sub.generation != generation
        assert sub.ack(mid, 1, generation) is False  # never sent on the new connection
        # Not acknowledged, so the broker delivers it again, on the new connection.
        with arrived:
            assert arrived.wait_for(lambda: len(got) >= 2, timeout=30)
        again, new_mid, new_generation = got[-1]
        assert again == b"first" and new_generation == sub.generation
        assert sub.ack(new_mid, 1, new_generation) is True
    finally:
        sub.stop()
