"""Silences, recurring maintenance windows and inhibition (pure: ioc/rules/suppression.py)."""

from __future__ import annotations

from datetime import datetime, time

from ioc.core.localtime import FIXED_OFFSET as LOCAL
from ioc.rules.language import check_rules
from ioc.rules.matchers import parse_matcher
from ioc.rules.suppression import AlertView, MaintenanceWindow, Silence, suppressions

INHIBIT = """
inhibit_rules:
  - source_matchers: ['alertname="cabinet-power-loss"']
    target_matchers: ['kind="lighting"']
    equal: [cabinet]
"""


def at(day: int, hour: int, minute: int = 0) -> float:
    return datetime(2026, 11, day, hour, minute, tzinfo=LOCAL).timestamp()


def lamp(n: int, cabinet: str) -> AlertView:
    labels = {"alertname": "lamp-failure", "kind": "lighting", "cabinet": cabinet, "n": str(n)}
    return AlertView(f"lamp{n}", labels, True)


def test_cabinet_power_loss_mutes_only_its_own_lamps_and_only_while_firing() -> None:
    ruleset, problems = check_rules([("i.yaml", INHIBIT)])
    assert not problems
    power = AlertView("cab1", {"alertname": "cabinet-power-loss", "cabinet": "cab-01"}, True)
    views = [power, lamp(1, "cab-01"), lamp(2, "cab-02")]
    why = suppressions(views, at(20, 23), inhibit_rules=ruleset.inhibit_rules)
    assert why == {
        "cab1": None,
        "lamp1": {"inhibited_by": "cab1", "rule": "cabinet-power-loss"},
        "lamp2": None,
    }
    pending = AlertView("cab1", power.labels, False)  # a pending source inhibits nothing
    why = suppressions(
        [pending, lamp(1, "cab-01")], at(20, 23), inhibit_rules=ruleset.inhibit_rules
    )
    assert why["lamp1"] is None


def test_silence_applies_between_its_start_and_end_only() -> None:
    s = Silence(7, (parse_matcher('ward=~"phuong-[15]"'),), at(20, 8), at(20, 12))
    a = AlertView("a", {"ward": "phuong-5"}, True)
    b = AlertView("b", {"ward": "phuong-7"}, True)
    assert suppressions([a, b], at(20, 9), silences=[s]) == {"a": {"silence": 7}, "b": None}
    assert suppressions([a], at(20, 12), silences=[s]) == {"a": None}
    assert suppressions([a], at(20, 7, 59), silences=[s]) == {"a": None}


def test_maintenance_window_recurs_on_its_weekdays_across_midnight() -> None:
    # every Friday 22:00 for 4 hours (2026-11-20 is a Friday)
    w = MaintenanceWindow(
        3, "night round", (parse_matcher('kind="lighting"'),), frozenset({5}), time(22), 4 * 3600
    )
    assert w.active(at(20, 22, 30)) and w.active(at(21, 1, 59))  # Friday night into Saturday
    assert not w.active(at(21, 2, 0)) and not w.active(at(20, 21, 59))
    assert not w.active(at(19, 23))  # Thursday
    assert w.active(at(27, 23))  # the next Friday
    why = suppressions([lamp(1, "c")], at(27, 23), windows=[w])
    assert why == {"lamp1": {"maintenance": 3, "name": "night round"}}
    limited = MaintenanceWindow(
        4, "once", w.matchers, w.weekdays, w.start, w.duration_s, valid_to=at(21, 0)
    )
    assert limited.active(at(20, 23)) and not limited.active(at(27, 23))
