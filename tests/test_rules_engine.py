"""Timeline tests of the pure rule engine with a driven clock: every rule type and lifecycle step.

No database or broker here: the engine is pure by design (ioc/rules/engine.py), so these tests drive
it exactly as the live service and the backtest do — readings with their times, then
``advance(now)``.
"""

from __future__ import annotations

import math
from datetime import datetime
from typing import Any

import numpy as np
import pytest

from ioc.core.devices import Device
from ioc.core.localtime import FIXED_OFFSET as LOCAL
from ioc.rules.backtest import BacktestResult, Stream, replay
from ioc.rules.engine import Engine, OpenAlert
from ioc.rules.language import DEFAULT_PACK, RuleSet, check_rules, load_rules
from ioc.rules.template import render

T0 = datetime(2026, 11, 20, 20, 0, tzinfo=LOCAL).timestamp()  # a night in Vị Thanh
MIN = 60.0

GAUGE = Device(
    "vt-flood-01", "flood", "vi-thanh", "phuong-5", "Trạm Vị Thanh", 9.784, 105.47,
    {"station": "vi-thanh", "bd1": 0.55, "bd2": 0.65, "bd3": 0.75},
)  # fmt: skip
RAIN = Device("vt-rain-01", "rain", "vi-thanh", "phuong-5", "Mưa", 9.79, 105.48, {})
CABINET = Device("vt-cab-01", "cabinet", "vi-thanh", "phuong-7", "Tủ 01", 9.7775, 105.4595, {})
DETECTOR = Device(
    "vt-tfd-01", "traffic", "vi-thanh", "phuong-5", "Đếm xe", 9.785, 105.474,
    {"role": "detector", "junction": "j1", "free_flow_kmh": 40},
)  # fmt: skip


def lamp(n: int) -> Device:
    return Device(
        f"vt-lamp-01-{n:03d}", "lighting", "vi-thanh", "phuong-7", f"Đèn {n}", 9.7777, 105.4594,
        {"cabinet": "vt-cab-01", "nominal_w": 150, "min_w": 45},
    )  # fmt: skip


def engine(text: str, *devices: Device) -> Engine:
    ruleset, problems = check_rules([("test.yaml", text)])
    assert problems == []
    return Engine(ruleset, devices or (GAUGE,))


def steps(e: Engine) -> list[tuple[str, str, float]]:
    """(rule, transition, minutes after T0) of everything since the last call."""
    return [(t.rule, t.to, round((t.at - T0) / MIN, 3)) for t in e.drain()]


BD3 = """
rules:
  - id: flood-bd3
    type: threshold
    select: {kind: flood, metric: water_level_m}
    when: {op: ">=", threshold: device.bd3, clear: device.bd3 - 0.05}
    for: 10m
    keep_firing_for: 0s
    labels: {severity: critical, domain: flood}
    annotations:
      summary_vi: "{device.name}: {value:.2f} m vượt BĐ III ({threshold:.2f} m)"
      summary_en: "{device.name}: {value:.2f} m above BĐ III ({threshold:.2f} m)"
"""


def level(e: Engine, minute: float, value: float) -> None:
    e.observe_telemetry("vt-flood-01", T0 + minute * MIN, [("water_level_m", value)])


def test_pending_then_firing_after_for_then_resolved() -> None:
    e = engine(BD3)
    level(e, 0, 0.70)
    level(e, 1, 0.76)
    assert steps(e) == [("flood-bd3", "pending", 1)]
    level(e, 5, 0.78)
    e.advance(T0 + 10 * MIN)
    assert steps(e) == []  # for has not elapsed: pending since minute 1, due at minute 11
    e.advance(T0 + 11 * MIN)
    out = e.drain()
    assert [(t.to, t.at) for t in out] == [("firing", T0 + 11 * MIN)]
    firing = out[0]
    assert firing.labels["alertname"] == "flood-bd3" and firing.labels["device_id"] == GAUGE.id
    assert firing.annotations["summary_vi"] == "Trạm Vị Thanh: 0,78 m vượt BĐ III (0,75 m)"
    assert firing.reason["threshold"] == 0.75 and firing.reason["held_for_s"] == 600
    level(e, 20, 0.69)  # below the clear level 0.70
    assert steps(e) == [("flood-bd3", "resolved", 20)]


def test_pending_cancelled_when_condition_ends_before_for() -> None:
    e = engine(BD3)
    level(e, 0, 0.80)
    level(e, 4, 0.60)
    e.advance(T0 + 60 * MIN)
    assert steps(e) == [("flood-bd3", "pending", 0), ("flood-bd3", "cancelled", 4)]


def test_hysteresis_keeps_one_alert_on_a_tide_hovering_at_the_level() -> None:
    e = engine(BD3)
    # a spring tide crossing 0.75 m back and forth every few minutes for an hour
    for minute in range(0, 60):
        level(e, minute, 0.75 + 0.02 * math.sin(minute))
    level(e, 60, 0.60)
    e.advance(T0 + 90 * MIN)
    assert steps(e) == [
        ("flood-bd3", "pending", 0),
        ("flood-bd3", "firing", 10),
        ("flood-bd3", "resolved", 60),
    ]


