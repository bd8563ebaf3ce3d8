"""Simulated clock, scenarios, fault injection and the runner end to end (real broker, ingest).

The device models are a sibling module written in parallel; until they exist the end-to-end
run uses the small fake models below (they stand in for ``ioc.simulators.fleet.build_models``, not
for any external service). The real models run too as soon as their modules are in the tree.
"""

from __future__ import annotations

import asyncio
import importlib.util
import textwrap
from collections import Counter
from datetime import datetime, timedelta
from pathlib import Path
from zoneinfo import ZoneInfo

import orjson
import psycopg
import pytest

from ioc.core.devices import Device
from ioc.core.settings import Settings
from ioc.core.site import Site, load_site
from ioc.ingest.service import IngestService
from ioc.routing.intake import report_vocabulary
from ioc.simulators.clock import SimClock, recent_start
from ioc.simulators.conditions import Conditions
from ioc.simulators.faults import FaultConfig, FaultConfigError, FaultInjector, Message, Outgoing
from ioc.simulators.model import LOCAL_TZ, DeviceModel, Problems
from ioc.simulators.runner import Simulation, resolve_start, scale_site
from ioc.simulators.scenario import (
    ScenarioError,
    available_scenarios,
    load_scenario,
    parse_duration,
)
from ioc.storage import Flavour
from ioc.storage import devices as store
from tests.conftest import eventually

SITE_FILE = Path(__file__).parent.parent / "ioc" / "site_data" / "hau-giang.yaml"
T0 = datetime(2026, 10, 27, 17, 0, tzinfo=LOCAL_TZ)


@pytest.fixture(scope="module")
def site() -> Site:
    return load_site(SITE_FILE)


# ------------------------------------------------------------------------------- clock


class FakeTime:
    def __init__(self) -> None:
        self.now = 1000.0
        self.sleeps: list[float] = []

    def monotonic(self) -> float:
        return self.now

    async def sleep(self, s: float) -> None:
        self.sleeps.append(s)
        self.now += s


async def test_fast_clock_jumps_without_sleeping() -> None:
    ft = FakeTime()
    clock = SimClock(T0, 0, monotonic=ft.monotonic, sleep=ft.sleep)
    await clock.sleep_until(T0 + timedelta(days=3))
    assert ft.sleeps == []
    assert clock.now() == T0 + timedelta(days=3)
    await clock.sleep_until(T0)  # never backwards
    assert clock.now() == T0 + timedelta(days=3)


async def test_speed_60_maps_a_wall_second_to_a_simulated_minute() -> None:
    ft = FakeTime()
    clock = SimClock(T0, 60, monotonic=ft.monotonic, sleep=ft.sleep)
    ft.now += 1.0
    assert clock.now() == T0 + timedelta(minutes=1)
    await clock.sleep_until(T0 + timedelta(minutes=3))
    assert ft.sleeps == [pytest.approx(2.0)]
    assert clock.now() == T0 + timedelta(minutes=3)
    await clock.sleep_until(T0 + timedelta(minutes=2))  # already due: no sleep
    assert len(ft.sleeps) == 1


def test_clock_refuses_naive_start_and_negative_speed() -> None:
    with pytest.raises(ValueError, match="offset"):
        SimClock(datetime(2026, 1, 1), 1)
    with pytest.raises(ValueError, match="speed"):
        SimClock(T0, -1)


def test_recent_start_keeps_the_time_of_day_and_ends_in_the_past() -> None:
    now = datetime(2026, 11, 28, 10, 17, tzinfo=LOCAL_TZ)
    start = recent_start(T0, timedelta(hours=12), 60, now)
    assert (start.hour, start.minute) == (17, 0)
    # Published flat out by wall time now + 12 min: every reading must be in the past then.
    assert start + timedelta(hours=12) <= now + timedelta(minutes=12)
    assert start + timedelta(days=1) + timedelta(hours=12) > now + timedelta(minutes=12)
    assert recent_start(T0, timedelta(hours=2), 0, now) + timedelta(hours=2) <= now


