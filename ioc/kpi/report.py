"""The monthly KPI report the programme sends to the province: CSV rows and an HTML summary.

The HTML is one self-contained page — inline SVG bar charts, no script, no external file — in
Vietnamese with English secondary labels, times in Asia/Ho_Chi_Minh. Figures are those of
:mod:`ioc.kpi.figures` (definitions in docs/kpis.md), for one local calendar month: the
headline over
citizens' reports (what the programme's targets are about), the incidents alerts opened beside
them, and the breakdowns by agency, category and ward over citizens' reports.
"""

from __future__ import annotations

import csv
import io
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from datetime import datetime
from html import escape
from typing import Any, Final

import psycopg

from ioc.core.localtime import SITE_ZONE, iso_local
from ioc.core.wording import number
from ioc.kpi.figures import (
    HEADLINE_SOURCE,
    ON_TIME_TARGET,
    SATISFACTION_TARGET,
    Aliases,
    KpiRow,
    compute,
    month_range,
)


@dataclass(frozen=True, slots=True)
class Names:
    """Display names: agency id → (vi, en), category code → (vi, en), ward id → name."""

    agencies: Mapping[str, tuple[str, str]] = field(default_factory=dict)
    categories: Mapping[str, tuple[str, str]] = field(default_factory=dict)
    wards: Mapping[str, str] = field(default_factory=dict)


@dataclass(frozen=True, slots=True)
class MonthlyReport:
    month: str  # 2026-11
    start: datetime
    end: datetime
    now: datetime
    headline: KpiRow  # citizens' reports
    total: KpiRow  # every source
    by_source: tuple[KpiRow, ...]
    by_agency: tuple[KpiRow, ...]  # citizens' reports, as the breakdowns below
    by_category: tuple[KpiRow, ...]
    by_ward: tuple[KpiRow, ...]


async def monthly_report(
    conn: psycopg.AsyncConnection[Any], month: str, now: datetime, aliases: Aliases | None = None
) -> MonthlyReport:
    """The figures of a local month (``"2026-11"``) as of ``now``; rows stored under former
    ward or agency ids count with the current unit or agency (``aliases``)."""
    start, end = month_range(month)

    async def rows(*group: str, source: str | None = HEADLINE_SOURCE) -> tuple[KpiRow, ...]:
        return tuple(
            await compute(
                conn, start=start, end=end, now=now, group_by=group, source=source,
                aliases=aliases,
            )
        )  # fmt: skip

    (headline,) = await rows()
    (total,) = await rows(source=None)
    return MonthlyReport(
        month, start, end, now, headline, total, await rows("source", source=None),
        await rows("agency"), await rows("category"), await rows("ward"),
    )  # fmt: skip


# -- CSV ---------------------------------------------------------------------------------------

CSV_COLUMNS: Final = (
    "group", "key", "name", "source", "period_from", "period_to", "as_of", "opened", "finished",
    "due", "on_time", "late", "late_open", "extended", "on_time_rate_pct", "on_time_target_met",
    "rated", "satisfied", "satisfaction_pct", "satisfaction_target_met", "forwarded",
    "forward_median_h", "forward_p90_h", "accepted", "accept_median_h", "accept_p90_h",
    "processed", "process_median_h", "process_p90_h", "resolved", "resolve_median_h",
    "resolve_p90_h", "open", "overdue",
)  # fmt: skip
SOURCE_NAMES: Final = {
    "report": ("Phản ánh của người dân", "citizens' reports"),
    "alert": ("Sự cố từ cảnh báo", "opened by alerts"),
    "operator": ("Do trực ban mở", "opened by operators"),
}


def _pct(v: float | None) -> str:
    return "" if v is None else f"{v * 100:.1f}"


def _hours(seconds: float | None) -> str:
    return "" if seconds is None else f"{seconds / 3600:.2f}"


def _met(v: bool | None) -> str:
    return "" if v is None else ("yes" if v else "no")


def _local(t: datetime) -> str:
    return iso_local(t)


