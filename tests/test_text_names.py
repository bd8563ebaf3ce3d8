"""Server-built text reads as operators read it: names, never ids; Vietnamese numbers.

Every device and every ward of the packaged site goes through the default rule pack (the real
engine, with the names the alerting service gives it), every report category and ward through
the incident titles; the texts must not show an id (``phuong-nga-bay``, ``nb-cab-01``) where the
site has a name, and Vietnamese texts write decimals with a comma. The wall's side of the same
check is in tests/test_wall_e2e.py. No database or broker: the engine and the titles are pure.
"""

from __future__ import annotations

import re
from datetime import UTC, datetime, timedelta, timezone
from pathlib import Path

import pytest

from ioc.core.names import Names, junction_names
from ioc.core.settings import Settings
from ioc.core.site import Site, load_site
from ioc.core.wording import in_sentence, localise_numbers, number, percent, when
from ioc.incidents.store import Context, report_title
from ioc.routing.table import Routing, load_routing
from ioc.rules.engine import Engine, Transition
from ioc.rules.language import DEFAULT_PACK, load_rules

VN = timezone(timedelta(hours=7))
DATA = Path(__file__).resolve().parent.parent / "ioc" / "site_data"
RAW_ID = re.compile(r"\b[a-z]+(?:-[a-z0-9]+)+\b")
DECIMAL_POINT = re.compile(r"\d\.\d")
MIN = 60.0


@pytest.fixture(scope="module")
def site() -> Site:
    return load_site(DATA / "hau-giang.yaml")


@pytest.fixture(scope="module")
def routing(site: Site) -> Routing:
    return load_routing(DATA / "routing.yaml", site)


def site_ids(site: Site, routing: Routing) -> set[str]:
    ids = {c.id for c in site.cities} | set(site.wards_by_id) | set(site.agencies_by_id)
    ids |= {d.id for d in site.devices} | {c.code for c in routing.categories}
    return ids | set(junction_names(site))


def assert_reads_well(text: str, lang: str, ids: set[str]) -> None:
    shown = set(RAW_ID.findall(text))
    assert not shown & ids, f"ids where names belong in {text!r}"
    if lang == "vi":  # Vietnamese has no hyphenated words: any slug is an id leaking through
        assert not shown, f"id-like words in {text!r}"
        assert not DECIMAL_POINT.search(text), f"decimal point in Vietnamese text {text!r}"


def drive_every_device(site: Site, engine: Engine) -> list[Transition]:
    """A bad night for every device of the site: floods over BĐ III rising fast, heavy rain,
    dark lamps, cabinets losing supply and sagging, jammed junctions, accidents, three reports of
    every category in every ward, then silence (absence rules)."""
    t0 = datetime(2026, 11, 24, 22, 0, tzinfo=VN).timestamp()  # night: lamp rules apply
    for minute in range(0, 45, 5):
        t = t0 + minute * MIN
        for d in site.devices:
            if d.kind == "flood":
                bd3 = float(d.attributes["bd3"])
                engine.observe_telemetry(d.id, t, [("water_level_m", bd3 - 0.6 + 0.025 * minute)])
            elif d.kind == "rain":
                engine.observe_telemetry(d.id, t, [("rain_24h_mm", 150.0)])
            elif d.kind == "lighting":
                engine.observe_telemetry(d.id, t, [("dim_level_pct", 100.0), ("power_w", 0.0)])
            elif d.kind == "cabinet":
                volts = [(f"voltage_l{p}_v", 180.0 if minute < 30 else 250.0) for p in (1, 2, 3)]
                engine.observe_telemetry(d.id, t, volts)
            elif d.kind == "traffic":
                engine.observe_telemetry(d.id, t, [("speed_kmh", 2.0)])
        engine.advance(t)
    t = t0 + 45 * MIN
    for d in site.devices:
        if d.kind == "cabinet":
            engine.observe_event(d.id, "power_loss", t)
        elif d.kind == "traffic":
            engine.observe_event(d.id, "accident", t)
            engine.observe_event(d.id, "flooded_road", t)
    for ward in site.wards_by_id:
        for category in ("chieu-sang", "ngap-nuoc", "rac-thai"):
            for k in range(3):
                labels = {"ward": ward, "category": category}
                engine.observe_event(None, "report", t + k * MIN, labels)
    engine.advance(t + 5 * MIN)
    engine.advance(t + 3 * 3600)  # nothing heard for hours: the absence rules fire
    return engine.drain()