def test_resolve_start_keeps_a_start_the_ioc_accepts() -> None:
    sc = load_scenario("normal-day")
    now = sc.start + timedelta(days=2)
    kw = {"max_age_s": 7 * 86400.0, "max_future_s": 300.0}
    assert resolve_start("auto", sc, sc.duration, 0, now, **kw) == sc.start
    later = sc.start + timedelta(days=30)
    moved = resolve_start("auto", sc, sc.duration, 0, later, **kw)
    assert moved != sc.start and moved.time() == sc.start.time()
    assert resolve_start("scenario", sc, sc.duration, 0, later, **kw) == sc.start
    assert resolve_start("2026-01-01T00:00:00+07:00", sc, sc.duration, 0, later, **kw).year == 2026
    with pytest.raises(ValueError, match="--start"):
        resolve_start("yesterday", sc, sc.duration, 0, later, **kw)


# --------------------------------------------------------------------------- scenarios


def write(tmp_path: Path, text: str, name: str = "s.yaml") -> Path:
    p = tmp_path / name
    p.write_text(text, encoding="utf-8")
    return p


HEAD = """\
name: test-scenario
description: {vi: "thử", en: "test"}
start: 2026-10-27T17:00:00+07:00
duration: 4h
"""


def test_conditions_at_step_boundaries_and_ramps(tmp_path: Path) -> None:
    sc = load_scenario(
        write(
            tmp_path,
            HEAD
            + textwrap.dedent(
                """\
            timeline:
              - at: "+1h"
                set: {tide_factor: 1.4, cabinet_power_loss: [nb-cab-03]}
              - at: "+2h"
                ramp: 1h
                set: {rain_mm_h: {vi-thanh: 60}, traffic_capacity: {nb-tfd-01: 0.2}}
              - at: 2026-10-27T20:30:00+07:00
                clear: [cabinet_power_loss.nb-cab-03, rain_mm_h]
            """
            ),
        )
    )
    at = lambda minutes: sc.conditions_at(sc.start + timedelta(minutes=minutes))  # noqa: E731
    assert at(-5) == Conditions() and at(59) == Conditions()
    assert at(60).tide_factor == 1.4 and at(60).cabinet_power_loss == {"nb-cab-03"}
    assert at(120).rain_mm_h == {"vi-thanh": 0.0}
    assert at(150).rain_mm_h["vi-thanh"] == pytest.approx(30.0)
    # An absent capacity means a free road (1.0): the ramp starts there.
    assert at(150).traffic_capacity["nb-tfd-01"] == pytest.approx(0.6)
    assert at(180).rain_mm_h["vi-thanh"] == 60.0 and at(200).rain_mm_h["vi-thanh"] == 60.0
    assert at(210).rain_mm_h == {} and at(210).cabinet_power_loss == frozenset()
    assert at(210).tide_factor == 1.4 and at(210).traffic_capacity == {"nb-tfd-01": 0.2}
    moved = sc.with_start(sc.start + timedelta(days=30))
    assert moved.conditions_at(moved.start + timedelta(minutes=150)) == at(150)


@pytest.mark.parametrize(
    ("timeline", "where", "message"),
    [
        (
            '  - {at: "+1h", set: {rain_mm_h: {vi-thanh: heavy}}}',
            "timeline[0].set.rain_mm_h.vi-thanh",
            "not a number",
        ),
        ('  - {at: "+1h", set: {snow: 1}}', "timeline[0].set.snow", "not a Conditions field"),
        ('  - {at: "+5h", set: {tide_factor: 1}}', "timeline[0].at", "after the scenario's end"),
        ('  - {at: "1h", set: {tide_factor: 1}}', "timeline[0].at", "with a sign"),
        (
            '  - {at: "+1h", set: {tide_factor: 1}}\n  - {at: "+30m", clear: [tide_factor]}',
            "timeline[1].at",
            "time order",
        ),
        (
            '  - {at: "+1h", set: {camera_events: {nb-cam-01: meteor}}}',
            "timeline[0].set.camera_events.nb-cam-01",
            "not one of",
        ),
        (
            '  - {at: "+1h", set: {traffic_capacity: {nb-tfd-01: 2}}}',
            "timeline[0].set.traffic_capacity.nb-tfd-01",
            "outside",
        ),
        ('  - {at: "+1h", clear: [fog]}', "timeline[0].clear[0]", "not a field"),
        ('  - {at: "+1h", ramp: soon, set: {tide_factor: 1}}', "timeline[0].ramp", "a duration"),
        ('  - {at: "+1h", sett: {tide_factor: 1}}', "timeline[0].sett", "unknown key"),
    ],
)
def test_validation_errors_name_the_file_and_the_step(
    tmp_path: Path, timeline: str, where: str, message: str
) -> None:
    path = write(tmp_path, HEAD + "timeline:\n" + timeline + "\n", "bad.yaml")
    with pytest.raises(ScenarioError) as err:
        load_scenario(path)
    assert err.value.where == where
    assert message in err.value.message
    assert str(err.value).startswith(f"{path}: {where}: ")


