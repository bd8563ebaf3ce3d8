"""How often would the `reports-cluster` rule fire on simulated citizen reports?

Runs the report model (ioc/simulators/reports.py) over ordinary years and over the flood-evening
scenario and counts, for candidate (min_count, window) settings, the windows in which one
category reached min_count reports in one ward, and in one whole city (an upper bound for any
ward map: the five post-merger units are unions of the former wards, each inside one city).

    .venv/bin/python benchmarks/report_clusters.py [--years 10] [--factor 1]

The numbers behind the rule's settings are in ioc/rules/packs/default.yaml and docs/simulators.md.
"""

from __future__ import annotations

import argparse
from collections import defaultdict
from datetime import datetime, timedelta, timezone

from ioc.core.settings import Settings
from ioc.core.site import Site, load_site
from ioc.simulators.conditions import NORMAL
from ioc.simulators.model import Problems
from ioc.simulators.reports import ReportModel
from ioc.simulators.scenario import load_scenario

VN = timezone(timedelta(hours=7))
CANDIDATES = ((3, 2), (2, 6), (3, 6), (3, 12), (3, 24))  # (min_count, window hours)


def ward_of(site: Site, city: str, lat: float, lon: float) -> str:
    for w in site.city(city).wards:
        if w.contains(lat, lon):
            return w.id
    return "?"


def clusters(reports: list[tuple[str, str, dict[str, object]]], site: Site, by: str) -> dict:
    """(min_count, window_h) -> number of firings (a group's run of qualifying reports counts
    once, as an alert would fire once and stay firing)."""
    groups: dict[tuple[str, str], list[float]] = defaultdict(list)
    for city, _, p in reports:
        key = city if by == "city" else ward_of(site, city, float(p["lat"]), float(p["lon"]))  # type: ignore[arg-type]
        ts = datetime.fromisoformat(str(p["ts"])).timestamp()
        groups[key, str(p["category"])].append(ts)
    out = {}
    for n, hours in CANDIDATES:
        fired = 0
        for times in groups.values():
            times.sort()
            firing_until = -1.0
            for i in range(n - 1, len(times)):
                if times[i] - times[i - n + 1] <= hours * 3600:
                    if times[i] > firing_until:
                        fired += 1
                    firing_until = times[i] + hours * 3600
        out[n, hours] = fired
    return out


JOINS = ((200, 24), (300, 72), (500, 72), (500, 168))  # (radius m, window h)


def chance_joins(reports: list[tuple[str, str, dict[str, object]]]) -> dict[tuple[int, int], int]:
    """Reports that would join an earlier, unrelated report's incident of the same category
    (ordinary days have no common cause: every join here is a wrong one)."""
    import math

    rows = sorted(
        (datetime.fromisoformat(str(p["ts"])).timestamp(), str(p["category"]),
         float(p["lat"]), float(p["lon"]))  # type: ignore[arg-type]
        for _, _, p in reports
    )  # fmt: skip
    out = {}
    for radius, hours in JOINS:
        n = 0
        for i, (t, cat, lat, lon) in enumerate(rows):
            for t0, cat0, lat0, lon0 in reversed(rows[:i]):
                if t - t0 > hours * 3600:
                    break
                dy = (lat - lat0) * 111_320.0
                dx = (lon - lon0) * 111_320.0 * math.cos(math.radians(lat))
                if cat == cat0 and math.hypot(dx, dy) <= radius:
                    n += 1
                    break
        out[radius, hours] = n
    return out


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--years", type=int, default=10)
    ap.add_argument("--factor", type=float, default=1.0)
    args = ap.parse_args()
    site = load_site(Settings().site_path())
    total = 0
    joins: dict[tuple[int, int], int] = defaultdict(int)
    found: dict[str, dict[tuple[int, int], int]] = {
        "ward": defaultdict(int),
        "city": defaultdict(int),
    }
    for seed in range(args.years):  # independent years, each counted on its own
        model = ReportModel(site, seed, args.factor)
        t0 = datetime(2026, 1, 1, tzinfo=VN)
        year: list = []
        for h in range(365 * 24):
            t = t0 + timedelta(hours=h)
            year += model.reports(t, t + timedelta(hours=1), NORMAL, Problems())
        total += len(year)
        for key, v in chance_joins(year).items():
            joins[key] += v
        for by, acc in found.items():
            for key, v in clusters(year, site, by).items():
                acc[key] += v
    print(f"{total / args.years:.0f} reports a year (factor {args.factor:g})")
    for by, acc in found.items():
        print(f"  chance clusters a year by {by}: " + ", ".join(
            f"{n} in {h} h: {v / args.years:.2f}" for (n, h), v in acc.items()))  # fmt: skip
    print("  chance joins a year (radius, window): " + ", ".join(
        f"{r} m {h} h: {v / args.years:.2f}" for (r, h), v in joins.items()))  # fmt: skip
    scenario = load_scenario("vi-thanh-spring-tide-flood")
    hits = defaultdict(int)
    runs = 20
    for seed in range(runs):
        model = ReportModel(site, 100 + seed, args.factor)
        evening = []
        for h in range(9):
            t = scenario.start + timedelta(hours=h)
            cond = scenario.conditions_at(t)
            evening += model.reports(t, t + timedelta(hours=1), cond, Problems())
        for key, v in clusters(evening, site, "ward").items():
            hits[key] += v > 0
    print(f"  flood evenings (of {runs}) with a cluster by ward: " + ", ".join(
        f"{n} in {h} h: {v}" for (n, h), v in hits.items()))  # fmt: skip


if __name__ == "__main__":
    main()
