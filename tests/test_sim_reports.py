"""Citizen reports at real volumes: a year of them, their bursts, and how their texts read.

No broker: the report model is pure (ioc/simulators/reports.py, data in
ioc/simulators/reports.yaml).
"""

from __future__ import annotations

import itertools
import re
from collections import Counter
from datetime import datetime, timedelta, timezone
from pathlib import Path

import pytest

from ioc.core.site import Site, load_site
from ioc.simulators.conditions import NORMAL, Conditions
from ioc.simulators.model import Problems
from ioc.simulators.reports import DATA, DEMO_FACTOR, ReportModel, road_phrase
from ioc.simulators.scenario import load_scenario

VN = timezone(timedelta(hours=7))
SITE_FILE = Path(__file__).parent.parent / "ioc" / "site_data" / "hau-giang.yaml"
Report = tuple[str, str, dict[str, object]]


@pytest.fixture(scope="module")
def site() -> Site:
    return load_site(SITE_FILE)


def run(
    model: ReportModel, start: datetime, hours: int, cond: Conditions | None = None,
    conditions_at: object = None,
) -> list[Report]:  # fmt: skip
    out: list[Report] = []
    for h in range(hours):
        t = start + timedelta(hours=h)
        c = conditions_at(t) if callable(conditions_at) else cond or NORMAL
        out += model.reports(t, t + timedelta(hours=1), c, Problems())
    return out


@pytest.fixture(scope="module")
def year(site: Site) -> list[Report]:
    return run(ReportModel(site, 11), datetime(2026, 1, 1, tzinfo=VN), 365 * 24)


def test_a_year_has_about_twenty_reports_a_month_a_city(site: Site, year: list[Report]) -> None:
    by_city = Counter(city for city, _, _ in year)
    expected = DATA.per_city_per_month * 12  # 240 a city
    for c in site.cities:
        # Poisson: σ = √240 ≈ 15.5; 4 σ either way
        assert abs(by_city[c.id] - expected) < 4 * expected**0.5, (c.id, by_city[c.id])
    by_month = Counter((city, str(p["ts"])[:7]) for city, _, p in year)
    assert max(by_month.values()) < 45  # an ordinary year has no month with twice the volume


# Template artefacts: an unfilled or doubled slot, a Python None, stray spacing or punctuation,
# a raw id (slug) where a name belongs.
_ARTEFACTS = re.compile(r"[{}]|None|\s[,.)]|,,|\.\.|\(\s|\s\s|^\s|\s$|\b[a-z]+-[a-z0-9-]+\b")
_WORD = re.compile(r"\w+")


def doubled_words(text: str) -> list[str]:
    words = [w.lower() for w in _WORD.findall(text)]
    return [a for a, b in itertools.pairwise(words) if a == b and not a.isdigit()]


def test_a_year_of_report_texts_reads_like_real_ones(site: Site, year: list[Report]) -> None:
    texts = [str(p["description"]) for _, _, p in year]
    assert len(texts) > 400
    for text in texts:
        assert not doubled_words(text), text  # "đường đường", "tại tại"
        assert not _ARTEFACTS.search(text), text
        assert text[0].isupper() and text.endswith("."), text
    # varied: hardly two alike in a year, and every category has several wordings
    assert len(set(texts)) > 0.95 * len(texts)
    openings = Counter((str(p["category"]), str(p["description"]).split()[0]) for *_, p in year)
    for cat in DATA.categories:
        assert sum(1 for (c, _) in openings if c == cat.id) >= 3, cat.id
    # the place is named by a road (or the ward), as a citizen writes it
    roads = {road_phrase(str(d.attributes["road"])) for d in site.devices if "road" in d.attributes}
    wards = {w.name.split(" ", 1)[1] for c in site.cities for w in c.wards}
    for text in texts:
        assert any(r in text for r in roads) or any(w in text for w in wards), text


def test_doubled_word_check_catches_the_old_artefact() -> None:
    assert doubled_words("Đèn đường đường Hùng Vương không sáng.") == ["đường"]
    assert not doubled_words("Đèn đường trên đường Hùng Vương không sáng.")
    assert road_phrase("Quốc lộ 1A") == "Quốc lộ 1A"
    assert road_phrase("Hùng Vương") == "đường Hùng Vương"


def test_a_flood_evening_and_the_morning_after_bring_bursts(site: Site) -> None:
    scenario = load_scenario("vi-thanh-spring-tide-flood")
    start = scenario.start
    model = ReportModel(site, 3)
    evening = run(model, start, 9, conditions_at=scenario.conditions_at)
    after = run(model, start + timedelta(hours=9), 24)  # the day after: normal conditions
    flooding = [p for c, _, p in evening if c == "vi-thanh" and p["category"] == "ngap-nuoc"]
    # ordinary volume: 20 × 0.07 a month ≈ 0.05 a day; the storm: ~9 expected over the evening
    expected = sum(
        model.rate_per_h("vi-thanh", "ngap-nuoc", t, scenario.conditions_at(t))
        for t in (start + timedelta(hours=h) for h in range(9))
    )
    ordinary = sum(
        model.rate_per_h("vi-thanh", "ngap-nuoc", t, NORMAL)
        for t in (start + timedelta(hours=h) for h in range(9))
    )
    # the scenario's rain and street water (its offset above the predicted tide) bring a burst
    # of a few reports where an ordinary evening brings a few hundredths of one
    assert expected > 3 and expected > 100 * ordinary
    assert len(flooding) >= 2  # the seed is fixed
    aftermath = [
        p for c, _, p in after if c == "vi-thanh" and p["category"] in ("ha-tang", "chieu-sang")
    ]
    storm_kinds = ("ha-tang", "chieu-sang")
    quiet = [p for c, _, p in after if c == "nga-bay" and p["category"] in storm_kinds]
    assert len(aftermath) >= 2 and len(aftermath) > 2 * len(quiet)
    # rates say the same without the dice
    t = start + timedelta(hours=3)
    storm = scenario.conditions_at(t)
    assert model.rate_per_h("vi-thanh", "ngap-nuoc", t, storm) > 50 * model.rate_per_h(
        "vi-thanh", "ngap-nuoc", t, NORMAL
    )


