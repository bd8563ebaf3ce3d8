"""The shipped water rules on the shipped scenarios, on a driven timeline: the simulator's flood
and rain models (seed 7) feed ``rules/packs`` through the engine with the tide source the rules
service itself uses (``ioc.alerting.tide_source.PredictedTide`` over ``ioc.core.tides``).

What issue 13 asks of them: a routine spring tide raises the BĐ alarms (and the forecast hours
ahead) but no surge warning; a storm surge raises the surge warnings within minutes of the
residual crossing their thresholds, and well before BĐ III. The whole year is
``scripts/backtest_year.py`` (docs/rules.md, "Year backtest of the water rules").
"""

from __future__ import annotations

from collections import defaultdict
from datetime import datetime, timedelta
from pathlib import Path

import pytest

from ioc.alerting.tide_source import PredictedTide
from ioc.core.localtime import FIXED_OFFSET as LOCAL
from ioc.core.site import Site, load_site
from ioc.core.tides import TidePredictor
from ioc.rules.engine import Engine, Transition
from ioc.rules.language import DEFAULT_PACK, load_rules
from ioc.simulators.conditions import NORMAL
from ioc.simulators.fleet import build_models
from ioc.simulators.scenario import Scenario, load_scenario

SITE = Path(__file__).resolve().parents[1] / "ioc" / "site_data" / "hau-giang.yaml"
STEP = timedelta(minutes=5)  # the flood and rain gauges' reporting interval
SURGE_RULES = ("water-surge", "surge-rising-fast", "water-level-anomaly", "rain-and-rising-water")


@pytest.fixture(scope="module")
def site() -> Site:
    return load_site(SITE)


class Run:
    """Firing transitions and each flood gauge's readings and predicted tide."""

    def __init__(self) -> None:
        self.firing: list[Transition] = []
        self.levels: dict[str, list[tuple[float, float, float]]] = defaultdict(list)

    def first(self, rule: str, who: str, since: float = 0.0) -> float:
        return min(
            t.at for t in self.firing
            if t.rule == rule and (t.device_id or t.labels.get("ward")) == who and t.at >= since
        )  # fmt: skip

    def fired(self, rules: tuple[str, ...], since: float, until: float) -> list[str]:
        return [
            f"{t.rule} {t.device_id or t.labels.get('ward')}"
            for t in self.firing
            if t.rule in rules and since <= t.at < until
        ]


def run(site: Site, scenario: Scenario, start: datetime, end: datetime) -> Run:
    """Step the water gauges every 5 minutes from ``start`` (the anomaly rule learns its
    residual baseline from the stream: it needs a day of readings) to ``end``."""
    models = [m for m in build_models(site, 7) if m.device.kind in ("flood", "rain")]
    devices = {m.device.id: m.device for m in models}
    predictor = TidePredictor.from_site(site)
    tide = PredictedTide(predictor, devices.get)
    engine = Engine(load_rules(DEFAULT_PACK), devices.values(), tide=tide)
    out = Run()
    t = start
    while t < end:
        cond = scenario.conditions_at(t) if scenario.start <= t < scenario.end else NORMAL
        ts = t.timestamp()
        for m in models:
            reading = m.telemetry(t, cond)
            if reading is None:
                continue
            engine.observe_telemetry(m.device.id, ts, reading.items())
            if m.device.kind == "flood":
                predicted = tide.level_m(m.device.id, ts)
                assert predicted is not None
                out.levels[m.device.id].append((ts, reading["water_level_m"], predicted))
        engine.advance(ts)
        out.firing += [tr for tr in engine.drain() if tr.to == "firing"]
        t += STEP
    return out


def test_routine_spring_tide_raises_the_bd_alarms_and_the_forecast_but_no_surge(
    site: Site,
) -> None:
    sc = load_scenario("vi-thanh-spring-tide")  # 26/11/2026 14:00-23:00, nothing imposed
    r = run(site, sc, sc.start - timedelta(days=1, hours=14), sc.end + timedelta(hours=3))
    # the evening high water of 26/11 (the 25th's spring tide crossed too: routine)
    bd3 = r.first("flood-bd3", "vt-flood-01", since=sc.start.timestamp())
    assert bd3 < sc.end.timestamp()
    assert 17 <= datetime.fromtimestamp(bd3, LOCAL).hour <= 19
    [alarm] = [
        t for t in r.firing
        if t.rule == "flood-bd3" and t.device_id == "vt-flood-01" and t.at == bd3
    ]  # fmt: skip
    assert alarm.risk_level == 2  # QĐ 18/2021 Điều 45: BĐ III to BĐ III + 1 m
    # the forecast rule saw the predicted high water hours ahead (its horizon is 6 h)
    forecast = r.first("flood-forecast-bd3", "vt-flood-01", since=bd3 - 6 * 3600)
    assert bd3 - forecast >= 3 * 3600
    # a tide is not a flood: no surge, rising-surge, residual-anomaly or rain-and-rising alert
    # at any gauge or ward, the whole run (two spring-tide evenings)
    assert r.fired(SURGE_RULES, 0, float("inf")) == []


def test_storm_surge_warns_within_minutes_of_the_surge_and_hours_before_bd3(site: Site) -> None:
    sc = load_scenario("vi-thanh-storm-surge")  # 16/11/2026 14:00, surge ramps 15:00-19:00
    r = run(site, sc, sc.start - timedelta(days=1, hours=14), sc.end)
    quiet = r.fired(SURGE_RULES, 0, sc.start.timestamp())
    assert quiet == []  # the day and a half before the storm: nothing
    surge_from = (sc.start + timedelta(hours=1)).timestamp()  # the scenario's ramp begins
    for gauge in ("vt-flood-01", "vt-flood-02", "vt-flood-03"):
        # water-surge: residual ≥ 0.20 m for 15 min. It fires `for` after the residual first
        # reaches 0.20 m in the readings, plus at most one reading interval (a noisy dip
        # below the clear level, 0.10 m, would restart it: there is none)
        crossed = min(t for t, obs, pred in r.levels[gauge] if obs - pred >= 0.20)
        surge = r.first("water-surge", gauge)
        assert 15 * 60 <= surge - crossed <= 20 * 60, (gauge, surge - crossed)
        # the rising-surge warning comes first: within 75 min of the ramp's start, while the
        # surge is still under 0.1 m, and two hours or more before the level reaches BĐ III
        rising = r.first("surge-rising-fast", gauge)
        assert surge_from < rising <= surge_from + 75 * 60, gauge
        assert rising < surge
        bd3 = r.first("flood-bd3", gauge)
        assert bd3 - rising >= 2 * 3600, gauge
        assert r.first("flood-forecast-bd3", gauge) < bd3
    # heavy rain and the rising surge together in the ward of the Vị Thanh gauges
    both = r.first("rain-and-rising-water", "phuong-vi-tan")
    assert both < r.first("flood-bd3", "vt-flood-01")
    # the Ngã Bảy gauges (no surge there) stay quiet
    assert [f for f in r.fired(SURGE_RULES, 0, float("inf")) if " nb-" in f] == []
