"""One asyncio MQTT v5 client for the whole system, on the ``mqtt5`` sans-I/O codec (Rust).

The public surface is small on purpose (aiomqtt-style): :class:`Client` (an async context
manager), :class:`Message` (a frozen record of one incoming PUBLISH) and the typed errors.
"""

from mqttclient._client import (
    Client,
    ConnectionLost,
    ConnectRefused,
    ConnectTimeout,
    Message,
    MqttError,
    PacketTooLarge,
    ProtocolError,
    PublishQueueFull,
    PublishRefused,
    QoS,
    SubscribeRefused,
    Will,
)

__all__ = [
    "Client",
    "ConnectRefused",
    "ConnectTimeout",
    "ConnectionLost",
    "Message",
    "MqttError",
    "PacketTooLarge",
    "ProtocolError",
    "PublishQueueFull",
    "PublishRefused",
    "QoS",
    "SubscribeRefused",
    "Will",
]
