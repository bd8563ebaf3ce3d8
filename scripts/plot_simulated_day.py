"""Plot one simulated day per device kind: ``docs/img/sim-<kind>.png``.

    .venv/bin/python scripts/plot_simulated_day.py [--date 2026-10-14] [--seed 7] [--out docs/img]

Runs the device models of the packaged site (no broker) under normal conditions, the way the
runner calls them, and draws what they report. Needs the optional extra ``plots`` (matplotlib).
The default day is a spring tide in the rainy season, so the flood and rain plots have something
to show.
"""

from __future__ import annotations

import argparse
from collections import defaultdict
from datetime import date, datetime, timedelta
from pathlib import Path

import matplotlib

matplotlib.use("Agg")  # files only, no display
import matplotlib.dates as mdates
import matplotlib.pyplot as plt

from ioc.core.site import Site, load_site
from ioc.simulators.cabinet import CabinetModel
from ioc.simulators.conditions import NORMAL
from ioc.simulators.fleet import build_models
from ioc.simulators.flood import FloodStationModel
from ioc.simulators.lighting import LampModel
from ioc.simulators.model import LOCAL_TZ, DeviceModel, Problems
from ioc.simulators.rain import RainGaugeModel
from ioc.simulators.reports import ReportModel
from ioc.simulators.salinity import SalinityStationModel
from ioc.simulators.scenario import SCENARIO_DIR, load_scenario
from ioc.simulators.traffic import DetectorModel

SITE_FILE = Path(__file__).resolve().parents[1] / "ioc" / "site_data" / "hau-giang.yaml"
Series = dict[str, list[tuple[datetime, dict[str, float]]]]


def simulate(models: list[DeviceModel], start: datetime, hours: float, every_s: float) -> Series:
    """Telemetry of every model from ``start``, one call every ``every_s`` simulated seconds."""
    out: Series = defaultdict(list)
    t, end = start, start + timedelta(hours=hours)
    while t < end:
        for m in models:
            reading = m.telemetry(t, NORMAL)
            if reading is not None:
                out[m.device.id].append((t, reading))
        t += timedelta(seconds=every_s)
    return out


def column(series: list[tuple[datetime, dict[str, float]]], name: str) -> list[float]:
    return [r[name] for _, r in series]


def times(series: list[tuple[datetime, dict[str, float]]]) -> list[datetime]:
    return [t for t, _ in series]


def hour_axis(ax: plt.Axes) -> None:
    ax.xaxis.set_major_formatter(mdates.DateFormatter("%H:%M", tz=LOCAL_TZ))
    ax.grid(alpha=0.3)


def plot_flood(site: Site, models: list[DeviceModel], day: date, out: Path) -> None:
    stations = [m for m in models if isinstance(m, FloodStationModel)]
    start = datetime.combine(day, datetime.min.time(), LOCAL_TZ)
    data = simulate(list(stations), start - timedelta(days=14), 15 * 24, 600)
    fig, axes = plt.subplots(2, 2, figsize=(13, 7), sharex="col")
    for row, city in enumerate(("vi-thanh", "nga-bay")):
        mine = [m for m in stations if m.device.city == city]
        for col, since in enumerate((start - timedelta(days=14), start)):
            ax = axes[row][col]
            for m in mine:
                s = [(t, r) for t, r in data[m.device.id] if t >= since]
                ax.plot(times(s), column(s, "water_level_m"), lw=1, label=m.device.id)
            for level, colour in (("bd1", "gold"), ("bd2", "orange"), ("bd3", "red")):
                value = float(mine[0].device.attributes[level])
                ax.axhline(value, color=colour, ls="--", lw=1, label=f"BĐ {level[-1]} {value} m")
            ax.set_ylabel("water level (m)")
            ax.set_title(f"{site.city(city).name} — {'15 days' if col == 0 else day.isoformat()}")
            ax.grid(alpha=0.3)
            if col == 1:
                hour_axis(ax)
            else:
                ax.xaxis.set_major_formatter(mdates.DateFormatter("%d/%m", tz=LOCAL_TZ))
        axes[row][1].legend(fontsize=7, loc="upper right")
    fig.suptitle("Flood stations: predicted tide (M2 S2 N2 K1 O1 Sa Ssa; docs/tides.md), rain")
    fig.tight_layout()
    fig.savefig(out / "sim-flood.png", dpi=110)
    plt.close(fig)


