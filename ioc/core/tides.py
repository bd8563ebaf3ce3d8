"""Astronomical tide at the flood stations: harmonic constituents (data) → predicted level.

The constituents of each station (M2, S2, N2, K1, O1 and the seasonal Sa, Ssa; amplitude in
metres and Greenwich phase lag in degrees, UTC) live in the tide data file beside the site file
(``ioc/site_data/tides.yaml``, named by the site file's ``tides`` key), with their sources and the
calibration that produced them (``scripts/calibrate_tides.py``; ``docs/tides.md``).

Prediction is UTide's (``utide.reconstruct``) with nodal/satellite corrections. UTide evaluates
the astronomical arguments and nodal factors at every instant, which costs ~4 s for a year at
5-minute steps for one station; they change slowly (the nodal factors over 18.6 years), so this
module asks UTide for the *linearised* form (``nodsatlint``/``gwchlint``) with the reference
time at the middle of each 10-day block — the same levels to < 1 mm (2 mm with 30-day blocks;
tests/test_tides.py checks it) at a small fraction of the cost.

Predictions are cached per station per UTC day on a one-minute grid (1,441 floats, 11.5 kB) in an
LRU of ``cache_days`` entries (default 256, ~3 MB); a level at any instant is interpolated on that
grid, and high/low waters are the grid's turning points refined by a parabola.

A *device* view (:class:`GaugeTide`) is the station's tide as an urban canal gauge sees it: later
by ``lag_min`` and damped by ``amplitude_factor`` about the station's mean, with a datum offset
(``gauges`` in the tide data file).

The rule engine must not import this module (rules/ is a pure engine): the composition root hands
rules a plain callable such as ``GaugeTide.level_m`` instead.
"""

from __future__ import annotations

import math
from collections import OrderedDict
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import UTC, date, datetime
from pathlib import Path
from types import MappingProxyType
from typing import Any, Final, Literal

import numpy as np

from ioc.core import yamlfile
from ioc.core.packaged import SITE_DATA

