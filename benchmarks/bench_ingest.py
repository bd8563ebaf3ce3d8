"""Ingest benchmark: the service beside the machine's own limits, measured in one run.

    .venv/bin/python benchmarks/bench_ingest.py [--messages 100000] [--devices 2000] [--rate 2000]

Phases (all against an embedded Mosquitto configured like production, and PostgreSQL from
IOC_BENCH_DATABASE_URL — a role that may CREATE DATABASE — or an embedded server):
  1. backlog drain: N QoS 1 messages (flood and lighting telemetry from --devices devices) are
     queued for four persistent sessions, then drained by
       a. mosquitto_sub (the broker's delivery rate to a C client),
       b. a paho-mqtt client that only counts (Python's receive ceiling),
       c. `ioc ingest` in its own process (decode, COPY, commit, then PUBACK), rules off
          (IOC_RULES_IN_INGEST=false: they run as `ioc rules run`),
       d. the same with the default rule pack evaluated in the ingest process (as `ioc serve`),
     each rate measured first-to-last message (for ingest: first to last row committed);
  2. PostgreSQL's COPY rate for the same rows (the database's own ceiling);
  3. publish→commit latency p50/p99 at a steady --rate msg/s (ingest in this process, publisher
     in another), and the ingest process's peak RSS from phase 1c.
Prints a table and writes benchmarks/results/ingest-<time>.json.
"""

from __future__ import annotations

import argparse
import asyncio
import io
import os
import shutil
import subprocess
import sys
import tempfile
import threading
import time
import uuid
from datetime import UTC, datetime
from pathlib import Path
from statistics import quantiles

import orjson
import paho.mqtt.client as mqtt
import psycopg
from paho.mqtt.packettypes import PacketTypes
from paho.mqtt.properties import Properties
from psycopg import sql
from psycopg.conninfo import make_conninfo

ROOT = Path(__file__).resolve().parents[1]

from report import save  # noqa: E402  (benchmarks/ is on sys.path when run as a script)

from ioc.core.devices import Device  # noqa: E402
from ioc.core.settings import MqttAddress, Settings  # noqa: E402
from ioc.core.topics import device_topic  # noqa: E402
from ioc.embedded import EmbeddedMosquitto, EmbeddedPostgres  # noqa: E402
from ioc.ingest.service import IngestService  # noqa: E402
from ioc.routing.intake import report_vocabulary  # noqa: E402
from ioc.storage import devices as store  # noqa: E402
from ioc.storage import migrate  # noqa: E402
from mqttclient import Client  # noqa: E402

PREFIX = "bench/hg"
FILTER = f"{PREFIX}/+/+/+/telemetry"


MARK_FIRST, MARK_LAST = "b-mark-first", "b-mark-last"
PY_SPY = shutil.which("py-spy") or str(Path(sys.executable).with_name("py-spy"))


def make_devices(n: int) -> list[Device]:
    """Half flood gauges, half lamps, plus the two markers that open and close the backlog."""
    marks = [
        Device(m, "flood", "vi-thanh", None, "marker", 9.78, 105.47)
        for m in (MARK_FIRST, MARK_LAST)
    ]
    half = n // 2
    flood = [
        Device(f"b-flood-{i:05d}", "flood", "vi-thanh", None, "b", 9.78, 105.47)
        for i in range(half)
    ]
    lamps = [
        Device(f"b-lamp-{i:05d}", "lighting", "nga-bay", None, "b", 9.81, 105.81)
        for i in range(n - half)
    ]
    return marks + flood + lamps


def payloads(devices: list[Device], n: int, t0: float) -> list[tuple[str, bytes]]:
    out = []
    devices = devices[2:]  # markers first and last, below
    for k in range(n):
        d = devices[k % len(devices)]
        if k in (0, n - 1):
            d = Device(
                MARK_FIRST if k == 0 else MARK_LAST, "flood", "vi-thanh", None, "m", 9.78, 105.47
            )
        t = t0 + k // len(devices)  # one reading per device per second of "device time"
        if d.kind == "flood":
            metrics: dict[str, float] = {"water_level_m": 0.5 + (k % 97) / 1000, "battery_v": 12.8}
        else:
            metrics = {
                "power_w": 98.0 + k % 5,
                "voltage_v": 221.5,
                "current_a": 0.45,
                "dim_level_pct": 80,
                "energy_kwh": 1234.5 + k / 1e4,
                "power_factor": 0.95,
            }
        body = {"ts": int(t * 1000), "seq": k, "metrics": metrics}
        out.append((device_topic(PREFIX, d.city, d.kind, d.id, "telemetry"), orjson.dumps(body)))
    return out


