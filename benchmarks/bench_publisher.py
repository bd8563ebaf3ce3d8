"""One publisher process: N QoS 1 messages to a broker, timed until the last PUBACK.

Side by side in one run, alternating, ``--runs`` times each:
- ``paho``: paho-mqtt 2.x, MQTT v3.1.1 as the simulators' ``_Link`` connects today, no paho
  in-flight or queue limit (``_Link`` sets both to 0), its network thread (``loop_start``);
- ``mqttclient``: the asyncio client on the ``mqtt5`` codec, ``--concurrency`` coroutines
  (default 20) each awaiting its PUBACK; the client keeps at most the broker's Receive Maximum
  in flight.

Payloads are ~120 B telemetry JSON on ``bench/pub/<run>/…`` (no subscriber: the broker only
parses, acknowledges and discards, so this measures the publisher, not fan-out).

    .venv/bin/python benchmarks/bench_publisher.py mqtt://127.0.0.1:1883 --messages 100000
"""

from __future__ import annotations

import argparse
import asyncio
import statistics
import threading
import time

import orjson
import paho.mqtt.client as mqtt

from ioc.settings import MqttAddress
from mqttclient import Client


def _payload(i: int) -> bytes:
    now_ms = 1_780_000_000_000 + i
    body = {"ts": now_ms, "seq": i, "metrics": {"water_level_m": 0.512, "rain_mm_h": 12.5}}
    return orjson.dumps(body).ljust(120)


def run_paho(address: MqttAddress, n: int, tag: str) -> float:
    done = threading.Event()
    acked = 0

    def on_publish(*_args: object) -> None:
        nonlocal acked
        acked += 1
        if acked == n:
            done.set()

    c = mqtt.Client(
        mqtt.CallbackAPIVersion.VERSION2, client_id=f"bench-paho-{tag}", protocol=mqtt.MQTTv311
    )
    address.configure(c)
    c.max_inflight_messages_set(0)
    c.max_queued_messages_set(0)
    c.on_publish = on_publish
    c.connect(address.host, address.port)
    c.loop_start()
    payloads = [_payload(i) for i in range(n)]
    start = time.perf_counter()
    for i, body in enumerate(payloads):
        c.publish(f"bench/pub/{tag}/d{i % 100}/telemetry", body, qos=1)
    if not done.wait(600):
        raise RuntimeError(f"paho: only {acked} of {n} acknowledged")
    elapsed = time.perf_counter() - start
    c.disconnect()
    c.loop_stop()
    return n / elapsed


async def run_mqttclient(address: MqttAddress, n: int, tag: str, concurrency: int) -> float:
    payloads = [_payload(i) for i in range(n)]
    async with Client(
        address.host,
        address.port,
        client_id=f"bench-mqttclient-{tag}",
        username=address.username,
        password=address.password,
        ssl=address.ssl_context() if address.tls else None,
        clean_start=True,
        session_expiry_s=0,
    ) as c:
        next_index = 0

        async def worker() -> None:
            nonlocal next_index
            while next_index < n:
                i = next_index
                next_index += 1
                await c.publish(f"bench/pub/{tag}/d{i % 100}/telemetry", payloads[i], qos=1)

        start = time.perf_counter()
        async with asyncio.TaskGroup() as tg:
            for _ in range(concurrency):
                tg.create_task(worker())
        elapsed = time.perf_counter() - start
    return n / elapsed


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("mqtt_url")
    p.add_argument("--messages", type=int, default=100_000)
    p.add_argument("--runs", type=int, default=3)
    # coroutines publishing at once; more than the broker's Receive Maximum (mosquitto announces
    # max_inflight_messages, default 20) only adds waiters: every PUBACK wakes all of them
    p.add_argument("--concurrency", type=int, default=20)
    args = p.parse_args()
    address = MqttAddress(args.mqtt_url)
    rates: dict[str, list[float]] = {"paho": [], "mqttclient": []}
    for run in range(args.runs):
        tag = f"{time.time_ns()}-{run}"
        rates["paho"].append(run_paho(address, args.messages, tag))
        rates["mqttclient"].append(
            asyncio.run(run_mqttclient(address, args.messages, tag, args.concurrency))
        )
        print(
            f"run {run + 1}: paho {rates['paho'][-1]:,.0f} msg/s, "
            f"mqttclient {rates['mqttclient'][-1]:,.0f} msg/s",
            flush=True,
        )
    for name, values in rates.items():
        print(
            f"{name}: {args.messages:,} QoS 1 messages, {args.runs} runs: "
            f"{min(values):,.0f}–{max(values):,.0f} msg/s (median {statistics.median(values):,.0f})"
        )
    ratios = [m / p for m, p in zip(rates["mqttclient"], rates["paho"], strict=True)]
    print(f"ratio mqttclient/paho per run: {', '.join(f'{r:.1f}x' for r in ratios)}")


if __name__ == "__main__":
    main()
