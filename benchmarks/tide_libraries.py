"""Which library predicts the tide: UTide (the project's), against the other maintained Python
tide predictors, on the same constituents (docs/tides.md, docs/benchmarks.md).

    .venv/bin/python benchmarks/tide_libraries.py
    # the alternatives are not project dependencies; to measure them too:
    .venv/bin/python -m pip install --target /tmp/tidelibs uptide==1.2 pytides2==0.0.5
    PYTHONPATH=/tmp/tidelibs .venv/bin/python benchmarks/tide_libraries.py

For one station-year at 5-minute steps (Vị Thanh's M2 S2 N2 K1 O1 SA SSA from
ioc/site_data/tides.yaml): wall time, and the largest difference from UTide's exact
reconstruction (astronomy and nodal corrections at every instant). A library that cannot be
imported is reported with the reason.
"""

from __future__ import annotations

import dataclasses
import time
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import numpy as np
import utide

from ioc.core.site import load_site
from ioc.core.tides import _DATENUM_UNIX, TidePredictor, _coef, predict

SITE = Path(__file__).resolve().parents[1] / "ioc" / "site_data" / "hau-giang.yaml"
BLOCK_S = 10 * 86_400.0  # nodal corrections per 10-day block, as ioc.core.tides does


def _uptide(st: Any, year: np.ndarray) -> np.ndarray:
    import uptide  # not a dependency: see the module docstring

    names = [c.name for c in st.constituents]
    tide = uptide.Tides(names)
    amps = [c.amplitude_m for c in st.constituents]
    phases = [np.radians(c.phase_deg) for c in st.constituents]
    out = np.empty_like(year)
    for b0 in np.arange(year[0], year[-1] + 1, BLOCK_S):
        sel = (year >= b0) & (year < b0 + BLOCK_S)
        t0 = datetime.fromtimestamp(float(b0), UTC)
        tide.set_initial_time(t0)
        tide.compute_nodal_corrections(BLOCK_S / 2)  # about the middle of the block
        out[sel] = tide.from_amplitude_phase(amps, phases, year[sel] - b0)
    return out


def main() -> None:
    site = load_site(SITE)
    st = TidePredictor.from_site(site).station("vi-thanh")
    t0 = datetime(2026, 1, 1, tzinfo=UTC)
    year = t0.timestamp() + np.arange(365 * 288) * 300.0
    assert t0 + timedelta(days=365) > datetime.fromtimestamp(float(year[-1]), UTC)

    s = time.perf_counter()
    exact = _exact(st, year)
    print(f"{'utide exact (reference)':34} {time.perf_counter() - s:6.2f} s")

    s = time.perf_counter()
    ours = predict(st, year)
    took = time.perf_counter() - s
    print(f"{'ioc.core.tides.predict (utide, blocks)':38} {took:6.2f} s  "
          f"max |Δ| {_mm(ours, exact)}")

    try:
        s = time.perf_counter()
        up = _uptide(st, year)
        took = time.perf_counter() - s
        print(f"{'uptide, nodal per 10-day block':34} {took:6.2f} s  max |Δ| {_mm(up, exact)}")
        # constituent by constituent: where the two differ, it is a convention, not an error
        for c in st.constituents:
            one = dataclasses.replace(st, constituents=(c,))
            ref = _exact(one, year)
            print(f"{'  ' + c.name:34} {'':8} max |Δ| {_mm(_uptide(one, year), ref)}")
    except Exception as e:
        print(f"{'uptide':34} not measured: {type(e).__name__}: {e}")

    try:
        import pytides2  # noqa: F401

        print(f"{'pytides2':34} imports (not measured further)")
    except Exception as e:
        print(f"{'pytides2':34} cannot be used: {type(e).__name__}: {e}")


def _exact(st: Any, year: np.ndarray) -> np.ndarray:
    """UTide with the astronomy and nodal corrections evaluated at every instant."""
    coef = _coef(st, 0.0, [c.name for c in st.constituents])
    coef.aux.opt.nodsatlint = coef.aux.opt.gwchlint = False
    coef.aux.reftime = float(year[0] / 86_400 + _DATENUM_UNIX)
    return utide.reconstruct(year / 86_400 + _DATENUM_UNIX, coef, epoch="python", verbose=False).h


def _mm(a: np.ndarray, b: np.ndarray) -> str:
    return f"{float(np.max(np.abs(a - b))) * 1000:7.1f} mm"


if __name__ == "__main__":
    main()