def test_without_clear_level_the_same_tide_flaps() -> None:
    # the control for the test above: the hysteresis is what prevents the flapping
    e = engine(BD3.replace(", clear: device.bd3 - 0.05", ""))
    for minute in range(0, 60):
        level(e, minute, 0.75 + 0.02 * math.sin(minute))
    assert sum(1 for _, to, _ in steps(e) if to == "pending") > 5


def test_keep_firing_for_bridges_a_short_dip() -> None:
    e = engine(BD3.replace("keep_firing_for: 0s", "keep_firing_for: 15m"))
    level(e, 0, 0.80)
    e.advance(T0 + 10 * MIN)
    level(e, 12, 0.60)  # dips below clear ...
    level(e, 20, 0.80)  # ... and is back within keep_firing_for: still the same firing alert
    level(e, 30, 0.60)
    e.advance(T0 + 44 * MIN)
    assert steps(e) == [
        ("flood-bd3", "pending", 0),
        ("flood-bd3", "firing", 10),
        ("flood-bd3", "keep_firing", 12),
        ("flood-bd3", "refiring", 20),
        ("flood-bd3", "keep_firing", 30),
    ]
    e.advance(T0 + 45 * MIN)
    assert steps(e) == [("flood-bd3", "resolved", 45)]


def test_restart_in_the_middle_of_a_pending_period() -> None:
    e = engine(BD3)
    level(e, 0, 0.80)
    (pending,) = e.drain()
    # the process dies at minute 5; a new engine resumes from the stored open alert
    e2 = engine(BD3)
    labels = pending.labels
    fp = pending.fingerprint
    assert e2.restore([OpenAlert(fp, "flood-bd3", "pending", T0, None, None, 0.8, labels)]) == []
    level(e2, 6, 0.81)
    assert steps(e2) == []  # not pending again: it still is
    e2.advance(T0 + 10 * MIN)
    assert steps(e2) == [("flood-bd3", "firing", 10)]  # fires at the original deadline
    # and a restored firing alert is not fired again
    e3 = engine(BD3)
    e3.restore([OpenAlert(fp, "flood-bd3", "firing", T0, T0 + 600, None, 0.8, labels)])
    level(e3, 20, 0.82)
    e3.advance(T0 + 40 * MIN)
    assert steps(e3) == []


def test_out_of_order_reading_is_ignored_by_the_state_machine() -> None:
    e = engine(BD3)
    level(e, 10, 0.60)
    level(e, 5, 0.90)  # late: older than what the series already evaluated
    assert steps(e) == [] and e.ignored_out_of_order == 1


RATE = """
rules:
  - id: rising
    type: rate
    select: {kind: flood, metric: water_level_m}
    window: 30m
    when: {op: ">", threshold: 0.3, clear: 0.2}
    labels: {severity: warning}
    annotations: {summary_vi: "lên {value:.2f} m/h", summary_en: "rising {value:.2f} m/h"}
"""


def test_rate_of_change_over_a_window() -> None:
    e = engine(RATE)
    for minute in range(0, 31, 5):
        level(e, minute, 0.1 + 0.004 * minute)  # 0.24 m/h: below
    assert steps(e) == []
    for minute in range(35, 66, 5):
        level(e, minute, 0.22 + 0.01 * (minute - 30))  # 0.6 m/h
    out = e.drain()
    assert out[0].to == "pending" and out[1].to == "firing"
    assert out[1].value is not None and out[1].value > 0.3
    series = e.series_of(out[1].fingerprint)
    assert series is not None and series.value == pytest.approx(0.6, abs=0.01)  # full window


AGG = """
rules:
  - id: congestion
    type: aggregate
    select: {kind: traffic, metric: speed_kmh, attributes: {role: detector}}
    value: {divide_by: device.free_flow_kmh}
    function: mean
    window: 10m
    when: {op: "<", threshold: 0.5, clear: 0.6}
    labels: {severity: warning}
    annotations: {summary_vi: "{value:.0%}", summary_en: "{value:.0%}"}
"""


def test_window_mean_of_a_derived_ratio() -> None:
    e = engine(AGG, DETECTOR)

    def speed(minute: float, kmh: float) -> None:
        e.observe_telemetry(DETECTOR.id, T0 + minute * MIN, [("speed_kmh", kmh)])

    for minute in range(0, 10):
        speed(minute, 36)  # 0.9 of free flow
    speed(10, 4)  # one slow interval does not make the 10-minute mean congested
    assert steps(e) == []
    for minute in range(11, 22):
        speed(minute, 12)  # 0.3
    out = e.drain()
    assert [t.to for t in out] == ["pending", "firing"]
    assert out[0].annotations["summary_en"].endswith("%")


ABSENCE = """
rules:
  - id: silent
    type: absence
    select: {kind: flood}
    after: 30m
    labels: {severity: critical}
    annotations: {summary_vi: "im lặng {window}", summary_en: "silent for {window}"}
  - id: offline
    type: absence
    select: {kind: lighting}
    status: offline
    after: 15m
    labels: {severity: info}
    annotations: {summary_vi: "mất kết nối", summary_en: "offline"}
"""


