"""Year backtest of the water rules: simulate a year (no scenario, or one scenario laid over it)
and print, per station, on how many days each rule fired — next to the days the level itself
crossed each BĐ level, so "BĐ alarms fire on the days the level crosses" can be read off.

    .venv/bin/python scripts/backtest_year.py [--year 2026] [--seed 7] [--rules DIR]
        [--scenario NAME [--at 2026-10-27T14:00+07:00]] [--start 2026-11-14 --days N] [--markdown]

The flood and rain gauges of the packaged site are stepped offline (no broker) the way the
simulator runner calls them, every 5 minutes of simulated time; their readings go through the
rule engine exactly as in ``ioc rules backtest`` (``ioc.rules.backtest.replay``), with the predicted
astronomical tide of each gauge injected as a ``TabulatedTide`` (10-minute grid) for the
residual and forecast rules. docs/rules.md ("Year backtest") holds the table this prints.
"""

from __future__ import annotations

import argparse
import sys
import time
from collections import defaultdict
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from ioc.core.devices import Device  # noqa: E402
from ioc.core.localtime import FIXED_OFFSET as LOCAL  # noqa: E402
from ioc.core.site import load_site  # noqa: E402
from ioc.core.tides import TidePredictor, UnknownStation  # noqa: E402
from ioc.rules.backtest import BacktestResult, Stream, replay  # noqa: E402
from ioc.rules.language import DEFAULT_PACK, Rule, RuleSet, load_rules  # noqa: E402
from ioc.rules.tide import TabulatedTide  # noqa: E402
from ioc.simulators.conditions import NORMAL, Conditions  # noqa: E402
from ioc.simulators.fleet import build_models  # noqa: E402
from ioc.simulators.model import DeviceModel  # noqa: E402
from ioc.simulators.scenario import Scenario, load_scenario  # noqa: E402

SITE_FILE = ROOT / "ioc" / "site_data" / "hau-giang.yaml"
KINDS = ("flood", "rain", "salinity")  # the water hazards; other kinds are not simulated here
STEP_S = 300.0
TIDE_GRID_S = 600.0


def simulate(
    models: list[DeviceModel], start: datetime, end: datetime, scenario: Scenario | None
) -> dict[tuple[str, str], tuple[list[float], list[float]]]:
    out: dict[tuple[str, str], tuple[list[float], list[float]]] = defaultdict(lambda: ([], []))
    t = start
    step = timedelta(seconds=STEP_S)
    while t < end:
        cond: Conditions = NORMAL
        if scenario is not None and scenario.start <= t < scenario.end:
            cond = scenario.conditions_at(t)
        ts = t.timestamp()
        for m in models:
            reading = m.telemetry(t, cond)
            if reading is None:
                continue
            for metric, value in reading.items():
                times, values = out[(m.device.id, metric)]
                times.append(ts)
                values.append(value)
        t += step
    return out


def predicted_tide(
    devices: list[Device], predictor: TidePredictor, start: float, end: float
) -> TabulatedTide:
    """The product's prediction for each flood gauge (``ioc.core.tides``, the site's tide data — the
    same harmonic model the simulator draws its tide from; the simulator adds rain, scenario
    offsets and noise), on a 10-minute grid."""
    grid = np.arange(start - 86400.0, end + 86400.0, TIDE_GRID_S)
    tables: dict[str, tuple[Any, Any]] = {}
    for d in devices:
        if d.kind != "flood":
            continue
        try:
            view = predictor.for_device(d)
        except UnknownStation:
            continue
        tables[d.id] = (grid.tolist(), view.level_m(grid).tolist())
    return TabulatedTide(tables)


def _day(ts: float) -> str:
    return datetime.fromtimestamp(ts, LOCAL).date().isoformat()


def crossing_days(
    times: list[float], values: list[float], level: float, hold_s: float = 600.0, band: float = 0.05
) -> set[str]:
    """Local days on which the level reached ``level`` and stayed above ``level - band`` for
    ``hold_s`` — the BĐ rules' own terms (``for: 10m``, clear 5 cm below), computed from the
    readings alone; counted on the day the crossing began."""
    days: set[str] = set()
    since: float | None = None
    counted = False
    for t, v in zip(times, values, strict=True):
        if since is None and v >= level:
            since, counted = t, False
        elif since is not None and v < level - band:
            since = None
            continue
        if since is not None and not counted and t - since >= hold_s:
            days.add(_day(since))
            counted = True
    return days


