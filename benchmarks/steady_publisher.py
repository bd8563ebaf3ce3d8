"""Publish telemetry at a steady rate (a helper process of benchmarks/bench_ingest.py).

Each message's ``seq`` carries its publish time in microseconds, so the service side can compute
publish→commit latency without clock games (same machine, same clock).

    python steady_publisher.py MQTT_URL PREFIX RATE SECONDS city/kind/id,city/kind/id,...
"""

from __future__ import annotations

import sys
import time

import orjson
import paho.mqtt.client as mqtt

from_url = sys.argv[1]
prefix, rate, seconds = sys.argv[2], float(sys.argv[3]), float(sys.argv[4])
targets = [t.split("/") for t in sys.argv[5].split(",")]

host_port = from_url.split("://", 1)[1].rsplit("@", 1)[-1]
host, port = host_port.split(":")
c = mqtt.Client(
    mqtt.CallbackAPIVersion.VERSION2, client_id=f"steady-{time.time_ns()}", protocol=mqtt.MQTTv5
)
c.max_inflight_messages_set(1000)
c.max_queued_messages_set(0)
c.connect(host, int(port))
c.loop_start()
start = time.perf_counter()
n = 0
while (elapsed := time.perf_counter() - start) < seconds:
    due = int(elapsed * rate)
    while n < due:
        city, kind, dev = targets[n % len(targets)]
        metrics = {"water_level_m": 0.5} if kind == "flood" else {"power_w": 100.0}
        now = time.time()
        body = {"ts": int(now * 1000), "seq": int(now * 1e6), "metrics": metrics}
        c.publish(f"{prefix}/{city}/{kind}/{dev}/telemetry", orjson.dumps(body), qos=1)
        n += 1
    time.sleep(0.001)
c.disconnect()
c.loop_stop()
print(f"steady publisher: {n} messages in {seconds:.0f} s")