def test_absence_of_readings_and_of_online_status() -> None:
    e = engine(ABSENCE, GAUGE, lamp(1))
    e.advance(T0)  # the engine starts: silence is counted from here
    level(e, 10, 0.3)
    e.advance(T0 + 39 * MIN)
    assert steps(e) == []
    e.advance(T0 + 41 * MIN)
    out = e.drain()
    assert [(t.rule, t.to, t.at) for t in out] == [
        ("silent", "pending", T0 + 40 * MIN),
        ("silent", "firing", T0 + 40 * MIN),
    ]
    assert out[1].annotations["summary_en"] == "silent for 30 min"
    level(e, 50, 0.3)
    assert steps(e) == [("silent", "resolved", 50)]
    e.observe_status(lamp(1).id, False, T0 + 60 * MIN)
    e.advance(T0 + 74 * MIN)
    assert steps(e) == []
    e.advance(T0 + 76 * MIN)
    assert steps(e)[-1] == ("offline", "firing", 75)
    e.observe_status(lamp(1).id, True, T0 + 80 * MIN)
    assert steps(e) == [("offline", "resolved", 80)]


EVENTS = """
rules:
  - id: power-loss
    type: event
    select: {kind: cabinet, event: power_loss}
    clear_event: power_restored
    labels: {severity: critical, cabinet: "{device.id}"}
    annotations: {summary_vi: "mất điện", summary_en: "power loss"}
  - id: accident
    type: event
    select: {kind: traffic, event: accident}
    resolve_after: 1h
    labels: {severity: critical}
    annotations: {summary_vi: "tai nạn", summary_en: "accident"}
"""


def test_events_fire_at_once_and_clear_by_event_or_expiry() -> None:
    e = engine(EVENTS, CABINET, DETECTOR)
    e.observe_event(CABINET.id, "power_loss", T0)
    e.observe_event(CABINET.id, "power_loss", T0 + MIN)  # repeated: the same alert
    e.observe_event(DETECTOR.id, "accident", T0 + 2 * MIN)
    out = e.drain()
    assert [(t.rule, t.to) for t in out] == [
        ("power-loss", "pending"),
        ("power-loss", "firing"),
        ("accident", "pending"),
        ("accident", "firing"),
    ]
    assert out[0].labels["cabinet"] == CABINET.id
    e.observe_event(CABINET.id, "power_restored", T0 + 30 * MIN)
    e.advance(T0 + 62 * MIN)
    assert steps(e) == [("power-loss", "resolved", 30), ("accident", "resolved", 62)]


GROUPS = """
rules:
  - id: lamp-failure
    type: threshold
    select: {kind: lighting, metric: power_w}
    schedule: {sun: night}
    when: {op: "<", threshold: device.nominal_w * 0.2}
    requires: [{metric: dim_level_pct, op: ">=", threshold: 20}]
    labels: {severity: warning, cabinet: "{device.cabinet}"}
    annotations: {summary_vi: "hỏng", summary_en: "failed"}
  - id: lamps-failing
    type: group
    group_by: [cabinet]
    count: {rule: lamp-failure}
    min_count: 3
    window: 30m
    labels: {severity: critical}
    annotations: {summary_vi: "{count} đèn", summary_en: "{count} lamps on {group.cabinet}"}
  - id: reports
    type: group
    group_by: [ward, category]
    count: {event: report}
    min_count: 3
    window: 2h
    labels: {severity: warning}
    annotations: {summary_vi: "{count}", summary_en: "{count}"}
"""


def lamp_reading(e: Engine, n: int, minute: float, watts: float, dim: float = 100) -> None:
    e.observe_telemetry(lamp(n).id, T0 + minute * MIN, [("dim_level_pct", dim), ("power_w", watts)])


def test_several_lamps_of_one_cabinet_failing_at_once() -> None:
    e = engine(GROUPS, *(lamp(n) for n in range(1, 6)))
    lamp_reading(e, 1, 0, 2.0)
    lamp_reading(e, 2, 1, 150.0)
    lamp_reading(e, 3, 1, 0.0, dim=0)  # switched off, not failed: requirement not met
    lamp_reading(e, 4, 2, 1.0)
    assert [t.rule for t in e.drain() if t.to == "firing"] == ["lamp-failure", "lamp-failure"]
    lamp_reading(e, 5, 3, 0.5)
    out = [t for t in e.drain() if t.rule == "lamps-failing"]
    assert [t.to for t in out] == ["pending", "firing"]
    assert out[1].labels == {
        "severity": "critical",
        "cabinet": "vt-cab-01",
        "alertname": "lamps-failing",
    }
    assert out[1].annotations["summary_en"] == "3 lamps on vt-cab-01"
    lamp_reading(e, 1, 10, 150.0)  # one lamp repaired: 2 left
    assert ("lamps-failing", "resolved", 10) in steps(e)


