#!/usr/bin/env python3
"""Fit the stations' tide constituents to the published peaks; print the calibration table.

    .venv/bin/python scripts/calibrate_tides.py            # the table for the file as it is
    .venv/bin/python scripts/calibrate_tides.py --write    # refit from the priors, rewrite the file

Each station of ioc/site_data/tides.yaml has a `prior`: an assumed shape (relative amplitudes
of M2, S2, N2, K1, O1; the age of the tide; the seasonal Sa/Ssa with the day of their peak) and
the names of its free parameters. The phases come from three numbers: a common time lag
``lag_h`` (every constituent's phase g_i = ω_i·lag), the age of the tide (springs follow
syzygy: S2 and N2 lag M2, K1 lags O1 by (ω_i − ω_ref)·age) and a diurnal phase offset
``diurnal_phase_deg`` (where the day's higher high water falls). The seasonal phases are set so
that Sa and Ssa peak on the given days.

The fit is a grid search (lag, diurnal phase) with the mean level solved exactly for the peak
level target, then a scale search where the station has one (Vị Thanh: days above BĐ III).
Stations that ``follow`` another take its lag and diurnal phase (plus their own lag). Everything
is evaluated through ioc.core.tides.predict, i.e. UTide, at 10-minute steps.
"""

from __future__ import annotations

import argparse
import math
import re
import sys
from datetime import UTC, date, datetime, timedelta
from pathlib import Path
from zoneinfo import ZoneInfo

import numpy as np
import yaml

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from ioc.core.site import load_site  # noqa: E402
from ioc.core.tides import CONSTITUENTS, Constituent, StationTide, TidePredictor, predict  # noqa: E402

TIDES = ROOT / "ioc" / "site_data" / "tides.yaml"
SITE = ROOT / "ioc" / "site_data" / "hau-giang.yaml"
LOCAL = ZoneInfo("Asia/Ho_Chi_Minh")
STEP_S = 600.0
YEARS = (2023, 2024, 2025, 2026)
SPEED = {"M2": 28.9841042, "S2": 30.0, "N2": 28.4397295, "K1": 15.0410686, "O1": 13.9430356}


def year_times(y0: int = YEARS[0], y1: int = YEARS[-1]) -> np.ndarray:
    a = datetime(y0, 1, 1, tzinfo=UTC).timestamp()
    b = datetime(y1 + 1, 1, 1, tzinfo=UTC).timestamp()
    return np.arange(a, b, STEP_S)


def basis(lat: float, t: np.ndarray) -> dict[str, tuple[np.ndarray, np.ndarray]]:
    """Per constituent: f·cos(V+u) and f·sin(V+u) at t (so A·cos(V+u−g) = A(c·cos g + s·sin g))."""
    out = {}
    for name in CONSTITUENTS:
        parts = []
        for g in (0.0, 90.0):
            st = StationTide(
                "x",
                lat,
                0.0,
                tuple(Constituent(n, 1.0 if n == name else 0.0, g) for n in CONSTITUENTS),
                "",
                "",
            )
            parts.append(predict(st, t, (name,)))
        out[name] = (parts[0], parts[1])
    return out


def peak_phase(name: str, lat: float, peak: str, year: int = 2025) -> float:
    """The phase g (deg) that puts a seasonal constituent's maximum on day ``peak`` (MM-DD)."""
    m, d = (int(x) for x in peak.split("-"))
    t = np.array([datetime(year, m, d, tzinfo=UTC).timestamp()])
    c, s = basis(lat, t)[name]
    return math.degrees(math.atan2(float(s[0]), float(c[0]))) % 360.0


def amplitudes(prior: dict, base: dict | None) -> dict[str, float]:
    if "ratios" in prior:
        m2 = float(prior["m2_amplitude_m"])
        return {"M2": m2, **{k: m2 * float(v) for k, v in prior["ratios"].items()}}
    assert base is not None
    r = float(prior["amplitude_ratio"])
    return {k: r * base["amps"][k] for k in SPEED}


