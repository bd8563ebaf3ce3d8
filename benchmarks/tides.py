"""Tide prediction speed: what the simulator and the API ask of ioc.core.tides (docs/benchmarks.md).

    .venv/bin/python benchmarks/tides.py

1. UTide's exact reconstruction (astronomy and nodal corrections at every instant) of one
   station's year at 5-minute steps — the cost ioc.core.tides avoids;
2. ioc.core.tides.predict (astronomy linearised per 10-day block) of the same year;
3. a year at 5-minute steps for the site's 6 flood gauges, vectorised, through the day cache;
4. the simulator's way: one reading per gauge every 5 minutes for a year, stepping through time;
5. one API call: 3 days of points every 10 minutes plus the high and low waters, cold cache.
"""

from __future__ import annotations

import time
from datetime import UTC, datetime, timedelta
from pathlib import Path

import numpy as np
import utide

from ioc.core.site import load_site
from ioc.core.tides import _DATENUM_UNIX, TidePredictor, _coef, predict

SITE = Path(__file__).resolve().parents[1] / "ioc" / "site_data" / "hau-giang.yaml"


def main() -> None:
    site = load_site(SITE)
    gauges = [d for d in site.devices if d.kind == "flood"]
    t0 = datetime(2026, 1, 1, tzinfo=UTC).timestamp()
    year = t0 + np.arange(365 * 288) * 300.0
    st = TidePredictor.from_site(site).station("vi-thanh")

    coef = _coef(st, 0.0, [c.name for c in st.constituents])
    coef.aux.opt.nodsatlint = coef.aux.opt.gwchlint = False
    coef.aux.reftime = float(year[0] / 86_400 + _DATENUM_UNIX)
    s = time.perf_counter()
    utide.reconstruct(year / 86_400 + _DATENUM_UNIX, coef, epoch="python", verbose=False)
    print(f"utide exact, 1 station-year at 5 min:        {time.perf_counter() - s:6.2f} s")

    s = time.perf_counter()
    predict(st, year)
    print(f"ioc.core.tides.predict, 1 station-year at 5 min:  {time.perf_counter() - s:6.2f} s")

    pred = TidePredictor.from_site(site)
    s = time.perf_counter()
    for d in gauges:
        pred.for_device(d).level_m(year)
    print(f"6 gauges x year at 5 min, vectorised:        {time.perf_counter() - s:6.2f} s")

    pred = TidePredictor.from_site(site)
    views = [pred.for_device(d) for d in gauges]
    s = time.perf_counter()
    for ts in year:
        for v in views:
            v.at(float(ts))
    n = len(year) * len(views)
    dt = time.perf_counter() - s
    per = dt / n * 1e6
    print(f"6 gauges x year at 5 min, step by step:      {dt:6.2f} s ({per:.0f} µs a reading)")

    pred = TidePredictor.from_site(site)
    a = datetime(2026, 11, 25, tzinfo=UTC)
    s = time.perf_counter()
    v = pred.view("vt-flood-02")
    v.level_m(a.timestamp() + np.arange(433) * 600.0)
    v.extremes(a, a + timedelta(days=3))
    print(f"API call, 3 days (cold cache):               {time.perf_counter() - s:6.3f} s")


if __name__ == "__main__":
    main()
