"""The embedded broker's readiness probe: a raw MQTT v5 CONNECT/CONNACK (stdlib only)."""

from __future__ import annotations

import socket
import threading
from collections.abc import Iterator

import pytest

from ioc.core.settings import MqttAddress
from ioc.embedded.mosquitto import _remaining_length, probe


def test_remaining_length_is_the_mqtt_variable_byte_integer() -> None:
    # MQTT v5 §1.5.5: 127 → 7F, 128 → 80 01, 16383 → FF 7F, 16384 → 80 80 01
    assert _remaining_length(0) == b"\x00"
    assert _remaining_length(127) == b"\x7f"
    assert _remaining_length(128) == b"\x80\x01"
    assert _remaining_length(16383) == b"\xff\x7f"
    assert _remaining_length(16384) == b"\x80\x80\x01"


def test_the_real_broker_accepts_the_probe(mqtt_url: str) -> None:
    broker = MqttAddress(mqtt_url)
    assert probe(broker.host, broker.port)


@pytest.fixture
def mute_listener() -> Iterator[int]:
    """A TCP port that accepts and closes at once: something is there, but not a broker."""
    server = socket.create_server(("127.0.0.1", 0))
    port = server.getsockname()[1]

    def serve() -> None:
        with server:
            conn, _ = server.accept()
            conn.close()

    thread = threading.Thread(target=serve, daemon=True)  # test scaffolding only
    thread.start()
    yield port
    thread.join(timeout=5)


def test_a_listener_that_is_not_a_broker_is_not_ready(mute_listener: int) -> None:
    assert not probe("127.0.0.1", mute_listener)


def test_nothing_listening_is_not_ready() -> None:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]  # bound, never listening: connection refused
        assert not probe("127.0.0.1", port)