def test_every_alert_text_of_the_site_names_things_and_writes_vietnamese_numbers(
    site: Site, routing: Routing
) -> None:
    names = Names(site, routing.categories)
    engine = Engine(load_rules(DEFAULT_PACK), site.devices, names=names.in_sentence)
    transitions = drive_every_device(site, engine)
    fired = {tr.rule for tr in transitions if tr.to == "firing"}
    # the drive reached every kind of rule the pack has, groups included
    for rule in ("flood-bd3", "rain-very-heavy", "lamp-failure",
                 "lamps-failing-on-cabinet", "cabinet-power-loss", "supply-undervoltage-l1",
                 "traffic-severe-congestion", "traffic-accident", "reports-cluster",
                 "flood-gauge-silent", "device-silent"):  # fmt: skip
        assert rule in fired, rule
    ids = site_ids(site, routing)
    for tr in transitions:
        for key, text in tr.annotations.items():
            assert_reads_well(text, "vi" if key.endswith("_vi") else "en", ids)
    # groups name their members: the ward and category of a cluster, a cabinet by its name
    clusters = [tr for tr in transitions if tr.rule == "reports-cluster" and tr.to == "firing"]
    assert len(clusters) == 3 * len(site.wards_by_id)
    for tr in clusters:
        ward = site.ward(tr.labels["ward"])
        assert in_sentence(ward.name) in tr.annotations["summary_vi"]
        assert ward.name in tr.annotations["summary_en"]
        category = routing.category(tr.labels["category"])
        assert category.name_en in tr.annotations["summary_en"]
    cabinets = [tr for tr in transitions if tr.rule == "lamps-failing-on-cabinet"]
    assert cabinets
    for tr in cabinets:
        assert tr.annotations["summary_vi"].startswith(site.device(tr.labels["cabinet"]).name)
    bd3 = next(tr for tr in transitions if tr.rule == "flood-bd3")
    assert re.search(r"\d,\d\d m", bd3.annotations["summary_vi"])  # 0,85 m
    assert re.search(r"\d\.\d\d m", bd3.annotations["summary_en"])  # 0.85 m
    jam = next(tr for tr in transitions if tr.rule == "traffic-severe-congestion")
    assert re.search(r"\d %", jam.annotations["summary_vi"])  # "5 %", a space before the sign


def test_incident_titles_name_the_category_and_the_ward(site: Site, routing: Routing) -> None:
    ctx = Context(routing, site, Settings())
    ids = site_ids(site, routing)
    for category in routing.categories:
        for ward in site.wards_by_id.values():
            title = report_title(ctx, category.code, ward.id)
            assert_reads_well(title, "vi", ids)
            assert category.name_vi in title and ward.name in title


def test_the_formatter_writes_numbers_and_times_the_vietnamese_way() -> None:
    assert number(0.85, 2) == "0,85" and number(0.85, 2, "en") == "0.85"
    assert number(1234.5, 1) == "1.234,5" and number(1234.5, 1, "en") == "1,234.5"
    assert percent(0.953) == "95 %"
    assert localise_numbers("0.82 m vượt 0.75 m, đèn 01-002 lúc 18:05", "vi") == (
        "0,82 m vượt 0,75 m, đèn 01-002 lúc 18:05"
    )
    t = datetime(2026, 10, 27, 11, 5, tzinfo=UTC)
    assert when(t) == "18:05 27/10/2026" and when(t, "en") == "27/10/2026 18:05"
    assert in_sentence("Phường Vị Tân") == "phường Vị Tân"
    assert (
        in_sentence("Xã Hỏa Lựu") == "xã Hỏa Lựu"
        and in_sentence("Trạm Vị Thanh") == "Trạm Vị Thanh"
    )


# Names public text must no longer use: the two former cities (now areas of thành phố Cần Thơ)
# and the disaster committee that became the civil-defence command (Decree 200/2025/NĐ-CP).
ABOLISHED = ("thành phố Vị Thanh", "thành phố Ngã Bảy", "Vị Thanh City", "Ngã Bảy City",
             "Phòng, chống thiên tai", "disaster-prevention committee")  # fmt: skip