def test_lamp_failure_only_at_night() -> None:
    e = engine(GROUPS, lamp(1))
    noon = datetime(2026, 11, 21, 12, 0, tzinfo=LOCAL).timestamp()
    e.observe_telemetry(lamp(1).id, noon, [("dim_level_pct", 100), ("power_w", 0.0)])
    assert e.drain() == []


def test_cluster_of_citizen_reports_in_one_ward() -> None:
    e = engine(GROUPS, GAUGE)
    where = {"ward": "phuong-5", "city": "vi-thanh", "category": "chieu-sang"}
    e.observe_event(None, "report", T0, where)
    e.observe_event(None, "report", T0 + 30 * MIN, {**where, "category": "ngap-ung"})
    e.observe_event(None, "report", T0 + 60 * MIN, where)
    assert e.drain() == []
    e.observe_event(None, "report", T0 + 90 * MIN, where)
    out = e.drain()
    assert [t.to for t in out] == ["pending", "firing"] and out[0].value == 3
    e.advance(T0 + 121 * MIN)  # the first report leaves the 2-hour window
    assert steps(e) == [("reports", "resolved", 120)]


def test_a_late_report_is_counted_in_its_place_while_inside_the_window() -> None:
    """Reports do not reach the engine in time order (an Open311 post committed after a newer
    relayed report, a relay's backlog): a late one inside the window counts, one older than the
    window does not."""
    e = engine(GROUPS, GAUGE)
    where = {"ward": "phuong-5", "city": "vi-thanh", "category": "chieu-sang"}
    e.observe_event(None, "report", T0 + 150 * MIN, where)
    e.observe_event(None, "report", T0, where)  # 2.5 h before the newest: outside the 2 h
    e.observe_event(None, "report", T0 + 100 * MIN, where)
    assert e.drain() == []
    e.observe_event(None, "report", T0 + 120 * MIN, where)
    out = e.drain()
    assert [t.to for t in out] == ["pending", "firing"] and out[0].value == 3
    e.advance(T0 + 221 * MIN)  # the report of minute 100 leaves the window
    assert steps(e) == [("reports", "resolved", 220)]


CORRELATION = """
rules:
  - id: heavy-rain
    type: threshold
    select: {kind: rain, metric: rain_24h_mm}
    when: {op: ">", threshold: 50}
    labels: {severity: warning}
    annotations: {summary_vi: "mưa", summary_en: "rain"}
  - id: high-water
    type: threshold
    select: {kind: flood, metric: water_level_m}
    when: {op: ">", threshold: 0.6}
    labels: {severity: warning}
    annotations: {summary_vi: "nước", summary_en: "water"}
  - id: rain-and-water
    type: group
    group_by: [ward]
    all_of: [heavy-rain, high-water]
    labels: {severity: critical}
    annotations: {summary_vi: "{group.ward}", summary_en: "{group.ward}"}
"""


def test_heavy_rain_and_rising_water_in_the_same_ward() -> None:
    e = engine(CORRELATION, GAUGE, RAIN)
    e.observe_telemetry(RAIN.id, T0, [("rain_24h_mm", 70.0)])
    assert [t.rule for t in e.drain()] == ["heavy-rain", "heavy-rain"]
    level(e, 5, 0.7)
    out = e.drain()
    assert [(t.rule, t.to) for t in out][-2:] == [
        ("rain-and-water", "pending"),
        ("rain-and-water", "firing"),
    ]
    assert out[-1].labels["ward"] == "phuong-5"
    e.observe_telemetry(RAIN.id, T0 + 10 * MIN, [("rain_24h_mm", 10.0)])
    assert ("rain-and-water", "resolved", 10) in steps(e)


ANOMALY = """
rules:
  - id: unusual
    type: anomaly
    select: {kind: flood, metric: water_level_m}
    z: 4
    min_samples: 5
    labels: {severity: warning}
    annotations: {summary_vi: "bất thường", summary_en: "unusual"}
"""


def test_anomaly_against_the_devices_own_history_for_that_hour() -> None:
    e = engine(ANOMALY)
    rng = np.random.default_rng(1)
    days = np.arange(20)
    times = T0 - (days + 1) * 86400.0  # 20:00 on each of the last 20 days
    e.seed_history(GAUGE.id, "water_level_m", times, 0.40 + rng.normal(0, 0.02, 20))
    level(e, 0, 0.43)  # ordinary for 20:00
    assert e.drain() == []
    level(e, 1, 0.80)  # 0.4 m above the usual 20:00 level: z ≈ 20
    out = e.drain()
    assert [t.to for t in out] == ["pending", "firing"] and out[0].reason["z"] > 4


def test_reloading_rules_keeps_unchanged_state_and_resolves_changed_rules() -> None:
    e = engine(BD3 + RATE.replace("rules:\n", ""))
    level(e, 0, 0.80)
    e.advance(T0 + 10 * MIN)
    assert ("flood-bd3", "firing", 10) in steps(e)
    same, _ = check_rules([("test.yaml", BD3)])
    e.set_rules(same)
    assert steps(e) == []  # unchanged rule: its firing alert goes on
    changed, _ = check_rules([("test.yaml", BD3.replace("for: 10m", "for: 20m"))])
    e.set_rules(changed)
    out = e.drain()
    assert [(t.rule, t.to, t.reason) for t in out] == [
        ("flood-bd3", "resolved", {"rule": "changed or removed"})
    ]


