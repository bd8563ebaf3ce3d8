"""The embedded-server launchers, against the real binaries and real processes."""

from __future__ import annotations

import os
import selectors
import shutil
import signal
import socket
import subprocess
import sys
import threading
import time
import uuid
from collections.abc import Callable
from pathlib import Path

import paho.mqtt.client as mqtt
import psycopg
import pytest
from paho.mqtt.packettypes import PacketTypes
from paho.mqtt.properties import Properties

from ioc.embedded import EmbeddedMosquitto, EmbeddedPostgres, EmbeddedServerError
from ioc.embedded.ports import is_listening
from ioc.embedded.process import pid_alive
from tests.conftest import fallbacks_of

REPO = Path(__file__).resolve().parents[1]
HAVE_MOSQUITTO = shutil.which("mosquitto") is not None or os.access("/usr/sbin/mosquitto", os.X_OK)
needs_mosquitto = pytest.mark.skipif(
    not HAVE_MOSQUITTO, reason="mosquitto is not installed (apt-get install mosquitto)"
)


def wait_until(check: Callable[[], bool], timeout: float = 30.0) -> bool:
    deadline = time.monotonic() + timeout
    while not check():
        if time.monotonic() > deadline:
            return False
        time.sleep(0.05)
    return True


def gone(pid: int, port: int) -> Callable[[], bool]:
    return lambda: not pid_alive(pid) and not is_listening(port)


def unreachable_data_dir(tmp_path: Path, name: str) -> Path:
    """A data dir whose state must live in /tmp while the server runs, whoever runs the test:
    its path is too long for PostgreSQL's socket (and, as root, the server account cannot pass
    pytest's 0700 temporary directory)."""
    return tmp_path / ("long-" * 12) / name


# -- PostgreSQL ----------------------------------------------------------------------------------


def test_postgres_serves_over_tcp_and_stops(tmp_path: Path) -> None:
    with EmbeddedPostgres(tmp_path / "pg") as pg:
        assert pg.url == f"postgresql://ioc@127.0.0.1:{pg.port}/ioc"
        with psycopg.connect(pg.url) as conn:
            row = conn.execute("SELECT current_user, current_database(), 1 + 1").fetchone()
        assert row == ("ioc", "ioc", 2)
        pid, port = pg.pid, pg.port
        assert pid is not None
    with pytest.raises(ProcessLookupError):  # gone and reaped, not a zombie
        os.kill(pid, 0)
    assert not is_listening(port)
    pg.stop()  # idempotent


def test_postgres_keeps_data_across_restarts(tmp_path: Path) -> None:
    with EmbeddedPostgres(tmp_path / "pg", database="city") as pg:
        with psycopg.connect(pg.url, autocommit=True) as conn:
            conn.execute("CREATE TABLE t (name text)")
            conn.execute("INSERT INTO t VALUES ('Phường 5')")
    with EmbeddedPostgres(tmp_path / "pg", database="city") as pg:
        with psycopg.connect(pg.url) as conn:
            assert conn.execute("SELECT upper(name) FROM t").fetchone() == ("PHƯỜNG 5",)


def test_postgres_leaves_nothing_in_tmp_and_keeps_its_data(tmp_path: Path) -> None:
    data_dir = unreachable_data_dir(tmp_path, "pg")
    assert fallbacks_of(tmp_path) == []
    with EmbeddedPostgres(data_dir, database="city") as pg:
        assert pg.state is not None and pg.state.parent in fallbacks_of(tmp_path)
        assert (data_dir / "pgdata.location").read_text().startswith(str(pg.state))
        with psycopg.connect(pg.url, autocommit=True) as conn:
            conn.execute("CREATE TABLE t AS SELECT 'Phường 5' AS name")
    assert fallbacks_of(tmp_path) == []  # stopped: the fallback is gone...
    assert (data_dir / "pgdata" / "PG_VERSION").exists()  # ...its files back in the data dir
    assert not (data_dir / "pgdata.location").exists()
    with EmbeddedPostgres(data_dir, database="city") as pg, psycopg.connect(pg.url) as conn:
        assert conn.execute("SELECT name FROM t").fetchone() == ("Phường 5",)
    assert fallbacks_of(tmp_path) == []


