"""The simulation runner: device models + scenario + faults → MQTT, paced by a simulated clock.

Scale (10,000 devices from one process, 2 cores): everything runs in one asyncio event loop.
Each MQTT connection is an :class:`mqttclient.Client` (asyncio, the ``mqtt5`` codec; no thread
per connection). Two connection modes:

``per-device``
    one connection per device, its own client id and a last will (retained ``offline`` on its
    status topic), exactly as a field device behaves. A device that goes dark (its cabinet lost
    power) has its connection cut without DISCONNECT, so the broker publishes the will. Costs a
    socket per device; fine up to a few thousand.
``shared``
    ``devices_per_connection`` devices multiplexed on each connection, like a LoRaWAN network
    server or a vendor gateway relaying many devices. Trade-off: MQTT has one will per
    connection, so a device has no last will here — the runner publishes retained ``offline``
    on the device's behalf when it goes dark and at a clean end, but if the simulator process
    dies the devices stay ``online`` in the IOC until their data goes stale.
``auto`` (default) is per-device up to ``per_device_limit`` devices, shared above.

Devices speak MQTT v5 (mqttclient's only protocol; the IOC reads v3.1.1 and v5 devices alike,
the broker translates). Flow control: QoS 1 everywhere, published without waiting for each
PUBACK (``publish_nowait``): the client keeps the broker's Receive Maximum in flight and queues
the rest in order; a connection holds at most ``max_outstanding`` messages not yet acknowledged
and the producer waits when a connection is full, so a slow broker slows simulated time down
instead of growing memory. Connects run 256 at a time (the broker's accept queue is finite),
each bounded by a connect timeout. A storm (``reconnect_storm``) and a device going dark drop
connections with ``Client.drop_connection`` — an abort, no DISCONNECT, so wills fire.

Accounting (:class:`Summary`): every message published is counted by kind and type; each
telemetry message carries the number of readings the IOC should store and, when broken on
purpose, the dead-letter reason it should record (:mod:`ioc.simulators.faults`). Readings a model
produces outside the metric catalogue are counted as expected dead letters too (and flagged in
``model_errors``), so the books balance even when a model has a bug.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import functools
import heapq
import logging
import math
import random
import sys
import time
import zlib
from collections import Counter
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field, replace
from datetime import datetime, timedelta
from typing import IO, Any, Protocol

import orjson

from ioc.core.backoff import Backoff
from ioc.core.catalogue import EVENT_TYPES, METRICS
from ioc.core.settings import MqttAddress, Settings
from ioc.core.site import Site, SiteError, load_site
from ioc.core.topics import Channel, device_topic, report_topic
from ioc.simulators.clock import SimClock, recent_start
from ioc.simulators.conditions import Conditions
from ioc.simulators.faults import FaultConfig, FaultConfigError, FaultInjector, Message, Outgoing
from ioc.simulators.model import LOCAL_TZ, DeviceModel, Problems
from ioc.simulators.scenario import Scenario, ScenarioError, load_scenario, parse_duration
from mqttclient import Client, MqttError, PublishRefused, QoS, Will

log = logging.getLogger(__name__)

CONNECTION_MODES = ("auto", "per-device", "shared")
# Lamp events after which the street is dark (citizens report it).
_DARK_EVENTS = frozenset({"lamp_failure", "relay_failure", "control_gear_failure"})
_BOUNDS = {
    kind: {name: (m.minimum, m.maximum) for name, m in table.items()}
    for kind, table in METRICS.items()
}


class SimulationError(RuntimeError):
    """The run cannot go on (broker unreachable or refusing us, bad arguments)."""


class ReportSource(Protocol):
    """Citizen reports between two times (``ioc.simulators.reports.ReportModel`` is one)."""

    def reports(
        self, t0: datetime, t1: datetime, cond: Conditions, problems: Problems
    ) -> list[tuple[str, str, dict[str, object]]]: ...


ModelFactory = Callable[[Site, int], Sequence[DeviceModel]]
ReportFactory = Callable[[Site, int], ReportSource]


def default_models(site: Site, seed: int) -> Sequence[DeviceModel]:
    from ioc.simulators.fleet import build_models

    return build_models(site, seed)


def default_reports(site: Site, seed: int, factor: float = 1.0) -> ReportSource:
    from ioc.simulators.reports import ReportModel

    source: ReportSource = ReportModel(site, seed, factor)
    return source


def amplified_reports(factor: float) -> ReportFactory:
    """The simulators' citizen reports at ``factor`` times the real volume (the demo's)."""
    return functools.partial(default_reports, factor=factor)


# --------------------------------------------------------------------------- results


@dataclass(frozen=True, slots=True)
class Progress:
    """A snapshot for the progress line."""

    sim_time: datetime
    sim_start: datetime
    sim_end: datetime
    sent: int
    rate_per_s: float
    outstanding: int
    connected: int
    connections: int
    wall_s: float

    def line(self) -> str:
        done = (self.sim_time - self.sim_start) / max(
            self.sim_end - self.sim_start, timedelta(seconds=1)
        )
        return (
            f"sim {self.sim_time:%Y-%m-%d %H:%M:%S} ({min(done, 1.0):4.0%})  "
            f"sent {self.sent:,}  {self.rate_per_s:,.0f} msg/s  "
            f"unacked {self.outstanding:,}  links {self.connected:,}/{self.connections:,}"
        )


@dataclass
class Summary:
    """What a run sent, and what the IOC should have recorded as a result."""

    scenario: str
    seed: int
    speed: float
    sim_start: datetime
    sim_end: datetime
    devices: int
    connection_mode: str
    connections: int
    wall_s: float = 0.0
    sent_by_kind: Counter[str] = field(default_factory=Counter)
    telemetry: int = 0
    events: int = 0
    status: int = 0
    reports: int = 0
    readings_expected: int = 0
    events_expected: int = 0
    faults: Counter[str] = field(default_factory=Counter)
    expected_dead_letters: Counter[str] = field(default_factory=Counter)
    model_errors: Counter[str] = field(default_factory=Counter)
    reconnects: int = 0
    unconfirmed: int = 0  # published but never acknowledged by the broker

    @property
    def sent(self) -> int:
        return self.telemetry + self.events + self.status + self.reports

    def format(self) -> str:
        def counts(c: Counter[str]) -> str:
            return ", ".join(f"{k} {v:,}" for k, v in sorted(c.items())) or "none"

        rate = self.sent / self.wall_s if self.wall_s > 0 else 0.0
        lines = [
            f"scenario {self.scenario} (seed {self.seed}, speed {self.speed:g}): "
            f"{self.sim_start.isoformat()} → {self.sim_end.isoformat()}",
            f"devices {self.devices:,} on {self.connections:,} {self.connection_mode} "
            f"connection(s); {self.sent:,} messages in {self.wall_s:.1f} s ({rate:,.0f}/s)",
            f"  telemetry {self.telemetry:,}  events {self.events:,}  status {self.status:,}"
            f"  reports {self.reports:,}",
            f"  by kind: {counts(self.sent_by_kind)}",
            f"  faults injected: {counts(self.faults)}; reconnects {self.reconnects:,}",
            f"  the IOC should store {self.readings_expected:,} readings and "
            f"{self.events_expected:,} events, and dead-letter: "
            f"{counts(self.expected_dead_letters)}",
        ]
        if self.model_errors:
            lines.append(f"  model errors (out of the catalogue): {counts(self.model_errors)}")
        if self.unconfirmed:
            lines.append(f"  WARNING: {self.unconfirmed:,} messages never acknowledged")
        return "\n".join(lines)


# ---------------------------------------------------------------------------- scaling


def scale_site(site: Site, devices: int | None) -> Site:
    """The site with exactly ``devices`` devices: its first N, or clones with suffixed ids.

    Clone ``k`` of ``vt-lamp-0001`` is ``vt-lamp-0001-x{k}`` and feeds from clone ``k`` of its
    cabinet, so cabinet sums stay consistent. Register the scaled devices before the run (the
    IOC dead-letters telemetry of unknown devices).
    """
    if devices is None or devices == len(site.devices):
        return site
    if devices < 1:
        raise ValueError(f"devices must be positive, got {devices}")
    if devices < len(site.devices):
        # Site order lists cabinets before their lamps, so a prefix stays consistent.
        return replace(site, devices=site.devices[:devices])
    out = list(site.devices)
    k = 1
    while len(out) < devices:
        k += 1
        for d in site.devices:
            if len(out) >= devices:
                break
            attrs = dict(d.attributes)
            if isinstance(attrs.get("cabinet"), str):
                attrs["cabinet"] = f"{attrs['cabinet']}-x{k}"
            out.append(replace(d, id=f"{d.id}-x{k}", name=f"{d.name} (#{k})", attributes=attrs))
    return replace(site, devices=tuple(out))


# ------------------------------------------------------------------------ connections


class _Link:
    """One MQTT connection (an :class:`mqttclient.Client`); carries one or many devices.

    Publishing does not wait for the PUBACK (``publish_nowait``): the client keeps at most the
    broker's Receive Maximum in flight and queues the rest in order; this link counts what is
    not yet acknowledged and closes ``space`` at ``max_outstanding``."""

    def __init__(
        self,
        pool: _LinkPool,
        client_id: str,
        device_ids: list[int],
        will_topic: str | None,
    ) -> None:
        self.pool = pool
        self.client_id = client_id
        self.devices = device_ids  # indices into the runner's device table
        self.will_topic = will_topic
        self.client: Client | None = None
        self.task: asyncio.Task[None] | None = None  # the client's life: connect, run, close
        self.stop = asyncio.Event()
        self.up = asyncio.Event()
        self.space = asyncio.Event()
        self.space.set()
        self.idle = asyncio.Event()
        self.idle.set()
        self.outstanding = 0
        self.want_up = True
        self.held = False  # dropped with stay_down (retired): only revive() brings it back
        self.connects = 0
        self.last_error: str | None = None

    # -- client callbacks (on the event loop) ------------------------------------------------

    def _on_connect(self, session_present: bool) -> None:
        self.connects += 1
        self.up.set()
        self.pool.link_up(self)

    def _on_disconnect(self) -> None:
        was_up = self.up.is_set()
        self.up.clear()
        self.pool.link_down(self, was_up)

    def _acked(self, future: asyncio.Future[None]) -> None:
        self.outstanding -= 1
        exc = None if future.cancelled() else future.exception()
        if exc is None:
            self.pool.acked += 1
        elif isinstance(exc, PublishRefused):
            self.pool.acked += 1
            self.pool.refused += 1
            log.warning("%s: %s", self.client_id, exc)
        # ConnectionLost: the run closed first; drain() already counted it as unconfirmed
        if self.outstanding <= self.pool.max_outstanding // 2:
            self.space.set()
        if self.outstanding == 0:
            self.idle.set()

    # -- actions ----------------------------------------------------------------------------

    def publish(self, topic: str, payload: bytes, retain: bool = False) -> None:
        if self.client is None:
            raise SimulationError(f"{self.client_id}: publish before the first connection")
        try:
            future = self.client.publish_nowait(topic, payload, retain=retain)
        except MqttError as exc:
            raise SimulationError(f"{self.client_id}: publish failed: {exc}") from exc
        future.add_done_callback(self._acked)
        self.outstanding += 1
        self.idle.clear()
        if self.outstanding >= self.pool.max_outstanding:
            self.space.clear()

    def cut(self) -> bool:
        """Drop the TCP connection without DISCONNECT (the broker fires the will). The client
        reconnects by itself unless the link is retired (``want_up`` false)."""
        if self.client is None:
            return False
        # also when down (reconnecting): a retired link must then not come back by itself
        self.held = not self.want_up
        return self.client.drop_connection(stay_down=self.held)

    async def run(
        self, started: asyncio.Future[None], attempts: int | None, timeout_s: float
    ) -> None:
        """Connect (``attempts`` tries, ``None``: until stopped), then let the client keep the
        connection (it reconnects with backoff) until ``stop``; close with DISCONNECT."""
        try:
            await self._run(started, attempts, timeout_s)
        finally:
            if not started.done():
                stopped = SimulationError(f"{self.client_id}: stopped before connecting")
                started.set_exception(stopped)

    async def _run(
        self, started: asyncio.Future[None], attempts: int | None, timeout_s: float
    ) -> None:
        pool = self.pool
        backoff = Backoff()
        n = 0
        while not self.stop.is_set():
            n += 1
            client = Client(
                **pool.address.client_options(),
                client_id=self.client_id,
                # publishers only: the broker keeps no session; unacknowledged publishes live
                # in the client and are sent again (DUP) after a reconnect
                clean_start=True,
                session_expiry_s=0,
                keep_alive_s=pool.keepalive_s,
                will=(
                    Will(self.will_topic, payload=b"offline", qos=QoS.AT_LEAST_ONCE, retain=True)
                    if self.will_topic is not None
                    else None
                ),
                connect_timeout_s=timeout_s,
                # the link stops at max_outstanding; status messages on (re)connect come on top
                max_queued_publishes=2 * pool.max_outstanding + len(self.devices) + 16,
                on_connect=self._on_connect,
                on_disconnect=self._on_disconnect,
            )
            self.client = client  # before connecting: on_connect publishes through it
            try:
                async with client:
                    if not started.done():
                        started.set_result(None)
                    await self.stop.wait()
                return
            except (OSError, MqttError) as exc:
                self.last_error = f"{type(exc).__name__}: {exc}"
            if attempts is not None and n >= attempts:
                if not started.done():
                    started.set_exception(
                        SimulationError(
                            f"cannot connect {self.client_id} to {pool.address.host}:"
                            f"{pool.address.port}: {self.last_error}"
                        )
                    )
                return
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(backoff.next_delay()):
                    await self.stop.wait()


# A device waiting longer than this for its connection ends the run with an error, not a hang.
READY_TIMEOUT_S = 120.0


class _LinkPool:
    """Owns the connections: connects (each client then reconnects by itself), ordered close."""

    def __init__(
        self,
        address: MqttAddress,
        *,
        keepalive_s: int,
        max_outstanding: int,
        on_up: Callable[[_Link], None],
        on_down: Callable[[_Link], None],
    ) -> None:
        if max_outstanding < 1:
            raise ValueError(f"max_outstanding must be at least 1, got {max_outstanding}")
        self.address = address
        self.keepalive_s = keepalive_s
        self.max_outstanding = max_outstanding
        self.links: list[_Link] = []
        self.acked = 0
        self.refused = 0
        self.reconnects = 0
        self._on_up = on_up
        self._on_down = on_down
        self._closing = False
        self._tasks = asyncio.TaskGroup()
        self._background: set[asyncio.Task[None]] = set()

    def add(self, client_id: str, devices: list[int], will_topic: str | None = None) -> _Link:
        link = _Link(self, client_id, devices, will_topic)
        self.links.append(link)
        return link

    async def __aenter__(self) -> _LinkPool:
        await self._tasks.__aenter__()
        return self

    async def __aexit__(self, *exc: object) -> None:
        # Ordered close: no more revivals, DISCONNECT every link (no wills), wait, abort the rest.
        self._closing = True
        for task in self._background:
            task.cancel()
        for link in self.links:
            link.stop.set()
        running = [link.task for link in self.links if link.task is not None]
        if running:
            _, late = await asyncio.wait(running, timeout=10.0)
            for task in late:
                task.cancel()
        await self._tasks.__aexit__(None, None, None)

    @property
    def closing(self) -> bool:
        return self._closing

    @property
    def outstanding(self) -> int:
        return sum(link.outstanding for link in self.links)

    @property
    def connected(self) -> int:
        return sum(1 for link in self.links if link.up.is_set())

    async def start(self, *, attempts: int = 3, timeout_s: float = 30.0) -> None:
        """Connect every link; raise :class:`SimulationError` if any cannot be connected."""
        batch = 256  # CONNECTs in flight at once: the broker's accept queue is finite
        for i in range(0, len(self.links), batch):
            await asyncio.gather(
                *(self._bring_up(link, attempts, timeout_s) for link in self.links[i : i + batch])
            )

    async def ready(self, link: _Link) -> None:
        """Wait until ``link`` is connected and has room for another message."""
        while not (link.up.is_set() and link.space.is_set()):
            if not link.up.is_set():
                self.revive(link)  # no-op while a (re)connect is already under way
            try:
                async with asyncio.timeout(READY_TIMEOUT_S):
                    await link.up.wait()
                    await link.space.wait()
            except TimeoutError:
                raise SimulationError(
                    f"{link.client_id}: no usable connection for {READY_TIMEOUT_S:.0f} s"
                ) from None

    def link_up(self, link: _Link) -> None:
        if link.connects > 1:
            self.reconnects += 1
        self._on_up(link)

    def link_down(self, link: _Link, was_up: bool) -> None:
        if was_up:
            self._on_down(link)

    def revive(self, link: _Link) -> None:
        link.want_up = True
        if self._closing or link.up.is_set():
            return
        if link.task is None or link.task.done():
            self._spawn(self._bring_up(link, None, 30.0), f"connect {link.client_id}")
        elif link.held and link.client is not None:
            link.held = False
            link.client.reconnect_now()
        # else its client is reconnecting by its own backoff (a storm's jitter stays)

    def retire(self, link: _Link) -> None:
        """Take a device's link down once its messages are acknowledged (the will fires)."""
        link.want_up = False
        self._spawn(self._retire(link), f"retire {link.client_id}")

    def storm(self, fraction: float, rng: random.Random) -> int:
        """Cut a share of the connected links at once; they all reconnect at once."""
        up = [link for link in self.links if link.up.is_set() and link.want_up]
        if not up:
            return 0
        chosen = rng.sample(up, max(1, round(fraction * len(up))))
        return sum(1 for link in chosen if link.cut())

    async def drain(self, timeout_s: float) -> int:
        """Wait until the broker acknowledged everything; the number still unacknowledged."""
        deadline = time.monotonic() + timeout_s
        while self.outstanding and time.monotonic() < deadline:
            for link in self.links:
                if link.outstanding and not link.want_up:
                    self.revive(link)  # its queued messages need a connection to leave
            await asyncio.sleep(0.02)
        return self.outstanding

    def _spawn(self, coro: Any, name: str) -> None:
        task = self._tasks.create_task(coro, name=name)
        self._background.add(task)
        task.add_done_callback(self._background.discard)

    async def _retire(self, link: _Link) -> None:
        await link.idle.wait()
        if not link.want_up:
            link.cut()

    async def _bring_up(self, link: _Link, attempts: int | None, timeout_s: float) -> None:
        """Start the link's client and wait for its first connection (or its last failure)."""
        if link.task is not None and not link.task.done():
            return
        started: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        link.task = self._tasks.create_task(
            link.run(started, attempts, timeout_s), name=f"mqtt-link {link.client_id}"
        )
        try:
            await started
        except SimulationError:
            if attempts is not None:
                raise  # start(): the run cannot begin
            # a revival: only the pool's close stops it before it connects


