"""mqttclient under faults, against the real Mosquitto: a connection dropped on purpose (the
simulators' lost link), and a private broker restarted with and without persistence."""

from __future__ import annotations

import asyncio
import os
import signal
import subprocess
import time
import uuid
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path

import pytest

from ioc.embedded.mosquitto import find_mosquitto
from ioc.embedded.ports import LOOPBACK, free_port, is_listening
from ioc.embedded.process import EmbeddedServerError
from mqttclient import Client, Message, QoS, Will
from tests.conftest import eventually
from tests.test_mqtt_client import _addr, _paho_publish


async def _until(client: Client, wanted: Callable[[Message], bool]) -> Message:
    while True:
        message = await client.next_message()
        if wanted(message):
            return message


async def test_drop_connection_fires_the_will_resends_in_flight_and_can_stay_down(
    mqtt_url: str,
) -> None:
    host, port = _addr(mqtt_url)
    tag = uuid.uuid4().hex[:10]
    topic = f"conformance/{tag}"
    async with Client(host, port, client_id=f"drop-watch-{tag}", clean_start=True) as watcher:
        await watcher.subscribe(f"{topic}/#", qos=1)
        async with Client(
            host,
            port,
            client_id=f"drop-{tag}",
            clean_start=True,
            session_expiry_s=0,
            will=Will(f"{topic}/status", payload=b"offline", qos=QoS.AT_LEAST_ONCE),
            backoff_initial_s=0.01,
            backoff_maximum_s=0.05,
        ) as c:
            # queued for this loop turn's write, which the drop throws away: in flight, unsent
            held = c.publish_nowait(f"{topic}/data", b"held")
            assert c.drop_connection()
            assert not c.connected
            will = await _until(watcher, lambda m: m.topic.endswith("/status"))
            assert will.payload == b"offline"
            async with asyncio.timeout(30):
                await held  # sent again (DUP) on the next connection, then acknowledged
            assert c.generation == 2 and c.connected
            await _until(watcher, lambda m: m.payload == b"held")

            assert c.drop_connection(stay_down=True)
            await _until(watcher, lambda m: m.topic.endswith("/status"))
            await asyncio.sleep(0.3)  # many backoff periods: it did not come back by itself
            assert not c.connected and c.generation == 2
            assert not c.drop_connection()  # nothing to drop
            c.reconnect_now()
            async with asyncio.timeout(30):
                await c.wait_connected()
            assert c.generation == 3
            await c.publish(f"{topic}/data", b"after", qos=1)
            await _until(watcher, lambda m: m.payload == b"after")


# ---------------------------------------------------------- a private broker, restarted


@contextmanager
def _restartable_broker(
    tmp_path: Path, port: int, *, persistence: bool
) -> Iterator[Callable[[], None]]:
    """A private anonymous mosquitto; yields ``restart()`` (SIGTERM — which saves the store when
    persistence is on — then start it again on the same port and files). Not
    ``tests.test_provision.mosquitto``: that one is an authenticated broker without persistence,
    started once."""
    try:
        binary = find_mosquitto()
    except EmbeddedServerError as exc:
        pytest.skip(str(exc))
    conf = tmp_path / "mosquitto.conf"
    lines = [
        f"listener {port} {LOOPBACK}",
        "allow_anonymous true",
        f"persistence {'true' if persistence else 'false'}",
        f"persistence_location {tmp_path}/",
        "log_dest stderr",
    ]
    if os.geteuid() == 0:
        lines.append("user root")
    conf.write_text("\n".join(lines) + "\n")
    log = tmp_path / "mosquitto.log"
    proc: subprocess.Popen[bytes] | None = None

    def start() -> None:
        nonlocal proc
        with log.open("ab") as out:
            proc = subprocess.Popen([binary, "-c", str(conf)], stdout=out, stderr=subprocess.STDOUT)
        deadline = time.monotonic() + 15
        while not is_listening(port):
            if proc.poll() is not None or time.monotonic() > deadline:
                pytest.fail(f"mosquitto did not start:\n{log.read_text()}")
            time.sleep(0.05)

    def stop() -> None:
        assert proc is not None
        proc.send_signal(signal.SIGTERM)
        try:
            proc.wait(10)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()

    def restart() -> None:
        stop()
        start()

    start()
    try:
        yield restart
    finally:
        stop()


@pytest.mark.parametrize("persistence", [True, False], ids=["persistent", "in-memory"])
async def test_broker_restart(tmp_path: Path, persistence: bool) -> None:
    """Connected across a restart: the client reconnects by itself, finds its session again only
    from a persistent broker, and else subscribes again, so new messages arrive either way.
    Away across a restart: what was queued for it survives only with persistence."""
    port = free_port()
    topic = "restart/x"
    with _restartable_broker(tmp_path, port, persistence=persistence) as restart:
        async with Client(
            LOOPBACK,
            port,
            client_id="restart-1",
            session_expiry_s=300,
            backoff_initial_s=0.05,
            backoff_maximum_s=0.2,
        ) as c:
            await c.subscribe(topic, qos=1)
            await asyncio.to_thread(restart)

            async def back() -> bool:
                return c.generation >= 2 and c.connected

            await eventually(back)
            assert c.session_present is persistence
            await asyncio.to_thread(_paho_publish, LOOPBACK, port, topic, [b"after restart"])
            async with asyncio.timeout(30):
                assert (await c.next_message()).payload == b"after restart"

        # away (DISCONNECT, session kept for 300 s) while messages queue, then the restart
        await asyncio.to_thread(_paho_publish, LOOPBACK, port, topic, [b"q1", b"q2"])
        await asyncio.to_thread(restart)
        async with Client(LOOPBACK, port, client_id="restart-1", session_expiry_s=0) as c:
            assert c.session_present is persistence
            if persistence:
                async with asyncio.timeout(30):
                    got = [(await c.next_message()).payload for _ in range(2)]
                assert got == [b"q1", b"q2"]
            else:
                # the session is gone with its queue: a marker on a fresh subscription is first
                await c.subscribe(topic, qos=1)
                await asyncio.to_thread(_paho_publish, LOOPBACK, port, topic, [b"marker"])
                async with asyncio.timeout(30):
                    assert (await c.next_message()).payload == b"marker"