@pytest.mark.parametrize("holder", ["dead", "not-postgres"])
def test_postgres_starts_over_a_stale_pid_file(tmp_path: Path, holder: str) -> None:
    pg = EmbeddedPostgres(tmp_path / "pg")
    pg.start()
    pg.stop()
    assert pg.state is not None
    if holder == "dead":
        exited = subprocess.Popen(["true"])
        exited.wait()
        pid = exited.pid
    else:
        pid = os.getpid()  # alive, but not a postmaster: PostgreSQL itself would refuse
    lines = [str(pid), str(pg.state), "0", "5432", str(pg.state), "127.0.0.1", "0", "ready"]
    (pg.state / "postmaster.pid").write_text("\n".join(lines) + "\n")
    with pg, psycopg.connect(pg.url) as conn:
        assert conn.execute("SELECT 1").fetchone() == (1,)


def test_postgres_replaces_a_leftover_server_and_refuses_a_second_launcher(
    tmp_path: Path,
) -> None:
    first = EmbeddedPostgres(tmp_path / "pg")
    first.start()
    with pytest.raises(EmbeddedServerError, match="in use by another launcher"):
        EmbeddedPostgres(tmp_path / "pg").start()
    leftover = first.pid
    assert leftover is not None
    # Make the first server an orphan, as if its launcher had died without stopping it.
    assert first._lock_fd is not None
    os.close(first._lock_fd)
    first._lock_fd = None
    try:
        with EmbeddedPostgres(tmp_path / "pg") as second:
            assert not pid_alive(leftover)
            assert second.pid != leftover
            with psycopg.connect(second.url) as conn:
                assert conn.execute("SELECT 1").fetchone() == (1,)
    finally:
        first.stop()


def test_postgres_start_failure_carries_the_log(tmp_path: Path) -> None:
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        pg = EmbeddedPostgres(tmp_path / "pg", port=port)
        with pytest.raises(EmbeddedServerError) as caught:
            pg.start()
    assert caught.value.name == "postgres"
    assert "Address already in use" in caught.value.log_tail
    assert pg.pid is None


# -- Mosquitto -----------------------------------------------------------------------------------


def _client(url: str, client_id: str, *, clean_start: bool = True) -> mqtt.Client:
    """A connected MQTT v5 client; its network loop runs in a thread until ``_close``."""
    client = mqtt.Client(
        mqtt.CallbackAPIVersion.VERSION2, client_id=client_id, protocol=mqtt.MQTTv5
    )
    props = Properties(PacketTypes.CONNECT)
    props.SessionExpiryInterval = 0 if clean_start else 3600
    host, port = url.removeprefix("mqtt://").split(":")
    client.connect(host, int(port), clean_start=clean_start, properties=props)
    client.loop_start()
    return client


def _close(client: mqtt.Client) -> None:
    client.disconnect()
    client.loop_stop()


def _subscribe(client: mqtt.Client, topic: str) -> None:
    subscribed = threading.Event()
    client.on_subscribe = lambda *_: subscribed.set()
    client.subscribe(topic, qos=1)
    assert subscribed.wait(10)


def _collect(client: mqtt.Client) -> list[bytes]:
    """The payloads ``client`` receives from now on (appended by its loop thread)."""
    received: list[bytes] = []
    client.on_message = lambda _c, _u, message: received.append(message.payload)
    return received


@needs_mosquitto
def test_mosquitto_delivers_qos1_and_stops(tmp_path: Path) -> None:
    topic = f"test/{uuid.uuid4().hex}/telemetry"
    with EmbeddedMosquitto(tmp_path / "mq") as broker:
        assert broker.url == f"mqtt://127.0.0.1:{broker.port}"
        sub = _client(broker.url, f"sub-{uuid.uuid4().hex[:8]}")
        received = _collect(sub)
        _subscribe(sub, topic)
        pub = _client(broker.url, f"pub-{uuid.uuid4().hex[:8]}")
        pub.publish(topic, b'{"seq": 1}', qos=1).wait_for_publish(10)
        assert wait_until(lambda: len(received) == 1, 10)
        assert received == [b'{"seq": 1}']
        _close(pub)
        _close(sub)
        pid, port = broker.pid, broker.port
        assert pid is not None
    with pytest.raises(ProcessLookupError):
        os.kill(pid, 0)
    assert not is_listening(port)