def test_every_public_warning_of_the_site_names_places_and_writes_vietnamese_numbers(
    site: Site, routing: Routing
) -> None:
    """CAP's side: every firing alert of a public domain the rule pack raises for the site's
    devices becomes a CAP message the way ``POST /api/v1/alerts/{id}/cap`` builds one (its facts
    and area functions), over the ward outline and over a 2.5 km circle. The text people read
    (event, sender, headline, description, instruction, area) names places and devices, never
    ids; Vietnamese writes decimal commas; a gauge's area is its current unit in thành phố Cần
    Thơ, never the abolished "thành phố Vị Thanh", and the flood instruction names the
    civil-defence command (Decree 200/2025/NĐ-CP), not the former disaster committee."""
    import xml.etree.ElementTree as ET

    from ioc.api.cap import IssueIn, _area, _facts
    from ioc.cap import message as cap

    names = Names(site, routing.categories)
    engine = Engine(load_rules(DEFAULT_PACK), site.devices, names=names.in_sentence)
    public = [
        tr
        for tr in drive_every_device(site, engine)
        if tr.to == "firing" and cap.is_public_domain(tr.labels.get("domain"))
    ]
    ids = site_ids(site, routing)
    ns = {"c": cap.CAP_NS}
    human = ("event", "senderName", "headline", "description", "instruction", "area/c:areaDesc")
    sender = site.cap_sender
    assert sender is not None
    domains, gauges = set(), 0
    for n, tr in enumerate(public):
        d = site.device(tr.device_id) if tr.device_id else None
        device = None
        if d is not None:
            device = {"id": d.id, "city": d.city, "ward": d.ward, "name": d.name, "lat": d.lat,
                      "lon": d.lon, "attributes": dict(d.attributes)}  # fmt: skip
        alert = {"id": n + 1, "rule": tr.rule, "labels": dict(tr.labels),
                 "annotations": dict(tr.annotations), "severity": tr.severity, "state": "firing",
                 "started_at": datetime.fromtimestamp(tr.started_at or tr.at, UTC),
                 "active_at": datetime.fromtimestamp(tr.active_at, UTC), "value": tr.value,
                 "risk_level": tr.risk_level}  # fmt: skip
        level = tr.value if tr.labels.get("kind") == "flood" else None
        facts = _facts(alert, device, level, None)
        has_ward = bool(tr.labels.get("ward") or (d is not None and d.ward))
        shapes = ["ward"] * has_ward + ["circle"] * (device is not None)
        for shape in shapes:
            body = IssueIn(msg_type="Alert", area=shape, radius_km=2.5)  # type: ignore[arg-type]
            area = _area(site, body, dict(tr.labels), device)
            xml = cap.build_message(
                facts, msg_type="Alert", identifier=cap.identifier_for(n + 1, 1),
                sent=datetime(2026, 11, 24, 23, 0, tzinfo=VN), area=area,
                sender=sender,
            ).xml  # fmt: skip
            infos = ET.fromstring(xml).findall("c:info", ns)
            assert [i.findtext("c:language", namespaces=ns) for i in infos] == ["vi-VN", "en-US"]
            for info, lang in zip(infos, ("vi", "en"), strict=True):
                for tag in human:
                    text = info.findtext(f"c:{tag}", namespaces=ns)
                    assert text, (tr.rule, tag)
                    assert_reads_well(text, lang, ids)
                    for abolished in ABOLISHED:
                        assert abolished.casefold() not in text.casefold(), (tr.rule, text)
            vi_area = infos[0].findtext("c:area/c:areaDesc", namespaces=ns) or ""
            if shape == "circle":
                assert vi_area.startswith("Bán kính 2,5 km quanh "), vi_area
            if d is not None and d.kind == "flood" and shape == "ward" and d.ward:
                gauges += 1
                unit = site.ward(d.ward)  # a former ward id: the unit that absorbed it
                assert vi_area == f"{in_sentence(unit.name)}, thành phố Cần Thơ", vi_area
                if tr.rule == "flood-bd3":
                    instruction = infos[0].findtext("c:instruction", namespaces=ns) or ""
                    assert "Ban Chỉ huy Phòng thủ dân sự" in instruction
        domains.add(tr.labels["domain"])
    assert {"flood", "rain", "traffic", "lighting"} <= domains
    assert gauges >= len([d for d in site.devices if d.kind == "flood"])


def test_no_text_file_uses_a_word_the_glossary_retired() -> None:
    """docs/glossary.md, "Words no longer used": one term per concept, and no names of bodies
    and units abolished in 2025, in the files whose strings people read."""
    root = DATA.parents[1]
    glossary = (root / "docs" / "glossary.md").read_text(encoding="utf-8")
    section = glossary.split("## Words no longer used", 1)[1]
    retired = [
        line.split("|")[1].strip()
        for line in section.splitlines()
        if line.startswith("| ") and not line.startswith(("| not used", "|---"))
    ]
    assert "Tắt tiếng" in retired and "thành phố Vị Thanh" in retired
    ioc = root / "ioc"
    files = [*sorted((root / "dashboards" / "wall").glob("*.js")),
             root / "dashboards" / "wall" / "index.html",
             *sorted((ioc / "rules" / "packs").glob("*.yaml")),
             *sorted((ioc / "incidents").glob("*.py")), ioc / "cap" / "message.py",
             ioc / "kpi" / "report.py", DATA / "routing.yaml",
             ioc / "simulators" / "reports.yaml"]  # fmt: skip
    assert len([f for f in files if f.suffix == ".yaml"]) >= 4  # the packs were found
    for path in files:
        text = path.read_text(encoding="utf-8").casefold()
        for word in retired:
            assert word.casefold() not in text, f"{path.relative_to(root)} uses {word!r}"