def test_the_demo_factor_multiplies_the_ordinary_volume_not_the_bursts(site: Site) -> None:
    t = datetime(2026, 3, 3, 9, tzinfo=VN)
    plain, demo = ReportModel(site, 1), ReportModel(site, 1, DEMO_FACTOR)
    for cat in DATA.categories:
        assert demo.rate_per_h("nga-bay", cat.id, t, NORMAL) == pytest.approx(
            DEMO_FACTOR * plain.rate_per_h("nga-bay", cat.id, t, NORMAL)
        )
    # a flood evening adds the same burst at any factor: 30 × ten flooding reports would bury
    # the wall, and the burst already comes within minutes of the rain
    storm = Conditions(rain_mm_h={"vi-thanh": 60.0}, water_offset_m={"vi-thanh": 0.1})
    burst = [m.rate_per_h("vi-thanh", "ngap-nuoc", t, storm)
             - m.rate_per_h("vi-thanh", "ngap-nuoc", t, NORMAL) for m in (plain, demo)]  # fmt: skip
    assert burst[0] == pytest.approx(burst[1]) and burst[0] > 1.0
    week = run(ReportModel(site, 2, DEMO_FACTOR), datetime(2026, 3, 2, tzinfo=VN), 7 * 24)
    expected = 2 * DATA.per_city_per_month * 12 / 365 * 7 * DEMO_FACTOR
    assert len(week) == pytest.approx(expected, rel=0.15)
    with pytest.raises(ValueError):
        ReportModel(site, 1, -1.0)


def _cluster_alerts(site: Site, reports: list[Report]) -> list[tuple[str, str]]:
    """(ward, category) of every `reports-cluster` alert the shipped rule pack raises when the
    reports reach the engine as ingest hands them over (ioc/alerting/evaluate.py: a `report`
    event with the current unit and the category)."""
    from ioc.alerting.evaluate import observe
    from ioc.ingest.records import CitizenReport
    from ioc.rules.engine import Engine
    from ioc.rules.language import DEFAULT_PACK, load_rules

    engine = Engine(load_rules(DEFAULT_PACK), [])
    t = 0.0
    in_order = sorted(reports, key=lambda r: datetime.fromisoformat(str(r[2]["ts"])))
    for n, (city, channel, p) in enumerate(in_order):
        t = datetime.fromisoformat(str(p["ts"])).timestamp()
        lat, lon = float(p["lat"]), float(p["lon"])  # type: ignore[arg-type]
        ward = site.ward_of(lat, lon)
        assert ward is not None
        record = CitizenReport(city, channel, str(n), t, str(p["category"]), lat, lon, ward.id,
                               str(p["description"]), None)  # fmt: skip
        observe(engine, [record])
        engine.advance(t)
    engine.advance(t + 24 * 3600)
    return [
        (tr.labels["ward"], tr.labels["category"])
        for tr in engine.drain()
        if tr.rule == "reports-cluster" and tr.to == "firing"
    ]


def test_the_shipped_cluster_rule_and_join_are_tuned_to_these_volumes(site: Site) -> None:
    """At ~20 reports a month a city nothing clusters by chance (5 simulated years: no alert),
    while most flood evenings of the spring-tide scenario bring 3 flooding reports in a Vị Thanh
    unit within 6 h and fire it (7 of these 10; benchmarks/report_clusters.py: 15 of 20). The
    incident join (routing.yaml: 300 m, 72 h) joins unrelated ordinary reports a few times a
    year at most (the benchmark measures 1.4)."""
    import importlib.util

    from ioc.routing.table import load_routing

    spec = importlib.util.spec_from_file_location(
        "report_clusters", SITE_FILE.parents[2] / "benchmarks" / "report_clusters.py"
    )
    assert spec is not None and spec.loader is not None
    bench = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(bench)
    routing = load_routing(SITE_FILE.parent / "routing.yaml", site)
    join = (int(routing.join_radius_m), int(routing.join_window_h))
    assert join in bench.JOINS
    wrong_joins = 0
    for seed in range(5):
        year = run(ReportModel(site, seed), datetime(2026, 1, 1, tzinfo=VN), 365 * 24)
        assert _cluster_alerts(site, year) == [], seed
        wrong_joins += bench.chance_joins(year)[join]
    assert wrong_joins / 5 <= 3
    scenario = load_scenario("vi-thanh-spring-tide-flood")
    caught = 0
    for seed in range(10):
        evening = run(ReportModel(site, 100 + seed), scenario.start, 9,
                      conditions_at=scenario.conditions_at)  # fmt: skip
        fired = _cluster_alerts(site, evening)
        assert {category for _, category in fired} <= {"ngap-nuoc"}
        assert {site.ward(w).city for w, _ in fired} <= {"vi-thanh"}
        caught += bool(fired)
    assert caught >= 6