CONSTITUENTS: Final = ("M2", "S2", "N2", "K1", "O1", "SA", "SSA")
REQUIRED: Final = frozenset(CONSTITUENTS)
# Seasonal (long-period) constituents: part of the station's mean level, not damped by a gauge.
SEASONAL: Final = frozenset({"SA", "SSA"})
_DAY_S: Final = 86_400.0
_BLOCK_DAYS: Final = 10  # UTide's astronomy linearised about the middle of each block
_GRID_S: Final = 60.0  # the cached day grid
_GRID_N: Final = int(_DAY_S // _GRID_S) + 1  # both ends, so a day interpolates on its own grid
# days since 0000-12-31 (UTide's "python" epoch) of 1970-01-01
_DATENUM_UNIX: Final = 719_163.0
PACKAGED_TIDES: Final = SITE_DATA / "tides.yaml"
MAX_RANGE_DAYS: Final = 31.0  # the longest window level_m/extremes serve in one call


class TideError(ValueError):
    """Tide data that cannot be used; ``where`` names the entry (``stations.vi-thanh.M2``)."""

    def __init__(self, where: str, message: str) -> None:
        self.where = where
        self.message = message
        super().__init__(f"{where}: {message}" if where else message)


class UnknownStation(KeyError):
    """No tide data for this station or device."""

    def __init__(self, key: str, known: Iterable[str]) -> None:
        self.key = key
        self.known = sorted(known)
        super().__init__(f"no tide data for {key!r} (known: {self.known})")


@dataclass(frozen=True, slots=True)
class Constituent:
    name: str  # UTide's name: M2, S2, N2, K1, O1, SA, SSA
    amplitude_m: float
    phase_deg: float  # Greenwich phase lag g (UTC), UTide's convention: A·f·cos(V + u − g)


@dataclass(frozen=True, slots=True)
class StationTide:
    station: str
    latitude: float  # degrees N, for UTide's latitude-dependent satellite terms
    mean_m: float  # Z0 above the station's datum
    constituents: tuple[Constituent, ...]
    source: str
    calibration: str
    illustrative: bool = True


@dataclass(frozen=True, slots=True)
class Extreme:
    time: datetime  # UTC
    level_m: float
    kind: Literal["high", "low"]


@dataclass(frozen=True, slots=True)
class GaugeView:
    """How an urban canal gauge sees its station's tide (``gauges`` in the tide data file)."""

    device: str
    station: str
    lag_min: float = 0.0
    amplitude_factor: float = 1.0
    datum_offset_m: float = 0.0


@dataclass(frozen=True, slots=True)
class Target:
    """A published fact the calibration must reproduce (``targets`` in the tide data file)."""

    station: str
    kind: str  # annual-peak, days-above-bd3
    source: str
    window: tuple[date, date]
    level_m: tuple[float, float] | None = None  # accepted range of the peak
    at: datetime | None = None  # published time of the peak (local), if any
    days: tuple[int, int] | None = None  # accepted number of days above BĐ III
    tolerance: Mapping[str, float] = field(default_factory=dict)


def _epoch_s(times: Any) -> np.ndarray:
    """Seconds since 1970 (UTC) of aware datetimes, numpy datetime64 (UTC) or numbers."""
    if isinstance(times, datetime):
        return np.array([_aware(times).timestamp()])
    arr = np.atleast_1d(np.asarray(times))
    if arr.dtype.kind == "M":
        return arr.astype("datetime64[ms]").astype(np.int64) / 1000.0
    if arr.dtype == object:
        return np.array([_aware(t).timestamp() for t in arr.ravel()], dtype=float)
    return arr.astype(float)


def _aware(t: datetime) -> datetime:
    if t.tzinfo is None:
        raise TideError("time", f"{t.isoformat()} has no UTC offset")
    return t


def _coef(st: StationTide, reftime: float, names: Sequence[str]) -> Any:
    """A UTide coefficient structure for ``names`` of ``st``, linearised about ``reftime``."""
    from utide._ut_constants import constit_index_dict, ut_constants  # heavy import, lazily
    from utide.utilities import Bunch

    chosen = [c for c in st.constituents if c.name in names]
    lind = np.array([constit_index_dict[c.name] for c in chosen], dtype=int)
    return Bunch(
        name=np.array([c.name for c in chosen]),
        A=np.array([c.amplitude_m for c in chosen]),
        g=np.array([c.phase_deg for c in chosen]),
        mean=0.0,
        slope=0.0,
        aux=Bunch(
            reftime=reftime,
            lat=st.latitude,
            frq=ut_constants.const.freq[lind],
            lind=lind,
            opt=Bunch(
                twodim=False,
                nodiagn=True,
                notrend=True,
                nodsatlint=True,
                nodsatnone=False,
                gwchlint=True,
                gwchnone=False,
                prefilt=[],
            ),
        ),
    )


def predict(
    st: StationTide, epoch_s: np.ndarray, names: Sequence[str] = CONSTITUENTS
) -> np.ndarray:
    """The tide of ``names`` (about 0, without ``mean_m``) at ``epoch_s``, by UTide.

    The astronomy is linearised about the middle of each 10-day block (see the module docstring);
    the calibration script and the day cache both come through here.
    """
    import utide

    t = np.asarray(epoch_s, dtype=float)
    out = np.zeros(t.shape)
    if t.size == 0 or not any(c.name in names for c in st.constituents):
        return out
    block = np.floor(t / (_BLOCK_DAYS * _DAY_S))
    for b in np.unique(block):
        sel = block == b
        mid = (b + 0.5) * _BLOCK_DAYS + _DATENUM_UNIX
        coef = _coef(st, float(mid), names)
        out[sel] = utide.reconstruct(
            t[sel] / _DAY_S + _DATENUM_UNIX, coef, epoch="python", verbose=False
        ).h
    return out


class TidePredictor:
    """Predicted astronomical tide per station and per gauge, from the tide data file."""

    def __init__(
        self,
        stations: Mapping[str, StationTide],
        gauges: Mapping[str, GaugeView] | None = None,
        targets: Sequence[Target] = (),
        cache_days: int = 256,
    ) -> None:
        if cache_days < 1:
            raise ValueError("cache_days must be at least 1")
        self.stations = MappingProxyType(dict(stations))
        self.gauges = MappingProxyType(dict(gauges or {}))
        self.targets = tuple(targets)
        self.cache_days = cache_days
        self._days: OrderedDict[tuple[str, int], tuple[np.ndarray, np.ndarray]] = OrderedDict()

    # ------------------------------------------------------------------ loading

    @classmethod
    def load(cls, path: Path | str, cache_days: int = 256) -> TidePredictor:
        """Read a tide data file (format: docs/tides.md); :class:`TideError` names a bad entry."""
        path = Path(path)
        try:
            raw = yamlfile.read(path)
        except yamlfile.DataFileError as exc:
            raise TideError(str(path), str(exc).removeprefix(f"{path}: ")) from None
        return cls.from_mapping(raw, cache_days=cache_days)

    @classmethod
    def from_site(cls, site: Any, cache_days: int = 256) -> TidePredictor:
        """The predictor of a :class:`ioc.core.site.Site` (its ``tides`` file); empty without
        one."""
        path = getattr(site, "tides_file", None)
        if path is None:
            return cls({}, cache_days=cache_days)
        return cls.load(path, cache_days=cache_days)

    @classmethod
    def from_mapping(cls, raw: Any, cache_days: int = 256) -> TidePredictor:
        if not isinstance(raw, dict) or not isinstance(raw.get("stations"), dict):
            raise TideError("stations", "expected a mapping of stations")
        stations = {
            sid: _station(sid, item, f"stations.{sid}") for sid, item in raw["stations"].items()
        }
        gauges: dict[str, GaugeView] = {}
        for dev, item in (raw.get("gauges") or {}).items():
            where = f"gauges.{dev}"
            if not isinstance(item, dict) or item.get("station") not in stations:
                raise TideError(f"{where}.station", f"must be one of {sorted(stations)}")
            gauges[dev] = GaugeView(
                device=dev,
                station=item["station"],
                lag_min=_num(item.get("lag_min", 0.0), f"{where}.lag_min"),
                amplitude_factor=_num(
                    item.get("amplitude_factor", 1.0), f"{where}.amplitude_factor"
                ),
                datum_offset_m=_num(item.get("datum_offset_m", 0.0), f"{where}.datum_offset_m"),
            )
        targets = [_target(i, t, stations) for i, t in enumerate(raw.get("targets") or [])]
        return cls(stations, gauges, targets, cache_days=cache_days)

    # ------------------------------------------------------------------ stations

    def station(self, station: str) -> StationTide:
        try:
            return self.stations[station]
        except KeyError:
            raise UnknownStation(station, self.stations) from None

    def _days_of(
        self, station: str, days: Sequence[int]
    ) -> dict[int, tuple[np.ndarray, np.ndarray]]:
        """(seasonal, tidal) levels of UTC days on the one-minute grid, cached (LRU).

        The missing days are predicted together (one UTide call per 10-day block, not per day).
        """
        out: dict[int, tuple[np.ndarray, np.ndarray]] = {}
        missing = []
        for d in days:
            hit = self._days.get((station, d))
            if hit is None:
                missing.append(d)
            else:
                self._days.move_to_end((station, d))
                out[d] = hit
        if missing:
            st = self.station(station)
            grid = np.arange(_GRID_N) * _GRID_S
            t = (np.array(missing, dtype=float)[:, None] * _DAY_S + grid[None, :]).ravel()
            seasonal = (st.mean_m + predict(st, t, tuple(SEASONAL))).reshape(len(missing), _GRID_N)
            tidal = predict(st, t, tuple(n for n in CONSTITUENTS if n not in SEASONAL))
            tidal = tidal.reshape(len(missing), _GRID_N)
            for i, d in enumerate(missing):
                out[d] = (seasonal[i], tidal[i])
                self._days[(station, d)] = out[d]
            while len(self._days) > self.cache_days:
                self._days.popitem(last=False)
        return out

    def _parts(self, station: str, epoch_s: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        seasonal = np.empty(epoch_s.shape)
        tidal = np.empty(epoch_s.shape)
        days = np.floor(epoch_s / _DAY_S).astype(np.int64)
        unique = [int(d) for d in np.unique(days)]
        levels = self._days_of(station, unique)
        for d in unique:
            sel = days == d
            s, h = levels[d]
            x = (epoch_s[sel] - d * _DAY_S) / _GRID_S
            grid = np.arange(_GRID_N)
            seasonal[sel] = np.interp(x, grid, s)
            tidal[sel] = np.interp(x, grid, h)
        return seasonal, tidal

    def _parts_at(self, station: str, ts: float) -> tuple[float, float]:
        """(seasonal, tidal) at one instant: the simulator's per-reading path, no array work."""
        day = math.floor(ts / _DAY_S)
        hit = self._days.get((station, day))
        if hit is None:
            # Time moves forward in a simulation: predict this day's 10-day block at once (one
            # UTide call for the block instead of one per day).
            first = day - day % _BLOCK_DAYS
            block = [d for d in range(first, first + _BLOCK_DAYS) if d >= day]
            hit = self._days_of(station, block[: self.cache_days])[day]
        else:
            self._days.move_to_end((station, day))
        x = (ts - day * _DAY_S) / _GRID_S
        i = min(int(x), _GRID_N - 2)
        f = x - i
        s, h = hit
        return (
            float(s[i] + f * (s[i + 1] - s[i])),
            float(h[i] + f * (h[i + 1] - h[i])),
        )

    def level_m(self, station: str, times: Any) -> np.ndarray:
        """Predicted level (m above the station's datum) at ``times`` (aware datetimes/epoch s)."""
        t = _epoch_s(times)
        seasonal, tidal = self._parts(station, t)
        return seasonal + tidal

    def extremes(self, station: str, t0: datetime, t1: datetime) -> list[Extreme]:
        """High and low waters in [t0, t1], in time order."""
        return self.view(station).extremes(t0, t1)

    def high_waters(self, station: str, t0: datetime, t1: datetime) -> list[tuple[datetime, float]]:
        return [(e.time, e.level_m) for e in self.extremes(station, t0, t1) if e.kind == "high"]

    # ------------------------------------------------------------------ devices

    def view(self, key: str, station: str | None = None) -> GaugeTide:
        """The tide as device ``key`` sees it: a gauge entry, a station id, or ``station``."""
        gauge = self.gauges.get(key)
        if gauge is None:
            sid = station if station is not None and station in self.stations else key
            self.station(sid)  # raises UnknownStation
            gauge = GaugeView(device=key, station=sid)
        return GaugeTide(self, gauge)

    def for_device(self, device: Any) -> GaugeTide:
        """The view of an :class:`ioc.core.devices.Device` (by id, else by its ``station``
        attribute)."""
        station = device.attributes.get("station") if hasattr(device, "attributes") else None
        if device.id not in self.gauges and station not in self.stations:
            raise UnknownStation(device.id, [*self.gauges, *self.stations])
        return self.view(device.id, station)


@dataclass(frozen=True, slots=True)
class GaugeTide:
    """One device's predicted tide: its station's, lagged and damped (see :class:`GaugeView`)."""

    predictor: TidePredictor
    gauge: GaugeView

    @property
    def station(self) -> str:
        return self.gauge.station

    def level_m(self, times: Any) -> np.ndarray:
        g = self.gauge
        t = _epoch_s(times) - g.lag_min * 60.0
        seasonal, tidal = self.predictor._parts(g.station, t)
        return seasonal + g.amplitude_factor * tidal + g.datum_offset_m

    def at(self, ts: float) -> tuple[float, float]:
        """(level, seasonal mean) in metres at one instant (epoch seconds): what the simulator
        asks every reading, without the array path's overhead."""
        g = self.gauge
        seasonal, tidal = self.predictor._parts_at(g.station, ts - g.lag_min * 60.0)
        mean = seasonal + g.datum_offset_m
        return mean + g.amplitude_factor * tidal, mean

    def mean_m(self, times: Any) -> np.ndarray:
        """The station's seasonal mean level (Z0 + Sa + Ssa) as this device sees it."""
        g = self.gauge
        t = _epoch_s(times) - g.lag_min * 60.0
        return self.predictor._parts(g.station, t)[0] + g.datum_offset_m

    def extremes(self, t0: datetime, t1: datetime) -> list[Extreme]:
        """High and low waters in [t0, t1] (at most 31 days), in time order, to the minute."""
        a, b = _aware(t0).timestamp(), _aware(t1).timestamp()
        if b < a:
            raise TideError("to", "must not be before from")
        if b - a > MAX_RANGE_DAYS * _DAY_S:
            raise TideError("to", f"the range is limited to {MAX_RANGE_DAYS:g} days")
        # One grid step beyond each end so that a turning point at an end is still seen.
        start = math.floor(a / _GRID_S) * _GRID_S - _GRID_S
        t = np.arange(start, b + 2 * _GRID_S, _GRID_S)
        h = self.level_m(t)
        d = np.diff(h)
        out: list[Extreme] = []
        for i in range(1, len(h) - 1):
            kind: Literal["high", "low"]
            if d[i - 1] > 0 >= d[i]:
                kind = "high"
            elif d[i - 1] < 0 <= d[i]:
                kind = "low"
            else:
                continue
            # Parabola through the three grid points: the turning point between them.
            den = h[i - 1] - 2 * h[i] + h[i + 1]
            off = 0.5 * (h[i - 1] - h[i + 1]) / den if den != 0 else 0.0
            te = t[i] + off * _GRID_S
            if not a <= te <= b:
                continue
            level = h[i] - 0.25 * (h[i - 1] - h[i + 1]) * off
            out.append(Extreme(datetime.fromtimestamp(round(te), UTC), float(level), kind))
        return _drop_wiggles(out)

    def high_waters(self, t0: datetime, t1: datetime) -> list[tuple[datetime, float]]:
        return [(e.time, e.level_m) for e in self.extremes(t0, t1) if e.kind == "high"]

    def next_high_water(self, now: datetime, within_h: float = 30.0) -> Extreme | None:
        """The first high water after ``now`` (within ``within_h`` hours), or None."""
        end = datetime.fromtimestamp(_aware(now).timestamp() + within_h * 3600.0, UTC)
        return next((e for e in self.extremes(now, end) if e.kind == "high" and e.time > now), None)


def _drop_wiggles(ext: list[Extreme], min_m: float = 0.01) -> list[Extreme]:
    """Drop high/low pairs less than ``min_m`` apart (a flat stand, not a tide)."""
    out: list[Extreme] = []
    for e in ext:
        if out and abs(out[-1].level_m - e.level_m) < min_m:
            out.pop()
            continue
        out.append(e)
    return out


# ---------------------------------------------------------------------- file parsing


def _num(value: Any, where: str) -> float:
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value):
        raise TideError(where, f"expected a number, got {value!r}")
    return float(value)


def _station(sid: str, item: Any, where: str) -> StationTide:
    if not isinstance(item, dict):
        raise TideError(where, "expected a mapping")
    cons = item.get("constituents")
    if not isinstance(cons, dict):
        raise TideError(f"{where}.constituents", "expected a mapping by constituent name")
    missing = sorted(REQUIRED - set(cons))
    if missing:
        raise TideError(f"{where}.constituents", f"missing {missing}")
    unknown = sorted(set(cons) - REQUIRED)
    if unknown:
        raise TideError(
            f"{where}.constituents", f"unknown {unknown} (expected {list(CONSTITUENTS)})"
        )
    out = []
    for name in CONSTITUENTS:
        c = cons[name]
        cw = f"{where}.constituents.{name}"
        if not isinstance(c, dict):
            raise TideError(cw, "expected {amplitude_m, phase_deg}")
        amp = _num(c.get("amplitude_m"), f"{cw}.amplitude_m")
        if amp < 0:
            raise TideError(f"{cw}.amplitude_m", "must not be negative")
        out.append(Constituent(name, amp, _num(c.get("phase_deg"), f"{cw}.phase_deg") % 360.0))
    for key in ("source", "calibration"):
        if not isinstance(item.get(key), str) or not item[key].strip():
            raise TideError(f"{where}.{key}", "is required (where the numbers come from)")
    return StationTide(
        station=sid,
        latitude=_num(item.get("latitude"), f"{where}.latitude"),
        mean_m=_num(item.get("mean_m"), f"{where}.mean_m"),
        constituents=tuple(out),
        source=item["source"].strip(),
        calibration=item["calibration"].strip(),
        illustrative=bool(item.get("illustrative", True)),
    )


def _pair(value: Any, where: str) -> tuple[float, float]:
    if not isinstance(value, list) or len(value) != 2:
        raise TideError(where, "expected [low, high]")
    lo, hi = (_num(v, where) for v in value)
    if hi < lo:
        raise TideError(where, "expected [low, high]")
    return lo, hi


def _target(i: int, item: Any, stations: Mapping[str, StationTide]) -> Target:
    where = f"targets[{i}]"
    if not isinstance(item, dict) or item.get("station") not in stations:
        raise TideError(f"{where}.station", f"must be one of {sorted(stations)}")
    if item.get("kind") not in ("annual-peak", "days-above-bd3"):
        raise TideError(f"{where}.kind", "must be annual-peak or days-above-bd3")
    window = item.get("window")
    if not (
        isinstance(window, list) and len(window) == 2 and all(isinstance(d, date) for d in window)
    ):
        raise TideError(f"{where}.window", "expected [first day, last day]")
    if not isinstance(item.get("source"), str):
        raise TideError(f"{where}.source", "is required")
    at = item.get("at")
    if at is not None and not (isinstance(at, datetime) and at.tzinfo is not None):
        raise TideError(f"{where}.at", "expected a time with its UTC offset")
    days = item.get("days")
    return Target(
        station=item["station"],
        kind=item["kind"],
        source=" ".join(item["source"].split()),
        window=(window[0], window[1]),
        level_m=_pair(item["level_m"], f"{where}.level_m") if "level_m" in item else None,
        at=at,
        days=(int(days[0]), int(days[1])) if days is not None else None,
        tolerance=MappingProxyType(dict(item.get("tolerance") or {})),
    )
