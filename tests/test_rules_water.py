"""Timeline tests of the water rules: residual (surge), residual rise, forecast peak, anomaly on
the residual, windowed rain sums and risk levels (QĐ 18/2021/QĐ-TTg).

Pure engine, driven clock, as tests/test_rules_engine.py. The predicted tide is test input: a
``TabulatedTide`` of a known curve (a 12.42 h M2-like cosine), the same class a backtest uses.
"""

from __future__ import annotations

import math
from datetime import datetime

import numpy as np
import pytest

from ioc.core.devices import Device
from ioc.core.localtime import FIXED_OFFSET as LOCAL
from ioc.rules.engine import Engine
from ioc.rules.language import DEFAULT_PACK, check_rules, load_rules
from ioc.rules.tide import TabulatedTide

T0 = datetime(2026, 11, 20, 12, 0, tzinfo=LOCAL).timestamp()
MIN = 60.0
HOUR = 3600.0
PERIOD = 12.42 * HOUR  # M2

GAUGE = Device(
    "vt-flood-01", "flood", "vi-thanh", "phuong-5", "Trạm Vị Thanh", 9.784, 105.47,
    {"station": "vi-thanh", "bd1": 0.55, "bd2": 0.65, "bd3": 0.75},
)  # fmt: skip
RAIN = Device("vt-rain-01", "rain", "vi-thanh", "phuong-5", "Mưa Vị Thanh", 9.79, 105.48, {})


def tide_at(t: float, mean: float = 0.2, amp: float = 0.45) -> float:
    """The test's astronomical tide: high water at T0 + 3 h, then every 12.42 h."""
    return mean + amp * math.cos(2 * math.pi * (t - T0 - 3 * HOUR) / PERIOD)


def table(mean: float = 0.2, amp: float = 0.45) -> TabulatedTide:
    times = [T0 - 2 * 86400 + i * 300.0 for i in range(12 * 24 * 6)]  # 6 days every 5 min
    return TabulatedTide({"vt-flood-01": (times, [tide_at(t, mean, amp) for t in times])})


def engine(text: str, *devices: Device, tide: TabulatedTide | None = None) -> Engine:
    ruleset, problems = check_rules([("test.yaml", text)])
    assert problems == [], problems
    return Engine(ruleset, devices or (GAUGE,), tide=tide)


def steps(e: Engine) -> list[tuple[str, str, float]]:
    return [(t.rule, t.to, round((t.at - T0) / MIN, 3)) for t in e.drain()]


def level(e: Engine, minute: float, value: float) -> None:
    e.observe_telemetry("vt-flood-01", T0 + minute * MIN, [("water_level_m", value)])
    e.advance(T0 + minute * MIN)


def observed(minute: float, surge: float = 0.0, amp: float = 0.45) -> float:
    return tide_at(T0 + minute * MIN, amp=amp) + surge


SURGE = """
rules:
  - id: water-surge
    type: residual
    select: {kind: flood, metric: water_level_m}
    when: {op: ">=", threshold: 0.25, clear: 0.15}
    for: 15m
    keep_firing_for: 10m
    labels: {severity: warning, domain: flood}
    annotations:
      summary_vi: "{device.name}: nước dâng {value:.2f} m trên triều dự báo"
      summary_en: "{device.name}: water {value:.2f} m above the predicted tide"
"""


def test_tabulated_tide_interpolates_and_finds_high_waters() -> None:
    tide = table()
    assert tide.level_m("vt-flood-01", T0 + 3 * HOUR) == pytest.approx(0.65, abs=1e-3)
    assert tide.level_m("vt-flood-01", T0 - 10 * 86400) is None  # outside the table
    assert tide.level_m("other", T0) is None
    hws = tide.high_waters("vt-flood-01", T0, T0 + 26 * HOUR)
    assert [round((h.time - T0) / HOUR, 1) for h in hws] == [3.0, 15.4]
    assert all(h.level_m == pytest.approx(0.65, abs=1e-3) for h in hws)