def _sections(report: MonthlyReport, names: Names) -> list[tuple[str, str, str, KpiRow]]:
    """(group, key, display name, row): the headline (citizens' reports), the total of every
    source, each source, then per agency, category and ward (citizens' reports)."""
    out = [
        (
            "headline",
            HEADLINE_SOURCE,
            "Phản ánh của người dân / Citizens' reports",
            report.headline,
        ),
        ("total", "", "Toàn bộ / All sources", report.total),
    ]
    out += [
        ("source", r.source or "", SOURCE_NAMES.get(r.source or "", (r.source or "—",))[0], r)
        for r in report.by_source
    ]
    out += [
        ("agency", r.agency or "", names.agencies.get(r.agency or "", (r.agency or "—",))[0], r)
        for r in report.by_agency
    ]
    out += [
        (
            "category",
            r.category or "",
            names.categories.get(r.category or "", (r.category or "—",))[0],
            r,
        )
        for r in report.by_category
    ]
    out += [
        ("ward", r.ward or "", names.wards.get(r.ward or "", r.ward or "—"), r)
        for r in report.by_ward
    ]
    return out


def to_csv(report: MonthlyReport, names: Names | None = None) -> str:
    """One line per group (the headline first); rates in %, durations in hours, times +07:00.
    ``source`` says which incidents a line counts (empty: every source); the targets are
    assessed on citizens' reports only."""
    buf = io.StringIO()
    w = csv.writer(buf, lineterminator="\n")
    w.writerow(CSV_COLUMNS)
    for group, key, name, r in _sections(report, names or Names()):
        w.writerow(
            (
                group, key, name, r.source or "", _local(r.period_start), _local(r.period_end),
                _local(r.as_of), r.opened, r.finished, r.due, r.on_time, r.late, r.late_open,
                r.extended, _pct(r.on_time_rate), _met(r.on_time_met), r.rated, r.satisfied,
                _pct(r.satisfaction), _met(r.satisfaction_met), r.forwarded,
                _hours(r.forward_median_s), _hours(r.forward_p90_s), r.accepted,
                _hours(r.accept_median_s), _hours(r.accept_p90_s), r.processed,
                _hours(r.process_median_s), _hours(r.process_p90_s), r.resolved,
                _hours(r.resolve_median_s), _hours(r.resolve_p90_s), r.open, r.overdue,
            )
        )  # fmt: skip
    return buf.getvalue()


# -- HTML --------------------------------------------------------------------------------------

_GOOD: Final = "#2e7d32"
_BAD: Final = "#c62828"
_NEUTRAL: Final = "#1565c0"
_SECOND: Final = "#90a4ae"


def _rate_text(v: float | None) -> str:
    return "—" if v is None else f"{number(v * 100, 1)} %"  # Vietnamese first: 95,3 %


def _met_text(v: bool | None) -> str:
    if v is None:
        return '<span class="na">chưa có số liệu <small>no data</small></span>'
    if v:
        return '<span class="ok">Đạt <small>met</small></span>'
    return '<span class="ko">Không đạt <small>not met</small></span>'


def _duration(seconds: float | None) -> str:
    if seconds is None:
        return "—"
    hours = seconds / 3600
    return f"{number(hours, 1)} giờ" if hours < 48 else f"{number(hours / 24, 1)} ngày"


def rate_chart(
    title_vi: str,
    title_en: str,
    items: Sequence[tuple[str, float | None]],
    target: float,
) -> str:
    """Horizontal bars of a rate per item (0–100 %) with the target as a dashed line; bars that
    meet it are green, others red, items without data grey and labelled as such."""
    label_w, bar_w, row_h, top = 260, 380, 26, 44
    height = top + row_h * max(len(items), 1) + 24
    width = label_w + bar_w + 70
    tx = label_w + bar_w * target
    parts = [
        f'<svg xmlns="http://www.w3.org/2000/svg" width="{width}" height="{height}" '
        f'viewBox="0 0 {width} {height}" role="img" aria-label="{escape(title_en)}">',
        f'<text x="0" y="16" class="t">{escape(title_vi)}</text>',
        f'<text x="0" y="32" class="s">{escape(title_en)}</text>',
    ]
    for n, (label, value) in enumerate(items):
        y = top + n * row_h
        parts.append(
            f'<text x="{label_w - 8}" y="{y + 16}" text-anchor="end">{escape(label)}</text>'
        )
        if value is None:
            parts.append(
                f'<text x="{label_w + 4}" y="{y + 16}" class="s">'
                "— không có số liệu / no data</text>"
            )
            continue
        colour = _GOOD if value >= target else _BAD
        parts.append(
            f'<rect x="{label_w}" y="{y + 4}" width="{bar_w * min(value, 1.0):.1f}" height="16" '
            f'fill="{colour}"><title>{escape(label)}: {_rate_text(value)}</title></rect>'
        )
        parts.append(
            f'<text x="{label_w + bar_w * min(value, 1.0) + 4:.1f}" y="{y + 16}">'
            f"{_rate_text(value)}</text>"
        )
    bottom = top + row_h * max(len(items), 1)
    parts.append(
        f'<line x1="{tx:.1f}" y1="{top - 4}" x2="{tx:.1f}" y2="{bottom}" stroke="#000" '
        f'stroke-dasharray="4 3" class="target"/>'
    )
    parts.append(
        f'<text x="{tx:.1f}" y="{bottom + 16}" text-anchor="middle" class="s">'
        f"mục tiêu / target {target * 100:.0f} %</text>"
    )
    parts.append("</svg>")
    return "\n".join(parts)


