"""One publisher process: N QoS 1 messages to a broker, timed until the last PUBACK.

Side by side in one run, alternating, ``--runs`` times each, every rate also given as a ratio
to paho's in the same run, with the process CPU time per message (steadier than the rate when
the cores are shared):
- ``paho``: paho-mqtt 2.x, MQTT v3.1.1, no paho in-flight or queue limit, its network thread
  (``loop_start``) — the independent reference client;
- ``mqttclient``: the asyncio client on the ``mqtt5`` codec, ``--concurrency`` coroutines
  (default 20) each awaiting its PUBACK; the client keeps at most the broker's Receive Maximum
  in flight and queues the other publishers in order (one PUBACK sends one queued message);
- ``mqttclient x1000``: the same with 1,000 coroutines (``--herd``), the load that woke every
  waiter on every PUBACK before the queue was FIFO;
- ``simulator``: the simulators' own path — a ``_LinkPool`` of one, then ``--links`` (default
  8, as a 4,000-device run in ``shared`` mode has) connections
  (``ioc/simulators/runner.py``), ``pool.ready`` then ``_Link.publish`` (``publish_nowait``) per
  message exactly as ``Simulation`` sends telemetry, then ``pool.drain``.

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
from collections.abc import Callable

import orjson
import paho.mqtt.client as mqtt

from ioc.core.settings import MqttAddress
from ioc.simulators.runner import _Link, _LinkPool
from mqttclient import Client


def _payload(i: int) -> bytes:
    now_ms = 1_780_000_000_000 + i
    body = {"ts": now_ms, "seq": i, "metrics": {"water_level_m": 0.512, "rain_mm_h": 12.5}}
    return orjson.dumps(body).ljust(120)


# (msg/s, CPU µs per message): the process's CPU time (all its threads) over the timed part —
# on shared cores the rate follows the neighbours' load, the CPU per message much less
Result = tuple[float, float]


def run_paho(address: MqttAddress, n: int, tag: str) -> Result:
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
    if address.username:
        c.username_pw_set(address.username, address.password)
    if address.tls:
        c.tls_set_context(address.ssl_context())
    c.max_inflight_messages_set(0)
    c.max_queued_messages_set(0)
    c.on_publish = on_publish
    c.connect(address.host, address.port)
    c.loop_start()
    payloads = [_payload(i) for i in range(n)]
    start, cpu = time.perf_counter(), time.process_time()
    for i, body in enumerate(payloads):
        c.publish(f"bench/pub/{tag}/d{i % 100}/telemetry", body, qos=1)
    if not done.wait(600):
        raise RuntimeError(f"paho: only {acked} of {n} acknowledged")
    elapsed, cpu = time.perf_counter() - start, time.process_time() - cpu
    c.disconnect()
    c.loop_stop()
    return n / elapsed, cpu / n * 1e6


async def run_mqttclient(address: MqttAddress, n: int, tag: str, concurrency: int) -> Result:
    payloads = [_payload(i) for i in range(n)]
    async with Client(
        **address.client_options(),
        client_id=f"bench-mqttclient-{tag}",
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

        start, cpu = time.perf_counter(), time.process_time()
        async with asyncio.TaskGroup() as tg:
            for _ in range(concurrency):
                tg.create_task(worker())
        elapsed, cpu = time.perf_counter() - start, time.process_time() - cpu
    return n / elapsed, cpu / n * 1e6


async def run_simulator(address: MqttAddress, n: int, tag: str, links: int) -> Result:
    payloads = [_payload(i) for i in range(n)]

    def nothing(_link: _Link) -> None:
        pass

    async with _LinkPool(
        address, keepalive_s=60, max_outstanding=2000, on_up=nothing, on_down=nothing
    ) as pool:
        pool_links = [pool.add(f"bench-sim-{tag}-{k}", []) for k in range(links)]
        await pool.start()
        start, cpu = time.perf_counter(), time.process_time()
        for i, body in enumerate(payloads):
            link = pool_links[i % links]
            if not (link.up.is_set() and link.space.is_set()):  # as Simulation._ready
                await pool.ready(link)
            link.publish(f"bench/pub/{tag}/d{i % 100}/telemetry", body)
        left = await pool.drain(600)
        elapsed, cpu = time.perf_counter() - start, time.process_time() - cpu
    if left or pool.refused:
        raise RuntimeError(f"simulator: {left} unacknowledged, {pool.refused} refused")
    return n / elapsed, cpu / n * 1e6


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("mqtt_url")
    p.add_argument("--messages", type=int, default=100_000)
    p.add_argument("--runs", type=int, default=3)
    # coroutines each awaiting their PUBACK; the broker's Receive Maximum (mosquitto announces
    # max_inflight_messages, default 20) bounds what is in flight, the rest wait in the queue
    p.add_argument("--concurrency", type=int, default=20)
    p.add_argument("--herd", type=int, default=1000, help="coroutines of the x1000 variant")
    p.add_argument("--links", type=int, default=8, help="connections of the 2nd simulator variant")
    args = p.parse_args()
    address = MqttAddress(args.mqtt_url)
    n = args.messages
    variants: dict[str, Callable[[str], Result]] = {
        "paho": lambda tag: run_paho(address, n, tag),
        f"mqttclient x{args.concurrency}": lambda tag: asyncio.run(
            run_mqttclient(address, n, tag, args.concurrency)
        ),
        f"mqttclient x{args.herd}": lambda tag: asyncio.run(
            run_mqttclient(address, n, tag, args.herd)
        ),
        "simulator _Link x1": lambda tag: asyncio.run(run_simulator(address, n, tag, 1)),
        f"simulator _Link x{args.links}": lambda tag: asyncio.run(
            run_simulator(address, n, tag, args.links)
        ),
    }
    rates: dict[str, list[float]] = {name: [] for name in variants}
    cpus: dict[str, list[float]] = {name: [] for name in variants}
    for run in range(args.runs):
        for name, variant in variants.items():
            rate, cpu_us = variant(f"{time.time_ns()}-{run}")
            rates[name].append(rate)
            cpus[name].append(cpu_us)
        paho = rates["paho"][-1]
        print(
            f"run {run + 1}: "
            + ", ".join(
                f"{k} {v[-1]:,.0f} msg/s ({v[-1] / paho:.1f}x, {cpus[k][-1]:.1f} µs CPU/msg)"
                for k, v in rates.items()
            ),
            flush=True,
        )
    for name, values in rates.items():
        ratios = [v / p for v, p in zip(values, rates["paho"], strict=True)]
        cpu_ratios = [p / c for c, p in zip(cpus[name], cpus["paho"], strict=True)]
        print(
            f"{name}: {n:,} QoS 1 messages, {args.runs} runs: "
            f"{min(values):,.0f}–{max(values):,.0f} msg/s (median {statistics.median(values):,.0f})"
            f"; ratio to paho {min(ratios):.1f}–{max(ratios):.1f}x; CPU per message "
            f"{min(cpus[name]):.1f}–{max(cpus[name]):.1f} µs, paho's / this "
            f"{min(cpu_ratios):.1f}–{max(cpu_ratios):.1f}x"
        )


if __name__ == "__main__":
    main()