def test_residual_ignores_the_tide_and_fires_on_the_surge() -> None:
    e = engine(SURGE, tide=table())
    # a whole spring-tide cycle with no surge: the level swings 0.9 m, the residual stays 0
    for m in range(0, 13 * 60, 5):
        level(e, m, observed(m, 0.02))
    assert steps(e) == []
    # a 0.30 m surge from minute 800: pending at once, firing 15 min later
    for m in range(800, 830, 5):
        level(e, m, observed(m, 0.30))
    assert steps(e) == [("water-surge", "pending", 800), ("water-surge", "firing", 815)]
    # it falls to 0.20 (between clear and threshold): hysteresis holds it firing
    level(e, 830, observed(830, 0.20))
    assert steps(e) == []
    # below clear: keep_firing_for 10 min, then resolved
    level(e, 835, observed(835, 0.05))
    level(e, 845, observed(845, 0.05))
    assert steps(e) == [("water-surge", "keep_firing", 835), ("water-surge", "resolved", 845)]


def test_residual_without_prediction_stays_silent() -> None:
    e = engine(SURGE)  # no tide source: the rule cannot judge, and does not guess
    for m in range(0, 60, 5):
        level(e, m, 2.0)
    assert steps(e) == []


RISE = """
rules:
  - id: surge-rising-fast
    type: residual_rate
    select: {kind: flood, metric: water_level_m}
    window: 30m
    when: {op: ">", threshold: 0.15, clear: 0.05}
    for: 10m
    labels: {severity: warning, domain: flood}
    annotations:
      summary_vi: "{device.name}: nước dâng nhanh {value:.2f} m/giờ ngoài triều"
      summary_en: "{device.name}: surge rising {value:.2f} m/h beyond the tide"
"""


def test_residual_rate_ignores_a_fast_flood_tide_and_catches_a_rising_surge() -> None:
    e = engine(RISE, tide=table(amp=0.9))
    # the flood tide itself rises up to ~0.45 m/h here: no alert
    for m in range(0, 6 * 60, 5):
        level(e, m, observed(m, amp=0.9))
    assert steps(e) == []
    # the residual climbs 0.3 m/h from minute 400: the 30-min window needs 15 min of it
    for m in range(400, 460, 5):
        level(e, m, observed(m, 0.3 * (m - 400) / 60, amp=0.9))
    got = steps(e)
    assert got[0] == ("surge-rising-fast", "pending", 400 + 15)
    assert got[1] == ("surge-rising-fast", "firing", 415 + 10)
    # it stops rising (flat residual): the rate falls below clear once the window has no rise
    for m in range(460, 500, 5):
        level(e, m, observed(m, 0.3, amp=0.9))
    # minute 485: the window starts at 455 (0.275 m), so 0.05 m/h, no longer above clear
    assert steps(e) == [("surge-rising-fast", "resolved", 485)]


FORECAST = """
rules:
  - id: flood-forecast-bd3
    type: forecast_peak
    select: {kind: flood, metric: water_level_m}
    horizon: 6h
    when: {op: ">=", threshold: device.bd3}
    labels: {severity: warning, domain: flood}
    risk:
      source: "QĐ 18/2021/QĐ-TTg Điều 45"
      levels: [{level: 1, from: device.bd2}, {level: 2, from: device.bd3}]
    annotations:
      summary_vi: "{device.name}: triều cường dự báo {peak.level:.2f} m lúc {peak.time}, {value:.2f} m với nước dâng hiện tại"
      summary_en: "{device.name}: predicted high water {peak.level:.2f} m at {peak.time}, {value:.2f} m with the present surge"
"""  # noqa: E501