def table(
    result: BacktestResult,
    ruleset: RuleSet,
    devices: list[Device],
    streams: dict[tuple[str, str], tuple[list[float], list[float]]],
    markdown: bool,
) -> str:
    fired: dict[tuple[str, str], set[str]] = defaultdict(set)
    for a in result.alerts:
        if a.device_id is not None and a.started_at is not None:
            fired[(a.device_id, a.rule)].add(_day(a.started_at))
        elif a.started_at is not None:
            fired[(f"ward {a.labels.get('ward', '')}", a.rule)].add(_day(a.started_at))
    # every water rule, fired or not (a 0 is a result too); "-": the rule does not read the device
    water = [
        r for r in ruleset.rules
        if r.enabled and r.labels.get("domain") in KINDS and r.type not in ("absence", "group")
    ]  # fmt: skip
    groups = [
        r
        for r in ruleset.rules
        if r.enabled and r.type == "group" and r.labels.get("domain") in KINDS
    ]

    def cell(d: Device, r: Rule) -> str:
        if not r.select.matches(d.kind, d.city, d.ward, d.id, d.attributes):
            return "-"
        return str(len(fired.get((d.id, r.id), ())))

    rules = [r.id for r in water] + [f"{g.id} (group)" for g in groups]
    rows: list[list[str]] = []
    for d in devices:
        if d.kind == "flood":
            times, values = streams.get((d.id, "water_level_m"), ([], []))
            cross = " / ".join(
                str(len(crossing_days(times, values, float(d.attributes[k]))))
                for k in ("bd1", "bd2", "bd3")
            )
            peak = f"{max(values):.2f}" if values else "-"
        else:
            cross, peak = "", ""
        rows.append(
            [d.id, d.kind, peak, cross, *(cell(d, r) for r in water), *("-" for _ in groups)]
        )
    for key in sorted({k for k, _ in fired if k.startswith("ward ")}):
        per_group = (str(len(fired.get((key, g.id), ()))) for g in groups)
        rows.append([key, "group", "", "", *("-" for _ in water), *per_group])
    head = ["station", "kind", "max m", "days ≥ BĐ I/II/III", *rules]
    if markdown:
        lines = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
        lines += ["| " + " | ".join(r) + " |" for r in rows]
        return "\n".join(lines)
    widths = [max(len(x) for x in col) for col in zip(head, *rows, strict=True)]
    fmt = "  ".join(f"{{:<{w}}}" for w in widths)
    return "\n".join(fmt.format(*r) for r in [head, *rows])


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    p.add_argument("--year", type=int, default=2026)
    p.add_argument("--days", type=int, default=None, help="simulate only this many days")
    p.add_argument("--start", default=None, help="start here (ISO date) instead of 1 January")
    p.add_argument("--seed", type=int, default=7)
    p.add_argument("--rules", type=Path, default=DEFAULT_PACK)
    p.add_argument("--scenario", default=None, help="a scenario laid over the year at its start")
    p.add_argument("--at", default=None, help="start the scenario here (ISO time) instead")
    p.add_argument("--markdown", action="store_true")
    args = p.parse_args()

    site = load_site(SITE_FILE)
    ruleset = load_rules(args.rules)
    models = [m for m in build_models(site, args.seed) if m.device.kind in KINDS]
    devices = [m.device for m in models]
    start = datetime(args.year, 1, 1, tzinfo=LOCAL)
    if args.start:
        start = datetime.fromisoformat(args.start).replace(tzinfo=LOCAL)
    end = (
        start + timedelta(days=args.days)
        if args.days
        else datetime(args.year + 1, 1, 1, tzinfo=LOCAL)
    )
    scenario = load_scenario(args.scenario) if args.scenario else None
    if scenario is not None and args.at:
        scenario = scenario.with_start(datetime.fromisoformat(args.at))
    t0 = time.perf_counter()
    streams = simulate(models, start, end, scenario)
    t1 = time.perf_counter()
    tide = predicted_tide(
        devices, TidePredictor.from_site(site), start.timestamp(), end.timestamp()
    )
    result = replay(
        ruleset,
        devices,
        [Stream(d, m, np.asarray(t), np.asarray(v)) for (d, m), (t, v) in streams.items()],
        start=start.timestamp(),
        end=end.timestamp(),
        tide=tide,
    )
    t2 = time.perf_counter()
    print(
        f"# {start.date()} to {end.date()}, seed {args.seed}, rules {args.rules}, scenario "
        f"{scenario.name + ' at ' + scenario.start.isoformat() if scenario else 'none'}: "
        f"{result.readings:,} readings, simulated in {t1 - t0:.0f} s, replayed in {t2 - t1:.0f} s"
    )
    print(table(result, ruleset, devices, streams, args.markdown))
    if scenario is not None:
        print(
            f"\n# alerts from 6 h before the scenario ({scenario.start.isoformat()} "
            f"+{scenario.duration}) to 6 h after it"
        )
        lo, hi = scenario.start.timestamp() - 6 * 3600, scenario.end.timestamp() + 6 * 3600
        for a in result.alerts:
            if a.started_at is not None and lo <= a.started_at < hi:
                at = datetime.fromtimestamp(a.started_at, UTC).astimezone(LOCAL)
                print(f"{at:%Y-%m-%d %H:%M}  {a.rule:<24} {a.device_id or a.labels.get('ward')}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
