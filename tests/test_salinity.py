"""Salinity: the stations' data, the salt-wedge simulator, the low-water advisory, the rules on a
driven timeline, routing and CAP. Pure: no broker or database (the end-to-end path from MQTT to
/ws is tests/test_salinity_live.py)."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta, timezone
from itertools import pairwise
from pathlib import Path
from types import MappingProxyType
from typing import Any

import pytest
import yaml

from ioc.cap import message as cap
from ioc.core.catalogue import METRICS
from ioc.core.devices import Device
from ioc.core.low_water import LowWaterAdvisor, next_low_water
from ioc.core.site import Site, load_site
from ioc.core.tides import TidePredictor
from ioc.routing.table import load_routing
from ioc.rules.engine import Engine, Transition
from ioc.rules.language import DEFAULT_PACK, load_rules
from ioc.simulators.conditions import NORMAL, Conditions
from ioc.simulators.fleet import build_models
from ioc.simulators.salinity import SalinityStationModel, season_factor
from ioc.simulators.scenario import SCENARIO_DIR, load_scenario

VN = timezone(timedelta(hours=7))
DATA = Path(__file__).resolve().parents[1] / "ioc" / "site_data"
SCENARIO = SCENARIO_DIR / "dry-season-salinity-intrusion.yaml"
MIN = 60.0


@pytest.fixture(scope="module")
def site() -> Site:
    return load_site(DATA / "hau-giang.yaml")


@pytest.fixture(scope="module")
def facts() -> dict[str, Any]:
    return yaml.safe_load((DATA / "salinity.yaml").read_text(encoding="utf-8"))


def models(site: Site, seed: int = 7) -> dict[str, SalinityStationModel]:
    return {m.device.id: m for m in build_models(site, seed) if isinstance(m, SalinityStationModel)}


def every(start: datetime, hours: float, minutes: int = 10) -> list[datetime]:
    return [start + timedelta(minutes=minutes * i) for i in range(int(hours * 60 / minutes))]


# --------------------------------------------------------------------------------- data


def test_stations_carry_the_sourced_thresholds_and_risk_levels(
    site: Site, facts: dict[str, Any]
) -> None:
    stations = site.devices_of(kind="salinity")
    assert {d.id for d in stations} == {"vt-sal-01", "vt-sal-02", "nb-sal-01", "nb-sal-02"}
    assert {d.attributes["use"] for d in stations} == {"domestic", "irrigation"}
    table = facts["risk_levels"]["by_4ppt_distance_km"]
    for d in stations:
        a = d.attributes
        for name in ("domestic_ppt", "rice_ppt", "emergency_ppt"):
            assert a[name] == facts["thresholds"][name]["value"], (d.id, name)
            assert facts["thresholds"][name]["source"]
        assert a["tide_station"] in site.alarm_levels, d.id  # a tide reference that exists
        expected = max(r["level"] for r in table if a["sea_distance_km"] >= r["from_km"])
        assert a["risk_level_4ppt"] == expected, d.id
        assert a["approximate_position"] is True
    assert facts["risk_levels"]["verified"] is False  # said so until the text is checked
    west = [d.attributes["dry_peak_ppt"] for d in stations if d.city == "vi-thanh"]
    east = [d.attributes["dry_peak_ppt"] for d in stations if d.city == "nga-bay"]
    assert min(west) > 2 * max(east)  # the Cái Lớn brings more salt than the Hậu at Ngã Bảy


# ---------------------------------------------------------------------------- simulator


def test_dry_season_only_peaking_february_to_april() -> None:
    def f(day: str) -> float:
        return season_factor(datetime.fromisoformat(f"{day}T12:00:00+07:00"))

    assert f("2026-07-01") == f("2026-11-30") == 0.0
    assert 0 < f("2025-12-10") < 0.1 and 0 < f("2026-05-25") < 0.1
    peak = max(f(f"2026-{m:02d}-{d:02d}") for m in range(1, 13) for d in (1, 8, 15, 22))
    assert peak > 0.95
    for day in ("2026-02-15", "2026-03-15", "2026-04-10"):
        assert f(day) > 0.6, day


def test_salinity_follows_the_tide_with_peaks_at_5_8_and_18_21(site: Site) -> None:
    """On the spring tide of 20–22/03/2026 (the scenario's), as the bulletins of March 2024
    put it for the Hậu side: peaks 05–08 h and 18–21 h; the West Sea's morning tide dominates."""
    ms = models(site)
    for day in (20, 21, 22):
        start = datetime(2026, 3, day, tzinfo=VN)
        for device in ("nb-sal-01", "nb-sal-02"):
            m = ms[device]
            morning = max(every(start, 12, 5), key=lambda x: m.salinity_ppt(x, NORMAL))
            evening = max(every(start + timedelta(hours=12), 12, 5),
                          key=lambda x: m.salinity_ppt(x, NORMAL))  # fmt: skip
            assert 5 <= morning.hour < 8, (device, morning)
            assert 18 <= evening.hour < 21 or (evening.hour == 21 and evening.minute <= 30), (
                device, evening,
            )  # fmt: skip
        vt = ms["vt-sal-01"]
        day_values = [vt.salinity_ppt(t, NORMAL) for t in every(start, 24)]
        assert max(day_values[:72]) > 1.5 * max(day_values[72:])  # the diurnal inequality
        assert max(day_values) > 3 * min(day_values)  # fresher at low water, every day
    # spring and neap: the same station a week later (neap) peaks far lower
    m = ms["nb-sal-01"]
    spring = max(m.salinity_ppt(t, NORMAL) for t in every(datetime(2026, 3, 21, tzinfo=VN), 24))
    neap = max(m.salinity_ppt(t, NORMAL) for t in every(datetime(2026, 3, 28, tzinfo=VN), 24))
    assert spring > 1.3 * neap


def test_station_magnitudes_and_a_march_2024_like_scenario(site: Site) -> None:
    ms = models(site)
    scenario = load_scenario(SCENARIO)
    scenario.check_site(site)
    times = every(scenario.start, 18)
    peak = {
        i: max(m.salinity_ppt(t, scenario.conditions_at(t)) for t in times) for i, m in ms.items()
    }
    assert peak["vt-sal-01"] > 8.0  # "> 8‰ on the Cái Lớn", March 2024
    assert 0.2 <= peak["nb-sal-01"] <= 1.2  # "0.2–1.2‰ reaching Ngã Bảy"
    assert peak["vt-sal-02"] > 4.0 and peak["nb-sal-02"] < 1.2
    ordinary = {i: max(m.salinity_ppt(t, NORMAL) for t in times) for i, m in ms.items()}
    for i in ms:
        assert peak[i] > 2 * ordinary[i], i  # the knob drives it
    # the knob is per city or per station, and absent means an ordinary season
    one = Conditions(salinity_factor=MappingProxyType({"nb-sal-01": 3.0}))
    t = scenario.start + timedelta(hours=5)
    assert ms["nb-sal-01"].salinity_ppt(t, one) > ms["nb-sal-02"].salinity_ppt(t, one) * 2
    assert ms["vt-sal-01"].salinity_ppt(t, one) == ms["vt-sal-01"].salinity_ppt(t, NORMAL)


def test_telemetry_is_within_the_catalogue_and_deterministic(site: Site) -> None:
    a, b = models(site, seed=3), models(site, seed=3)
    cond = Conditions(salinity_factor=MappingProxyType({"vi-thanh": 10.0}))
    for t in every(datetime(2026, 3, 21, tzinfo=VN), 24, 30):
        for i, m in a.items():
            values = m.telemetry(t, cond)
            assert values is not None and values == b[i].telemetry(t, cond)
            for name, v in values.items():
                spec = METRICS["salinity"][name]
                assert spec.minimum <= v <= spec.maximum, (i, name, v)
    quiet = Conditions(silent_devices=frozenset({"vt-sal-01"}))
    t = datetime(2026, 3, 21, 7, tzinfo=VN)
    assert a["vt-sal-01"].telemetry(t, quiet) is None and not a["vt-sal-01"].online(t, quiet)


# --------------------------------------------------------------------------- low water


def test_next_low_water_is_the_predicted_low_after_the_given_time(site: Site) -> None:
    tides = TidePredictor.from_site(site)
    for start in every(datetime(2026, 3, 20, tzinfo=VN), 48, 97):
        for station in ("vi-thanh", "phung-hiep"):
            low = next_low_water(tides, station, start)
            assert low is not None and start < low <= start + timedelta(hours=27)
            end = low + timedelta(minutes=1)
            lows = [e.time for e in tides.extremes(station, start, end) if e.kind == "low"]
            assert lows == [low]  # the first one after start
            level = tides.view(station).at(low.timestamp())[0]
            for k in (-40, 40):
                assert level < tides.view(station).at(low.timestamp() + 60 * k)[0]
            lagged = next_low_water(tides, station, start, timedelta(minutes=40))
            assert lagged is not None and lagged > start
    assert next_low_water(tides, "no-such-station", datetime(2026, 3, 20, tzinfo=VN)) is None


def test_advisor_annotates_low_water_in_local_time(site: Site) -> None:
    advisor = LowWaterAdvisor(TidePredictor.from_site(site), site.timezone)
    device = site.device("nb-sal-02")
    t = datetime(2026, 3, 21, 7, 0, tzinfo=VN)
    out = advisor("low-water", device, t.timestamp())
    when = datetime.fromisoformat(out["next_low_water"])
    assert out["next_low_water"].endswith("+07:00")
    assert t < when < t + timedelta(hours=13)
    assert "triều xuống" in out["advice_vi"] and when.strftime("%H:%M") in out["advice_vi"]
    assert advisor("something-else", device, t.timestamp()) == {}
    no_tide = Device("x", "salinity", "nga-bay", None, "x", 9.8, 105.8, {})
    assert advisor("low-water", no_tide, t.timestamp()) == {}
    elsewhere = Device("y", "salinity", "nga-bay", None, "y", 9.8, 105.8, {"tide_station": "z"})
    assert advisor("low-water", elsewhere, t.timestamp()) == {}  # no prediction: no advice


# ------------------------------------------------------------------------ rules timeline


def salinity_engine(site: Site) -> Engine:
    ruleset = load_rules(DEFAULT_PACK)
    advisor = LowWaterAdvisor(TidePredictor.from_site(site), site.timezone)
    return Engine(ruleset, site.devices_of(kind="salinity"), advisor=advisor)


def test_the_packaged_rule_directory_holds_the_salinity_pack() -> None:
    rs = load_rules(DEFAULT_PACK)
    ids = {r.id for r in rs.rules}
    assert {"salinity-domestic-intake", "salinity-rice", "salinity-emergency"} <= ids
    assert {"flood-bd3", "lamp-failure"} <= ids  # default.yaml is still read with it
    assert any(f.endswith("salinity.yaml") for f in rs.sources)


def test_a_dry_season_day_fires_with_for_and_advises_the_low_water(site: Site) -> None:
    """The scenario's morning at the Ngã Bảy plant and the Xà No: readings every 10 minutes."""
    e = salinity_engine(site)
    ms = models(site)
    scenario = load_scenario(SCENARIO)
    transitions = []
    for t in every(scenario.start, 18):
        cond = scenario.conditions_at(t)
        for i, m in ms.items():
            values = m.telemetry(t, cond)
            assert values is not None
            e.observe_telemetry(i, t.timestamp(), values.items())
        e.advance(t.timestamp())
        transitions += e.drain()
    by: dict[tuple[str, str | None, str], Transition] = {}
    for tr in transitions:
        by.setdefault((tr.rule, tr.device_id, tr.to), tr)  # the first of each

    # `for: 10m`: firing exactly 10 minutes after pending
    pending = by[("salinity-domestic-intake", "nb-sal-02", "pending")]
    firing = by[("salinity-domestic-intake", "nb-sal-02", "firing")]
    assert firing.at - pending.at == 10 * MIN
    assert firing.labels["agency"] == "water-supply"
    # the advisory: the next low water, in +07:00, after the alert; and the water there is
    # fresh enough to take (the advice is right about the simulated world)
    low = datetime.fromisoformat(firing.annotations["next_low_water"])
    assert low.utcoffset() == timedelta(hours=7)
    fired_at = datetime.fromtimestamp(firing.at, UTC)
    assert fired_at < low < fired_at + timedelta(hours=13)
    cond = scenario.conditions_at(low)
    assert (
        ms["nb-sal-02"].salinity_ppt(low, cond)
        < site.device("nb-sal-02").attributes["domestic_ppt"]
    )
    # hysteresis: one alert per tide, not one per noisy crossing
    morning = [
        tr for tr in transitions
        if tr.rule == "salinity-domestic-intake" and tr.device_id == "nb-sal-02"
        and tr.to == "firing"
        and datetime.fromtimestamp(tr.at, VN).hour < 12
    ]  # fmt: skip
    assert len(morning) == 1
    resolved = by[("salinity-domestic-intake", "nb-sal-02", "resolved")]
    assert resolved.at > firing.at

    # 4‰ at the Xà No: critical, QĐ 18/2021 risk level of the station, rice alert inhibited by
    # it in routing (the inhibit rule pairs them)
    emergency = by[("salinity-emergency", "vt-sal-01", "firing")]
    assert emergency.severity == "critical"
    assert emergency.risk_level == 3
    assert emergency.labels["agency"] == "agriculture-environment"
    assert "cấp độ rủi ro thiên tai 3" in emergency.annotations["summary_vi"]
    assert ("salinity-rice", "vt-sal-01", "firing") in by
    assert ("salinity-emergency", "nb-sal-01", "firing") not in by  # ~1‰ at Ngã Bảy
    # the Vị Thanh plant never gets fresh enough: its alert stays open all day
    vt_plant = [
        tr.to
        for tr in transitions
        if tr.rule == "salinity-domestic-intake" and tr.device_id == "vt-sal-02"
    ]
    assert vt_plant[:2] == ["pending", "firing"] and "resolved" not in vt_plant


def test_hysteresis_and_keep_firing_on_a_hovering_reading(site: Site) -> None:
    e = salinity_engine(site)
    t0 = datetime(2026, 3, 21, 5, 0, tzinfo=VN).timestamp()

    def read(minute: float, ppt: float) -> None:
        e.observe_telemetry("nb-sal-01", t0 + minute * MIN, [("salinity_ppt", ppt)])
        e.advance(t0 + minute * MIN)

    for minute, ppt in [(0, 1.05), (10, 1.10), (20, 0.95), (30, 1.02), (40, 0.85), (50, 1.01)]:
        read(minute, ppt)
    rice = [(tr.to, (tr.at - t0) / MIN) for tr in e.drain() if tr.rule == "salinity-rice"]
    assert rice == [("pending", 0.0), ("firing", 10.0)]  # 0.95 and 0.85 are above clear 0.8
    read(60, 0.7)  # below the clear level: resolved after keep_firing_for (20 m)
    read(75, 0.7)
    read(80, 0.7)
    rice = [(tr.to, (tr.at - t0) / MIN) for tr in e.drain() if tr.rule == "salinity-rice"]
    assert rice[-1] == ("resolved", 80.0)


# -------------------------------------------------------------------------- routing, CAP


def test_salinity_alerts_route_to_the_salinity_category(site: Site) -> None:
    routing = load_routing(DATA / "routing.yaml", site)
    assert routing.category_for_domain("salinity") == "xam-nhap-man"
    assert routing.category("xam-nhap-man").agency == "agriculture-environment"
    assert {"agriculture-environment", "water-supply"} <= set(site.agencies_by_id)


def test_cap_for_salinity_carries_the_low_water_advice() -> None:
    facts = cap.AlertFacts(
        1, "salinity-rice", "salinity", "warning", "firing", "độ mặn 1,2‰", "salinity 1.2‰",
        advice_vi="Lấy nước khi triều xuống: nước ròng kế tiếp khoảng 13:40 21/03",
        advice_en="Take water on the ebb: next low water about 13:40 21/03",
    )  # fmt: skip
    c = cap.classify(facts, "Alert")
    assert c.categories == ("Env",) and c.event_vi == "Xâm nhập mặn"
    assert (c.severity, c.urgency) == ("Moderate", "Expected")
    assert c.instruction_vi.endswith("nước ròng kế tiếp khoảng 13:40 21/03.")
    assert "13:40" in c.instruction_en
    cancel = cap.classify(facts, "Cancel")
    assert "13:40" not in cancel.instruction_vi


def test_an_alert_open_across_tides_moves_its_advice_to_the_next_low_water(site: Site) -> None:
    """The Vị Thanh plant's intake stays over its limit all day in the scenario: once the low
    water its alert advised has passed, the alert is re-advised (``advised``: annotations only,
    the state kept) with the next one — never a time already past."""
    e = salinity_engine(site)
    ms = models(site)
    scenario = load_scenario(SCENARIO)
    transitions: list[Transition] = []
    for t in every(scenario.start, 20):
        cond = scenario.conditions_at(t)
        values = ms["vt-sal-02"].telemetry(t, cond)
        assert values is not None
        e.observe_telemetry("vt-sal-02", t.timestamp(), values.items())
        e.advance(t.timestamp())
        transitions += [
            tr for tr in e.drain()
            if tr.rule == "salinity-domestic-intake" and tr.device_id == "vt-sal-02"
        ]  # fmt: skip
    assert [tr.to for tr in transitions][:2] == ["pending", "firing"]
    assert "resolved" not in [tr.to for tr in transitions]
    advised = [tr for tr in transitions if tr.to == "advised"]
    assert advised, "the alert stayed open past its low water and was not re-advised"
    lows = [datetime.fromisoformat(tr.annotations["next_low_water"]) for tr in transitions]
    for tr, low in zip(transitions, lows, strict=True):
        assert low.timestamp() > tr.at  # always the next low water, never a past one
    assert lows == sorted(lows)
    for before, tr in pairwise(transitions):
        if tr.to == "advised":  # re-advised right after the one advised before had passed
            previous = datetime.fromisoformat(before.annotations["next_low_water"])
            assert previous.timestamp() <= tr.at < previous.timestamp() + 15 * MIN
            assert tr.annotations["advice_vi"] != before.annotations["advice_vi"]
