"""The MQTT side of intake: one paho-mqtt client, persistent MQTT v5 session, manual PUBACK.

paho runs its network loop in its own thread; each message is decoded right there (once) and
handed to the writer. Acknowledgements are sent by the writer after COMMIT through ``ack``.
paho-mqtt is used rather than aiomqtt because it has a public ``manual_ack`` switch, and because
measurement showed its callback path is the cheaper one per message (docs/benchmarks.md).
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable

import paho.mqtt.client as mqtt
from paho.mqtt.packettypes import PacketTypes
from paho.mqtt.properties import Properties
from paho.mqtt.reasoncodes import ReasonCode
from paho.mqtt.subscribeoptions import SubscribeOptions

from ingest import instruments
from ioc.settings import MqttAddress

log = logging.getLogger(__name__)

OnMessage = Callable[[str, bytes, int, int, int], None]  # topic, payload, mid, qos, generation


class MqttSubscriber:
    """paho client wrapper. Messages are stamped with the connection they arrived on
    (``generation``): a PUBACK is only sent on that same connection. Packet ids are per
    connection — after a reconnect onto a lost session the broker numbers new messages from 1
    again, and acking an old id there would acknowledge a message not yet committed."""

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
        self._filters = topic_filters
        self._on_message = on_message
        self._receive_maximum = receive_maximum
        self._session_expiry_s = session_expiry_s
        self._keepalive_s = keepalive_s
        # Set once the broker granted every subscription at QoS 1 (SUBACK), not on CONNACK:
        # before that nothing arrives, and a QoS 0 grant would silently void durability.
        self.connected = threading.Event()
        self.last_error: str | None = None
        self.generation = 0
        self._ack_lock = threading.Lock()
        self._acking = False  # True between SUBACK and the next disconnect
        client = mqtt.Client(
            mqtt.CallbackAPIVersion.VERSION2,
            client_id=client_id,
            protocol=mqtt.MQTTv5,
            manual_ack=True,
        )
        address.configure(client)
        client.reconnect_delay_set(min_delay=1, max_delay=15)
        client.on_connect = self._handle_connect
        client.on_subscribe = self._handle_subscribe
        client.on_disconnect = self._handle_disconnect
        client.on_message = self._handle_message
        self._client = client

    def start(self) -> None:
        props = Properties(PacketTypes.CONNECT)
        props.SessionExpiryInterval = self._session_expiry_s
        # Our Receive Maximum is the broker's in-flight window towards us. With manual acks the
        # broker's default (20 for mosquitto) would cap every batch at 20 messages.
        props.ReceiveMaximum = self._receive_maximum
        self._client.connect_async(
            self._address.host,
            self._address.port,
            keepalive=self._keepalive_s,
            clean_start=False,
            properties=props,
        )
        self._client.loop_start()

    def ack(self, mid: int, qos: int, generation: int) -> bool:
        """PUBACK on the connection the message came on; False (not sent) if that is gone —
        the broker then redelivers the message and the primary key absorbs the duplicate."""
        if qos == 0:
            return True
        with self._ack_lock:
            if generation != self.generation or not self._acking:
                return False
            self._client.ack(mid, qos)
            return True

    def stop(self) -> None:
        """Send the queued PUBACKs, then DISCONNECT (session kept), then stop the thread."""
        self._client.disconnect()
        self._client.loop_stop()
        self.connected.clear()
        instruments.BROKER_CONNECTED.set(0)

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
            log.error("%s", self.last_error)
            return
        log.info(
            "connected to mqtt://%s:%s (session present: %s)",
            self._address.host,
            self._address.port,
            flags.session_present,
        )
        with self._ack_lock:
            self._acking = True
        # Subscribing again on a resumed session is harmless and repairs a session the broker
        # lost (e.g. restarted without persistence).
        options = SubscribeOptions(qos=1)
        client.subscribe([(f, options) for f in self._filters])

    def _handle_subscribe(
        self,
        client: mqtt.Client,
        userdata: object,
        mid: int,
        reason_codes: list[ReasonCode],
        properties: Properties | None,
    ) -> None:
        refused = [
            f"{f}: {rc}"
            for f, rc in zip(self._filters, reason_codes, strict=False)
            if rc.value != 1
        ]
        if refused:
            self.last_error = "subscription not granted at QoS 1: " + "; ".join(refused)
            log.error("%s", self.last_error)
            return
        self.last_error = None
        log.info("subscribed at QoS 1: %s", ", ".join(self._filters))
        self.connected.set()
        instruments.BROKER_CONNECTED.set(1)

    def _handle_disconnect(
        self,
        client: mqtt.Client,
        userdata: object,
        flags: mqtt.DisconnectFlags,
        reason: ReasonCode,
        properties: Properties | None,
    ) -> None:
        with self._ack_lock:
            self.generation += 1
            self._acking = False
        self.connected.clear()
        instruments.BROKER_CONNECTED.set(0)
        if reason.is_failure:
            self.last_error = f"disconnected: {reason}"
            log.warning("MQTT %s; paho reconnects", self.last_error)

    def _handle_message(self, client: mqtt.Client, userdata: object, msg: mqtt.MQTTMessage) -> None:
        # paho hands us bytes; the annotation also allows bytearray.
        self._on_message(
            msg.topic,
            msg.payload,  # type: ignore[arg-type]
            msg.mid,
            msg.qos,
            self.generation,
        )
