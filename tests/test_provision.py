"""`ioc devices provision`: Mosquitto password and ACL files, checked against the real broker.

Each broker test starts its own ``mosquitto`` (``allow_anonymous false``, the generated
``password_file`` and ``acl_file``, optionally a TLS listener with a CA made here by ``openssl``)
and talks to it with paho-mqtt over MQTT v5.
"""

from __future__ import annotations

import contextlib
import csv
import os
import shutil
import ssl
import subprocess
import threading
import time
from collections.abc import Iterator
from dataclasses import replace
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import paho.mqtt.client as mqtt
import pytest
from paho.mqtt.enums import CallbackAPIVersion
from paho.mqtt.reasoncodes import ReasonCode

from ioc.app.cli import main
from ioc.core.settings import Settings
from ioc.core.site import Site, load_site
from ioc.core.topics import device_topic
from ioc.embedded.mosquitto import find_mosquitto
from ioc.embedded.ports import LOOPBACK, free_port, is_listening
from ioc.embedded.process import EmbeddedServerError
from ioc.provision.accounts import (
    IOC_ACCOUNT,
    SIMULATOR_ACCOUNT,
    hash_password,
    plan_accounts,
    provision,
    read_credentials,
    verify_password,
)
from ioc.routing.intake import report_vocabulary
from ioc.storage import Flavour
from tests.conftest import eventually

LOCAL_HOST = LOOPBACK  # the test certificate names 127.0.0.1 and localhost
PACKAGED_SITE = Path(__file__).parents[1] / "ioc" / "site_data" / "hau-giang.yaml"


@pytest.fixture(scope="module")
def site() -> Site:
    full = load_site(PACKAGED_SITE)
    return replace(full, devices=full.devices[:40])


def _provision(site: Site, where: Path) -> dict[str, str]:
    provision(
        site,
        passwords=where / "passwd",
        acl=where / "acl",
        credentials=where / "credentials.csv",
    )
    return read_credentials(where / "credentials.csv")


# ----------------------------------------------------------------------------- the files


def test_hash_format_is_mosquitto_passwd_format() -> None:
    stored = hash_password("s3cret", salt=b"0123456789ab")
    assert stored.startswith("$7$101$MDEyMzQ1Njc4OWFi$")
    assert verify_password("s3cret", stored)
    assert not verify_password("s3cret!", stored)


def test_verifies_what_mosquitto_passwd_writes(tmp_path: Path) -> None:
    tool = shutil.which("mosquitto_passwd")
    if tool is None:
        pytest.skip("mosquitto_passwd not installed")
    subprocess.run([tool, "-c", "-b", str(tmp_path / "pw"), "dev1", "s3cret"], check=True)
    user, _, stored = (tmp_path / "pw").read_text().strip().partition(":")
    assert user == "dev1"
    assert verify_password("s3cret", stored)
    assert not verify_password("other", stored)


def test_accounts_and_acl(site: Site) -> None:
    accounts = {a.username: a for a in plan_accounts(site)}
    dev = site.devices[0]
    own = accounts[dev.id]
    assert {access for access, _ in own.acl} == {"write"}  # reads nothing
    channels = ("telemetry", "event", "status")
    assert {topic for _, topic in own.acl} == {
        device_topic("hg", dev.city, dev.kind, dev.id, ch) for ch in channels
    }
    assert accounts[IOC_ACCOUNT].acl == (("read", "hg/#"), ("write", "ioc/dispatch/#"))
    for agency in site.agencies:
        assert accounts[f"agency-{agency.id}"].acl == (("read", f"ioc/dispatch/{agency.id}"),)
    assert len(accounts) == 3 + len(site.agencies) + len(site.devices)