def volume_chart(items: Sequence[tuple[str, int, int]]) -> str:
    """Opened and finished incidents per category, two bars per category."""
    label_w, bar_w, row_h, top = 260, 380, 40, 62
    height = top + row_h * max(len(items), 1) + 8
    width = label_w + bar_w + 70
    peak = max((max(o, f) for _, o, f in items), default=0) or 1
    parts = [
        f'<svg xmlns="http://www.w3.org/2000/svg" width="{width}" height="{height}" '
        f'viewBox="0 0 {width} {height}" role="img" aria-label="Volumes by category">',
        '<text x="0" y="16" class="t">Số vụ việc theo lĩnh vực</text>',
        '<text x="0" y="32" class="s">Volumes by category</text>',
        f'<rect x="0" y="42" width="10" height="10" fill="{_NEUTRAL}"/>'
        '<text x="14" y="51" class="s">tiếp nhận / opened</text>',
        f'<rect x="130" y="42" width="10" height="10" fill="{_SECOND}"/>'
        '<text x="144" y="51" class="s">hoàn thành / finished</text>',
    ]
    for n, (label, opened, finished) in enumerate(items):
        y = top + n * row_h
        parts.append(
            f'<text x="{label_w - 8}" y="{y + 20}" text-anchor="end">{escape(label)}</text>'
        )
        for k, (value, colour) in enumerate(((opened, _NEUTRAL), (finished, _SECOND))):
            w = bar_w * value / peak
            yy = y + 4 + k * 16
            parts.append(
                f'<rect x="{label_w}" y="{yy}" width="{w:.1f}" height="14" fill="{colour}">'
                f"<title>{escape(label)}: {value}</title></rect>"
                f'<text x="{label_w + w + 4:.1f}" y="{yy + 12}" class="s">{value}</text>'
            )
    parts.append("</svg>")
    return "\n".join(parts)


_CSS: Final = """
body { font-family: system-ui, "Segoe UI", Roboto, Arial, sans-serif; margin: 2em; color: #222; }
h1 { font-size: 1.5em; margin-bottom: 0.2em; } h1 small, h2 small, th small, td small,
.sub { color: #666; font-weight: normal; }
table { border-collapse: collapse; margin: 0.5em 0 1.5em; } td, th { border: 1px solid #ccc;
padding: 4px 8px; text-align: right; } td:first-child, th:first-child { text-align: left; }
.ok { color: #2e7d32; font-weight: bold; } .ko { color: #c62828; font-weight: bold; }
.na { color: #888; } svg { display: block; margin: 1em 0; } svg text { font-size: 12px; }
svg .t { font-size: 14px; font-weight: bold; } svg .s { fill: #666; }
"""

_COLUMNS_HTML: Final = (
    ("Tiếp nhận", "opened"), ("Hoàn thành", "finished"),
    ("Đúng hạn / đến hạn", "on time / due"), ("Tỷ lệ đúng hạn", "on-time rate"),
    ("Trễ hạn (còn mở)", "late (still open)"), ("Gia hạn", "extended"),
    ("Hài lòng", "satisfaction"),
    ("IOC chuyển xử lý (trung vị / p90)", "IOC forwarding, median / p90"),
    ("Đơn vị xử lý (trung vị / p90)", "agency processing, median / p90"),
    ("Tổng thời gian giải quyết (trung vị / p90)", "time to resolve, median / p90"),
    ("Đang mở", "open"), ("Quá hạn", "overdue"),
)  # fmt: skip