def test_default_pack_loads_and_every_rule_is_a_known_type() -> None:
    rs = load_rules(DEFAULT_PACK)
    ids = {r.id for r in rs.rules}
    for needed in (
        "flood-bd1", "flood-bd2", "flood-bd3", "surge-rising-fast", "rain-heavy",
        "rain-very-heavy", "lamp-failure", "lamp-day-burner", "cabinet-power-loss",
        "supply-undervoltage-l1", "supply-overvoltage-l1", "traffic-congestion",
        "traffic-severe-congestion", "traffic-accident", "flood-gauge-silent", "device-silent",
        "reports-cluster", "lamps-failing-on-cabinet", "rain-and-rising-water",
    ):  # fmt: skip
        assert needed in ids
    assert len(rs.inhibit_rules) >= 3


def test_problems_name_file_line_and_what_is_wrong() -> None:
    text = """rules:
  - id: ok-rule
    type: threshold
    select: {kind: flood, metric: water_level_m}
    when: {op: ">=", threshold: 1}
    labels: {severity: info}
    annotations: {summary_vi: a, summary_en: b}
  - id: Bad Id
    type: threshold
  - id: bad-metric
    type: threshold
    select: {kind: flood, metric: rain_mm}
    when: {op: ">=", threshold: 1}
    labels: {severity: loud}
    annotations: {summary_vi: "{__class__}", summary_en: b}
  - id: bad-clear
    type: threshold
    select: {kind: flood, metric: water_level_m}
    when: {op: ">=", threshold: 1, clear: 2}
    for: soon
    labels: {severity: info}
    annotations: {summary_vi: a, summary_en: b}
  - id: ok-rule
    type: absence
    select: {kind: flood}
    after: 10m
    labels: {severity: info}
    annotations: {summary_vi: a, summary_en: b}
inhibit_rules:
  - source_matchers: ['severity=critical']
    target_matchers: ['x="y"']
"""
    _, problems = check_rules([("bad.yaml", text)])
    got = {(p.line, p.message.split(":")[0]) for p in problems}
    lines = sorted(p.line for p in problems)
    assert all(p.file == "bad.yaml" for p in problems)
    messages = "\n".join(str(p) for p in problems)
    assert "bad.yaml:8: rule id 'Bad Id'" in messages
    assert "bad.yaml:12: rule bad-metric: flood has no metric 'rain_mm'" in messages
    assert "bad.yaml:14: rule bad-metric: labels.severity 'loud'" in messages
    assert "unknown field '__class__'" in messages
    assert "bad.yaml:19: rule bad-clear: clear level 2.0 must be at or below" in messages
    assert "bad.yaml:20: rule bad-clear: 'for': 'soon' is not a duration" in messages
    assert "bad.yaml:23: duplicate rule id 'ok-rule' (first at bad.yaml:2)" in messages
    assert "bad.yaml:30: inhibit rule at line 30: source_matchers: 'severity=critical'" in messages
    assert got and lines == sorted(lines)


def test_yaml_syntax_error_has_a_line() -> None:
    _, problems = check_rules([("broken.yaml", "rules:\n  - id: x\n    type: [unclosed\n")])
    assert len(problems) == 1 and problems[0].line >= 3 and "not valid YAML" in problems[0].message


# -- regressions found in review ---------------------------------------------------------------


def test_a_removed_rule_or_device_leaves_no_timer_behind() -> None:
    # an absence series armed while inactive, then its rule (or its device) goes away: the
    # timer it left in the engine's heap must not raise an alert of a rule no longer in force
    e = engine(ABSENCE, GAUGE, lamp(1))
    e.advance(T0)  # "silent" is armed for minute 30
    others, _ = check_rules([("test.yaml", BD3)])
    e.set_rules(others)
    e.advance(T0 + 60 * MIN)
    assert steps(e) == []
    e2 = engine(ABSENCE, GAUGE, lamp(1))
    e2.advance(T0)
    e2.set_devices([lamp(1)])  # the gauge is removed
    e2.advance(T0 + 60 * MIN)
    assert steps(e2) == []


def fail_lamps(e: Engine, *ns: int, minute: float = 0) -> None:
    for n in ns:
        lamp_reading(e, n, minute, 1.0)


GROUPS_ANYTIME = GROUPS.replace("    schedule: {sun: night}\n", "")


def test_a_changed_group_rule_counts_the_alerts_already_firing() -> None:
    e = engine(GROUPS_ANYTIME, *(lamp(n) for n in range(1, 4)))
    fail_lamps(e, 1, 2, 3)
    assert ("lamps-failing", "firing", 0) in steps(e)
    e.advance(T0 + 5 * MIN)
    text = GROUPS_ANYTIME.replace("min_count: 3\n    window: 30m", "min_count: 2\n    window: 30m")
    changed, _ = check_rules([("test.yaml", text)])
    e.set_rules(changed)
    # the old group alert ends with its rule; the new rule sees the three lamps still failing
    assert steps(e) == [
        ("lamps-failing", "resolved", 5),
        ("lamps-failing", "pending", 5),
        ("lamps-failing", "firing", 5),
    ]