def paho_client(addr: MqttAddress, client_id: str, **kw: object) -> mqtt.Client:
    c = mqtt.Client(
        mqtt.CallbackAPIVersion.VERSION2, client_id=client_id, protocol=mqtt.MQTTv5, **kw
    )
    return c


def session_props(receive_maximum: int = 20000) -> Properties:
    p = Properties(PacketTypes.CONNECT)
    p.SessionExpiryInterval = 3600
    p.ReceiveMaximum = receive_maximum
    return p


def create_session(addr: MqttAddress, client_id: str) -> None:
    """Connect once with a persistent session and subscribe, so the broker queues for us."""
    done = threading.Event()
    c = paho_client(addr, client_id)
    c.on_subscribe = lambda *a: done.set()
    c.connect(addr.host, addr.port, clean_start=False, properties=session_props())
    c.subscribe(FILTER, qos=1)
    c.loop_start()
    assert done.wait(10)
    c.disconnect()
    c.loop_stop()


def publish_backlog(addr: MqttAddress, items: list[tuple[str, bytes]]) -> float:
    c = paho_client(addr, f"bench-pub-{uuid.uuid4().hex[:6]}")
    c.max_inflight_messages_set(2000)
    c.max_queued_messages_set(0)
    c.connect(addr.host, addr.port)
    c.loop_start()
    t = time.perf_counter()
    # Packet ids are 16-bit: keep fewer than 65,535 messages outstanding.
    window = 20_000
    for lo in range(0, len(items), window):
        infos = [c.publish(topic, body, qos=1) for topic, body in items[lo : lo + window]]
        for info in infos:
            info.wait_for_publish(120)
    elapsed = time.perf_counter() - t
    c.disconnect()
    c.loop_stop()
    return len(items) / elapsed


def drain_mosquitto_sub(addr: MqttAddress, client_id: str, n: int) -> float:
    exe = shutil.which("mosquitto_sub")
    if exe is None:
        return float("nan")
    cmd = [
        exe,
        "-h",
        addr.host,
        "-p",
        str(addr.port),
        "-V",
        "5",
        "-c",
        "-i",
        client_id,
        "-x",
        "3600",
        "-q",
        "1",
        "-t",
        FILTER,
        "-C",
        str(n),
        "-F",
        "%t",
    ]
    t = time.perf_counter()
    # First-to-last is approximated by process lifetime; connect costs ~1 ms on loopback.
    subprocess.run(cmd, stdout=subprocess.DEVNULL, check=True, timeout=600)
    return n / (time.perf_counter() - t)


def drain_paho_counter(addr: MqttAddress, client_id: str, n: int) -> tuple[float, float]:
    """Rate and CPU seconds of a paho client that only counts (automatic PUBACK)."""
    count = 0
    first = last = 0.0
    done = threading.Event()

    def on_message(c: mqtt.Client, u: object, m: mqtt.MQTTMessage) -> None:
        nonlocal count, first, last
        count += 1
        if count == 1:
            first = time.perf_counter()
        if count == n:
            last = time.perf_counter()
            done.set()

    c = paho_client(addr, client_id)
    c.on_message = on_message
    cpu0 = time.process_time()
    c.connect(addr.host, addr.port, clean_start=False, properties=session_props())
    c.loop_start()
    assert done.wait(600), f"paho counter got {count}/{n}"
    cpu = time.process_time() - cpu0
    c.disconnect()
    c.loop_stop()
    return (n - 1) / (last - first), cpu