def plot_salinity(site: Site, models: list[DeviceModel], day: date, out: Path) -> None:
    """A dry season (daily peaks, Nov–Jun) and the intrusion scenario's day, whatever ``day``
    is: salinity is zero in the rainy season."""
    stations = [m for m in models if isinstance(m, SalinityStationModel)]
    scenario = load_scenario(SCENARIO_DIR / "dry-season-salinity-intrusion.yaml")
    fig, (season_ax, day_ax) = plt.subplots(1, 2, figsize=(13, 4.5))
    start = datetime(2025, 11, 15, tzinfo=LOCAL_TZ)
    for m in stations:
        days = [start + timedelta(days=d) for d in range(215)]
        peaks = [
            max(m.salinity_ppt(d + timedelta(minutes=20 * k), NORMAL) for k in range(72))
            for d in days
        ]
        season_ax.plot(days, peaks, lw=1, label=m.device.id)
        steps = int(scenario.duration.total_seconds() // 600)
        ts = [scenario.start + timedelta(minutes=10 * k) for k in range(steps)]
        day_ax.plot(ts, [m.salinity_ppt(t, scenario.conditions_at(t)) for t in ts], lw=1.2,
                    label=m.device.id)  # fmt: skip
    for ax in (season_ax, day_ax):
        for value, colour, name in ((0.5, "gold", "domestic 0.5‰"), (1.0, "orange", "rice 1‰"),
                                    (4.0, "red", "4‰")):  # fmt: skip
            ax.axhline(value, color=colour, ls="--", lw=1, label=name)
        ax.set_ylabel("salinity (‰)")
        ax.grid(alpha=0.3)
    season_ax.set_title("Daily peak, ordinary dry season (Dec–May)")
    season_ax.xaxis.set_major_formatter(mdates.DateFormatter("%m/%y", tz=LOCAL_TZ))
    day_ax.set_title(f"Scenario {scenario.name}, {scenario.start:%d/%m/%Y}")
    hour_axis(day_ax)
    day_ax.legend(fontsize=7, loc="upper right")
    fig.suptitle("Salinity stations: dry-season salt wedge following the predicted tide")
    fig.tight_layout()
    fig.savefig(out / "sim-salinity.png", dpi=110)
    plt.close(fig)


def plot_rain(site: Site, models: list[DeviceModel], day: date, out: Path) -> None:
    gauges = [m for m in models if isinstance(m, RainGaugeModel)]
    start = datetime.combine(day, datetime.min.time(), LOCAL_TZ)
    data = simulate(list(gauges), start, 24, 300)
    fig, (top, bottom) = plt.subplots(2, 1, figsize=(12, 6), sharex=True)
    for m in gauges:
        s = data[m.device.id]
        top.step(times(s), column(s, "rain_rate_mm_h"), where="pre", lw=1, label=m.device.id)
        bottom.plot(times(s), column(s, "rain_24h_mm"), lw=1, label=m.device.id)
    top.set_ylabel("rain rate (mm/h, 5-min mean)")
    bottom.set_ylabel("rain in last 24 h (mm)")
    for ax in (top, bottom):
        hour_axis(ax)
    top.legend(fontsize=7, ncol=3)
    fig.suptitle(f"Rain gauges, {day.isoformat()}: afternoon convective showers")
    fig.tight_layout()
    fig.savefig(out / "sim-rain.png", dpi=110)
    plt.close(fig)


def plot_lighting(site: Site, models: list[DeviceModel], day: date, out: Path) -> None:
    lamps = [m for m in models if isinstance(m, LampModel)][:3]
    start = datetime.combine(day, datetime.min.time(), LOCAL_TZ) + timedelta(hours=12)
    data = simulate(list(lamps), start, 24, 120)
    fig, axes = plt.subplots(4, 1, figsize=(12, 9), sharex=True)
    for m in lamps:
        s = data[m.device.id]
        axes[0].plot(times(s), column(s, "power_w"), lw=1, label=f"{m.device.id}")
        axes[1].plot(times(s), column(s, "voltage_v"), lw=1)
        axes[2].plot(times(s), column(s, "power_factor"), lw=1)
        axes[3].plot(times(s), column(s, "gear_temperature_c"), lw=1)
    for ax, label in zip(
        axes, ("power (W)", "voltage (V)", "power factor", "gear temp. (°C)"), strict=True
    ):
        ax.set_ylabel(label)
        hour_axis(ax)
    axes[0].legend(fontsize=7)
    fig.suptitle(
        f"Street lamps, night of {day.isoformat()}: on at sunset, 50–60 % from 00:00 to 04:30"
    )
    fig.tight_layout()
    fig.savefig(out / "sim-lighting.png", dpi=110)
    plt.close(fig)


def plot_cabinet(site: Site, models: list[DeviceModel], day: date, out: Path) -> None:
    cabinets = [m for m in models if isinstance(m, CabinetModel)][:4]
    start = datetime.combine(day, datetime.min.time(), LOCAL_TZ) + timedelta(hours=12)
    data = simulate(list(cabinets), start, 24, 120)
    fig, (top, bottom) = plt.subplots(2, 1, figsize=(12, 6), sharex=True)
    for m in cabinets:
        s = data[m.device.id]
        top.plot(times(s), [p / 1000 for p in column(s, "power_w")], lw=1, label=m.device.id)
    first = data[cabinets[0].device.id]
    for phase in ("l1", "l2", "l3"):
        bottom.plot(times(first), column(first, f"voltage_{phase}_v"), lw=1, label=phase.upper())
    top.set_ylabel("feeder power (kW)")
    bottom.set_ylabel(f"{cabinets[0].device.id} phase voltage (V)")
    for ax in (top, bottom):
        hour_axis(ax)
        ax.legend(fontsize=7)
    fig.suptitle("Lighting cabinets: feeder power = Σ lamps; supply sags at the evening peak")
    fig.tight_layout()
    fig.savefig(out / "sim-cabinet.png", dpi=110)
    plt.close(fig)


def plot_traffic(site: Site, models: list[DeviceModel], day: date, out: Path) -> None:
    detectors = [m for m in models if isinstance(m, DetectorModel)]
    pick = [detectors[2], next(m for m in detectors if m.device.city == "nga-bay")]
    start = datetime.combine(day, datetime.min.time(), LOCAL_TZ)
    data = simulate(list(pick), start, 24, 60)
    fig, axes = plt.subplots(3, 1, figsize=(12, 8), sharex=True)
    s = data[pick[0].device.id]
    bins: dict[datetime, dict[str, float]] = defaultdict(lambda: defaultdict(float))
    for t, r in s:  # 15-minute bins, as hourly flow
        b = t - timedelta(minutes=t.minute % 15, seconds=t.second)
        for c in ("motorbike", "car", "truck", "bus"):
            bins[b][c] += r[f"count_{c}"] * 4
    xs = sorted(bins)
    bottom = [0.0] * len(xs)
    for c in ("motorbike", "car", "truck", "bus"):
        ys = [bins[x][c] for x in xs]
        axes[0].bar(xs, ys, width=0.009, bottom=bottom, label=c, align="edge")
        bottom = [b + y for b, y in zip(bottom, ys, strict=True)]
    axes[0].set_ylabel(f"{pick[0].device.id} flow (veh/h)")
    axes[0].legend(fontsize=7, ncol=4)
    for m in pick:
        series = data[m.device.id]
        axes[1].plot(times(series), column(series, "speed_kmh"), lw=0.8, label=m.device.id)
        axes[2].plot(times(series), column(series, "occupancy_pct"), lw=0.8, label=m.device.id)
    axes[1].set_ylabel("mean speed (km/h)")
    axes[2].set_ylabel("occupancy (%)")
    for ax in axes:
        hour_axis(ax)
    axes[1].legend(fontsize=7)
    fig.suptitle(f"Traffic detectors, {day:%A} {day.isoformat()}: morning and evening peaks")
    fig.tight_layout()
    fig.savefig(out / "sim-traffic.png", dpi=110)
    plt.close(fig)


def plot_reports(site: Site, seed: int, day: date, out: Path) -> None:
    model = ReportModel(site, seed)
    start = datetime.combine(day, datetime.min.time(), LOCAL_TZ)
    counts: dict[str, list[int]] = defaultdict(lambda: [0] * 24)
    for _ in range(365):  # a year folded onto one day: ~20 a month a city is too few for a day
        for h in range(24):
            t = start + timedelta(hours=h)
            for _city, _channel, p in model.reports(t, t + timedelta(hours=1), NORMAL, Problems()):
                counts[str(p["category"])][h] += 1
        start += timedelta(days=1)
    fig, ax = plt.subplots(figsize=(12, 4))
    bottom = [0] * 24
    for category, ys in sorted(counts.items()):
        ax.bar(range(24), ys, bottom=bottom, label=category)
        bottom = [b + y for b, y in zip(bottom, ys, strict=True)]
    ax.set_xlabel("hour of day (local)")
    ax.set_ylabel("reports (a year, both cities)")
    ax.legend(fontsize=7, ncol=4)
    ax.grid(alpha=0.3)
    fig.suptitle(
        "Citizen reports at real volume (~20 a month a city): by category and hour of day, a year"
    )
    fig.tight_layout()
    fig.savefig(out / "sim-reports.png", dpi=110)
    plt.close(fig)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--date", type=date.fromisoformat, default=date(2026, 10, 14))
    parser.add_argument("--seed", type=int, default=7)
    parser.add_argument("--out", type=Path, default=Path("docs/img"))
    parser.add_argument("--site", type=Path, default=SITE_FILE)
    args = parser.parse_args()
    args.out.mkdir(parents=True, exist_ok=True)
    site = load_site(args.site)
    for plot in (plot_flood, plot_salinity, plot_rain, plot_lighting, plot_cabinet, plot_traffic):
        plot(site, build_models(site, args.seed), args.date, args.out)  # fresh models per plot
    plot_reports(site, args.seed, args.date, args.out)
    print(f"wrote {', '.join(sorted(p.name for p in args.out.glob('sim-*.png')))} to {args.out}")


if __name__ == "__main__":
    main()