def test_a_group_rule_changed_with_its_source_rule_uses_the_new_group_rule() -> None:
    e = engine(GROUPS_ANYTIME, *(lamp(n) for n in range(1, 4)))
    fail_lamps(e, 1, 2, 3)
    e.advance(T0 + 5 * MIN)
    e.drain()
    text = GROUPS_ANYTIME.replace("min_count: 3\n    window: 30m", "min_count: 2\n    window: 30m")
    text = text.replace('summary_en: "failed"', 'summary_en: "lamp failed"')
    changed, _ = check_rules([("test.yaml", text)])
    e.set_rules(changed)
    assert all(to in ("resolved", "cancelled") for _, to, _ in steps(e))
    fail_lamps(e, 1, 2, minute=6)
    assert ("lamps-failing", "firing", 6) in steps(e)  # two are enough for the new rule


OTHER = """
  - id: flood-bd2
    type: threshold
    select: {kind: flood, metric: water_level_m}
    when: {op: ">=", threshold: device.bd2}
    labels: {severity: warning}
    annotations: {summary_vi: "BĐ II", summary_en: "BĐ II"}
"""


def test_a_rule_inserted_above_another_leaves_its_alerts_firing() -> None:
    e = engine(BD3)
    level(e, 0, 0.80)
    e.advance(T0 + 10 * MIN)
    assert ("flood-bd3", "firing", 10) in steps(e)
    moved, _ = check_rules([("test.yaml", BD3.replace("rules:\n", "rules:" + OTHER))])
    assert moved.by_id()["flood-bd3"].line != e.rules["flood-bd3"].line
    e.set_rules(moved)
    assert steps(e) == []  # flood-bd3 did not change: it only moved down the file
    assert e.rules["flood-bd3"].line == moved.by_id()["flood-bd3"].line
    (s,) = [s for s in e.open_series() if s.rule.id == "flood-bd3"]
    assert s.rule is moved.by_id()["flood-bd3"]  # its series holds the rule now in force


def test_a_late_reading_does_not_move_an_alert_back_before_its_timer() -> None:
    e = engine(BD3.replace("keep_firing_for: 0s", "keep_firing_for: 15m"))
    level(e, 0, 0.80)
    e.advance(T0 + 10 * MIN)
    level(e, 12, 0.60)
    e.advance(T0 + 30 * MIN)
    assert steps(e)[-2:] == [("flood-bd3", "keep_firing", 12), ("flood-bd3", "resolved", 27)]
    level(e, 20, 0.80)  # older than the resolution at minute 27
    assert steps(e) == [] and e.ignored_out_of_order == 1


def test_resolving_a_source_by_hand_updates_its_group() -> None:
    e = engine(GROUPS_ANYTIME, *(lamp(n) for n in range(1, 4)))
    fail_lamps(e, 1, 2, 3)
    firing = {t.device_id: t.fingerprint for t in e.drain() if t.rule == "lamp-failure"}
    e.advance(T0 + 5 * MIN)
    e.forget(firing[lamp(1).id])
    assert steps(e) == [("lamps-failing", "resolved", 5)]  # two lamps left of three


def test_resolving_an_absence_by_hand_counts_the_silence_afresh() -> None:
    e = engine(ABSENCE, GAUGE)
    e.advance(T0)
    e.advance(T0 + 31 * MIN)
    out = e.drain()
    assert [t.to for t in out] == ["pending", "firing"]
    e.forget(out[0].fingerprint)
    e.advance(T0 + 60 * MIN)
    assert steps(e) == []
    e.advance(T0 + 62 * MIN)  # still silent 30 minutes after the hand resolution
    assert steps(e) == [("silent", "pending", 61), ("silent", "firing", 61)]


def test_restored_event_alert_still_expires() -> None:
    e = engine(EVENTS, CABINET, DETECTOR)
    e.observe_event(DETECTOR.id, "accident", T0)
    pending, _ = e.drain()
    e2 = engine(EVENTS, CABINET, DETECTOR)
    a = OpenAlert(pending.fingerprint, "accident", "firing", T0, T0, None, None, pending.labels)
    assert e2.restore([a]) == []
    e2.advance(T0 + 59 * MIN)
    assert steps(e2) == []
    e2.advance(T0 + 61 * MIN)
    assert steps(e2) == [("accident", "resolved", 60)]