def test_forecast_peak_warns_hours_ahead_with_time_and_level() -> None:
    e = engine(FORECAST, tide=table())  # predicted high waters 0.65 m, BĐ III 0.75 m
    # no surge: 0.65 < 0.75, no warning
    for m in range(0, 60, 10):
        level(e, m, observed(m))
    assert steps(e) == []
    # a 0.15 m surge appears at minute 60: the 15:00 high water (minute 180) will reach 0.80
    level(e, 60, observed(60, 0.15))
    [pending, firing] = e.drain()
    assert (pending.to, firing.to, firing.at) == ("pending", "firing", T0 + 60 * MIN)
    assert firing.value == pytest.approx(0.80, abs=1e-3)
    assert firing.reason["peak_time"] == pytest.approx(T0 + 3 * HOUR, abs=300)
    assert "0,65 m lúc 15:00 20/11" in firing.annotations["summary_vi"]
    assert firing.risk_level == 2  # 0.80 m ≥ BĐ III
    # the surge goes away: the forecast falls below BĐ III, the warning resolves
    level(e, 90, observed(90, 0.0))
    assert steps(e) == [("flood-forecast-bd3", "resolved", 90)]


def test_forecast_peak_with_no_high_water_in_the_horizon_is_quiet() -> None:
    e = engine(FORECAST.replace("horizon: 6h", "horizon: 1h"), tide=table())
    level(e, 0, observed(0, 0.5))  # next high water at +3 h, beyond a 1 h horizon
    assert steps(e) == []
    level(e, 130, observed(130, 0.5))  # now it is 50 min ahead: 0.65 + 0.5 ≥ 0.75
    assert [s[1] for s in steps(e)] == ["pending", "firing"]


def test_a_forecast_warning_that_lets_go_keeps_its_last_figures() -> None:
    # The high water passed (none left within the horizon): the transition that follows must
    # still say what was forecast, not "sẽ đạt m" (seen on the demo's wall).
    rules = FORECAST.replace("horizon: 6h", "horizon: 1h").replace(
        "    labels: {severity: warning, domain: flood}\n",
        "    keep_firing_for: 30m\n    labels: {severity: warning, domain: flood}\n",
    )
    e = engine(rules, tide=table())
    level(e, 130, observed(130, 0.5))  # 0.65 + 0.5 m forecast for the high water at minute 180
    assert [tr.to for tr in e.drain()] == ["pending", "firing"]
    level(e, 200, observed(200, 0.5))  # past it: no high water within the next hour
    [keep] = e.drain()
    assert keep.to == "keep_firing"
    assert "1,15 m với nước dâng hiện tại" in keep.annotations["summary_vi"]


ANOMALY = """
rules:
  - id: residual-anomaly
    type: anomaly
    baseline: residual
    select: {kind: flood, metric: water_level_m}
    z: 5
    min_samples: 24
    labels: {severity: warning, domain: flood}
    annotations:
      summary_vi: "{device.name}: nước dâng bất thường"
      summary_en: "{device.name}: unusual surge"
"""


def test_anomaly_on_the_residual_fires_on_a_surge_not_on_the_tide() -> None:
    e = engine(ANOMALY, tide=table())
    noise = [0.01, -0.02, 0.015, -0.005, 0.0, 0.02, -0.01, 0.005]
    for i, m in enumerate(range(0, 3 * 24 * 60, 30)):  # 3 days, a whole range of tide phases
        level(e, m, observed(m, noise[i % len(noise)]))
    assert steps(e) == []
    level(e, 3 * 24 * 60 + 10, observed(3 * 24 * 60 + 10, 0.4))
    assert [s[1] for s in steps(e)] == ["pending", "firing"]


def test_anomaly_min_std_keeps_small_bumps_on_a_quiet_residual_ordinary() -> None:
    e = engine(ANOMALY.replace("z: 5", "z: 5\n    min_std: 0.04"), tide=table())
    for i, m in enumerate(range(0, 3 * 24 * 60, 30)):
        level(e, m, observed(m, 0.004 * (-1) ** i))
    level(e, 3 * 24 * 60 + 10, observed(3 * 24 * 60 + 10, 0.05))  # 12 σ of the noise, 5 cm
    assert steps(e) == []
    level(e, 3 * 24 * 60 + 20, observed(3 * 24 * 60 + 20, 0.25))  # beyond 5 × 4 cm
    assert [s[1] for s in steps(e)] == ["pending", "firing"]


