"""The composition root's tide source: ioc.core.tides' prediction as the rules' TideSource."""

from __future__ import annotations

from datetime import UTC, datetime

import pytest

from ioc.alerting.tide_source import PredictedTide
from ioc.core.devices import Device
from ioc.core.site import load_site
from ioc.core.tides import PACKAGED_TIDES, TidePredictor
from ioc.rules.engine import Engine
from ioc.rules.language import check_rules
from ioc.rules.tide import TideSource

SITE = load_site(PACKAGED_TIDES.with_name("hau-giang.yaml"))
T = datetime(2026, 11, 26, 10, 0, tzinfo=UTC).timestamp()


def source() -> tuple[PredictedTide, TidePredictor]:
    predictor = TidePredictor.load(PACKAGED_TIDES)
    devices = {d.id: d for d in SITE.devices}
    return PredictedTide(predictor, devices.get), predictor


def test_levels_and_high_waters_are_the_tide_models() -> None:
    tide, predictor = source()
    checked: TideSource = tide  # mypy checks PredictedTide against the protocol
    del checked
    gauge = next(d for d in SITE.devices if d.id == "vt-flood-01")
    view = predictor.for_device(gauge)
    assert tide.level_m("vt-flood-01", T) == pytest.approx(float(view.level_m([T])[0]), abs=1e-6)
    hws = tide.high_waters("vt-flood-01", T, T + 25 * 3600)
    assert 1 <= len(hws) <= 2  # a mixed tide: one or two high waters a lunar day
    assert all(T <= h.time <= T + 25 * 3600 for h in hws)
    # a level at a high water's time is the highest around it
    h = hws[0]
    assert tide.level_m("vt-flood-01", h.time) == pytest.approx(h.level_m, abs=0.01)
    assert tide.level_m("vt-flood-01", h.time - 3600) < h.level_m


def test_devices_without_tide_data_answer_none() -> None:
    tide, _ = source()
    assert tide.level_m("vt-rain-01", T) is None  # not a flood gauge
    assert tide.level_m("no-such-device", T) is None
    assert tide.high_waters("no-such-device", T, T + 86400) == []


def test_engine_on_the_site_tide_fires_on_a_surge_only() -> None:
    tide, _ = source()
    ruleset, problems = check_rules(
        [
            (
                "t.yaml",
                """rules:
  - id: surge
    type: residual
    select: {kind: flood, metric: water_level_m}
    when: {op: ">=", threshold: 0.2}
    labels: {severity: warning, domain: flood}
    annotations: {summary_vi: "{value:.2f}", summary_en: "{value:.2f}"}
""",
            )
        ]
    )
    assert problems == []
    gauge: Device = next(d for d in SITE.devices if d.id == "vt-flood-01")
    e = Engine(ruleset, [gauge], tide=tide)
    for i in range(0, 24 * 12):  # a day of readings exactly on the predicted tide
        t = T + i * 300.0
        level = tide.level_m(gauge.id, t)
        assert level is not None
        e.observe_telemetry(gauge.id, t, [("water_level_m", level + 0.01)])
    assert e.drain() == []
    t = T + 24 * 3600.0
    level = tide.level_m(gauge.id, t)
    assert level is not None
    e.observe_telemetry(gauge.id, t, [("water_level_m", level + 0.25)])
    assert [tr.to for tr in e.drain()] == ["pending", "firing"]


def test_warm_predicts_every_covered_gauge_ahead_of_the_first_reading() -> None:
    # RulesService calls it off the event loop at start (the first prediction loads UTide).
    predictor = TidePredictor.load(PACKAGED_TIDES)
    devices = {d.id: d for d in SITE.devices}
    tide = PredictedTide(predictor, devices.get)
    flood = [d.id for d in SITE.devices if d.kind == "flood"]
    covered = [d for d in flood if predictor.for_device(devices[d]) is not None]
    t = datetime(2026, 10, 27, 10, tzinfo=UTC).timestamp()
    assert tide.warm([*flood, "vt-lamp-does-not-exist"], t) == len(covered) > 0
    # the days are cached now: the same instant is answered without a new prediction
    assert len(predictor._days) > 0
    assert tide.level_m(flood[0], t) == predictor.for_device(devices[flood[0]]).at(t)[0]