def test_top_level_errors(tmp_path: Path) -> None:
    with pytest.raises(ScenarioError, match=r"start: .*UTC offset"):
        load_scenario(write(tmp_path, HEAD.replace("+07:00", "") + "timeline: []\n"))
    with pytest.raises(ScenarioError, match="description: needs"):
        load_scenario(write(tmp_path, HEAD.replace('en: "test"', 'en: ""') + "timeline: []\n"))
    with pytest.raises(ScenarioError, match=r"no scenario 'nope'; shipped: .*normal-day"):
        load_scenario("nope")
    assert parse_duration("1h30m") == timedelta(minutes=90)
    with pytest.raises(ValueError):
        parse_duration("1 hour")


def test_site_check_names_the_step(tmp_path: Path, site: Site) -> None:
    sc = load_scenario(
        write(
            tmp_path,
            HEAD
            + textwrap.dedent(
                """\
            timeline:
              - {at: "+1h", set: {tide_factor: 1.2}}
              - {at: "+2h", set: {cabinet_power_loss: [nb-lamp-01-001]}}
            """
            ),
        )
    )
    with pytest.raises(ScenarioError) as err:
        sc.check_site(site)
    assert err.value.where == "timeline[1].set.cabinet_power_loss.nb-lamp-01-001"
    assert "needs a cabinet" in err.value.message