def test_hour_baseline_of_a_tidal_level_never_fires_where_the_residual_does() -> None:
    """The issue's finding: same-hour statistics of a drifting tide are as wide as the tide."""
    hour = engine(ANOMALY.replace("baseline: residual", "baseline: hour"), tide=table())
    for m in range(0, 20 * 24 * 60, 30):
        level(hour, m, observed(m))
    hour.drain()
    level(hour, 20 * 24 * 60 + 10, observed(20 * 24 * 60 + 10, 0.4))
    assert steps(hour) == []


RAIN_RULES = """
rules:
  - id: rain-heavy-12h
    type: aggregate
    select: {kind: rain, metric: rain_mm}
    function: sum
    window: 12h
    when: {op: ">", threshold: 25, clear: 20}
    labels: {severity: warning, domain: rain}
    risk: {source: "illustrative", level: 1}
    annotations:
      summary_vi: "{device.name}: mưa to {value:.0f} mm trong {window}"
      summary_en: "{device.name}: heavy rain {value:.0f} mm in {window}"
  - id: rain-very-heavy-24h
    type: aggregate
    select: {kind: rain, metric: rain_mm}
    function: sum
    window: 24h
    when: {op: ">", threshold: 100, clear: 90}
    labels: {severity: critical, domain: rain}
    risk:
      source: "QĐ 18/2021/QĐ-TTg"
      levels: [{level: 1, from: 100}, {level: 2, from: 200}]
    annotations:
      summary_vi: "{device.name}: mưa rất to {value:.0f} mm trong {window}"
      summary_en: "{device.name}: very heavy rain {value:.0f} mm in {window}"
"""


def rain(e: Engine, minute: float, mm: float) -> None:
    e.observe_telemetry("vt-rain-01", T0 + minute * MIN, [("rain_mm", mm)])
    e.advance(T0 + minute * MIN)


def test_windowed_rain_sums_over_12_and_24_hours() -> None:
    e = engine(RAIN_RULES, RAIN)
    # 2 mm every 5 minutes for 1 h 5 min: 26 mm > 25 at minute 60
    for m in range(0, 65, 5):
        rain(e, m, 2.0)
    assert steps(e) == [("rain-heavy-12h", "pending", 60), ("rain-heavy-12h", "firing", 60)]
    # dry until the rain leaves the 12 h window: the sum drops to 0, below clear
    for m in range(65, 13 * 60, 5):
        rain(e, m, 0.0)
    # minute 735: the readings of minutes 0-10 have left the window, 20 mm is not above clear
    assert steps(e) == [("rain-heavy-12h", "resolved", 12 * 60 + 15)]
    # a downpour of 8 mm per 5 minutes for 2 h: 192 mm in the 24 h window (26 mm earlier + 192)
    for m in range(13 * 60, 15 * 60, 5):
        rain(e, m, 8.0)
    trs = e.drain()
    very = [t for t in trs if t.rule == "rain-very-heavy-24h"]
    assert [t.to for t in very] == ["pending", "firing", "risk_raised"]
    assert very[0].risk_level == 1  # first above 100 mm: 100-200 mm/24 h is level 1
    assert very[2].risk_level == 2 and very[2].value is not None and very[2].value >= 200
    heavy = [t for t in trs if t.rule == "rain-heavy-12h"]
    assert heavy[0].risk_level == 1


def test_window_sum_is_bounded_and_exact_over_a_long_run() -> None:
    e = engine(RAIN_RULES, RAIN)
    for m in range(0, 30 * 24 * 60, 5):  # a month of 0.1 mm every 5 min: 14.4 mm per 12 h
        rain(e, m, 0.1)
    s = e._series[("rain-heavy-12h", "vt-rain-01")]  # the state under test
    assert s.window is not None
    assert len(s.window) == 12 * 12 + 1  # 12 h of 5-minute points (both ends)
    assert s.wsum == pytest.approx(0.1 * len(s.window), abs=1e-9)