def test_restored_windowed_group_is_evaluated_again_when_its_window_moves() -> None:
    e = engine(GROUPS_ANYTIME, *(lamp(n) for n in range(1, 4)))
    for n, minute in ((1, 0), (2, 1), (3, 3)):
        lamp_reading(e, n, minute, 1.0)
    opened = {}
    for t in e.drain():
        if t.to == "firing":
            opened[t.fingerprint] = OpenAlert(
                t.fingerprint, t.rule, "firing", t.active_at, t.started_at, None, t.value, t.labels
            )
    assert len(opened) == 4
    # the reference: the same engine without a restart drops lamp 1 from the window at 30
    e.advance(T0 + 31 * MIN)
    assert steps(e) == [("lamps-failing", "resolved", 30)]
    e2 = engine(GROUPS_ANYTIME, *(lamp(n) for n in range(1, 4)))
    assert e2.restore(opened.values()) == []
    e2.advance(T0 + 31 * MIN)
    assert steps(e2) == [("lamps-failing", "resolved", 30)]


def test_restored_group_over_events_resolves_once_its_events_have_left_the_window() -> None:
    e = engine(GROUPS, GAUGE)
    where = {"ward": "phuong-5", "city": "vi-thanh", "category": "chieu-sang"}
    for minute in (0, 30, 60):
        e.observe_event(None, "report", T0 + minute * MIN, where)
    _, firing = e.drain()
    a = OpenAlert(
        firing.fingerprint, "reports", "firing", firing.active_at, firing.at, None, 3, firing.labels
    )
    e2 = engine(GROUPS, GAUGE)
    assert e2.restore([a]) == []
    # the reports themselves are not stored: by 60 + 2 h every one it counted has left
    e2.advance(T0 + 179 * MIN)
    assert steps(e2) == []
    e2.advance(T0 + 181 * MIN)
    assert steps(e2) == [("reports", "resolved", 180)]


SILENT_GAUGE = """
rules:
  - id: no-level
    type: absence
    select: {kind: flood, metric: water_level_m}
    after: 30m
    labels: {severity: warning}
    annotations: {summary_vi: "không có mực nước", summary_en: "no water level"}
  - id: offline
    type: absence
    select: {kind: lighting}
    status: offline
    after: 15m
    keep_firing_for: 10m
    labels: {severity: info}
    annotations: {summary_vi: "mất kết nối", summary_en: "offline"}
"""


def test_an_online_status_is_no_reading_for_a_metric_absence_rule() -> None:
    e = engine(SILENT_GAUGE, GAUGE)
    e.advance(T0)
    for minute in (10, 20, 30):
        e.observe_status(GAUGE.id, True, T0 + minute * MIN)  # alive, yet no water level
    e.advance(T0 + 31 * MIN)
    assert steps(e) == [("no-level", "pending", 30), ("no-level", "firing", 30)]


def test_offline_again_while_kept_firing_is_timed_again() -> None:
    e = engine(SILENT_GAUGE, lamp(1))
    e.observe_status(lamp(1).id, False, T0)
    e.advance(T0 + 15 * MIN)
    e.observe_status(lamp(1).id, True, T0 + 20 * MIN)  # kept firing until minute 30
    e.observe_status(lamp(1).id, False, T0 + 22 * MIN)  # and offline again
    e.advance(T0 + 60 * MIN)
    assert steps(e) == [
        ("offline", "pending", 15),
        ("offline", "firing", 15),
        ("offline", "keep_firing", 20),
        ("offline", "resolved", 30),
        ("offline", "pending", 37),
        ("offline", "firing", 37),
    ]


def test_a_group_is_never_evaluated_back_in_time() -> None:
    e = engine(CORRELATION, GAUGE, RAIN)
    e.observe_telemetry(RAIN.id, T0 + 10 * MIN, [("rain_24h_mm", 70.0)])
    level(e, 5, 0.7)  # the gauge's own reading is not late for its series, but the group was
    # last evaluated at minute 10
    out = steps(e)
    assert ("rain-and-water", "pending", 10) in out and ("rain-and-water", "firing", 10) in out


def test_template_width_is_bounded() -> None:
    text = BD3.replace("{value:.2f} m above", "{value:99999999} m above")
    _, problems = check_rules([("big.yaml", text)])
    assert [str(p) for p in problems] == [
        "big.yaml:12: rule flood-bd3: annotation 'summary_en': '{device.name}: {value:99999999} "
        "m above BĐ III ({threshold:.2f} m)': format width or precision above 40"
    ]
    assert render("{value:.99999999f}", {"value": 1.5}) == "1.5"  # never formatted huge


def live_alerts(
    ruleset: RuleSet, devices: list[Device], streams: list[Stream], end: float
) -> list[tuple[str, float, float, float | None]]:
    """The alerts that fired, driving the engine as the live service does: one message per
    device and time with all its metrics, then ``advance``."""
    e = Engine(ruleset, devices)
    messages: dict[tuple[float, str], list[tuple[str, float]]] = {}
    for st in streams:
        for t, v in zip(st.times.tolist(), st.values.tolist(), strict=True):
            messages.setdefault((t, st.device_id), []).append((st.metric, v))
    e.advance(T0)
    for (t, device_id), metrics in sorted(messages.items()):
        e.observe_telemetry(device_id, t, metrics)
        e.advance(t)
    e.advance(end)
    alerts: list[list[Any]] = []
    opened: dict[str, list[Any]] = {}
    for tr in e.drain():
        if tr.to == "pending":
            opened[tr.fingerprint] = [tr.rule, tr.active_at, None, None]
            alerts.append(opened[tr.fingerprint])
        elif tr.to == "firing":
            opened[tr.fingerprint][2] = tr.at
        elif tr.to in ("resolved", "cancelled"):
            opened.pop(tr.fingerprint)[3] = tr.at
    return sorted((a[0], a[1], a[2], a[3]) for a in alerts if a[2] is not None)