@needs_mosquitto
def test_mosquitto_keeps_a_large_session_backlog_across_restarts(tmp_path: Path) -> None:
    # More than mosquitto's default max_queued_messages (1000), which would drop the rest.
    count, topic, sub_id = 1500, f"test/{uuid.uuid4().hex}/t", f"ingest-{uuid.uuid4().hex[:8]}"
    with EmbeddedMosquitto(tmp_path / "mq") as broker:
        sub = _client(broker.url, sub_id, clean_start=False)
        _subscribe(sub, topic)
        _close(sub)  # the session stays, and queues what follows
        pub = _client(broker.url, f"pub-{uuid.uuid4().hex[:8]}")
        for info in [pub.publish(topic, str(i).encode(), qos=1) for i in range(count)]:
            info.wait_for_publish(30)
        _close(pub)
    with EmbeddedMosquitto(tmp_path / "mq") as broker:  # the backlog was saved at stop
        sub = mqtt.Client(mqtt.CallbackAPIVersion.VERSION2, client_id=sub_id, protocol=mqtt.MQTTv5)
        received = _collect(sub)
        props = Properties(PacketTypes.CONNECT)
        props.SessionExpiryInterval = 3600
        sub.connect("127.0.0.1", broker.port, clean_start=False, properties=props)
        sub.loop_start()
        assert wait_until(lambda: len(received) >= count, 30), len(received)
        _close(sub)
    assert sorted(int(p) for p in received) == list(range(count))


# -- every exit path of the parent ---------------------------------------------------------------

CHILD = """
import signal, sys, time
from pathlib import Path
from ioc.embedded import EmbeddedMosquitto, EmbeddedPostgres

def on_term(signum, frame):
    raise SystemExit(0)  # what the CLI does: unwind through the context managers

signal.signal(signal.SIGTERM, on_term)
base = Path(sys.argv[1])
with EmbeddedPostgres(base / "pg") as pg:
    pids = [(pg.pid, pg.port)]
    if sys.argv[2] == "broker":
        broker = EmbeddedMosquitto(base / "mq")
        broker.start()
        pids.append((broker.pid, broker.port))  # stopped by atexit or the parent-death signal
    print(" ".join(f"{pid}:{port}" for pid, port in pids), flush=True)
    while True:
        time.sleep(1)
"""


@pytest.mark.parametrize(
    "sig", [signal.SIGTERM, signal.SIGINT, signal.SIGKILL], ids=lambda s: s.name
)
def test_servers_die_with_their_parent(tmp_path: Path, sig: signal.Signals) -> None:
    stderr = open(tmp_path / "child.err", "w+b")
    child = subprocess.Popen(
        [sys.executable, "-c", CHILD, str(tmp_path), "broker" if HAVE_MOSQUITTO else "-"],
        stdout=subprocess.PIPE,
        stderr=stderr,
        env={**os.environ, "PYTHONPATH": str(REPO)},
    )
    try:
        assert child.stdout is not None
        with selectors.DefaultSelector() as selector:
            selector.register(child.stdout, selectors.EVENT_READ)
            selector.select(timeout=120)
        line = child.stdout.readline().decode()
        stderr.seek(0)
        assert line, f"child failed:\n{stderr.read().decode()}"
        servers = [tuple(map(int, item.split(":"))) for item in line.split()]
        assert all(pid_alive(pid) and is_listening(port) for pid, port in servers)
        child.send_signal(sig)
        child.wait(60)
        for pid, port in servers:
            assert wait_until(gone(pid, port)), f"server {pid} outlived its parent ({sig.name})"
    finally:
        child.kill()
        child.wait()
        stderr.close()
    # The data dirs are free again and start cleanly (after a SIGKILL: crash recovery), and a
    # clean stop leaves no /tmp fallback, whatever the launcher before left there.
    with EmbeddedPostgres(tmp_path / "pg") as pg, psycopg.connect(pg.url) as conn:
        assert conn.execute("SELECT 1").fetchone() == (1,)
    if HAVE_MOSQUITTO:
        with EmbeddedMosquitto(tmp_path / "mq"):
            pass
    assert fallbacks_of(tmp_path) == []


@needs_mosquitto
def test_demo_leaves_nothing_in_tmp(tmp_path: Path) -> None:
    """`ioc demo` with embedded servers whose files must run from /tmp: nothing left there
    after it ends, the demo's database kept in its data dir for the next run."""
    data_dir = unreachable_data_dir(tmp_path, "demo")
    env = {k: v for k, v in os.environ.items() if not k.startswith("IOC_")}
    env.update(PYTHONPATH=str(REPO), IOC_DATA_DIR=str(data_dir), IOC_HTTP_PORT="0")
    assert fallbacks_of(tmp_path) == []
    done = subprocess.run(
        [sys.executable, "-m", "ioc", "demo", "--no-simulators", "--duration", "1"],
        capture_output=True, text=True, env=env, cwd=tmp_path, timeout=600, check=False,
    )  # fmt: skip
    assert done.returncode == 0, done.stderr[-3000:]
    assert "demo is running" in done.stdout
    assert fallbacks_of(tmp_path) == []
    assert (data_dir / "postgres" / "pgdata" / "PG_VERSION").exists()