def test_risk_validation_problems_have_lines() -> None:
    bad = """rules:
  - id: r
    type: threshold
    select: {kind: rain, metric: rain_24h_mm}
    when: {op: ">", threshold: 100}
    risk:
      levels: [{level: 1, from: 100}]
    labels: {severity: warning}
    annotations: {summary_vi: x, summary_en: x}
  - id: s
    type: threshold
    select: {kind: rain, metric: rain_24h_mm}
    when: {op: ">", threshold: 100}
    risk: {source: "QĐ 18", levels: [{level: 2, from: 100}, {level: 1, from: 200}]}
    labels: {severity: warning}
    annotations: {summary_vi: x, summary_en: x}
  - id: f
    type: forecast_peak
    select: {kind: flood, metric: water_level_m}
    when: {op: ">=", threshold: device.bd3}
    baseline: residual
    labels: {severity: warning}
    annotations: {summary_vi: x, summary_en: x}
"""
    _, problems = check_rules([("bad.yaml", bad)])
    text = [str(p) for p in problems]
    assert any(p.startswith("bad.yaml:6:") and "needs 'source'" in p for p in text), text
    assert any(p.startswith("bad.yaml:14:") and "ascend" in p for p in text), text
    assert any(p.startswith("bad.yaml:17:") and "needs a 'horizon'" in p for p in text), text
    assert any(p.startswith("bad.yaml:21:") and "'baseline' is for" in p for p in text), text


def test_default_pack_water_rules_carry_risk_with_a_source() -> None:
    pack = load_rules(DEFAULT_PACK)
    water = [r for r in pack.rules if r.labels.get("domain") in ("flood", "rain")]
    assert water
    for r in water:
        assert r.risk is not None and r.risk.source, r.id
    types = {r.type for r in water}
    assert {"residual", "residual_rate", "forecast_peak"} <= types
    assert "water-rising-fast" not in {r.id for r in pack.rules}
    anomaly = [r for r in pack.rules if r.type == "anomaly" and r.labels.get("domain") == "flood"]
    assert anomaly and all(r.baseline == "residual" for r in anomaly)


def test_stored_levels_do_not_seed_a_residual_baseline() -> None:
    """seed_history gives stored *levels*: a residual anomaly must not take them as residuals."""
    e = engine(ANOMALY, tide=table())
    times = [T0 - 86400 + i * 300.0 for i in range(200)]
    e.seed_history(GAUGE.id, "water_level_m", np.array(times), np.full(200, 0.6))
    s = e._series[("residual-anomaly", GAUGE.id)]  # the state under test
    assert s.hist is not None and s.hist[:, 0].sum() == 0


def test_risk_level_from_a_device_attribute() -> None:
    """A hazard whose level depends on where the station is (salinity: how far 4‰ reaches
    inland) takes it from the device; a missing or out-of-range attribute gives no level."""
    text = """rules:
  - id: salty
    type: threshold
    select: {kind: flood, metric: water_level_m}
    when: {op: ">=", threshold: 0.5}
    labels: {severity: warning, domain: flood}
    risk: {source: "test", level: device.risk_level_here}
    annotations: {summary_vi: x, summary_en: x}
"""
    at = {**GAUGE.attributes, "risk_level_here": 3}
    bad = {**at, "risk_level_here": 9}
    gauges = [
        Device("g1", "flood", "vi-thanh", "phuong-5", "A", 9.78, 105.47, at),
        Device("g2", "flood", "vi-thanh", "phuong-5", "B", 9.78, 105.47, bad),
    ]
    e = engine(text, *gauges)
    for g in gauges:
        e.observe_telemetry(g.id, T0, [("water_level_m", 0.6)])
    levels = {t.device_id: t.risk_level for t in e.drain() if t.to == "firing"}
    assert levels == {"g1": 3, "g2": None}


# -- the shipped pack's rain classes on a timeline ----------------------------------------------
# The rules above are test text; these drive rules/packs/default.yaml itself, so a changed
# threshold, window or risk level in the pack fails here.


def shipped_rain_engine() -> Engine:
    pack = load_rules(DEFAULT_PACK)
    return Engine(pack, (RAIN,))


def rain24(e: Engine, minute: float, mm_24h: float) -> None:
    e.observe_telemetry("vt-rain-01", T0 + minute * MIN, [("rain_24h_mm", mm_24h)])
    e.advance(T0 + minute * MIN)


