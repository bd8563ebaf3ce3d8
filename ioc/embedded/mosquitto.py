"""Embedded MQTT broker: the system's ``mosquitto`` binary with a config file of our own.

Needs mosquitto on PATH or at /usr/sbin/mosquitto (Debian: ``apt-get install mosquitto``). A
pip-installable broker as a fallback is out of scope for now: without the binary, point
``IOC_MQTT_URL`` at a running broker.

Layout: ``data_dir/broker/`` (config, ``mosquitto.db``, pid file; or a /tmp fallback, see
``ioc.embedded.process``), ``data_dir/mosquitto.log``, ``data_dir/.mosquitto.lock``.

As root, mosquitto would drop privileges to its ``user`` option by itself; we instead start it
as the unprivileged account directly (like PostgreSQL), so ``user`` is never consulted and the
broker's files are owned by the account that writes them.
"""

from __future__ import annotations

import os
import shutil
import signal
import socket
import struct
from pathlib import Path

from ioc.embedded.ports import LOOPBACK
from ioc.embedded.process import EmbeddedServer, EmbeddedServerError, make_private_dir, proc_comm

CONFIG = """\
# Written by ioc.embedded at every start; edits are overwritten.
listener {port} {host}
allow_anonymous true

persistence true
persistence_location {state}/
# Saved every 10 s and at a clean exit: a broker crash loses at most ~10 s of session state.
autosave_interval 10

# A persistent session (the ingest service connects with clean_start=False) keeps a backlog
# while its client is away. Past max_queued_messages mosquitto silently drops further QoS 1/2
# messages for that client, and the default of 1000 is seconds of city-wide telemetry. Bound:
# one million messages per client (a few hundred MB at our payload sizes); bytes unbounded.
max_queued_messages 1000000
max_queued_bytes 0
# Sessions of clients that never come back (a changed client id) are dropped after a week, so
# abandoned backlogs do not pile up. MQTT v5 clients' own Session Expiry Interval still applies.
persistent_client_expiration 7d
# max_inflight_messages (default 20) only limits MQTT v3 clients: v5 clients, ours included,
# announce their own Receive Maximum, which the broker honours.
# Far above any payload of ours (JSON readings and reports; media travels by URL), yet bounds
# the memory one bad packet can claim.
max_packet_size 16777216

pid_file {state}/mosquitto.pid
log_dest stderr
log_type error
log_type warning
log_type notice
log_type information
log_timestamp_format %Y-%m-%dT%H:%M:%S
"""


def find_mosquitto() -> str:
    """Path of the mosquitto binary, or an error saying how to get one."""
    found = shutil.which("mosquitto")
    if found is None and os.access("/usr/sbin/mosquitto", os.X_OK):
        found = "/usr/sbin/mosquitto"  # Debian installs it outside an ordinary user's PATH
    if found is None:
        raise EmbeddedServerError(
            "mosquitto",
            "the mosquitto broker is not installed: apt-get install mosquitto, "
            "or set IOC_MQTT_URL to an external broker",
        )
    return found


class EmbeddedMosquitto(EmbeddedServer):
    """A private mosquitto broker on 127.0.0.1, anonymous access, persistent sessions."""

    name = "mosquitto"
    accounts = ("mosquitto", "nobody")
    state_name = "broker"
    pid_file_name = "mosquitto.pid"
    stop_signals = (signal.SIGTERM,)  # saves the persistence file, then exits

    def __init__(self, data_dir: Path, *, port: int | None = None, log: Path | None = None):
        super().__init__(data_dir, port=port, log=log)
        self._binary = ""

    @property
    def url(self) -> str:
        """``mqtt://127.0.0.1:PORT``."""
        return f"mqtt://{LOOPBACK}:{self.port}"

    @property
    def _config(self) -> Path:
        assert self.state is not None
        return self.state / "mosquitto.conf"

    def _prepare(self, deadline: float) -> None:
        assert self.account is not None and self.state is not None
        self._binary = find_mosquitto()
        make_private_dir(self.state, self.account)

    def _argv(self, port: int) -> list[str]:
        # Owned by the launcher, readable by the broker account through its own 0700 directory.
        self._config.write_text(CONFIG.format(port=port, host=LOOPBACK, state=self.state))
        return [self._binary, "-c", str(self._config)]

    def _is_ours(self, pid: int) -> bool:
        try:
            argv = Path(f"/proc/{pid}/cmdline").read_bytes().split(b"\0")
        except OSError:
            return False
        return proc_comm(pid) == "mosquitto" and os.fsencode(self._config) in argv

    def _ready(self) -> bool:
        return probe(LOOPBACK, self.port)


def probe(host: str, port: int, timeout_s: float = 2.0) -> bool:
    """Whether an MQTT broker at ``host:port`` accepts a connection: a raw MQTT v5
    CONNECT/CONNACK exchange, then DISCONNECT.

    Raw bytes rather than ``mqttclient``: this package imports only the standard library, and
    the check is synchronous (``start()`` may run inside an event loop, where ``asyncio.run``
    would fail). The two packets are fixed (MQTT v5 §3.1, §3.2, §3.14)."""
    try:
        with socket.create_connection((host, port), timeout=timeout_s) as sock:
            sock.sendall(_connect_packet(f"ioc-embedded-probe-{os.getpid()}"))
            ok = _read_connack_reason(sock) == 0x00  # Success
            if ok:
                sock.sendall(b"\xe0\x00")  # DISCONNECT, normal: no will, clean close
            return ok
    except OSError:
        return False


def _connect_packet(client_id: str) -> bytes:
    """CONNECT, MQTT v5, clean start, keep-alive 10 s, no properties, no will, no credentials."""
    cid = client_id.encode()
    variable = b"\x00\x04MQTT" + bytes([5, 0x02]) + struct.pack(">H", 10) + b"\x00"
    body = variable + struct.pack(">H", len(cid)) + cid
    return b"\x10" + _remaining_length(len(body)) + body


def _remaining_length(n: int) -> bytes:
    out = bytearray()
    while True:
        n, digit = divmod(n, 128)
        out.append(digit | (0x80 if n else 0))
        if not n:
            return bytes(out)


def _read_connack_reason(sock: socket.socket) -> int | None:
    """The reason code of a CONNACK (body: acknowledge flags, reason code, properties); None if
    the broker closed the connection or sent something else."""
    head = _read_exactly(sock, 2)
    if head is None or head[0] != 0x20 or head[1] & 0x80:  # ours fits a one-byte length
        return None
    body = _read_exactly(sock, head[1])
    if body is None or len(body) < 2:
        return None
    return body[1]


def _read_exactly(sock: socket.socket, n: int) -> bytes | None:
    data = b""
    while len(data) < n:
        chunk = sock.recv(n - len(data))
        if not chunk:
            return None
        data += chunk
    return data