def test_rerun_keeps_passwords_adds_and_removes_devices(site: Site, tmp_path: Path) -> None:
    small = replace(site, devices=site.devices[:10])
    first = _provision(small, tmp_path)
    files = {p: (tmp_path / p).read_bytes() for p in ("passwd", "acl", "credentials.csv")}
    assert oct((tmp_path / "credentials.csv").stat().st_mode & 0o777) == "0o600"
    assert _provision(small, tmp_path) == first
    # nothing changed: byte-identical files (hashes are kept, not re-salted)
    assert {p: (tmp_path / p).read_bytes() for p in files} == files

    grown = replace(site, devices=site.devices[1:12])
    second = _provision(grown, tmp_path)
    gone = site.devices[0].id
    assert gone not in second
    assert f"user {gone}\n" not in (tmp_path / "acl").read_text()
    assert not any(line.startswith(f"{gone}:") for line in (tmp_path / "passwd").open())
    for d in site.devices[1:10]:
        assert second[d.id] == first[d.id]
    for d in site.devices[10:12]:
        assert d.id in second and d.id not in first
    assert len(set(second.values())) == len(second)  # every password distinct


def test_cli_writes_default_paths(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("IOC_DATA_DIR", str(tmp_path))
    unset = ("IOC_SITE", "IOC_MQTT_TOPIC_PREFIX", "IOC_DISPATCH_MQTT_PREFIX", "IOC_DATABASE_URL")
    for name in unset:
        monkeypatch.delenv(name, raising=False)
    assert main(["devices", "provision"]) == 0
    base = tmp_path / "mosquitto"
    creds = read_credentials(base / "credentials.csv")
    assert IOC_ACCOUNT in creds and "vt-flood-01" in creds
    assert (base / "passwd").exists() and (base / "acl").exists()
    with (base / "credentials.csv").open() as fh:
        row = next(r for r in csv.DictReader(fh) if r["username"] == "vt-flood-01")
    assert row["role"] == "device:flood"
    assert "write:hg/vi-thanh/flood/vt-flood-01/telemetry" in row["topics"]


def test_with_a_database_devices_registered_through_the_api_get_accounts_too(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, database_url: str
) -> None:
    import psycopg

    with psycopg.connect(database_url, autocommit=True) as conn:
        conn.execute(
            "INSERT INTO devices (id, kind, city, ward, name, lat, lon, attributes) VALUES"
            " ('vt-flood-99', 'flood', 'vi-thanh', NULL, 'Trạm mới', 9.78, 105.47, '{}')"
        )
    monkeypatch.setenv("IOC_DATA_DIR", str(tmp_path))
    monkeypatch.setenv("IOC_DATABASE_URL", database_url)
    for name in ("IOC_SITE", "IOC_MQTT_TOPIC_PREFIX", "IOC_DISPATCH_MQTT_PREFIX"):
        monkeypatch.delenv(name, raising=False)
    assert main(["devices", "provision"]) == 0
    creds = read_credentials(tmp_path / "mosquitto" / "credentials.csv")
    assert "vt-flood-99" in creds
    acl = (tmp_path / "mosquitto" / "acl").read_text()
    assert "topic write hg/vi-thanh/flood/vt-flood-99/telemetry" in acl


# ------------------------------------------------------------------------ the real broker


@contextlib.contextmanager
def mosquitto(
    tmp_path: Path, listener: str, port: int, *, auth: list[str] | None = None
) -> Iterator[Path]:
    """A private mosquitto with the provisioned files of ``tmp_path`` (``passwd``, ``acl``),
    or with the configuration lines ``auth`` instead of those two; yields its log."""
    try:
        binary = find_mosquitto()
    except EmbeddedServerError as exc:
        pytest.skip(str(exc))
    conf = tmp_path / "mosquitto.conf"
    if auth is None:
        auth = [f"password_file {tmp_path / 'passwd'}", f"acl_file {tmp_path / 'acl'}"]
    lines = [
        listener,
        "allow_anonymous false",
        *auth,
        "persistence false",
        "log_dest stderr",
        "log_type all",
    ]
    if os.geteuid() == 0:
        lines.append("user root")  # otherwise it drops to `mosquitto`, who cannot read tmp_path
    conf.write_text("\n".join(lines) + "\n")
    log = tmp_path / "mosquitto.log"
    with log.open("wb") as out:
        proc = subprocess.Popen([binary, "-c", str(conf)], stdout=out, stderr=subprocess.STDOUT)
    try:
        deadline = time.monotonic() + 15
        while not is_listening(port):
            if proc.poll() is not None or time.monotonic() > deadline:
                pytest.fail(f"mosquitto did not start:\n{log.read_text()}")
            time.sleep(0.05)
        yield log
    finally:
        proc.terminate()
        try:
            proc.wait(10)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()


class Client:
    """A paho MQTT v5 client on its own network thread, with what it saw recorded."""

    def __init__(
        self,
        port: int,
        username: str,
        password: str,
        *,
        tls: ssl.SSLContext | None = None,
    ) -> None:
        self.connected = threading.Event()
        self.connect_reason: ReasonCode | None = None
        self.messages: list[tuple[str, bytes]] = []
        self.acks: dict[int, ReasonCode] = {}
        self.subacks: dict[int, list[ReasonCode]] = {}
        self._cond = threading.Condition()
        self.client = mqtt.Client(
            CallbackAPIVersion.VERSION2,
            client_id=f"t-{username}-{os.getpid()}-{time.monotonic_ns()}",
            protocol=mqtt.MQTTv5,
        )
        self.client.username_pw_set(username, password)
        if tls is not None:
            self.client.tls_set_context(tls)
        self.client.on_connect = self._on_connect
        self.client.on_message = self._on_message
        self.client.on_publish = self._on_publish
        self.client.on_subscribe = self._on_subscribe
        self.client.connect(LOOPBACK, port, keepalive=10)
        self.client.loop_start()
        if not self.connected.wait(10):
            self.close()
            raise AssertionError("no CONNACK within 10 s")

    def _on_connect(self, _c: Any, _u: Any, _f: Any, reason: ReasonCode, _p: Any) -> None:
        self.connect_reason = reason
        self.connected.set()

    def _on_message(self, _c: Any, _u: Any, msg: mqtt.MQTTMessage) -> None:
        with self._cond:
            self.messages.append((msg.topic, msg.payload))
            self._cond.notify_all()

    def _on_publish(self, _c: Any, _u: Any, mid: int, reason: ReasonCode, _p: Any) -> None:
        with self._cond:
            self.acks[mid] = reason
            self._cond.notify_all()

    def _on_subscribe(self, _c: Any, _u: Any, mid: int, reasons: list[ReasonCode], _p: Any) -> None:
        with self._cond:
            self.subacks[mid] = list(reasons)
            self._cond.notify_all()

    def publish(self, topic: str, payload: bytes) -> ReasonCode:
        info = self.client.publish(topic, payload, qos=1)
        with self._cond:
            assert self._cond.wait_for(lambda: info.mid in self.acks, 10), "no PUBACK"
            return self.acks[info.mid]

    def subscribe(self, topic: str) -> list[ReasonCode]:
        _, mid = self.client.subscribe(topic, qos=1)
        with self._cond:
            assert self._cond.wait_for(lambda: mid in self.subacks, 10), "no SUBACK"
            return self.subacks[mid]

    def wait_messages(self, n: int, timeout: float = 10) -> list[tuple[str, bytes]]:
        with self._cond:
            self._cond.wait_for(lambda: len(self.messages) >= n, timeout)
            return list(self.messages)

    def close(self) -> None:
        self.client.disconnect()
        self.client.loop_stop()


def test_broker_enforces_the_generated_acl(site: Site, tmp_path: Path) -> None:
    creds = _provision(site, tmp_path)
    port = free_port()
    a, b = site.devices[0], site.devices[1]
    own = device_topic("hg", a.city, a.kind, a.id, "telemetry")
    other = device_topic("hg", b.city, b.kind, b.id, "telemetry")
    with mosquitto(tmp_path, f"listener {port} {LOOPBACK}", port):
        ingest = Client(port, IOC_ACCOUNT, creds[IOC_ACCOUNT])
        device = Client(port, a.id, creds[a.id])
        agency_id = site.agencies[0].id
        agency = Client(port, f"agency-{agency_id}", creds[f"agency-{agency_id}"])
        try:
            assert not ingest.subscribe("hg/#")[0].is_failure
            assert not agency.subscribe(f"ioc/dispatch/{agency_id}")[0].is_failure
            # the device may not listen to anything, not even its own topics: Mosquitto 2.0
            # grants the SUBACK of a wildcard filter but delivers nothing the ACL denies
            device.subscribe("hg/#")
            device.subscribe(own)
            # its own telemetry reaches the ingest
            assert not device.publish(own, b'{"seq": 1}').is_failure
            assert ingest.wait_messages(1) == [(own, b'{"seq": 1}')]
            # another device's topic, or a report, or dispatch: PUBACK 0x87, nothing delivered
            for topic in (other, "hg/vi-thanh/reports/app", f"ioc/dispatch/{agency_id}"):
                reason = device.publish(topic, b'{"seq": 2}')
                assert reason.value == 0x87, (topic, reason)
            # the IOC dispatches to the agency; the agency may not publish
            assert not ingest.publish(f"ioc/dispatch/{agency_id}", b"job").is_failure
            assert agency.wait_messages(1) == [(f"ioc/dispatch/{agency_id}", b"job")]
            assert agency.publish(own, b"forged").value == 0x87
            # an agency reads only its own dispatch topic
            agency.subscribe("ioc/dispatch/#")
            other_agency = site.agencies[1].id
            assert not ingest.publish(f"ioc/dispatch/{other_agency}", b"theirs").is_failure
            # a marker after the refused ones: when it arrives, nothing refused slipped in
            assert not device.publish(own, b'{"seq": 3}').is_failure
            got = ingest.wait_messages(2)
            assert got == [(own, b'{"seq": 1}'), (own, b'{"seq": 3}')]
            assert not ingest.publish(f"ioc/dispatch/{agency_id}", b"marker").is_failure
            assert agency.wait_messages(2)[-1] == (f"ioc/dispatch/{agency_id}", b"marker")
            # (the marker comes twice: two matching subscriptions); the other agency's job never
            assert {p for _, p in agency.messages} == {b"job", b"marker"}
            assert device.wait_messages(1, timeout=0.5) == []
        finally:
            for c in (ingest, device, agency):
                c.close()


def test_broker_refuses_wrong_password_and_unknown_users(site: Site, tmp_path: Path) -> None:
    creds = _provision(site, tmp_path)
    port = free_port()
    dev = site.devices[0].id
    with mosquitto(tmp_path, f"listener {port} {LOOPBACK}", port):
        for user, password in ((dev, creds[dev] + "x"), ("nobody-here", "x"), (dev, "")):
            c = Client(port, user, password)
            try:
                assert c.connect_reason is not None and c.connect_reason.is_failure
                assert c.connect_reason.value in (0x86, 0x87), c.connect_reason  # bad creds
            finally:
                c.close()
        good = Client(port, dev, creds[dev])
        try:
            assert good.connect_reason is not None and not good.connect_reason.is_failure
        finally:
            good.close()


def test_shared_subscription_for_ingest_workers(site: Site, tmp_path: Path) -> None:
    creds = _provision(site, tmp_path)
    port = free_port()
    dev = site.devices[0]
    own = device_topic("hg", dev.city, dev.kind, dev.id, "telemetry")
    with mosquitto(tmp_path, f"listener {port} {LOOPBACK}", port):
        worker = Client(port, IOC_ACCOUNT, creds[IOC_ACCOUNT])
        device = Client(port, dev.id, creds[dev.id])
        try:
            assert not worker.subscribe("$share/ioc/hg/+/+/+/telemetry")[0].is_failure
            assert not device.publish(own, b"1").is_failure
            assert worker.wait_messages(1) == [(own, b"1")]
            device.subscribe("$share/x/hg/#")
            assert not device.publish(own, b"2").is_failure
            assert worker.wait_messages(2)[-1] == (own, b"2")
            assert device.wait_messages(1, timeout=0.5) == []
        finally:
            worker.close()
            device.close()


# ------------------------------------------------------------------------------------ TLS


def _openssl(*args: str, cwd: Path) -> None:
    subprocess.run(["openssl", *args], cwd=cwd, check=True, capture_output=True)


def make_ca(where: Path) -> tuple[Path, Path, Path]:
    """A self-signed CA and a server certificate for 127.0.0.1/localhost: (ca, cert, key)."""
    if shutil.which("openssl") is None:
        pytest.skip("openssl not installed")
    _openssl(
        "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-days", "2",
        "-keyout", "ca.key", "-out", "ca.crt", "-subj", "/CN=IOC test CA",
        cwd=where,
    )  # fmt: skip
    _openssl(
        "req", "-newkey", "rsa:2048", "-nodes", "-keyout", "server.key", "-out", "server.csr",
        "-subj", "/CN=localhost", cwd=where,
    )  # fmt: skip
    (where / "san.ext").write_text("subjectAltName=DNS:localhost,IP:127.0.0.1\n")
    _openssl(
        "x509", "-req", "-in", "server.csr", "-CA", "ca.crt", "-CAkey", "ca.key",
        "-CAcreateserial", "-out", "server.crt", "-days", "2", "-extfile", "san.ext",
        cwd=where,
    )  # fmt: skip
    return where / "ca.crt", where / "server.crt", where / "server.key"


def make_client_cert(where: Path, name: str) -> tuple[Path, Path]:
    """A client certificate for ``name`` signed by the CA :func:`make_ca` left in ``where``
    (``ca.crt``, ``ca.key``): (cert, key)."""
    _openssl(
        "req", "-newkey", "rsa:2048", "-nodes", "-keyout", f"{name}.key", "-out", f"{name}.csr",
        "-subj", f"/CN={name}", cwd=where,
    )  # fmt: skip
    (where / "client.ext").write_text("extendedKeyUsage=clientAuth\n")
    _openssl(
        "x509", "-req", "-in", f"{name}.csr", "-CA", "ca.crt", "-CAkey", "ca.key",
        "-CAcreateserial", "-out", f"{name}.crt", "-days", "2", "-extfile", "client.ext",
        cwd=where,
    )  # fmt: skip
    return where / f"{name}.crt", where / f"{name}.key"


def test_tls_listener_with_self_signed_ca(site: Site, tmp_path: Path) -> None:
    creds = _provision(site, tmp_path)
    ca, cert, key = make_ca(tmp_path)
    port = free_port()
    listener = "\n".join(
        [
            f"listener {port} {LOOPBACK}",
            f"cafile {ca}",
            f"certfile {cert}",
            f"keyfile {key}",
            "tls_version tlsv1.2",
        ]
    )
    dev = site.devices[0]
    own = device_topic("hg", dev.city, dev.kind, dev.id, "telemetry")
    with mosquitto(tmp_path, listener, port):
        trusted = ssl.create_default_context(cafile=str(ca))
        ingest = Client(port, IOC_ACCOUNT, creds[IOC_ACCOUNT], tls=trusted)
        device = Client(port, dev.id, creds[dev.id], tls=trusted)
        try:
            assert not ingest.subscribe("hg/#")[0].is_failure
            assert not device.publish(own, b"over tls").is_failure
            assert ingest.wait_messages(1) == [(own, b"over tls")]
            # the ACL holds over TLS too
            assert device.publish("hg/vi-thanh/reports/app", b"x").value == 0x87
        finally:
            ingest.close()
            device.close()
        # a client that does not trust our CA refuses the broker's certificate
        with pytest.raises(ssl.SSLError):
            Client(port, dev.id, creds[dev.id], tls=ssl.create_default_context())
        # plain MQTT on the TLS port gets no CONNACK
        c = mqtt.Client(CallbackAPIVersion.VERSION2, protocol=mqtt.MQTTv5)
        c.username_pw_set(dev.id, creds[dev.id])
        got: list[ReasonCode] = []
        c.on_connect = lambda _c, _u, _f, rc, _p: got.append(rc)
        c.connect(LOOPBACK, port, keepalive=5)
        deadline = time.monotonic() + 2
        while time.monotonic() < deadline and not got:
            c.loop(0.1)
        c.disconnect()
        assert got == []


async def test_ingest_and_simulators_authenticate_over_tls(
    site: Site, tmp_path: Path, database_url: str, flavour: Flavour
) -> None:
    """The IOC's ingest (its `ioc` account) and the simulators (`ioc-simulators`) through a TLS
    listener with the generated ACL, the CA given as IOC_MQTT_CA_FILE: every reading stored."""
    import psycopg

    from ioc.ingest.service import IngestService
    from ioc.simulators.runner import Simulation
    from ioc.simulators.scenario import load_scenario
    from ioc.storage import devices as device_store

    creds = _provision(site, tmp_path)
    ca, cert, key = make_ca(tmp_path)
    port = free_port()
    listener = f"listener {port} {LOCAL_HOST}\ncafile {ca}\ncertfile {cert}\nkeyfile {key}"
    small = replace(site, devices=tuple(d for d in site.devices if d.kind in ("flood", "rain")))
    assert small.devices
    settings = Settings(
        database_url=database_url,
        mqtt_url=f"mqtts://{IOC_ACCOUNT}:{creds[IOC_ACCOUNT]}@{LOCAL_HOST}:{port}",
        mqtt_ca_file=ca,
        mqtt_client_id=f"ingest-tls-{os.getpid()}",
        data_dir=tmp_path,
        ingest_linger_ms=5,
        maintenance_interval_s=3600,
    )
    assert settings.mqtt.tls and settings.mqtt.port == port
    simulators = Settings(
        mqtt_url=f"mqtts://{SIMULATOR_ACCOUNT}:{creds[SIMULATOR_ACCOUNT]}@{LOCAL_HOST}:{port}",
        mqtt_ca_file=ca,
    )
    scenario = load_scenario("normal-day")
    duration = timedelta(minutes=30)
    start = datetime.now(UTC).replace(microsecond=0) - duration - timedelta(minutes=5)
    async with await psycopg.AsyncConnection.connect(database_url, autocommit=True) as db:
        await device_store.sync_site_devices(db, small.devices)
        with mosquitto(tmp_path, listener, port):
            async with IngestService(
                settings, database_url, flavour, reports=report_vocabulary(settings)
            ) as svc:
                await svc.wait_connected(20)
                sim = Simulation(
                    small,
                    scenario,
                    mqtt=simulators.mqtt,
                    speed=0,
                    start=start,
                    duration=duration,
                    reports=None,
                )
                summary = await sim.arun()
                assert summary.unconfirmed == 0 and summary.readings_expected > 0

                async def stored() -> bool:
                    cur = await db.execute("SELECT count(*) FROM readings")
                    row = await cur.fetchone()
                    return row is not None and row[0] >= summary.readings_expected

                await eventually(stored, timeout=60)


def test_mqtt_url_schemes_and_tls_settings(tmp_path: Path) -> None:
    plain = Settings(mqtt_url="mqtt://u:p%40ss@broker").mqtt
    assert (plain.tls, plain.port, plain.username, plain.password) == (False, 1883, "u", "p@ss")
    tls = Settings(mqtt_url="mqtts://u:p@broker").mqtt
    assert (tls.tls, tls.port, tls.ca_file) == (True, 8883, None)
    ca = tmp_path / "ca.crt"
    private = Settings(mqtt_url="mqtt://broker:1884", mqtt_ca_file=ca).mqtt
    assert (private.tls, private.port, private.ca_file) == (True, 1884, ca)
    with pytest.raises(ValueError, match="mqtts://"):
        Settings(mqtt_url="http://broker")