def phases(
    lag_h: float, diurnal_deg: float, age_h: float, dage_h: float | None = None
) -> dict[str, float]:
    """Greenwich phases from a common lag, the diurnal offset and the ages of the tide (h)."""
    g = {}
    for k, w in SPEED.items():
        ref = "M2" if w > 20 else "O1"
        age = age_h if (w > 20 or dage_h is None) else dage_h
        g[k] = (w * lag_h + (w - SPEED[ref]) * age + (diurnal_deg if w < 20 else 0.0)) % 360.0
    return g


def tide(
    b: dict, amps: dict[str, float], g: dict[str, float], sel: slice | np.ndarray
) -> np.ndarray:
    h = 0.0
    for k, a in amps.items():
        c, s = b[k]
        gr = math.radians(g[k])
        h = h + a * (c[sel] * math.cos(gr) + s[sel] * math.sin(gr))
    return np.asarray(h)


def local(ts: float) -> datetime:
    return datetime.fromtimestamp(ts, UTC).astimezone(LOCAL)


def window_mask(t: np.ndarray, w: tuple[date, date]) -> np.ndarray:
    a = datetime(w[0].year, w[0].month, w[0].day, tzinfo=LOCAL).timestamp()
    b = (datetime(w[1].year, w[1].month, w[1].day, tzinfo=LOCAL) + timedelta(days=1)).timestamp()
    return (t >= a) & (t < b)


def days_above(t: np.ndarray, h: np.ndarray, level: float, w: tuple[date, date]) -> list[date]:
    m = window_mask(t, w) & (h >= level)
    return sorted({local(x).date() for x in t[m]})


def fit(raw: dict, t: np.ndarray, bd3: dict[str, float]) -> dict[str, dict]:
    """The fitted mean and constituents of every station, from the priors and targets."""
    fitted: dict[str, dict] = {}
    order = sorted(raw["stations"], key=lambda s: "follows" in raw["stations"][s]["prior"])
    for sid in order:
        base = fitted.get(raw["stations"][sid]["prior"].get("follows", ""))
        fitted[sid] = fit_station(sid, raw, t, bd3, base)
    return fitted