# ------------------------------------------------------------------------------ runner


class _Dev:
    """Runtime state of one simulated device."""

    __slots__ = (
        "device",
        "event_topic",
        "interval_ms",
        "link",
        "model",
        "online",
        "seq",
        "status_topic",
        "telemetry_topic",
    )

    def __init__(self, model: DeviceModel, prefix: str) -> None:
        d = model.device
        self.model = model
        self.device = d
        self.telemetry_topic = device_topic(prefix, d.city, d.kind, d.id, Channel.TELEMETRY)
        self.event_topic = device_topic(prefix, d.city, d.kind, d.id, Channel.EVENT)
        self.status_topic = device_topic(prefix, d.city, d.kind, d.id, Channel.STATUS)
        self.interval_ms = max(1000, round(model.interval_s * 1000))
        self.seq = 0
        self.online = True
        self.link: _Link | None = None


class Simulation:
    """One simulated run: ``run()`` (or ``await arun()``) publishes, then returns a Summary."""

    def __init__(
        self,
        site: Site,
        scenario: Scenario,
        *,
        mqtt: MqttAddress,
        seed: int = 7,
        speed: float = 60.0,
        start: datetime | None = None,
        duration: timedelta | None = None,
        faults: FaultConfig | None = None,
        topic_prefix: str = "hg",
        devices: int | None = None,
        connections: str = "auto",
        progress: Callable[[Progress], None] | None = None,
        progress_interval_s: float = 1.0,
        models: ModelFactory = default_models,
        reports: ReportFactory | None = default_reports,
        report_interval_s: float = 60.0,
        per_device_limit: int = 2000,
        devices_per_connection: int = 500,
        max_outstanding: int = 2000,
        keepalive_s: int = 60,
        final_offline: bool = True,
        drain_timeout_s: float = 120.0,
    ) -> None:
        if connections not in CONNECTION_MODES:
            raise ValueError(f"connections must be one of {CONNECTION_MODES}, not {connections!r}")
        self.base_site = site
        self.site = scale_site(site, devices)
        scenario.check_site(site)
        self.start = start or scenario.start
        self.scenario = scenario.with_start(self.start)
        self.duration = duration if duration is not None else scenario.duration
        self.seed = seed
        self.speed = speed
        self.faults = faults or FaultConfig()
        self.mqtt = mqtt
        self.prefix = topic_prefix
        if connections == "auto":
            connections = "per-device" if len(self.site.devices) <= per_device_limit else "shared"
        self.mode = connections
        self.progress = progress
        self.progress_interval_s = progress_interval_s
        self._models = models
        self._reports = reports
        self.report_interval_s = report_interval_s
        self.devices_per_connection = devices_per_connection
        self.max_outstanding = max_outstanding
        self.keepalive_s = keepalive_s
        self.final_offline = final_offline
        self.drain_timeout_s = drain_timeout_s
        # Client ids stay stable per topic prefix (a device keeps its id across runs) and differ
        # between prefixes, so runs on separate prefixes never take over each other's sessions.
        self.client_prefix = f"sim-{zlib.crc32(topic_prefix.encode()):08x}-"

    def run(self) -> Summary:
        """Run to the end in a fresh event loop."""
        return asyncio.run(self.arun())

    async def arun(self) -> Summary:
        """Run to the end in the running event loop."""
        models = list(self._models(self.site, self.seed))
        devs = [_Dev(m, self.prefix) for m in models]
        reports = self._reports(self.site, self.seed) if self._reports else None
        end = self.start + self.duration
        self._summary = summary = Summary(
            scenario=self.scenario.name,
            seed=self.seed,
            speed=self.speed,
            sim_start=self.start,
            sim_end=end,
            devices=len(devs),
            connection_mode=self.mode,
            connections=0,
        )
        self._devs = devs
        self._devs_by_id = {d.device.id: d for d in devs}
        self._clock_now = self.start
        self._injector = FaultInjector(self.faults, self.seed)
        self._storm_rng = random.Random(f"storms/{self.seed}")
        self._flooded: set[int] = set()
        self._dark: set[int] = set()
        clock = SimClock(self.start, self.speed)
        async with _LinkPool(
            self.mqtt,
            keepalive_s=self.keepalive_s,
            max_outstanding=self.max_outstanding,
            on_up=self._link_up,
            on_down=self._link_down,
        ) as pool:
            self._pool = pool
            self._plan_links(pool, devs, with_reports=reports is not None)
            summary.connections = len(pool.links)
            await pool.start()
            # Owned here and awaited in `finally` (a TaskGroup would wrap SimulationError in an
            # ExceptionGroup, which the command could not report plainly).
            ticker = asyncio.create_task(self._progress_loop(clock, end), name="sim-progress")
            try:
                try:
                    await self._produce(clock, devs, reports, end)
                except asyncio.CancelledError:
                    # Stopped from outside (`ioc demo` shutting down): still tell the broker
                    # every device is offline, or their retained `online` would outlive us.
                    with contextlib.suppress(Exception):
                        await asyncio.wait_for(self._finish(devs), 5.0)
                    raise
                await self._finish(devs)
                summary.unconfirmed = await pool.drain(self.drain_timeout_s)
            finally:
                ticker.cancel()
                with contextlib.suppress(asyncio.CancelledError):
                    await ticker
            summary.reconnects = pool.reconnects
            summary.unconfirmed += pool.refused
        summary.wall_s = clock.elapsed_wall_s()
        summary.faults.update({k: v for k, v in self._injector.counts.items() if k != "suppressed"})
        if self._injector.counts["suppressed"]:
            summary.faults["suppressed_by_silence"] = self._injector.counts["suppressed"]
        return summary

    # -- connections ------------------------------------------------------------------------

    def _plan_links(self, pool: _LinkPool, devs: list[_Dev], *, with_reports: bool) -> None:
        if self.mode == "per-device":
            for i, dev in enumerate(devs):
                dev.link = pool.add(self.client_prefix + dev.device.id, [i], dev.status_topic)
        else:
            n = max(1, math.ceil(len(devs) / self.devices_per_connection))
            groups: list[list[int]] = [[] for _ in range(n)]
            for i in range(len(devs)):
                groups[i % n].append(i)
            for k, members in enumerate(groups):
                link = pool.add(f"{self.client_prefix}shared-{k:04d}", members)
                for i in members:
                    devs[i].link = link
        if with_reports:
            self._report_link = pool.add(f"{self.client_prefix}reports", [])

    def _link_up(self, link: _Link) -> None:
        # Per-device: every (re)connect follows a will (or nothing), so say online again.
        # Shared: say it once; a dropped shared link fired no will, the IOC still has online.
        if self.mode == "per-device" or link.connects == 1:
            for i in link.devices:
                dev = self._devs[i]
                if dev.online:
                    self._publish(dev, link, dev.status_topic, b"online", "status", retain=True)

    def _link_down(self, link: _Link) -> None:
        if self.mode == "per-device" and link.will_topic is not None and not self._pool.closing:
            self._summary.status += 1  # the broker publishes our will for us
            self._summary.sent_by_kind[self._devs[link.devices[0]].device.kind] += 1

    # -- production -------------------------------------------------------------------------

    async def _produce(
        self, clock: SimClock, devs: list[_Dev], reports: ReportSource | None, end: datetime
    ) -> None:
        start_ms = round(self.start.timestamp() * 1000)
        end_ms = round(end.timestamp() * 1000)
        heap: list[tuple[int, int]] = []
        for i, dev in enumerate(devs):
            # Devices report on their own phase, as real ones do (not all on the minute).
            phase = zlib.crc32(f"{self.seed}/{dev.device.id}".encode()) % dev.interval_ms
            heap.append((start_ms + phase, i))
        heapq.heapify(heap)
        report_every_ms = round(self.report_interval_s * 1000)
        next_report = start_ms + report_every_ms if reports else end_ms
        # One batch per tick: ~50 ms of wall time at the run's speed, at least 1 s simulated.
        tick_ms = max(1000, round(self.speed * 50)) if self.speed > 0 else 1000
        cond_cache: tuple[int, Conditions] = (-1, self.scenario.conditions_at(self.start))
        while True:
            due = min(heap[0][0] if heap else end_ms, next_report)
            if due >= end_ms:
                break
            await clock.sleep_until(_at(due))
            batch_end = min(end_ms, due + tick_ms)
            while heap and heap[0][0] < batch_end:
                t_ms, i = heapq.heappop(heap)
                # Conditions on a 1-second grid, whatever the speed: same seed, same stream.
                second = t_ms // 1000
                if cond_cache[0] != second:
                    cond_cache = (second, self.scenario.conditions_at(_at(second * 1000)))
                await self._device_tick(devs[i], i, t_ms, cond_cache[1])
                heapq.heappush(heap, (t_ms + devs[i].interval_ms, i))
            if reports is not None and next_report < batch_end:
                cond = self.scenario.conditions_at(_at(next_report))
                await self._publish_reports(reports, next_report, report_every_ms, cond)
                next_report += report_every_ms
            for _ in range(self._injector.take_storms()):
                self._summary.faults["connections_cut"] += self._pool.storm(
                    self.faults.storm_fraction, self._storm_rng
                )
            self._clock_now = _at(batch_end)
            await asyncio.sleep(0)  # let the sockets breathe between batches (fast mode)

    async def _device_tick(self, dev: _Dev, i: int, t_ms: int, cond: Conditions) -> None:
        t = _at(t_ms)
        model = dev.model
        online = model.online(t, cond)
        if online != dev.online:
            await self._set_online(dev, i, online)
        if not online:
            return
        metrics = model.telemetry(t, cond)
        ts = t.isoformat(timespec="milliseconds")
        if metrics:
            dev.seq += 1
            await self._send_telemetry(dev, i, t, ts, metrics)
        events = model.events(t, cond)
        if events:
            await self._send_events(dev, i, ts, events)

    async def _send_telemetry(
        self, dev: _Dev, i: int, t: datetime, ts: str, metrics: dict[str, float]
    ) -> None:
        kind = dev.device.kind
        values = {k: v if type(v) is int else float(v) for k, v in metrics.items()}
        doc = {"ts": ts, "seq": dev.seq, "metrics": values}
        problem = _catalogue_problem(kind, values)
        if problem is not None:
            # A model bug: send it anyway (the IOC must cope), and expect its dead letter.
            self._summary.model_errors[problem] += 1
            messages = [Message(dev.telemetry_topic, orjson.dumps(doc), dev.device.id, 0, problem)]
        else:
            out = Outgoing(dev.telemetry_topic, dev.device.id, t, doc)
            messages = self._injector.apply(out)
        if kind == "flood":
            level = values.get("water_level_m")
            bd1 = dev.device.attributes.get("bd1")
            if level is not None and isinstance(bd1, int | float):
                (self._flooded.add if level >= bd1 else self._flooded.discard)(i)
        for m in messages:
            await self._send(m)

    async def _send_events(
        self, dev: _Dev, i: int, ts: str, events: list[dict[str, object]]
    ) -> None:
        allowed = EVENT_TYPES[dev.device.kind]
        seen: set[object] = set()
        for ev in events:
            etype = ev.get("type")
            payload = orjson.dumps({**ev, "ts": ts})
            if not isinstance(etype, str):
                self._expect_dead("invalid_payload")
            elif etype not in allowed:
                self._expect_dead("unknown_event_type")
            elif etype not in seen:  # the IOC keys events by (device, time, type)
                self._summary.events_expected += 1
            seen.add(etype)
            if etype in _DARK_EVENTS:
                self._dark.add(i)
            self._publish(dev, await self._ready(dev), dev.event_topic, payload, "events")

    def _expect_dead(self, reason: str) -> None:
        self._summary.model_errors[reason] += 1
        self._summary.expected_dead_letters[reason] += 1

    async def _set_online(self, dev: _Dev, i: int, online: bool) -> None:
        dev.online = online
        if online:
            self._dark.discard(i)
        else:
            if dev.device.kind == "lighting":
                self._dark.add(i)
            for m in self._injector.flush(dev.device.id):
                await self._send(m)  # what it held back leaves before it goes dark
        assert dev.link is not None
        if self.mode == "per-device":
            # The connection itself comes and goes: the will says offline, the reconnect online.
            if online:
                self._pool.revive(dev.link)
            else:
                self._pool.retire(dev.link)
            return
        word = b"online" if online else b"offline"
        self._publish(dev, await self._ready(dev), dev.status_topic, word, "status", retain=True)

    async def _publish_reports(
        self, source: ReportSource, t_ms: int, every_ms: int, cond: Conditions
    ) -> None:
        problems = Problems(
            dark_lamps=tuple(self._devs[i].device for i in sorted(self._dark)),
            flooded_stations=tuple(self._devs[i].device for i in sorted(self._flooded)),
        )
        link = self._report_link
        for city, channel, payload in source.reports(
            _at(t_ms - every_ms), _at(t_ms), cond, problems
        ):
            await self._pool.ready(link)
            link.publish(report_topic(self.prefix, city, channel), orjson.dumps(payload))
            self._summary.reports += 1
            self._summary.sent_by_kind["reports"] += 1

    async def _ready(self, dev: _Dev) -> _Link:
        link = dev.link
        assert link is not None
        if not (link.up.is_set() and link.space.is_set()):
            await self._pool.ready(link)
        return link

    async def _send(self, m: Message) -> None:
        dev = self._devs_by_id[m.device_id]
        link = await self._ready(dev)
        self._publish(dev, link, m.topic, m.payload, "telemetry")
        self._summary.readings_expected += m.readings
        if m.dead_letter is not None:
            self._summary.expected_dead_letters[m.dead_letter] += 1

    def _publish(
        self, dev: _Dev, link: _Link, topic: str, payload: bytes, what: str, retain: bool = False
    ) -> None:
        link.publish(topic, payload, retain)
        s = self._summary
        setattr(s, what, getattr(s, what) + 1)
        s.sent_by_kind[dev.device.kind] += 1

    async def _finish(self, devs: list[_Dev]) -> None:
        for m in self._injector.flush():
            await self._send(m)
        if self.final_offline:
            # The simulated devices end with the run: leave no stale retained "online".
            for dev in devs:
                if dev.online:
                    link = await self._ready(dev)
                    self._publish(dev, link, dev.status_topic, b"offline", "status", retain=True)

    async def _progress_loop(self, clock: SimClock, end: datetime) -> None:
        if self.progress is None:
            return
        last_sent, last_wall = 0, clock.elapsed_wall_s()
        while True:
            await asyncio.sleep(self.progress_interval_s)
            wall = clock.elapsed_wall_s()
            sent = self._summary.sent
            rate = (sent - last_sent) / max(wall - last_wall, 1e-9)
            last_sent, last_wall = sent, wall
            self.progress(
                Progress(
                    sim_time=min(self._clock_now, end),
                    sim_start=self.start,
                    sim_end=end,
                    sent=sent,
                    rate_per_s=rate,
                    outstanding=self._pool.outstanding,
                    connected=self._pool.connected,
                    connections=len(self._pool.links),
                    wall_s=wall,
                )
            )