def drain_mqttclient(addr: MqttAddress, client_id: str, n: int) -> tuple[float, float]:
    """Rate and CPU seconds of the project's own client (mqttclient, on the mqtt5 codec) that only
    counts; its automatic PUBACKs are batched per event-loop turn."""

    async def run() -> tuple[float, float]:
        async with Client(
            addr.host,
            addr.port,
            client_id=client_id,
            session_expiry_s=3600,
            receive_maximum=20000,
            max_queued=20000,
        ) as c:
            first = last = 0.0
            count = 0
            while count < n:
                await c.next_message()
                count += 1
                if count == 1:
                    first = time.perf_counter()
                count += len(c.drain_queued(n - count))
            last = time.perf_counter()
            return first, last

    cpu0 = time.process_time()
    first, last = asyncio.run(run())
    return (n - 1) / (last - first), time.process_time() - cpu0


def proc_stat(pid: int) -> tuple[float, int]:
    """CPU seconds and peak RSS (bytes) of a process."""
    with open(f"/proc/{pid}/stat") as f:
        fields = f.read().rsplit(")", 1)[1].split()
    cpu = (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")
    hwm = 0
    with open(f"/proc/{pid}/status") as f:
        for line in f:
            if line.startswith("VmHWM:"):
                hwm = int(line.split()[1]) * 1024
    return cpu, hwm


def count_rows(url: str) -> int:  # only at the edges of a measurement: it scans the table
    with psycopg.connect(url) as conn:
        row = conn.execute("SELECT count(*) FROM readings").fetchone()
        return int(row[0]) if row else 0


def drain_ingest(
    url: str, client_id: str, n_rows: int, mqtt_url: str, *, rules: bool, profile: Path | None
) -> dict[str, float]:
    """Run `ioc ingest` on its own process; time first to last row committed.

    Progress is watched through the two marker devices that publish the first and the last
    message of the backlog (cheap index lookups): polling count(*) of a growing table would
    itself eat the database core we are measuring.
    """
    env = {
        **os.environ,
        "IOC_DATABASE_URL": url,
        "IOC_MQTT_URL": mqtt_url,
        "IOC_MQTT_TOPIC_PREFIX": PREFIX,
        "IOC_MQTT_CLIENT_ID": client_id,
        "IOC_LOG_LEVEL": "WARNING",
        "IOC_MAINTENANCE_INTERVAL_S": "3600",
        # false: ingest only stores (rules then run as `ioc rules run`); true: the default pack
        # is evaluated in this process on every batch, as `ioc serve` does
        "IOC_RULES_IN_INGEST": "true" if rules else "false",
    }
    proc = subprocess.Popen([sys.executable, "-m", "ioc", "ingest"], cwd=ROOT, env=env)
    spy: subprocess.Popen[bytes] | None = None
    probe = "SELECT 1 FROM readings WHERE device_id = %s AND metric = 'water_level_m' LIMIT 1"
    try:
        first_t = last_t = 0.0
        first_rows = 0
        cpu_start = 0.0
        deadline = time.monotonic() + 900
        with psycopg.connect(url, autocommit=True) as conn:
            while time.monotonic() < deadline:
                if proc.poll() is not None:
                    raise RuntimeError(f"ioc ingest exited with {proc.returncode}")
                now = time.perf_counter()
                if not first_t and conn.execute(probe, (MARK_FIRST,)).fetchone():
                    first_t = now
                    cpu_start, _ = proc_stat(proc.pid)
                    first_rows = count_rows(url)  # the first batch, committed with the marker
                    if profile is not None:
                        # sampled from outside (py-spy attaches to the pid) from the first
                        # commit on, idle included: summarised by print_profile
                        spy = subprocess.Popen(
                            [PY_SPY, "record", "--pid", str(proc.pid), "--rate", "200",
                             "--format", "raw", "--idle", "--output", str(profile)],
                            stdout=subprocess.DEVNULL,
                        )  # fmt: skip
                # the last message's batch may commit just before the one ahead of it (two
                # writer connections overlap): done when the marker and every row are in
                if (
                    first_t
                    and conn.execute(probe, (MARK_LAST,)).fetchone()
                    and count_rows(url) == n_rows
                ):
                    last_t = now
                    cpu_end, rss = proc_stat(proc.pid)
                    break
                time.sleep(0.005)
            else:
                raise TimeoutError(f"ingest stored {count_rows(url)}/{n_rows} rows")
        stored = count_rows(url)
        assert stored == n_rows, f"ingest stored {stored} rows, expected {n_rows}"
        elapsed = last_t - first_t
        return {
            "rows_per_s": (stored - first_rows) / elapsed,
            "elapsed_s": elapsed,
            "cpu_s": cpu_end - cpu_start,
            "rss_bytes": rss,
            "first_rows": first_rows,
        }
    finally:
        proc.terminate()
        proc.wait(60)
        if spy is not None:
            spy.wait(60)


def print_profile(path: Path, top: int = 12) -> None:
    """Summarise py-spy's collapsed stacks: where the samples' leaves are (own time) and how much
    lies under the ingest stages (inclusive), as shares of the samples where Python was busy."""
    own: dict[str, int] = {}
    under = {"decode": 0, "writer (psycopg, COPY buffer)": 0, "feed rows": 0, "mqtt client": 0,
             "rule engine": 0, "MQTT pump (decode included)": 0}  # fmt: skip
    # py-spy names frames "function (file.py:line)" without the directory: matched by name
    marks = {
        "decode": ("Decoder.",),
        "writer (psycopg, COPY buffer)": ("BatchWriter.",),  # prepare and the COPY run under it
        "feed rows": ("feed_events (", "add_points (", "append (feed.py", "append_and_commit ("),
        "mqtt client": ("Client.",),
        "rule engine": ("Engine.", "RulesService."),
        "MQTT pump (decode included)": ("MqttSubscriber._pump",),
    }
    busy = idle = 0
    for line in path.read_text().splitlines():
        stack, _, count = line.rpartition(" ")
        frames = stack.split(";")
        if not count.isdigit() or not frames[0].startswith("_run_module_as_main"):
            continue  # the event loop's thread only (the rest are idle pool threads)
        n = int(count)
        leaf = frames[-1]
        if leaf.startswith("EpollSelector.select"):
            idle += n  # the loop waiting for the broker or the database
            continue
        busy += n
        name = leaf.split(" (")[0] + " (" + leaf.rsplit("/", 1)[-1]
        own[name] = own.get(name, 0) + n
        for stage, files in marks.items():
            if any(f in frame for frame in frames for f in files):
                under[stage] += n
    total = busy + idle
    print(f"profile {path.name}: {total} samples, event loop busy {busy / max(total, 1):.0%}")
    for stage, n in under.items():
        print(f"  under {stage:32} {n / max(busy, 1):6.1%} of busy")
    for name, n in sorted(own.items(), key=lambda kv: -kv[1])[:top]:
        print(f"  own {n / max(busy, 1):6.1%}  {name}")


def copy_rate(url: str, items: list[tuple[str, bytes]], devices: list[Device]) -> float:
    """COPY the same rows into a table shaped like readings (with its primary key)."""
    buf = io.StringIO()
    by_topic = {device_topic(PREFIX, d.city, d.kind, d.id, "telemetry"): d.id for d in devices}
    rows = 0
    for topic, body in items:
        doc = orjson.loads(body)
        ts = datetime.fromtimestamp(doc["ts"] / 1000, UTC).isoformat()
        for name, value in doc["metrics"].items():
            buf.write(f"{ts}\t{by_topic[topic]}\t{name}\t{value!r}\n")
            rows += 1
    data = buf.getvalue()
    with psycopg.connect(url) as conn:
        conn.execute(
            "CREATE TABLE copy_probe (time timestamptz NOT NULL, device_id text NOT NULL,"
            " metric text NOT NULL, value double precision NOT NULL,"
            " PRIMARY KEY (device_id, metric, time))"
        )
        conn.commit()
        t = time.perf_counter()
        with conn.cursor() as cur, cur.copy("COPY copy_probe FROM STDIN") as copy:
            copy.write(data)
        conn.commit()
        elapsed = time.perf_counter() - t
        conn.execute("DROP TABLE copy_probe")
        conn.commit()
    return rows / elapsed


def latency(
    settings: Settings, devices: list[Device], rate: float, seconds: float
) -> dict[str, float]:
    """Publish at a steady rate from another process; measure publish→commit in the service."""
    lat: list[float] = []

    async def on_commit(records) -> None:  # type: ignore[no-untyped-def]
        now = time.time()
        for rec in records:
            sent = getattr(rec, "seq", None)
            if sent is not None:
                lat.append(now - sent / 1e6)  # seq carries the publish time in µs

    async def run() -> None:
        async with IngestService(
            settings,
            settings.database_url or "",
            migrate(settings.database_url or ""),
            listeners=[on_commit],
            reports=report_vocabulary(settings),
        ) as svc:
            await svc.wait_connected(20)
            pub = subprocess.Popen(  # noqa: ASYNC220 - started once, then awaited off-loop
                [
                    sys.executable,
                    str(Path(__file__).with_name("steady_publisher.py")),
                    settings.mqtt_url or "",
                    PREFIX,
                    str(rate),
                    str(seconds),
                    ",".join(f"{d.city}/{d.kind}/{d.id}" for d in devices[:200]),
                ],
            )
            await asyncio.to_thread(pub.wait)
            await asyncio.sleep(2)

    asyncio.run(run())
    lat.sort()
    q = quantiles(lat, n=100)
    return {
        "samples": len(lat),
        "p50_ms": q[49] * 1000,
        "p99_ms": q[98] * 1000,
        "max_ms": lat[-1] * 1000,
    }


def main() -> int:
    ap = argparse.ArgumentParser()
    ap.add_argument("--messages", type=int, default=100_000)
    ap.add_argument("--devices", type=int, default=2000)
    ap.add_argument("--rate", type=float, default=2000)
    ap.add_argument("--latency-seconds", type=float, default=30)
    ap.add_argument(
        "--profile",
        type=Path,
        metavar="DIR",
        help="sample both ingest drains with py-spy (must be installed: `.venv/bin/pip install"
        " py-spy`; not a project dependency) and write collapsed stacks to DIR",
    )
    args = ap.parse_args()
    if args.profile is not None:
        args.profile.mkdir(parents=True, exist_ok=True)

    work = Path(tempfile.mkdtemp(prefix="ioc-bench-"))
    with EmbeddedMosquitto(work / "mosquitto") as broker, _database(work) as server_url:
        addr = MqttAddress(broker.url)
        name = f"ioc_bench_{uuid.uuid4().hex[:8]}"
        with psycopg.connect(server_url, autocommit=True) as conn:
            conn.execute(sql.SQL("CREATE DATABASE {}").format(sql.Identifier(name)))
        try:
            url = make_conninfo(server_url, dbname=name)
            devices = make_devices(args.devices)
            # a second database for the drain with rules in the ingest process
            url_rules = make_conninfo(server_url, dbname=name + "_rules")
            with psycopg.connect(server_url, autocommit=True) as conn:
                conn.execute(sql.SQL("CREATE DATABASE {}").format(sql.Identifier(name + "_rules")))

            async def register(target: str) -> None:
                async with await psycopg.AsyncConnection.connect(target) as conn:
                    await store.sync_site_devices(conn, devices)
                    await conn.commit()

            for target in (url, url_rules):
                migrate(target)
                asyncio.run(register(target))
            items = payloads(devices, args.messages, time.time() - 3 * 86400)
            n_rows = sum(len(orjson.loads(b)["metrics"]) for _, b in items)
            ids = {
                k: f"bench-{k}-{uuid.uuid4().hex[:6]}"
                for k in ("sub", "paho", "mqttclient", "ingest", "ingest-rules")
            }
            for cid in ids.values():
                create_session(addr, cid)
            # The ingest session must exist with the service's own subscriptions; create_session's
            # filter covers the same telemetry topics, and ingest re-subscribes on connect.
            pub_rate = publish_backlog(addr, items)
            print(
                f"backlog of {len(items)} messages ({n_rows} rows) queued {len(ids)}x;"
                f" publish {pub_rate:,.0f} msg/s"
            )
            sub_rate = drain_mosquitto_sub(addr, ids["sub"], len(items))
            paho_rate, paho_cpu = drain_paho_counter(addr, ids["paho"], len(items))
            own_rate, own_cpu = drain_mqttclient(addr, ids["mqttclient"], len(items))
            spies = (
                (args.profile / "ingest.txt", args.profile / "ingest-rules.txt")
                if args.profile is not None
                else (None, None)
            )
            ing = drain_ingest(
                url, ids["ingest"], n_rows, broker.url, rules=False, profile=spies[0]
            )
            ing_r = drain_ingest(
                url_rules, ids["ingest-rules"], n_rows, broker.url, rules=True, profile=spies[1]
            )
            ingest_rules_msgs = ing_r["rows_per_s"] * len(items) / n_rows
            ingest_msgs = ing["rows_per_s"] * len(items) / n_rows
            cp = copy_rate(url, items, devices)
            settings = Settings(
                database_url=url,
                mqtt_url=broker.url,
                mqtt_topic_prefix=PREFIX,
                mqtt_client_id=f"bench-lat-{uuid.uuid4().hex[:6]}",
            )
            lat = latency(settings, devices, args.rate, args.latency_seconds)
        finally:
            # the bench's databases hold ~1 GB of readings each: not left behind
            with psycopg.connect(server_url, autocommit=True) as conn:
                for db in (name, name + "_rules"):
                    conn.execute(
                        sql.SQL("DROP DATABASE IF EXISTS {} WITH (FORCE)").format(
                            sql.Identifier(db)
                        )
                    )

    result = {
        "date": datetime.now(UTC).isoformat(timespec="seconds"),
        "machine": {"cpus": os.cpu_count(), "python": sys.version.split()[0]},
        "messages": len(items),
        "rows": n_rows,
        "devices": args.devices,
        "publish_msg_s": pub_rate,
        "mosquitto_sub_msg_s": sub_rate,
        "paho_counter_msg_s": paho_rate,
        "paho_counter_cpu_per_msg_us": paho_cpu / len(items) * 1e6,
        "mqttclient_msg_s": own_rate,
        "mqttclient_cpu_per_msg_us": own_cpu / len(items) * 1e6,
        "mqttclient_vs_paho": own_rate / paho_rate,
        "mqttclient_vs_mosquitto_sub": own_rate / sub_rate,
        "ingest_msg_s": ingest_msgs,
        "ingest_rows_s": ing["rows_per_s"],
        "ingest_cpu_cores": ing["cpu_s"] / ing["elapsed_s"],
        "ingest_peak_rss_mb": ing["rss_bytes"] / 2**20,
        "copy_rows_s": cp,
        "copy_msg_s": cp * len(items) / n_rows,
        "ingest_vs_paho": ingest_msgs / paho_rate,
        "ingest_vs_mosquitto_sub": ingest_msgs / sub_rate,
        "ingest_vs_copy": ing["rows_per_s"] / cp,
        "ingest_with_rules_msg_s": ingest_rules_msgs,
        "ingest_with_rules_vs_paho": ingest_rules_msgs / paho_rate,
        "ingest_with_rules_cpu_cores": ing_r["cpu_s"] / ing_r["elapsed_s"],
        "ingest_with_rules_peak_rss_mb": ing_r["rss_bytes"] / 2**20,
        "latency_rate_msg_s": args.rate,
        **{f"latency_{k}": v for k, v in lat.items()},
    }
    path = save("ingest", result)
    if args.profile is not None:
        for spied in ("ingest.txt", "ingest-rules.txt"):
            if (args.profile / spied).exists():
                print_profile(args.profile / spied)
    for k, v in result.items():
        print(f"{k:32} {v:,.3f}" if isinstance(v, float) else f"{k:32} {v}")
    print(f"written {path}")
    return 0


class _database:
    """IOC_BENCH_DATABASE_URL, or an embedded PostgreSQL for the run."""

    def __init__(self, work: Path) -> None:
        self.work = work
        self.pg: EmbeddedPostgres | None = None

    def __enter__(self) -> str:
        url = os.environ.get("IOC_BENCH_DATABASE_URL")
        if url:
            return url
        self.pg = EmbeddedPostgres(self.work / "postgres")
        return self.pg.start()

    def __exit__(self, *exc: object) -> None:
        if self.pg is not None:
            self.pg.stop()


if __name__ == "__main__":
    sys.exit(main())