@pytest.mark.parametrize("name", available_scenarios())
def test_shipped_scenarios_load_and_name_only_site_devices(name: str, site: Site) -> None:
    sc = load_scenario(name)
    assert sc.name == name and sc.description["vi"] and sc.description["en"]
    sc.check_site(site)
    assert sc.device_ids() <= set(site.devices_by_id)
    for minutes in range(0, int(sc.duration.total_seconds() // 60) + 1, 5):
        sc.conditions_at(sc.start + timedelta(minutes=minutes))


def test_the_four_scenarios_of_the_issue_ship() -> None:
    assert {
        "normal-day",
        "vi-thanh-spring-tide-flood",
        "vi-thanh-spring-tide",
        "vi-thanh-storm-surge",
        "nga-bay-cable-theft",
        "nga-bay-accident",
    } <= set(available_scenarios())
    theft = load_scenario("nga-bay-cable-theft")
    night = theft.conditions_at(theft.start + timedelta(hours=6))
    # theft is downstream of the cabinet: supply stays, the feeder is cut
    assert night.feeder_cut == {"nb-cab-03"} and not night.cabinet_power_loss
    accident = load_scenario("nga-bay-accident")
    crash = accident.conditions_at(accident.start + timedelta(minutes=31))
    assert crash.camera_events == {"nb-cam-01": "accident"}
    later = accident.conditions_at(accident.start + timedelta(minutes=70))
    assert {"nb-tfd-04", "nb-tfd-06", "nb-tfd-09"} <= set(later.traffic_capacity)


# ------------------------------------------------------------------------------ faults


def outgoing(i: int, device: str = "vt-flood-01") -> Outgoing:
    t = T0 + timedelta(minutes=i)
    doc = {
        "ts": t.isoformat(timespec="milliseconds"),
        "seq": i,
        "metrics": {"water_level_m": 0.5 + i / 1000, "battery_v": 12.8},
    }
    return Outgoing(f"hg/vi-thanh/flood/{device}/telemetry", device, t, doc)


def run_injector(
    config: FaultConfig, seed: int, n: int = 2000
) -> tuple[list[Message], FaultInjector]:
    inj = FaultInjector(config, seed)
    sent = []
    for i in range(n):
        sent.extend(inj.apply(outgoing(i, f"d{i % 7}")))
    sent.extend(inj.flush())
    return sent, inj


def test_fault_injector_counts_and_labels_every_fault() -> None:
    config = FaultConfig.parse("all=0.04,reconnect_storm=0.01,silence_s=300")
    sent, inj = run_injector(config, seed=3)
    for name in ("malformed", "wrong_type", "duplicate", "out_of_order", "clock_skew"):
        assert inj.counts[name] > 30, name
    assert inj.counts["oversize"] > 30 and inj.counts["silence"] > 30
    assert inj.take_storms() == inj.counts["reconnect_storm"] > 0
    assert inj.take_storms() == 0
    dead = Counter(m.dead_letter for m in sent if m.dead_letter)
    assert dead == inj.dead_letters
    assert set(dead) == {"malformed_json", "wrong_type", "timestamp_out_of_bounds", "oversize"}
    for m in sent:
        if m.dead_letter == "malformed_json":
            with pytest.raises(orjson.JSONDecodeError):
                orjson.loads(m.payload)
        elif m.dead_letter == "wrong_type":
            assert any(isinstance(v, str) for v in orjson.loads(m.payload)["metrics"].values())
        elif m.dead_letter == "timestamp_out_of_bounds":
            ts = datetime.fromisoformat(orjson.loads(m.payload)["ts"])
            assert ts > T0 + timedelta(days=300)
        elif m.dead_letter == "oversize":
            assert len(m.payload) > config.oversize_bytes
    # Every broken payload is distinct: the IOC folds identical dead letters into one row.
    bad = [(m.topic, m.payload) for m in sent if m.dead_letter]
    assert len(set(bad)) == len(bad)
    # Duplicates repeat bytes and add no readings; everything stored is stored once.
    stored = [(m.topic, m.payload) for m in sent if m.readings]
    assert len(set(stored)) == len(stored)
    dups = [m for m in sent if m.fault == "duplicate"]
    assert len(dups) == inj.counts["duplicate"] and all(m.readings == 0 for m in dups)
    assert all((m.topic, m.payload) in set(stored) for m in dups)
    assert sum(m.readings for m in sent) == 2 * len(stored)


def test_out_of_order_messages_arrive_after_a_later_one() -> None:
    sent, inj = run_injector(FaultConfig(out_of_order=0.2), seed=5, n=300)
    assert inj.counts["out_of_order"] > 20
    seen: dict[str, int] = {}
    backwards = 0
    for m in sent:
        seq = orjson.loads(m.payload)["seq"]
        backwards += seq < seen.get(m.device_id, -1)
        seen[m.device_id] = max(seq, seen.get(m.device_id, -1))
    assert backwards == inj.counts["out_of_order"]
    assert sorted(orjson.loads(m.payload)["seq"] for m in sent) == list(range(300))


def test_silence_withholds_a_device_for_a_while() -> None:
    inj = FaultInjector(FaultConfig(silence=1.0, silence_s=600), seed=1)
    assert inj.apply(outgoing(0)) == []  # starts a 10-minute silence
    inj.config = FaultConfig()  # no more faults: only the silence in force remains
    inj._thresholds = []
    assert [inj.apply(outgoing(i)) for i in range(1, 10)] == [[]] * 9
    assert len(inj.apply(outgoing(10))) == 1
    assert inj.counts["suppressed"] == 10 and inj.counts["silence"] == 1


def test_fault_injection_is_deterministic_for_a_seed() -> None:
    config = FaultConfig.parse("all=0.05")
    a, _ = run_injector(config, seed=9, n=500)
    b, _ = run_injector(config, seed=9, n=500)
    c, _ = run_injector(config, seed=10, n=500)
    assert a == b
    assert a != c


def test_fault_config_parse_and_validation() -> None:
    assert not FaultConfig.parse("").enabled
    c = FaultConfig.parse("malformed=0.02, duplicate=0.05, oversize_bytes=1000")
    assert (c.malformed, c.duplicate, c.oversize_bytes) == (0.02, 0.05, 1000)
    assert FaultConfig.parse("all=0.01").reconnect_storm == 0.0
    with pytest.raises(FaultConfigError, match="'typo' is not one of"):
        FaultConfig.parse("typo=0.1")
    with pytest.raises(FaultConfigError, match=r"outside 0\.\.1"):
        FaultConfig(duplicate=1.5)
    with pytest.raises(FaultConfigError, match="add up"):
        FaultConfig.parse("all=0.2")


# ----------------------------------------------------------------------------- scaling


def test_scale_site_clones_with_consistent_cabinets(site: Site) -> None:
    big = scale_site(site, 1000)
    assert len(big.devices) == 1000 and len(big.devices_by_id) == 1000
    for d in big.devices:
        if d.kind == "lighting":
            assert d.attributes["cabinet"] in big.devices_by_id
    assert big.device("vt-flood-01-x2").attributes["bd3"] == 0.75
    assert len(scale_site(site, 10).devices) == 10
    assert scale_site(site, None) is site


# ------------------------------------------------------------------ fake device models

_FAKE_METRICS = {
    "flood": {"water_level_m": 0.4, "battery_v": 12.9},
    "rain": {"rain_rate_mm_h": 0.0, "rain_mm": 0.0},
    "salinity": {"salinity_ppt": 0.2, "water_temp_c": 29.0},
    "lighting": {"power_w": 98.0, "voltage_v": 221.0, "current_a": 0.45, "power_factor": 0.96},
    "cabinet": {"voltage_l1_v": 221.0, "voltage_l2_v": 222.0, "voltage_l3_v": 220.0},
    "traffic": {"count_motorbike": 120, "count_car": 14, "speed_kmh": 32.0},
}


class FakeModel:
    """Stands in for a device model of simulators/<kind>.py (being written in parallel)."""

    interval_s = 60.0

    def __init__(self, device: Device) -> None:
        self.device = device
        self._raised: set[str] = set()

    def telemetry(self, t: datetime, cond: Conditions) -> dict[str, float] | None:
        if self.device.attributes.get("role") == "camera":
            return None  # cameras send events only
        values = dict(_FAKE_METRICS[self.device.kind])
        if self.device.kind == "flood":
            values["water_level_m"] += cond.water_offset_m.get(self.device.city, 0.0)
        return values

    def events(self, t: datetime, cond: Conditions) -> list[dict[str, object]]:
        # Raised once when a condition appears (an edge), as a camera or cabinet would.
        now: set[str] = set()
        if event := cond.camera_events.get(self.device.id):
            now.add(event)
        if self.device.id in cond.cabinet_power_loss:
            now.add("power_loss")
        new, self._raised = now - self._raised, now
        return [{"type": e, "detail": "fake"} for e in sorted(new)]

    def online(self, t: datetime, cond: Conditions) -> bool:
        cab = self.device.attributes.get("cabinet")
        return cab not in cond.cabinet_power_loss and self.device.id not in cond.silent_devices


def fake_models(site: Site, seed: int) -> list[DeviceModel]:
    return [FakeModel(d) for d in site.devices]


class FakeReports:
    def reports(
        self, t0: datetime, t1: datetime, cond: Conditions, problems: Problems
    ) -> list[tuple[str, str, dict[str, object]]]:
        if not problems.dark_lamps:
            return []
        lamp = problems.dark_lamps[0]
        body = {"id": f"app-{int(t1.timestamp())}", "ts": t1.isoformat(), "category": "chieu-sang"}
        where = {"lat": lamp.lat, "lon": lamp.lon, "description": f"Đèn {lamp.id} không sáng."}
        return [(lamp.city, "app", {**body, **where})]


# ------------------------------------------------------------------------- end to end

_KIND_MODULES = ("flood", "salinity", "rain", "lighting", "cabinet", "traffic", "reports", "sun")
REAL_MODELS = all(importlib.util.find_spec(f"ioc.simulators.{m}") for m in _KIND_MODULES)


def subset(site: Site, *ids: str, cabinet: str) -> Site:
    chosen = [site.device(i) for i in ids] + list(site.lamps_on(cabinet))
    return Site(
        name=site.name,
        timezone=site.timezone,
        cities=site.cities,
        agencies=site.agencies,
        alarm_levels=site.alarm_levels,
        devices=tuple(chosen),
    )


SCENARIO = """\
name: e2e-theft-and-crash
description: {vi: "kiểm thử", en: "end-to-end test"}
start: 2026-11-20T22:30:00+07:00
duration: 2h
timeline:
  - {at: "+5m", set: {camera_events: {nb-cam-01: accident}}}
  - {at: "+7m", clear: [camera_events]}
  - {at: "+10m", set: {cabinet_power_loss: [nb-cab-03]}}
  - {at: "+25m", clear: [cabinet_power_loss]}
"""


async def count_by(db: psycopg.AsyncConnection, query: str) -> dict[str, int]:
    cur = await db.execute(query.encode())
    return {str(k): int(v) for k, v in await cur.fetchall()}


async def scalar(db: psycopg.AsyncConnection, query: str) -> int:
    cur = await db.execute(query.encode())
    row = await cur.fetchone()
    assert row is not None
    return int(row[0])


@pytest.mark.parametrize(
    ("models", "connections"),
    [
        ("fake", "per-device"),
        ("fake", "shared"),
        pytest.param(
            "real",
            "per-device",
            marks=pytest.mark.skipif(not REAL_MODELS, reason="device model modules not in tree"),
        ),
    ],
)
async def test_stored_readings_and_dead_letters_match_what_was_sent(
    models: str,
    connections: str,
    tmp_path: Path,
    site: Site,
    settings: Settings,
    flavour: Flavour,
    db: psycopg.AsyncConnection,
) -> None:
    small = subset(site, "nb-cab-03", "nb-flood-01", "nb-tfd-01", "nb-cam-01", cabinet="nb-cab-03")
    await store.sync_site_devices(db, small.devices)
    scenario = load_scenario(write(tmp_path, SCENARIO, "e2e.yaml"))
    # Fast mode, ending in the past so the IOC's timestamp window accepts every good reading.
    start = datetime.now(LOCAL_TZ).replace(microsecond=0) - scenario.duration - timedelta(minutes=5)
    faults = FaultConfig.parse(
        "all=0.03,reconnect_storm=0.003",
        oversize_bytes=settings.max_payload_bytes * 2,
    )
    extra = {"models": fake_models, "reports": lambda s, seed: FakeReports()}
    sim = Simulation(
        small,
        scenario,
        mqtt=settings.mqtt,
        seed=7,
        speed=0,
        start=start,
        faults=faults,
        topic_prefix=settings.mqtt_topic_prefix,
        connections=connections,
        devices_per_connection=10,  # shared: three connections for the 28 devices
        **(extra if models == "fake" else {}),  # type: ignore[arg-type]
    )
    async with IngestService(
        settings, settings.database_url or "", flavour, reports=report_vocabulary(settings)
    ) as svc:
        await svc.wait_connected(20)
        summary = await sim.arun()
        expected_dead = sum(summary.expected_dead_letters.values())

        async def caught_up() -> bool:
            readings = await scalar(db, "SELECT count(*) FROM readings")
            dead = await scalar(db, "SELECT count(*) FROM dead_letters")
            reports = await scalar(db, "SELECT count(*) FROM reports")
            return (
                readings >= summary.readings_expected
                and dead >= expected_dead
                and reports >= summary.reports
            )

        await eventually(caught_up, timeout=60)
        # Statuses and events committed too (they are not counted above).
        events = summary.events_expected
        await eventually(lambda: _at_least(db, "SELECT count(*) FROM device_events", events))
        # A negative check cannot await an event: give a straggler (an extra, unexpected row)
        # a moment to land, so the equalities below would catch it.
        await asyncio.sleep(0.3)

    assert summary.unconfirmed == 0
    assert summary.telemetry > 400 and summary.readings_expected > 1000
    assert summary.faults["duplicate"] and summary.faults["out_of_order"]
    assert summary.faults["reconnect_storm"] and summary.reconnects > 0
    assert await scalar(db, "SELECT count(*) FROM readings") == summary.readings_expected
    dead = await count_by(db, "SELECT reason, count(*) FROM dead_letters GROUP BY reason")
    assert dead == dict(summary.expected_dead_letters)
    assert set(dead) >= {"malformed_json", "wrong_type", "timestamp_out_of_bounds", "oversize"}
    assert await scalar(db, "SELECT count(*) FROM device_events") == summary.events_expected
    assert summary.model_errors == Counter()
    # The cut feeder's lamps went offline (their wills) and came back; all offline at the end.
    assert summary.status >= 3 * len(site.lamps_on("nb-cab-03"))
    assert summary.connections == (len(small.devices) + 1 if connections == "per-device" else 4)
    online = await count_by(db, "SELECT online::text, count(*) FROM device_state GROUP BY 1")
    assert online == {"false": len(small.devices)}
    if models == "fake":
        assert summary.reports > 0  # dark lamps drew citizen reports
    # Citizen reports are taken in too, each once.
    assert await scalar(db, "SELECT count(*) FROM reports") == summary.reports


async def _at_least(db: psycopg.AsyncConnection, query: str, n: int) -> bool:
    return await scalar(db, query) >= n


@pytest.mark.skipif(
    importlib.util.find_spec("ioc.simulators.flood") is None, reason="flood model not in tree"
)
def test_spring_tide_scenario_crosses_the_three_alarm_levels_at_vi_thanh(site: Site) -> None:
    from ioc.simulators.fleet import build_models

    sc = load_scenario("vi-thanh-spring-tide-flood")
    station = next(m for m in build_models(site, 7) if m.device.id == "vt-flood-01")
    levels: list[float] = []
    t = sc.start
    while t < sc.end:
        values = station.telemetry(t, sc.conditions_at(t))
        if values:
            levels.append(values["water_level_m"])
        t += timedelta(seconds=station.interval_s)
    first = [next(i for i, v in enumerate(levels) if v >= bd) for bd in (0.55, 0.65, 0.75)]
    assert first == sorted(first) and first[0] < first[2]
    assert 0.75 < max(levels) < 1.0  # bulletins: peaks 0.03–0.13 m above BĐ III
    assert levels[-1] < 0.55  # back below BĐ I by the end of the night


VN = ZoneInfo("Asia/Ho_Chi_Minh")


def _run(site: Site, name: str, device: str = "vt-flood-01") -> tuple[list[datetime], list[float]]:
    from ioc.simulators.fleet import build_models

    sc = load_scenario(name)
    model = next(m for m in build_models(site, 7) if m.device.id == device)
    times, levels = [], []
    t = sc.start
    while t < sc.end:
        values = model.telemetry(t, sc.conditions_at(t))
        if values:
            times.append(t)
            levels.append(values["water_level_m"])
        t += timedelta(seconds=model.interval_s)
    return times, levels


def test_routine_spring_tide_crosses_bd3_in_the_evening_without_a_storm(site: Site) -> None:
    from ioc.core.tides import TidePredictor

    sc = load_scenario("vi-thanh-spring-tide")
    assert all(
        not c.rain_mm_h and not c.water_offset_m and c.tide_factor == 1.0
        for c in (sc.conditions_at(sc.start + timedelta(minutes=m)) for m in range(0, 540, 30))
    )
    times, levels = _run(site, "vi-thanh-spring-tide")
    first = [next(i for i, v in enumerate(levels) if v >= bd) for bd in (0.55, 0.65, 0.75)]
    assert first == sorted(first)
    peak = max(range(len(levels)), key=lambda i: levels[i])
    assert 0.78 <= levels[peak] <= 0.88  # the bulletins' Oct–Dec peaks
    assert 17 <= times[peak].astimezone(VN).hour <= 20  # the evening high water
    assert levels[-1] < 0.55
    # Nothing but the predicted tide (and the season's light showers): the residual stays small.
    predicted = TidePredictor.from_site(site).view("vt-flood-01").level_m(times)
    assert max(abs(o - p) for o, p in zip(levels, predicted, strict=True)) < 0.05


def test_storm_surge_crosses_bd3_on_an_ordinary_tide(site: Site) -> None:
    from ioc.core.tides import TidePredictor

    times, levels = _run(site, "vi-thanh-storm-surge")
    predicted = TidePredictor.from_site(site).view("vt-flood-01").level_m(times)
    assert max(predicted) < 0.75 - 0.1  # the tide alone stays well below BĐ III
    assert max(levels) > 0.75
    residual = [o - p for o, p in zip(levels, predicted, strict=True)]
    assert max(residual) > 0.3 and abs(residual[0]) < 0.05  # the surge is the residual


def test_the_demo_replays_on_the_recent_day_with_the_highest_tide(site: Site) -> None:
    from ioc.simulators.flood import highest_tide_start

    # A week after the full moon of 24/11/2026: the replay goes back to the spring tide.
    start, margin = highest_tide_start(
        site, datetime(2026, 11, 29, 14, tzinfo=VN), timedelta(hours=9)
    )
    assert start.date().isoformat() in ("2026-11-25", "2026-11-26", "2026-11-27")
    assert start.hour == 14 and margin > 0  # the tide alone crosses BĐ III at a station
    # At neap there is nothing to go back to within the window: the margin says so.
    _, neap = highest_tide_start(site, datetime(2026, 11, 19, 14, tzinfo=VN), timedelta(hours=9), 1)
    assert neap < 0