def fit_station(
    sid: str, raw: dict, t: np.ndarray, bd3: dict[str, float], base: dict | None
) -> dict:
    """Fit one station's free parameters (see the module docstring)."""
    targets = raw["targets"]
    item = raw["stations"][sid]
    prior = item["prior"]
    lat = float(item["latitude"])
    b = basis(lat, t)

    def seasonal_of(sa_peak: str | None) -> tuple[dict[str, tuple[float, float]], np.ndarray]:
        season = {
            k: (
                float(v["amplitude_m"]),
                peak_phase(k, lat, sa_peak if (k == "SA" and sa_peak) else v["peak"]),
            )
            for k, v in prior["seasonal"].items()
        }
        curve = sum(
            a * (b[k][0] * math.cos(math.radians(g)) + b[k][1] * math.sin(math.radians(g)))
            for k, (a, g) in season.items()
        )
        return season, np.asarray(curve)

    season, seasonal = seasonal_of(None)
    peaks = [x for x in targets if x["station"] == sid and x["kind"] == "annual-peak"]
    days_t = [x for x in targets if x["station"] == sid and x["kind"] == "days-above-bd3"]
    age = float(prior.get("age_of_tide_h", base["age"] if base else 36.0))

    def solve(amps: dict[str, float], lag: float, dphase: float) -> tuple[float, float]:
        """Mean level putting the mean of the windows' peaks mid-range; the misfit (m)."""
        g = phases(lag, dphase, age, dage)
        h = tide(b, amps, g, slice(None)) + seasonal
        tops = []
        for x in peaks:
            m = window_mask(t, (x["window"][0], x["window"][1]))
            tops.append(float(h[m].max()))
        mid = float(np.mean([sum(x["level_m"]) / 2 for x in peaks]))
        mean = mid - float(np.mean(tops))
        return mean, float(np.std(tops))

    amps = amplitudes(prior, base)
    free = prior["fit"]
    dage = float(base["dage"]) if base else age
    if "lag_h" in free:
        # Grid over lag and diurnal phase; cost = time-of-day and date misfit of the dated peak.
        x = next(p for p in peaks if p.get("at"))
        at = x["at"].timestamp()
        m = window_mask(t, (x["window"][0], x["window"][1]))
        best = None
        # The Sa peak day is searched too where the prior lists candidates (sa_peak_search):
        # the date of the year's highest spring tide depends on it.
        grid = [
            (sa_peak, dage, float(lag), float(dph))
            for sa_peak in prior.get("sa_peak_search") or [None]
            for dage in prior.get("diurnal_age_search_h") or [age]
            for lag in np.arange(0.0, 12.42, 0.5)
            for dph in np.arange(0.0, 360.0, 15.0)
        ]
        cache: dict[str | None, tuple[dict, np.ndarray]] = {}
        for sa_peak, dage, lag, dph in grid:
            if sa_peak not in cache:
                cache[sa_peak] = seasonal_of(sa_peak)
            season_k, seasonal_k = cache[sa_peak]
            h = tide(b, amps, phases(lag, dph, age, dage), m) + seasonal_k[m]
            i = int(np.argmax(h))
            dt_h = (t[m][i] - at) / 3600.0
            # date misfit in days; time-of-day misfit in hours (both as costs)
            tod = ((dt_h + 12) % 24) - 12
            cost = abs(dt_h / 24.0) + abs(tod)
            if best is None or cost < best[0]:
                best = (cost, lag, dph, season_k, seasonal_k, dage)
        assert best is not None
        lag, dph, season, seasonal, dage = best[1], best[2], best[3], best[4], best[5]
    else:
        assert base is not None
        lag = base["lag"] + float(prior.get("lag_h", 0.0))
        dph = base["dphase"]
    if "m2_amplitude_m" in free:
        # Scale so that the days above BĐ III fall in the target range (middle of it).
        dt_ = days_t[0]
        want = sum(dt_["days"]) / 2
        best_s = None
        for m2 in np.arange(0.05, 0.40, 0.005):
            p2 = dict(prior, m2_amplitude_m=float(m2))
            a2 = amplitudes(p2, base)
            mean, _ = solve(a2, lag, dph)
            h = mean + tide(b, a2, phases(lag, dph, age, dage), slice(None)) + seasonal
            n = len(days_above(t, h, bd3[sid], (dt_["window"][0], dt_["window"][1])))
            if best_s is None or abs(n - want) < best_s[0]:
                best_s = (abs(n - want), a2)
        assert best_s is not None
        amps = best_s[1]
    mean, _ = solve(amps, lag, dph)
    g = phases(lag, dph, age, dage)
    cons = {k: (amps[k], g[k]) for k in SPEED}
    cons.update(season)
    return {
        "mean": mean,
        "cons": cons,
        "amps": amps,
        "lag": lag,
        "dphase": dph,
        "age": age,
        "dage": dage,
    }


def write(fitted: dict[str, dict]) -> None:
    text = TIDES.read_text(encoding="utf-8")
    for sid, f in fitted.items():
        lines = [f"    # BEGIN fitted {sid}", f"    mean_m: {f['mean']:.3f}", "    constituents:"]
        for k in CONSTITUENTS:
            a, g = f["cons"][k]
            lines.append(f"      {k}: {{amplitude_m: {a:.4f}, phase_deg: {g:.2f}}}")
        lines.append(f"    # END fitted {sid}")
        pat = re.compile(
            rf"    # BEGIN fitted {re.escape(sid)}\n.*?    # END fitted {re.escape(sid)}", re.S
        )
        text, n = pat.subn("\n".join(lines), text)
        if n != 1:
            raise SystemExit(f"no fitted block for {sid} in {TIDES}")
        print(
            f"# {sid}: lag {f['lag']:.2f} h, diurnal phase {f['dphase']:.0f}°, "
            f"ages {f['age']:.0f}/{f['dage']:.0f} h, "
            f"mean {f['mean']:.3f} m, M2 {f['amps']['M2']:.3f} m"
        )
    TIDES.write_text(text, encoding="utf-8")