def _table(title_vi: str, title_en: str, rows: Sequence[tuple[str, KpiRow]]) -> str:
    head = "".join(f"<th>{vi}<br><small>{en}</small></th>" for vi, en in _COLUMNS_HTML)
    body = []
    for name, r in rows:
        cells = (
            r.opened, r.finished, f"{r.on_time} / {r.due}", _rate_text(r.on_time_rate),
            f"{r.late} ({r.late_open})", r.extended,
            f"{_rate_text(r.satisfaction)} ({r.satisfied}/{r.rated})",
            f"{_duration(r.forward_median_s)} / {_duration(r.forward_p90_s)}",
            f"{_duration(r.process_median_s)} / {_duration(r.process_p90_s)}",
            f"{_duration(r.resolve_median_s)} / {_duration(r.resolve_p90_s)}", r.open, r.overdue,
        )  # fmt: skip
        body.append(
            f"<tr><td>{escape(name)}</td>" + "".join(f"<td>{c}</td>" for c in cells) + "</tr>"
        )
    return (
        f"<h2>{title_vi} <small>{title_en}</small></h2>"
        f"<table><tr><th>Đơn vị <small>unit</small></th>{head}</tr>{''.join(body)}</table>"
    )


def to_html(report: MonthlyReport, names: Names | None = None) -> str:
    """The monthly summary page (Vietnamese, English secondary), charts as inline SVG."""
    names = names or Names()
    t = report.headline
    start = report.start.astimezone(SITE_ZONE)
    month_vi = f"tháng {start.month}/{start.year}"
    month_en = start.strftime("%B %Y")

    def agency(r: KpiRow) -> str:
        return names.agencies.get(r.agency or "", (r.agency or "(chưa giao / unassigned)",))[0]

    def category(r: KpiRow) -> str:
        return names.categories.get(r.category or "", (r.category or "—",))[0]

    def source(r: KpiRow) -> str:
        vi, en = SOURCE_NAMES.get(r.source or "", (r.source or "—", ""))
        return f"{vi} / {en}" if en else vi

    def ward(r: KpiRow) -> str:
        return names.wards.get(r.ward or "", r.ward or "(không rõ / unknown)")

    alerts = next((r for r in report.by_source if r.source == "alert"), None)
    beside = (
        f"{_rate_text(alerts.on_time_rate)} ({alerts.on_time}/{alerts.due}); "
        f"{_rate_text(alerts.satisfaction)} ({alerts.satisfied}/{alerts.rated})"
        if alerts is not None
        else "—"
    )
    summary = f"""
<p class="sub">Chỉ tiêu của chương trình tính trên phản ánh của người dân; sự cố do cảnh báo
thiết bị mở được báo cáo bên cạnh. <small>The programme's targets are over citizens' reports;
incidents opened by alerts are shown beside them.</small></p>
<table>
<tr><th>Chỉ tiêu <small>indicator</small></th><th>Kết quả <small>result</small></th>
<th>Mục tiêu <small>target</small></th><th>Đánh giá <small>assessment</small></th></tr>
<tr><td>Tỷ lệ giải quyết đúng hạn <small>on-time rate (on time / due)</small></td>
<td>{_rate_text(t.on_time_rate)} ({t.on_time}/{t.due})</td>
<td>≥ {ON_TIME_TARGET * 100:.0f} %</td><td>{_met_text(t.on_time_met)}</td></tr>
<tr><td>— trong đó trễ hạn, còn mở cuối kỳ <small>late, still open at the end</small></td>
<td>{t.late_open} / {t.late}</td><td></td><td></td></tr>
<tr><td>— đã gia hạn (một lần) <small>formally extended (once)</small></td>
<td>{t.extended} / {t.due}</td><td></td><td></td></tr>
<tr><td>Mức độ hài lòng <small>satisfaction (ratings ≥ 4 / ratings)</small></td>
<td>{_rate_text(t.satisfaction)} ({t.satisfied}/{t.rated})</td>
<td>≥ {SATISFACTION_TARGET * 100:.0f} %</td><td>{_met_text(t.satisfaction_met)}</td></tr>
<tr><td>Sự cố từ cảnh báo: đúng hạn; hài lòng <small>opened by alerts, beside</small></td>
<td>{beside}</td><td></td><td></td></tr>
<tr><td>Vụ việc tiếp nhận / hoàn thành <small>opened / finished</small></td>
<td>{t.opened} / {t.finished}</td><td></td><td></td></tr>
<tr><td>IOC chuyển xử lý, trung vị / p90 <small>IOC forwarding: received → dispatched</small></td>
<td>{_duration(t.forward_median_s)} / {_duration(t.forward_p90_s)} ({t.forwarded})</td>
<td></td><td></td></tr>
<tr><td>Đơn vị xử lý, trung vị / p90 <small>agency processing: dispatched → resolved</small></td>
<td>{_duration(t.process_median_s)} / {_duration(t.process_p90_s)} ({t.processed})</td>
<td></td><td></td></tr>
<tr><td>Thời gian tiếp nhận xử lý, trung vị / p90 <small>agency acceptance</small></td>
<td>{_duration(t.accept_median_s)} / {_duration(t.accept_p90_s)} ({t.accepted})</td>
<td></td><td></td></tr>
<tr><td>Tổng thời gian giải quyết, trung vị / p90 <small>time to resolve</small></td>
<td>{_duration(t.resolve_median_s)} / {_duration(t.resolve_p90_s)} ({t.resolved})</td>
<td></td><td></td></tr>
<tr><td>Đang mở / quá hạn <small>open / overdue, as of</small>
{_clock(t.as_of)}</td><td>{t.open} / {t.overdue}</td><td></td><td></td></tr>
</table>"""
    charts = [
        rate_chart(
            "Tỷ lệ giải quyết đúng hạn theo đơn vị (phản ánh của người dân)",
            "On-time rate by agency (citizens' reports)",
            [(agency(r), r.on_time_rate) for r in report.by_agency],
            ON_TIME_TARGET,
        ),
        rate_chart(
            "Mức độ hài lòng theo đơn vị (phản ánh của người dân)",
            "Satisfaction (ratings ≥ 4 of 5) by agency (citizens' reports)",
            [(agency(r), r.satisfaction) for r in report.by_agency],
            SATISFACTION_TARGET,
        ),
        volume_chart([(category(r), r.opened, r.finished) for r in report.by_category]),
    ]
    return f"""<!DOCTYPE html>
<html lang="vi"><head><meta charset="utf-8">
<title>Báo cáo KPI {month_vi} – IOC Vị Thanh – Ngã Bảy</title><style>{_CSS}</style></head>
<body>
<h1>Báo cáo kết quả xử lý phản ánh, sự cố {month_vi}
<small>Monthly KPI report, {month_en}</small></h1>
<p class="sub">Trung tâm Giám sát, điều hành đô thị thông minh (IOC) — Vị Thanh, Ngã Bảy.
Kỳ báo cáo / period: {_clock(report.start)} – {_clock(report.end)}.
Lập lúc / generated: {_clock(report.now)} (giờ Việt Nam, Asia/Ho_Chi_Minh).</p>
<h2>Tổng hợp <small>summary</small></h2>{summary}
{"".join(charts)}
{_table("Theo nguồn", "by source", [(source(r), r) for r in report.by_source])}
{
        _table(
            "Theo đơn vị xử lý — phản ánh của người dân",
            "by agency, citizens' reports",
            [(agency(r), r) for r in report.by_agency],
        )
    }
{
        _table(
            "Theo lĩnh vực — phản ánh của người dân",
            "by category, citizens' reports",
            [(category(r), r) for r in report.by_category],
        )
    }
{
        _table(
            "Theo phường, xã — phản ánh của người dân",
            "by ward, citizens' reports",
            [(ward(r), r) for r in report.by_ward],
        )
    }
<p class="sub">Định nghĩa / definitions: một vụ việc có hạn xử lý được tính (đến hạn) trong kỳ nó
hoàn thành nếu hoàn thành đúng hạn, nếu không thì trong kỳ hết hạn — trễ hạn, kể cả khi còn mở
cuối kỳ; đúng hạn = hoàn thành (resolved_at, hoặc closed_at) trước hoặc đúng hạn xử lý (hạn sau
gia hạn chính thức, mỗi vụ một lần); hài lòng = đánh giá ≥ 4/5 trên số vụ việc hoàn thành trong
kỳ được đánh giá; IOC chuyển xử lý = tiếp nhận → chuyển lần đầu; đơn vị xử lý = chuyển → giải
quyết (docs/kpis.md).</p>
</body></html>
"""


def _clock(t: datetime) -> str:
    return t.astimezone(SITE_ZONE).strftime("%d/%m/%Y %H:%M (%z)").replace("+0700", "+07:00")