def backtest_equals_live(text: str, devices: list[Device], streams: list[Stream]) -> BacktestResult:
    ruleset, problems = check_rules([("test.yaml", text)])
    assert problems == []
    end = T0 + 120 * MIN
    result = replay(ruleset, devices, streams, start=T0, end=end)
    got = sorted((a.rule, a.active_at, a.started_at, a.resolved_at) for a in result.alerts)
    assert got == live_alerts(ruleset, devices, streams, end)
    return result


def minutes(device: Device, metric: str, values: list[float]) -> Stream:
    times = T0 + MIN * np.arange(len(values), dtype=float)
    return Stream(device.id, metric, times, np.array(values, dtype=float))


def test_backtest_never_reduces_a_metric_another_rule_requires() -> None:
    text = """
rules:
  - id: lamp-failure
    type: threshold
    select: {kind: lighting, metric: power_w}
    when: {op: "<", threshold: 30}
    requires: [{metric: dim_level_pct, op: ">=", threshold: 20}]
    labels: {severity: warning}
    annotations: {summary_vi: "hỏng", summary_en: "failed"}
  - id: lamp-switched-off
    type: threshold
    select: {kind: lighting, metric: dim_level_pct}
    when: {op: "<", threshold: 5}
    labels: {severity: info}
    annotations: {summary_vi: "tắt", summary_en: "off"}
"""
    # a failed lamp, dimmed below the requirement for 20 minutes: for the second rule 100 % and
    # 10 % are one class, yet the first rule must see the 10 %
    dim = [100.0] * 20 + [10.0] * 20 + [100.0] * 20
    streams = [minutes(lamp(1), "dim_level_pct", dim), minutes(lamp(1), "power_w", [0.0] * 60)]
    result = backtest_equals_live(text, [lamp(1)], streams)
    assert len(result.alerts) == 2  # resolved at minute 20, fired again at 40


def test_backtest_equals_live_with_a_clear_level_on_the_wrong_side() -> None:
    # clear above the threshold of a ">=" rule: refused as constants, possible with attributes
    text = BD3.replace("clear: device.bd3 - 0.05", "clear: device.bd3 + 0.05")
    values = [0.77] * 30 + [0.5] * 10 + [0.79, 0.81, 0.77, 0.74, 0.5]
    result = backtest_equals_live(text, [GAUGE], [minutes(GAUGE, "water_level_m", values)])
    assert result.evaluated < result.readings  # the reduction did run
    assert [(a.rule, a.started_at) for a in result.alerts] == [("flood-bd3", T0 + 10 * MIN)]


def test_the_default_pack_tells_a_cut_feeder_from_a_supply_loss() -> None:
    """Cable theft is downstream of the cabinet: supply present, feeder dead at night →
    `cabinet-feeder-cut` (urban works). A supply loss (0 V) is the power company's
    `cabinet-power-loss` event, not a feeder cut; by day a dark feeder is normal."""
    rs = load_rules(DEFAULT_PACK)
    feeder = next(r for r in rs.rules if r.id == "cabinet-feeder-cut")
    assert feeder.labels["agency"] == "urban-works"
    power = next(r for r in rs.rules if r.id == "cabinet-power-loss")
    assert power.labels["agency"] == "power"
    assert "trộm" not in power.annotations["summary_vi"]  # a supply fault, not "cable theft"

    def reading(minute: float, volts: float, watts: float, start: float = T0) -> None:
        e.observe_telemetry(CABINET.id, start + minute * MIN,
                            [("voltage_l1_v", volts), ("power_w", watts)])  # fmt: skip

    def fired() -> list[tuple[str, str, float]]:
        return [s for s in steps(e) if s[0] == "cabinet-feeder-cut"]

    e = Engine(rs, (CABINET,))
    reading(0, 226.0, 3600.0)
    for minute in (5, 10, 15, 20):  # 23:00-ish theft: supply stays, the feeder carries nothing
        reading(minute, 226.0, 0.0)
    assert ("cabinet-feeder-cut", "firing", 15) in fired()
    e = Engine(rs, (CABINET,))
    for minute in (0, 5, 10, 15, 20):  # a supply loss: no voltage either
        reading(minute, 0.0, 0.0)
    assert fired() == []
    e = Engine(rs, (CABINET,))
    noon = datetime(2026, 11, 21, 12, 0, tzinfo=LOCAL).timestamp()
    for minute in (0, 5, 10, 15, 20):  # by day the lamps are off
        reading(minute, 226.0, 0.0, noon)
    assert fired() == []