def _at(t_ms: int) -> datetime:
    return datetime.fromtimestamp(t_ms / 1000, LOCAL_TZ)


def _catalogue_problem(kind: str, values: dict[str, float]) -> str | None:
    """The dead-letter reason the IOC will give these values, checked in the decoder's order."""
    bounds = _BOUNDS[kind]
    for name, v in values.items():
        limits = bounds.get(name)
        if limits is None:
            return "unknown_metric"
        if not math.isfinite(v):
            return "wrong_type"  # JSON has no NaN: it goes out as null
        if not limits[0] <= v <= limits[1]:
            return "out_of_range"
    return None


# --------------------------------------------------------------------------- command


def add_simulate_arguments(parser: argparse.ArgumentParser) -> None:
    """The options of ``ioc simulate`` (call on its sub-parser)."""
    parser.add_argument("--scenario", default="normal-day", help="shipped name or a YAML path")
    parser.add_argument(
        "--speed", type=float, default=60.0, help="simulated seconds per second; 0 = flat out"
    )
    parser.add_argument("--seed", type=int, default=7)
    parser.add_argument("--duration", default=None, help="e.g. 2h, 90m (default: the scenario's)")
    parser.add_argument(
        "--start",
        default="auto",
        help="auto | scenario | recent | now | an RFC 3339 time (see docs/simulators.md)",
    )
    parser.add_argument(
        "--faults", default="", help="e.g. all=0.01 or malformed=0.02,duplicate=0.05"
    )
    parser.add_argument("--devices", type=int, default=None, help="scale to N devices (clones)")
    parser.add_argument("--connections", choices=CONNECTION_MODES, default="auto")
    parser.add_argument(
        "--report-factor",
        type=float,
        default=1.0,
        help="multiply citizen-report volumes (1 = ~20 a month a city, "
        "ioc/simulators/reports.yaml; "
        "`ioc demo` uses 30)",
    )
    parser.add_argument("--quiet", action="store_true", help="no progress line")


