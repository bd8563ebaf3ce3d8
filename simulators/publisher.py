"""A first, simple telemetry publisher for every device of the site (demo and smoke tests).

Each device publishes plausible readings from its kind's typical ranges on the contract topics
(QoS 1) and a retained ``online`` status. Realistic device models (tides, sunset switching,
traffic peaks, faults) are the simulators issue's work and will replace the value model here.
"""

from __future__ import annotations

import math
import random
import threading
import time
import zlib
from collections.abc import Iterable
from datetime import UTC, datetime

import orjson
import paho.mqtt.client as mqtt

from ioc.devices import Device
from ioc.settings import MqttAddress
from ioc.topics import Channel, device_topic

# Typical (low, high) per metric; values wander inside these, always within the catalogue.
TYPICAL: dict[str, dict[str, tuple[float, float]]] = {
    "flood": {"water_level_m": (0.2, 0.7), "battery_v": (12.2, 13.4)},
    "rain": {"rain_rate_mm_h": (0.0, 8.0), "rain_mm": (0.0, 1.0), "battery_v": (12.2, 13.4)},
    "lighting": {
        "dim_level_pct": (60, 100),
        "power_w": (60, 140),
        "voltage_v": (212, 228),
        "current_a": (0.3, 0.7),
        "power_factor": (0.9, 0.98),
    },
    "cabinet": {
        "voltage_l1_v": (215, 228),
        "voltage_l2_v": (215, 228),
        "voltage_l3_v": (215, 228),
        "power_w": (1500, 4000),
    },
    "traffic": {
        "count_motorbike": (40, 300),
        "count_car": (5, 40),
        "count_truck": (0, 8),
        "count_bus": (0, 3),
        "speed_kmh": (18, 45),
        "occupancy_pct": (5, 40),
    },
}


def sample(device: Device, t: float, rng: random.Random) -> dict[str, float]:
    """One reading set: a slow daily wave plus noise, per metric, inside its typical range."""
    wave = 0.5 + 0.5 * math.sin(2 * math.pi * (t / 86_400.0) + zlib.crc32(device.id.encode()) % 7)
    values = {}
    for name, (lo, hi) in TYPICAL[device.kind].items():
        x = lo + (hi - lo) * min(1.0, max(0.0, wave + rng.uniform(-0.1, 0.1)))
        values[name] = round(x) if name.startswith("count_") else round(x, 3)
    return values


class Publisher:
    """Publishes for many devices over one MQTT connection until ``stop()``."""

    def __init__(
        self,
        address: MqttAddress,
        devices: Iterable[Device],
        *,
        topic_prefix: str = "hg",
        interval_s: float = 10.0,
        seed: int = 7,
        client_id: str = "ioc-simple-publisher",
    ) -> None:
        self.devices = list(devices)
        self.prefix = topic_prefix
        self.interval_s = interval_s
        self.rng = random.Random(seed)
        self.seq = 0
        self.published = 0
        self._stop = threading.Event()
        self._client = mqtt.Client(
            mqtt.CallbackAPIVersion.VERSION2, client_id=client_id, protocol=mqtt.MQTTv5
        )
        if address.username:
            self._client.username_pw_set(address.username, address.password)
        self._client.max_queued_messages_set(0)
        self._address = address
        # One connection carries every device here, so one will cannot speak for each of them;
        # stop() publishes each device's retained ``offline`` instead (the simulators issue gives
        # each device its own connection and will).

    def start(self) -> None:
        self._client.connect(self._address.host, self._address.port)
        self._client.loop_start()
        for d in self.devices:
            self._client.publish(self._topic(d, Channel.STATUS), b"online", qos=1, retain=True)

    def publish_round(self, now: float | None = None) -> int:
        """One reading from every device; returns the number of messages published."""
        t = time.time() if now is None else now
        ts = datetime.fromtimestamp(t, UTC).astimezone().isoformat(timespec="milliseconds")
        self.seq += 1
        for d in self.devices:
            payload = orjson.dumps({"ts": ts, "seq": self.seq, "metrics": sample(d, t, self.rng)})
            self._client.publish(self._topic(d, Channel.TELEMETRY), payload, qos=1)
        self.published += len(self.devices)
        return len(self.devices)

    def run(self, duration_s: float | None = None) -> None:
        deadline = None if duration_s is None else time.monotonic() + duration_s
        while not self._stop.is_set() and (deadline is None or time.monotonic() < deadline):
            self.publish_round()
            self._stop.wait(self.interval_s)

    def stop(self) -> None:
        self._stop.set()
        infos = [
            self._client.publish(self._topic(d, Channel.STATUS), b"offline", qos=1, retain=True)
            for d in self.devices
        ]
        for info in infos:
            info.wait_for_publish(10)
        self._client.disconnect()
        self._client.loop_stop()

    def _topic(self, d: Device, channel: Channel) -> str:
        return device_topic(self.prefix, d.city, d.kind, d.id, channel)
