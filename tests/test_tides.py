"""Tides as data: the fitted constituents reproduce the published targets; prediction, extremes,
gauge views, the bounded cache and the data file's errors (ioc/core/tides.py)."""

from __future__ import annotations

import copy
import itertools
from datetime import UTC, date, datetime, timedelta
from pathlib import Path
from typing import Any
from zoneinfo import ZoneInfo

import numpy as np
import pytest
import yaml

from ioc.core.site import load_site
from ioc.core.tides import (
    PACKAGED_TIDES,
    TideError,
    TidePredictor,
    UnknownStation,
    predict,
)

VN = ZoneInfo("Asia/Ho_Chi_Minh")
SITE = Path(__file__).resolve().parents[1] / "ioc" / "site_data" / "hau-giang.yaml"


@pytest.fixture(scope="module")
def pred() -> TidePredictor:
    return TidePredictor.from_site(load_site(SITE))


@pytest.fixture(scope="module")
def raw() -> dict[str, Any]:
    data = yaml.safe_load(PACKAGED_TIDES.read_text(encoding="utf-8"))
    assert isinstance(data, dict)
    return data


def _window(w: tuple[date, date]) -> np.ndarray:
    a = datetime(w[0].year, w[0].month, w[0].day, tzinfo=VN).timestamp()
    b = datetime(w[1].year, w[1].month, w[1].day, tzinfo=VN).timestamp() + 86_400
    return np.arange(a, b, 600.0)


def test_the_site_file_names_the_tide_data_and_every_flood_device_has_a_tide(
    pred: TidePredictor,
) -> None:
    site = load_site(SITE)
    assert site.tides_file == PACKAGED_TIDES
    assert set(pred.stations) == set(site.alarm_levels)  # vi-thanh, phung-hiep, can-tho
    for st in pred.stations.values():
        assert {c.name for c in st.constituents} >= {"M2", "S2", "N2", "K1", "O1", "SA", "SSA"}
        assert st.source and st.calibration and st.illustrative  # derived, says so
    for d in site.devices_of(kind="flood"):
        assert pred.for_device(d).station == d.attributes["station"]


def test_the_fitted_tide_reproduces_every_published_target(pred: TidePredictor) -> None:
    """Each target of the tide data (peak level range, published time within its tolerance,
    days above BĐ III) holds for the prediction — the calibration table of docs/tides.md."""
    site = load_site(SITE)
    assert len(pred.targets) >= 8
    for x in pred.targets:
        st = pred.station(x.station)
        t = _window(x.window)
        h = st.mean_m + predict(st, t)
        if x.kind == "annual-peak":
            assert x.level_m is not None
            i = int(np.argmax(h))
            assert x.level_m[0] <= h[i] <= x.level_m[1], (x.station, x.window, h[i])
            when = datetime.fromtimestamp(t[i], UTC)
            # The bulletins' Oct–Dec peaks are evening high waters (the East Sea's diurnal
            # inequality puts the higher high water in the evening in the flood season).
            assert 16 <= when.astimezone(VN).hour <= 21, (x.station, when)
            if x.at is not None:
                dt = abs(when - x.at)
                tod = min(dt % timedelta(days=1), timedelta(days=1) - dt % timedelta(days=1))
                assert dt <= timedelta(days=float(x.tolerance["days"]), hours=1.5)
                assert tod <= timedelta(hours=float(x.tolerance["hours"]))
        else:
            assert x.days is not None
            bd3 = site.alarm_levels[x.station].bd3
            days = {datetime.fromtimestamp(s, UTC).astimezone(VN).date() for s in t[h >= bd3]}
            assert x.days[0] <= len(days) <= x.days[1], len(days)
            assert {d.month for d in days} <= {9, 10, 11, 12, 1}  # the high-water season only


def test_linearised_astronomy_matches_utides_exact_reconstruction(pred: TidePredictor) -> None:
    import utide

    from ioc.core.tides import _DATENUM_UNIX, _coef

    st = pred.station("can-tho")
    t = datetime(2026, 10, 20, tzinfo=UTC).timestamp() + np.arange(0, 20 * 86_400, 1200.0)
    coef = _coef(st, 0.0, [c.name for c in st.constituents])
    coef.aux.opt.nodsatlint = False
    coef.aux.opt.gwchlint = False
    coef.aux.reftime = float(t[0] / 86_400 + _DATENUM_UNIX)
    exact = utide.reconstruct(t / 86_400 + _DATENUM_UNIX, coef, epoch="python", verbose=False).h
    assert np.max(np.abs(predict(st, t) - exact)) < 0.001  # < 1 mm over 20 days