def resolve_start(
    choice: str,
    scenario: Scenario,
    duration: timedelta,
    speed: float,
    now: datetime,
    *,
    max_age_s: float,
    max_future_s: float,
) -> datetime:
    """The run's start for ``--start``; ``auto`` keeps the file's start if the IOC accepts it.

    The IOC dead-letters timestamps older than ``max_age_s`` or more than ``max_future_s`` ahead
    of the time it receives them; ``recent`` moves the scenario to the latest day on which every
    reading is in the past when published (same local time of day).
    """
    if choice == "scenario":
        return scenario.start
    if choice == "now":
        if speed == 0 or speed > 1:
            # Simulated time would run ahead of the clock: past IOC_READING_MAX_FUTURE_S the
            # IOC refuses every reading, and the summary's expectations would be wrong.
            raise ValueError(
                "--start now needs --speed 1 or slower (faster runs would publish timestamps "
                "in the future); use --start auto or recent"
            )
        return now
    if choice in ("auto", "recent"):
        recent = recent_start(scenario.start, duration, speed, now)
        if choice == "recent":
            return recent
        wall = duration / speed if speed > 0 else timedelta(0)
        fits = scenario.start >= now - timedelta(seconds=max_age_s) + wall and (
            scenario.start + duration <= now + wall + timedelta(seconds=max_future_s)
        )
        fits = fits and (speed == 0 or scenario.start <= now + timedelta(seconds=max_future_s))
        return scenario.start if fits else recent
    try:
        t = datetime.fromisoformat(choice)
    except ValueError:
        raise ValueError(
            f"--start {choice!r}: not auto, scenario, recent, now or RFC 3339"
        ) from None
    if t.tzinfo is None:
        raise ValueError(f"--start {choice!r} needs a UTC offset (+07:00)")
    return t