def table(pred: TidePredictor, t: np.ndarray, bd3: dict[str, float]) -> list[str]:
    """The calibration table (Markdown): each target, what the prediction gives, pass/fail."""
    rows = ["| station | target | source value | predicted | within |", "|---|---|---|---|---|"]
    ok_all = True
    levels = {sid: st.mean_m + predict(st, t) for sid, st in pred.stations.items()}
    for x in pred.targets:
        h = levels[x.station]
        w = f"{x.window[0]:%d/%m/%Y}–{x.window[1]:%d/%m/%Y}"
        if x.kind == "annual-peak":
            assert x.level_m is not None
            m = window_mask(t, x.window)
            i = int(np.argmax(h[m]))
            top, when = float(h[m][i]), local(float(t[m][i]))
            ok = x.level_m[0] <= top <= x.level_m[1]
            want = f"{x.level_m[0]:.2f}–{x.level_m[1]:.2f} m"
            if x.at is not None:
                tol_d = float(x.tolerance.get("days", 0))
                tol_h = float(x.tolerance.get("hours", 0))
                dt_h = (when.timestamp() - x.at.timestamp()) / 3600.0
                tod = ((dt_h + 12) % 24) - 12
                ok = ok and abs(dt_h) <= 24 * tol_d + tol_h and abs(tod) <= tol_h
                want += f" at {x.at.astimezone(LOCAL):%H:%M %d/%m/%Y} (±{tol_d:g} d, ±{tol_h:g} h)"
            got = f"{top:.2f} m at {when:%H:%M %d/%m/%Y}"
            if x.at is not None:
                # the predicted high water nearest the published one (what the residual was)
                near = np.abs(t - x.at.timestamp()) <= 6 * 3600
                j = int(np.argmax(np.where(near, h, -np.inf)))
                got += f"; on the published day {h[j]:.2f} m at {local(float(t[j])):%H:%M}"
            label = f"peak {w}"
        else:
            assert x.days is not None
            days = days_above(t, h, bd3[x.station], x.window)
            months = sorted({d.month for d in days})
            ok = x.days[0] <= len(days) <= x.days[1] and all(
                mo in (1, 9, 10, 11, 12) for mo in months
            )
            want = f"{x.days[0]}–{x.days[1]} days, Sep–Jan"
            got = f"{len(days)} days (months {', '.join(str(mo) for mo in months)})"
            label = f"days ≥ BĐ III {w}"
        ok_all &= ok
        rows.append(f"| {x.station} | {label} | {want} | {got} | {'yes' if ok else 'NO'} |")
    for sid in pred.stations:
        for y in YEARS:
            m = window_mask(t, (date(y, 1, 1), date(y, 12, 31)))
            i = int(np.argmax(levels[sid][m]))
            n = len(days_above(t, levels[sid], bd3[sid], (date(y, 1, 1), date(y, 12, 31))))
            rows.append(
                f"| {sid} | year {y} (no target) | — | max {levels[sid][m][i]:.2f} m at "
                f"{local(float(t[m][i])):%H:%M %d/%m/%Y}; {n} days ≥ BĐ III | — |"
            )
    if not ok_all:
        rows.append("")
        rows.append("**Some targets are not met.**")
    return rows


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument(
        "--write", action="store_true", help="refit and rewrite ioc/site_data/tides.yaml"
    )
    args = ap.parse_args(argv)
    site = load_site(SITE)
    bd3 = {k: v.bd3 for k, v in site.alarm_levels.items()}
    t = year_times()
    if args.write:
        raw = yaml.safe_load(TIDES.read_text(encoding="utf-8"))
        write(fit(raw, t, bd3))
    pred = TidePredictor.load(TIDES)
    print("\n".join(table(pred, t, bd3)))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