def test_level_interpolates_the_prediction_and_extremes_are_turning_points(
    pred: TidePredictor,
) -> None:
    st = pred.station("phung-hiep")
    t0 = datetime(2026, 11, 24, tzinfo=VN)
    t = t0.timestamp() + np.arange(0, 3 * 86_400, 300.0)
    assert np.max(np.abs(pred.level_m("phung-hiep", t) - st.mean_m - predict(st, t))) < 0.001
    ext = pred.extremes("phung-hiep", t0, t0 + timedelta(days=3))
    kinds = [e.kind for e in ext]
    assert all(a != b for a, b in itertools.pairwise(kinds))  # high, low, high, …
    assert 9 <= len(ext) <= 13  # two tides a day (mixed, mainly semi-diurnal)
    for e in ext:
        around = pred.level_m("phung-hiep", [e.time + timedelta(minutes=m) for m in (-20, 0, 20)])
        assert around[1] == pytest.approx(e.level_m, abs=0.002)
        if e.kind == "high":
            assert around[1] >= max(around[0], around[2])
        else:
            assert around[1] <= min(around[0], around[2])
    highs = pred.high_waters("phung-hiep", t0, t0 + timedelta(days=3))
    assert highs == [(e.time, e.level_m) for e in ext if e.kind == "high"]
    # the evening high water is the day's higher one in the season (diurnal inequality)
    assert max(highs, key=lambda h: h[1])[0].astimezone(VN).hour in range(16, 21)


def test_a_gauge_sees_its_station_later_damped_and_on_its_datum(pred: TidePredictor) -> None:
    g = pred.view("vt-flood-03")
    lag = timedelta(minutes=g.gauge.lag_min)
    t = [datetime(2026, 11, 26, 12, tzinfo=VN) + timedelta(minutes=7 * i) for i in range(100)]
    station = pred.view("vi-thanh")
    mean = station.mean_m([x - lag for x in t])
    expected = (
        mean + g.gauge.amplitude_factor * (station.level_m([x - lag for x in t]) - mean)
        + g.gauge.datum_offset_m
    )  # fmt: skip
    assert np.max(np.abs(g.level_m(t) - expected)) < 1e-9
    hw_station = station.next_high_water(t[0])
    hw_gauge = g.next_high_water(t[0])
    assert hw_station is not None and hw_gauge is not None
    assert hw_gauge.time - hw_station.time == pytest.approx(lag, abs=timedelta(minutes=2))
    assert hw_gauge.level_m < hw_station.level_m


def test_the_day_cache_is_bounded() -> None:
    p = TidePredictor.load(PACKAGED_TIDES, cache_days=4)
    t0 = datetime(2026, 1, 1, tzinfo=UTC).timestamp()
    for day in range(10):
        p.level_m("vi-thanh", [t0 + day * 86_400 + 3600])
        assert len(p._days) <= 4
    # a span longer than the cache is still answered (computed, then evicted)
    assert len(p.level_m("can-tho", t0 + np.arange(0, 10 * 86_400, 3600.0))) == 240
    assert len(p._days) == 4


def test_errors_name_the_entry(raw: dict[str, Any]) -> None:
    bad = copy.deepcopy(raw)
    del bad["stations"]["vi-thanh"]["constituents"]["K1"]
    with pytest.raises(TideError, match=r"stations\.vi-thanh\.constituents.*K1"):
        TidePredictor.from_mapping(bad)
    bad = copy.deepcopy(raw)
    bad["stations"]["can-tho"]["constituents"]["M2"]["amplitude_m"] = "big"
    with pytest.raises(TideError, match=r"stations\.can-tho\.constituents\.M2\.amplitude_m"):
        TidePredictor.from_mapping(bad)
    bad = copy.deepcopy(raw)
    bad["gauges"]["vt-flood-02"]["station"] = "hau-giang"
    with pytest.raises(TideError, match=r"gauges\.vt-flood-02\.station"):
        TidePredictor.from_mapping(bad)
    bad = copy.deepcopy(raw)
    del bad["stations"]["phung-hiep"]["source"]
    with pytest.raises(TideError, match=r"stations\.phung-hiep\.source"):
        TidePredictor.from_mapping(bad)
    p = TidePredictor.from_mapping(raw)
    with pytest.raises(UnknownStation):
        p.level_m("long-xuyen", [0.0])
    with pytest.raises(TideError, match="no UTC offset"):
        p.level_m("vi-thanh", [datetime(2026, 1, 1)])
    t0 = datetime(2026, 1, 1, tzinfo=UTC)
    with pytest.raises(TideError, match="31 days"):
        p.extremes("vi-thanh", t0, t0 + timedelta(days=40))
    with pytest.raises(TideError, match="before"):
        p.extremes("vi-thanh", t0, t0 - timedelta(days=1))