def main_simulate(
    settings: Settings, args: argparse.Namespace, *, out: IO[str] | None = None
) -> int:
    """``ioc simulate``: run a scenario against ``IOC_MQTT_URL``; the exit code."""
    err = out or sys.stderr
    if settings.mqtt_url is None:
        print("ioc simulate: IOC_MQTT_URL is not set", file=err)
        return 2
    try:
        scenario = load_scenario(args.scenario)
        site = load_site(settings.site_path())
        duration = parse_duration(args.duration) if args.duration else scenario.duration
        # Oversize faults must exceed this IOC's limit, whatever it is configured to.
        faults = FaultConfig.parse(args.faults, oversize_bytes=settings.max_payload_bytes * 4)
        start = resolve_start(
            args.start,
            scenario,
            duration,
            args.speed,
            datetime.now(LOCAL_TZ),
            max_age_s=settings.reading_max_age_s,
            max_future_s=settings.reading_max_future_s,
        )
        sim = Simulation(
            site,
            scenario,
            mqtt=settings.mqtt,
            seed=args.seed,
            speed=args.speed,
            start=start,
            duration=duration,
            faults=faults,
            topic_prefix=settings.mqtt_topic_prefix,
            devices=args.devices,
            connections=args.connections,
            progress=None if args.quiet else _ProgressPrinter(err),
            reports=amplified_reports(args.report_factor),
        )
    except (ScenarioError, SiteError, FaultConfigError, ValueError) as exc:
        print(f"ioc simulate: {exc}", file=err)
        return 2
    print(
        f"ioc simulate: {scenario.name} from {start.isoformat()} for {duration}, "
        f"{len(sim.site.devices):,} devices ({sim.mode} connections) → "
        f"{settings.mqtt.host}:{settings.mqtt.port} under {settings.mqtt_topic_prefix}/",
        file=err,
    )
    try:
        summary = sim.run()
    except SimulationError as exc:
        print(f"\nioc simulate: {exc}", file=err)
        return 1
    print(file=err)
    print(summary.format())
    return 0 if summary.unconfirmed == 0 else 1


class _ProgressPrinter:
    """One progress line, rewritten in place on a terminal, every 10 s otherwise."""

    def __init__(self, out: IO[str]) -> None:
        self.out = out
        self.tty = out.isatty()
        self._last = 0.0

    def __call__(self, p: Progress) -> None:
        if self.tty:
            print(f"\r{p.line()}\x1b[K", end="", file=self.out, flush=True)
        elif p.wall_s - self._last >= 10.0:
            self._last = p.wall_s
            print(p.line(), file=self.out, flush=True)