def test_shipped_rain_classes_12h_and_3h_intensity_on_a_timeline() -> None:
    """mưa to > 25 mm/12 h, mưa rất to > 50 mm/12 h, intense > 70 mm/3 h (street flooding),
    all risk level 1; no `for`, so each fires at the reading that crosses. 2 mm every 5
    minutes from minute 0 is 2 mm × the readings so far."""
    e = shipped_rain_engine()
    for m in range(0, 180, 5):  # 36 readings, 72 mm in 2 h 55 min
        rain(e, m, 2.0)
    trs = [t for t in e.drain() if t.to == "firing"]
    assert [(t.rule, round((t.at - T0) / MIN)) for t in trs] == [
        ("rain-heavy-12h", 60),  # 13 readings: 26 mm > 25
        ("rain-very-heavy-12h", 125),  # 26 readings: 52 mm > 50
        ("rain-intense-3h", 175),  # 36 readings: 72 mm > 70 in the 3 h window
    ]
    assert all(t.risk_level == 1 for t in trs)
    intense = trs[-1]
    assert intense.labels["agency"] == "urban-works"
    assert "72 mm trong 3 giờ" in intense.annotations["summary_vi"]
    # dry from minute 180: the 3 h sum falls to 50 mm (clear) once only 25 of the wet readings
    # are in the window [t − 3 h, t], at minute 235; the 12 h sums hold (72 mm) until later
    for m in range(180, 300, 5):
        rain(e, m, 0.0)
    assert steps(e) == [("rain-intense-3h", "resolved", 235)]


def test_shipped_3h_rule_needs_intensity_not_a_day_of_steady_rain() -> None:
    """60 mm spread over 6 h is heavy rain (12 h class) but never 70 mm in any 3 h."""
    e = shipped_rain_engine()
    for m in range(0, 6 * 60, 5):  # 72 readings of 0.85 mm: 61 mm in 6 h, ≤ 31 mm in any 3 h
        rain(e, m, 0.85)
    fired = {t.rule for t in e.drain() if t.to == "firing"}
    assert fired == {"rain-heavy-12h", "rain-very-heavy-12h"}


def test_shipped_24h_classes_and_their_risk_levels() -> None:
    """The gauge's own 24 h sum: mưa to > 50 mm, mưa rất to > 100 mm. QĐ 18/2021/QĐ-TTg:
    100-200 mm/24 h is risk level 1 (CAP Minor, not Severe), 200-400 mm level 2."""
    e = shipped_rain_engine()
    rain24(e, 0, 50.0)  # not above 50
    assert steps(e) == []
    rain24(e, 5, 51.0)
    assert steps(e) == [("rain-heavy", "pending", 5), ("rain-heavy", "firing", 5)]
    rain24(e, 10, 150.0)
    [_, firing] = e.drain()
    assert (firing.rule, firing.to, firing.severity, firing.risk_level) == (
        "rain-very-heavy", "firing", "critical", 1,
    )  # fmt: skip
    rain24(e, 15, 180.0)  # more rain, same level: nothing to say
    assert steps(e) == []
    rain24(e, 20, 230.0)  # 200-400 mm: the open alert says it is level 2 now
    [raised] = e.drain()
    assert (raised.rule, raised.to, raised.risk_level, raised.value) == (
        "rain-very-heavy", "risk_raised", 2, 230.0,
    )  # fmt: skip
    assert "230 mm" in raised.annotations["summary_vi"]
    rain24(e, 25, 210.0)  # a level is never lowered while the alert is open
    rain24(e, 30, 240.0)
    assert steps(e) == []
    rain24(e, 35, 80.0)  # below clear (90): resolved; the next alert starts afresh
    rain24(e, 40, 150.0)
    got = [(t.rule, t.to, t.risk_level) for t in e.drain() if t.rule == "rain-very-heavy"]
    assert got == [
        ("rain-very-heavy", "resolved", 1),
        ("rain-very-heavy", "pending", 1),
        ("rain-very-heavy", "firing", 1),
    ]
