"""The programme's KPIs over ``incidents``: on-time rate, satisfaction, the IOC's forwarding
time and the agency's processing time, open and overdue counts — grouped by source (citizen report,
alert, operator), agency, category, ward and/or local period.

Definitions (docs/kpis.md repeats them with their sources; every figure below is computed so):

- An incident counts once: rows merged into another (``merged_into`` set) are left out.
- **source** — what opened it (``incidents.source``): ``report`` (a citizen's report, any
  channel), ``alert`` (a firing alert), ``operator`` (opened by hand). The programme's targets
  are about citizens' reports: the **headline** figures are over ``source = report``; the others
  are reported beside them (``by_source``).
- **finished** — status ``resolved`` or ``closed``; its *finish time* is ``resolved_at``, or
  ``closed_at`` when it was closed without a resolution time.
- **on-time rate** = ``on_time`` ÷ ``due``. A case with a deadline is *due* in the period in which
  it is settled: when it finished, if it finished by its deadline (on time); else when its
  deadline passed (late) — whether it finished later or is still open at the period's end
  (``late_open``: open overdue cases count as late at the period's end). So each case counts
  once over consecutive periods, and a case whose deadline has not passed yet is not counted.
  The deadline is the one standing (moved by paused clocks and by the one formal extension,
  ``extended`` counts those). Target ≥ 95 %.
- **satisfaction** = ratings ≥ 4 ÷ ratings, over incidents finished in the period that carry a
  citizen's rating (1–5). Target ≥ 80 %.
- **forwarding time** (the IOC's clock) = ``first_dispatched_at − opened_at`` over incidents
  first dispatched in the period; **processing time** (the agency's clock) = ``resolved_at −
  dispatched_at`` (the last dispatch, to the agency that resolved it) over incidents resolved in
  the period; **time to accept** = ``accepted_at − dispatched_at`` over incidents accepted in the
  period; **time to resolve** = ``resolved_at − opened_at`` over incidents resolved in the
  period. Median and 90th percentile (``percentile_cont``), in seconds.
- **opened** = incidents whose ``opened_at`` is in the period.
- **open** = incidents open at the period's *as-of* instant (its end, or ``now`` if the period
  has not ended): opened at or before it and not finished by then. **overdue** = those of them
  whose ``deadline_at`` is before the as-of instant.
- **Periods** are local calendar days, ISO weeks (Monday) or months in Asia/Ho_Chi_Minh, cut
  at local midnight (+07:00), clipped to ``[from, to)``.

Every value is a query parameter; the only SQL assembled from pieces are the group-by columns,
which come from the fixed table :data:`DIMENSIONS`.
"""

from __future__ import annotations

import asyncio
import hashlib
import logging
from collections.abc import Mapping, Sequence
from dataclasses import asdict, dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path
from types import TracebackType
from typing import Any, Final, Literal

import orjson
import psycopg
from psycopg.rows import dict_row
from psycopg.types.json import Jsonb
from psycopg_pool import AsyncConnectionPool

from ioc.core import yamlfile
from ioc.core.localtime import SITE_ZONE, iso_local
from ioc.core.packaged import SITE_DATA
from ioc.core.settings import DISPLAY_TIMEZONE
from ioc.core.site import Site
from ioc.core.workers import stop_task
from ioc.storage.feed import FeedEvent, append

log = logging.getLogger(__name__)

TARGETS_FILE: Final = SITE_DATA / "kpis.yaml"


def _load_targets(path: Path = TARGETS_FILE) -> dict[str, Any]:
    """The programme's targets as data, with their source (ioc/site_data/kpis.yaml)."""
    raw = yamlfile.read(path)
    targets = raw["targets"]
    for name in ("on_time", "satisfaction"):
        value = targets[name]["value"]
        if not isinstance(value, int | float) or not 0 < value <= 1:
            raise ValueError(f"{path.name}: targets.{name}.value must be a fraction in (0, 1]")
    if targets["satisfaction"].get("rating_satisfied_from", 4) not in (1, 2, 3, 4, 5):
        raise ValueError(f"{path.name}: targets.satisfaction.rating_satisfied_from: 1–5")
    return raw


_TARGETS: Final = _load_targets()
ON_TIME_TARGET: Final[float] = float(_TARGETS["targets"]["on_time"]["value"])
SATISFACTION_TARGET: Final[float] = float(_TARGETS["targets"]["satisfaction"]["value"])
SATISFIED_FROM: Final[int] = int(
    _TARGETS["targets"]["satisfaction"].get("rating_satisfied_from", 4)
)
HEADLINE_SOURCE: Final[str] = str(_TARGETS.get("applies_to", "report"))  # citizens' reports
TARGETS_SOURCE: Final[str] = str(_TARGETS.get("source", "")).strip()
SOURCES: Final = ("report", "alert", "operator")

Period = Literal["day", "week", "month"]
PERIODS: Final = ("day", "week", "month")
# group_by name → (SQL expression over `i`, output columns). Constant SQL, never user text.
DIMENSIONS: Final[Mapping[str, tuple[str, tuple[str, ...]]]] = {
    "source": ("i.source", ("source",)),
    # rows stored under a former ward or agency id (before the July 2025 merger) count with the
    # current one: the alias maps come from the site file (``Aliases``)
    "agency": ("coalesce(%(agency_aliases)s::jsonb ->> i.agency_id, i.agency_id)", ("agency",)),
    "category": ("i.category", ("category",)),
    "ward": ("i.city, coalesce(%(ward_aliases)s::jsonb ->> i.ward, i.ward)", ("city", "ward")),
}
GROUPS: Final = (*DIMENSIONS, "period")
MAX_BUCKETS: Final = 1000  # periods in one answer: a day grouping over ~3 years


@dataclass(frozen=True, slots=True)
class Aliases:
    """Former id → current id, for wards and agencies (``Site`` builds them: ``of_site``)."""

    ward: Mapping[str, str] = field(default_factory=dict)
    agency: Mapping[str, str] = field(default_factory=dict)

    @classmethod
    def of_site(cls, site: Site | None) -> Aliases:
        if site is None:
            return cls()
        return cls(
            ward={alias: w.id for alias, w in site.ward_aliases.items() if alias != w.id},
            agency={alias: a.id for alias, a in site.agency_aliases.items() if alias != a.id},
        )


class KpiError(ValueError):
    """A request the KPIs cannot answer; ``field`` names the parameter."""

    def __init__(self, field: str, message: str) -> None:
        self.field = field
        super().__init__(f"{field}: {message}")


@dataclass(frozen=True, slots=True)
class KpiRow:
    """The figures of one group (or of everything, when no group is asked for)."""

    period_start: datetime
    period_end: datetime
    as_of: datetime
    source: str | None
    agency: str | None
    category: str | None
    city: str | None
    ward: str | None
    opened: int
    finished: int
    due: int  # the on-time rate's denominator: on_time + late
    on_time: int
    late: int
    late_open: int  # of the late ones, still open at as_of
    extended: int  # of the due ones, those whose deadline was formally extended
    rated: int
    satisfied: int
    forwarded: int
    forward_median_s: float | None
    forward_p90_s: float | None
    accepted: int
    accept_median_s: float | None
    accept_p90_s: float | None
    processed: int
    process_median_s: float | None
    process_p90_s: float | None
    resolved: int
    resolve_median_s: float | None
    resolve_p90_s: float | None
    open: int
    overdue: int

    @property
    def on_time_rate(self) -> float | None:
        return self.on_time / self.due if self.due else None

    @property
    def satisfaction(self) -> float | None:
        return self.satisfied / self.rated if self.rated else None

    @property
    def on_time_met(self) -> bool | None:
        """Whether the ≥ 95 % target is met; None when nothing was due, and for a row that is
        not about citizens' reports alone (the target is theirs: alerts and mixed totals are
        shown beside it, never assessed against it)."""
        rate = self.on_time_rate
        if rate is None or self.source != HEADLINE_SOURCE:
            return None
        return rate >= ON_TIME_TARGET

    @property
    def satisfaction_met(self) -> bool | None:
        rate = self.satisfaction
        if rate is None or self.source != HEADLINE_SOURCE:
            return None
        return rate >= SATISFACTION_TARGET

    def as_json(self) -> dict[str, Any]:
        """JSON-ready: times RFC 3339 in +07:00, rates as fractions, targets met or not."""
        out: dict[str, Any] = {}
        for k, v in asdict(self).items():
            out[k] = iso_local(v) if isinstance(v, datetime) else v
        out.update(
            on_time_rate=self.on_time_rate,
            on_time_met=self.on_time_met,
            satisfaction=self.satisfaction,
            satisfaction_met=self.satisfaction_met,
        )
        return out


def local_midnight(day: datetime) -> datetime:
    """The start of ``day``'s local (Asia/Ho_Chi_Minh) calendar day, as an aware datetime."""
    local = day.astimezone(SITE_ZONE)
    return local.replace(hour=0, minute=0, second=0, microsecond=0)


def month_range(month: str) -> tuple[datetime, datetime]:
    """``"2026-11"`` → [2026-11-01 00:00+07:00, 2026-12-01 00:00+07:00)."""
    try:
        year, mon = (int(p) for p in month.split("-"))
        start = datetime(year, mon, 1, tzinfo=SITE_ZONE)
    except ValueError:
        raise KpiError("month", f"{month!r} is not a month like 2026-11") from None
    end = datetime(year + mon // 12, mon % 12 + 1, 1, tzinfo=SITE_ZONE)
    return start, end


def parse_group_by(value: str | Sequence[str] | None) -> tuple[str, ...]:
    """``"agency,period"`` → ("agency", "period"); each name once, each one of :data:`GROUPS`."""
    if value is None:
        return ()
    parts = value.split(",") if isinstance(value, str) else list(value)
    out: list[str] = []
    for p in (p.strip() for p in parts):
        if not p:
            continue
        if p not in GROUPS:
            raise KpiError("group_by", f"{p!r} is not one of {list(GROUPS)}")
        if p not in out:
            out.append(p)
    return tuple(out)


async def compute(
    conn: psycopg.AsyncConnection[Any],
    *,
    start: datetime,
    end: datetime,
    now: datetime,
    group_by: Sequence[str] = (),
    period: Period = "month",
    source: str | None = None,
    aliases: Aliases | None = None,
) -> list[KpiRow]:
    """The KPI rows for ``[start, end)``: one per group (ordered by period, then the groups),
    or one row for everything when ``group_by`` is empty. Groups with nothing in them are left
    out, except that the whole-range row always exists. ``source`` keeps only the incidents of
    that origin (``report`` for the programme's headline figures)."""
    if start.tzinfo is None or end.tzinfo is None or now.tzinfo is None:
        raise KpiError("from", "times need an offset (e.g. +07:00)")
    if end <= start:
        raise KpiError("to", "must be after from")
    if period not in PERIODS:
        raise KpiError("period", f"{period!r} is not one of {list(PERIODS)}")
    if source is not None and source not in SOURCES:
        raise KpiError("source", f"{source!r} is not one of {list(SOURCES)}")
    groups = parse_group_by(group_by)
    by_period = "period" in groups
    dims = [d for d in groups if d != "period"]
    if by_period and _bucket_estimate(start, end, period) > MAX_BUCKETS:
        raise KpiError("period", f"more than {MAX_BUCKETS} {period}s between from and to")

    dim_sql = [DIMENSIONS[d][0] for d in dims]
    dim_cols = [c for d in dims for c in DIMENSIONS[d][1]]
    select_dims = "".join(f", {e}" for e in dim_sql)
    group_dims = "".join(f", {e}" for e in dim_sql)
    # One bucket for the whole range, or one per local day/week/month clipped to the range.
    # Local buckets: truncate the local wall time, step in local wall time (so months and DST-
    # free +07:00 days are exact), and turn each boundary back into an instant.
    buckets = (
        """SELECT greatest(g AT TIME ZONE %(tz)s, %(start)s::timestamptz) AS b_start,
                  least((g + %(step)s::interval) AT TIME ZONE %(tz)s, %(end)s::timestamptz)
                      AS b_end
           FROM generate_series(date_trunc(%(unit)s, %(start)s::timestamptz AT TIME ZONE %(tz)s),
                                %(end)s::timestamptz AT TIME ZONE %(tz)s
                                    - interval '1 microsecond',
                                %(step)s::interval) AS g"""
        if by_period
        else "SELECT %(start)s::timestamptz AS b_start, %(end)s::timestamptz AS b_end"
    )
    sql = f"""
        WITH b AS ({buckets}),
        bk AS (SELECT b_start, b_end, least(b_end, %(now)s::timestamptz) AS as_of FROM b),
        i AS (
            SELECT *, CASE WHEN status IN ('resolved', 'closed')
                           THEN coalesce(resolved_at, closed_at) END AS finished_at
            FROM incidents
            WHERE merged_into IS NULL AND (%(source)s::text IS NULL OR source = %(source)s))
        SELECT bk.b_start, bk.b_end, bk.as_of{select_dims},
            count(*) FILTER (WHERE i.opened_at >= bk.b_start AND i.opened_at < bk.b_end)
                AS opened,
            count(*) FILTER (WHERE {_FINISHED_IN}) AS finished,
            count(*) FILTER (WHERE {_ON_TIME} OR {_LATE}) AS due,
            count(*) FILTER (WHERE {_ON_TIME}) AS on_time,
            count(*) FILTER (WHERE {_LATE}) AS late,
            count(*) FILTER (WHERE {_LATE} AND {_OPEN_AT}) AS late_open,
            count(*) FILTER (WHERE ({_ON_TIME} OR {_LATE}) AND i.extended_at IS NOT NULL)
                AS extended,
            count(*) FILTER (WHERE {_FINISHED_IN} AND i.rating IS NOT NULL) AS rated,
            count(*) FILTER (WHERE {_FINISHED_IN} AND i.rating >= %(satisfied_from)s)
                AS satisfied,
            {_clock("forward", _FORWARDED_IN, _FORWARD_S, "forwarded")},
            {_clock("accept", _ACCEPTED_IN, _ACCEPT_S, "accepted")},
            {_clock("process", _PROCESSED_IN, _PROCESS_S, "processed")},
            {_clock("resolve", _RESOLVED_IN, _RESOLVE_S, "resolved")},
            count(*) FILTER (WHERE {_OPEN_AT}) AS open,
            count(*) FILTER (WHERE {_OPEN_AT} AND i.deadline_at < bk.as_of) AS overdue
        FROM bk {"JOIN" if dims else "LEFT JOIN"} i
          -- only incidents that can count in the bucket: opened before its end and not
          -- finished (nor accepted, dispatched, due) before its start
          ON i.opened_at < bk.b_end
         AND (i.finished_at IS NULL OR i.finished_at >= bk.b_start OR i.accepted_at >= bk.b_start
              OR i.resolved_at >= bk.b_start OR i.first_dispatched_at >= bk.b_start
              OR i.deadline_at >= bk.b_start)
        GROUP BY bk.b_start, bk.b_end, bk.as_of{group_dims}
        ORDER BY bk.b_start{group_dims}
    """
    params = {
        "tz": DISPLAY_TIMEZONE,
        "start": start,
        "end": end,
        "now": now,
        "unit": period,
        "step": f"1 {period}",
        "source": source,
        "satisfied_from": SATISFIED_FROM,
        "ward_aliases": Jsonb(dict((aliases or Aliases()).ward)),
        "agency_aliases": Jsonb(dict((aliases or Aliases()).agency)),
    }
    async with conn.cursor(row_factory=dict_row) as cur:
        await cur.execute(sql, params)
        rows = await cur.fetchall()
    out = []
    for r in rows:
        keys: dict[str, Any] = {c: None for c in ("source", "agency", "category", "city", "ward")}
        values = [r[k] for k in r if k not in _FIGURES and k not in ("b_start", "b_end", "as_of")]
        keys.update(zip(dim_cols, values, strict=True))
        if source is not None:
            keys["source"] = source
        out.append(
            KpiRow(
                period_start=r["b_start"], period_end=r["b_end"], as_of=r["as_of"],
                **keys, **{k: r[k] for k in _FIGURES},
            )
        )  # fmt: skip
    return out


def _clock(name: str, where: str, seconds: str, count: str) -> str:
    """Count, median and p90 of one clock (constant SQL pieces only)."""
    return (
        f"count(*) FILTER (WHERE {where}) AS {count}, "
        f"percentile_cont(0.5) WITHIN GROUP (ORDER BY {seconds}) FILTER (WHERE {where}) "
        f"AS {name}_median_s, "
        f"percentile_cont(0.9) WITHIN GROUP (ORDER BY {seconds}) FILTER (WHERE {where}) "
        f"AS {name}_p90_s"
    )


_FIGURES: Final = (
    "opened", "finished", "due", "on_time", "late", "late_open", "extended", "rated",
    "satisfied", "forwarded", "forward_median_s", "forward_p90_s", "accepted", "accept_median_s",
    "accept_p90_s", "processed", "process_median_s", "process_p90_s", "resolved",
    "resolve_median_s", "resolve_p90_s", "open", "overdue",
)  # fmt: skip
_FINISHED_IN: Final = "i.finished_at >= bk.b_start AND i.finished_at < bk.b_end"
# settled in the bucket: finished in it by the deadline (on time), or the deadline passed in it
# (before the as-of instant) without the case finished by then (late)
_ON_TIME: Final = f"({_FINISHED_IN} AND i.finished_at <= i.deadline_at)"
_LATE: Final = (
    "(i.deadline_at >= bk.b_start AND i.deadline_at < bk.as_of"
    " AND (i.finished_at IS NULL OR i.finished_at > i.deadline_at))"
)
_FORWARDED_IN: Final = "i.first_dispatched_at >= bk.b_start AND i.first_dispatched_at < bk.b_end"
_ACCEPTED_IN: Final = (
    "i.accepted_at >= bk.b_start AND i.accepted_at < bk.b_end AND i.dispatched_at IS NOT NULL"
)
_PROCESSED_IN: Final = (
    "i.resolved_at >= bk.b_start AND i.resolved_at < bk.b_end AND i.dispatched_at IS NOT NULL"
    " AND i.dispatched_at <= i.resolved_at"
)
_RESOLVED_IN: Final = "i.resolved_at >= bk.b_start AND i.resolved_at < bk.b_end"
_FORWARD_S: Final = "extract(epoch FROM i.first_dispatched_at - i.opened_at)::float8"
_ACCEPT_S: Final = "extract(epoch FROM i.accepted_at - i.dispatched_at)::float8"
_PROCESS_S: Final = "extract(epoch FROM i.resolved_at - i.dispatched_at)::float8"
_RESOLVE_S: Final = "extract(epoch FROM i.resolved_at - i.opened_at)::float8"
_OPEN_AT: Final = "i.opened_at <= bk.as_of AND (i.finished_at IS NULL OR i.finished_at > bk.as_of)"


def _bucket_estimate(start: datetime, end: datetime, period: str) -> float:
    days = (end - start) / timedelta(days=1)
    return days / {"day": 1, "week": 7, "month": 28}[period] + 1


# -- the live feed -----------------------------------------------------------------------------


def current_month(now: datetime) -> tuple[datetime, datetime]:
    local = now.astimezone(SITE_ZONE)
    return month_range(f"{local.year}-{local.month:02d}")


async def kpi_snapshot(conn: psycopg.AsyncConnection[Any], now: datetime) -> dict[str, Any]:
    """The ``kpi`` frame's payload: this local month so far — the headline (citizens' reports),
    each source, everything, and per agency."""
    start, end = current_month(now)
    total = (await compute(conn, start=start, end=end, now=now))[0]
    headline = (await compute(conn, start=start, end=end, now=now, source=HEADLINE_SOURCE))[0]
    by_source = await compute(conn, start=start, end=end, now=now, group_by=("source",))
    by_agency = await compute(conn, start=start, end=end, now=now, group_by=("agency",))
    return {
        "period": "month",
        "from": start.isoformat(),
        "to": end.isoformat(),
        "as_of": iso_local(now),
        "targets": {"on_time": ON_TIME_TARGET, "satisfaction": SATISFACTION_TARGET},
        "headline": headline.as_json(),
        "by_source": [r.as_json() for r in by_source],
        "total": total.as_json(),
        "by_agency": [r.as_json() for r in by_agency],
    }


def _figures_digest(payload: Mapping[str, Any]) -> str:
    """What changed, ignoring the clock: the figures without ``as_of`` fields."""

    def strip(v: Any) -> Any:
        if isinstance(v, dict):
            return {k: strip(x) for k, x in v.items() if k != "as_of"}
        if isinstance(v, list):
            return [strip(x) for x in v]
        return v

    return hashlib.sha256(orjson.dumps(strip(payload), option=orjson.OPT_SORT_KEYS)).hexdigest()


async def publish_kpis(
    conn: psycopg.AsyncConnection[Any], now: datetime, *, unless_digest: str | None = None
) -> tuple[int | None, str]:
    """Append a ``kpi`` frame (this month's figures) to the live feed; returns (seq, digest).

    With ``unless_digest`` (the digest of the last frame published) nothing is appended when the
    figures are the same — only ``as_of`` would differ — and the seq is None.
    """
    async with conn.transaction():
        payload = await kpi_snapshot(conn, now)
        digest = _figures_digest(payload)
        if unless_digest is None:
            # a fresh process (restart, a second API process): compare with the last kpi frame
            # anyone published, so the wall screen is not sent the same figures again; and a
            # month with no incidents yet is no news (screens read the figures over REST first)
            unless_digest = await _last_published_digest(conn)
            if unless_digest is None and not payload["by_agency"]:
                return None, digest
        if digest == unless_digest:
            return None, digest
        seqs = await append(conn, [FeedEvent("kpi", payload)])
    return seqs[0], digest


async def _last_published_digest(conn: psycopg.AsyncConnection[Any]) -> str | None:
    async with conn.cursor() as cur:
        await cur.execute(
            "SELECT payload FROM feed_events WHERE type = 'kpi' ORDER BY seq DESC LIMIT 1"
        )
        row = await cur.fetchone()
    return None if row is None else _figures_digest(row[0])


class KpiPublisher:
    """Pushes the month's KPIs on the live feed every ``interval_s`` (default 60 s) when they
    changed. An async context manager owning one named task; leaving it cancels the task.

    ``async with KpiPublisher(settings, pool): ...`` — a failing round (database down) is logged
    and retried on the next tick; it never stops the service.
    """

    def __init__(
        self,
        settings: Any,
        pool: AsyncConnectionPool,
        *,
        interval_s: float = 60.0,
        clock: Any = None,
    ) -> None:
        self.settings = settings
        self.pool = pool
        self.interval_s = interval_s
        self._clock = clock or (lambda: datetime.now(UTC))
        self._digest: str | None = None
        self._task: asyncio.Task[None] | None = None
        self.published = 0  # frames appended (tests, metrics)

    async def __aenter__(self) -> KpiPublisher:
        self._task = asyncio.create_task(self._run(), name="kpi-publisher")
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        await stop_task(self._task)
        self._task = None

    async def publish_once(self) -> int | None:
        """One round: the seq of the frame appended, or None when nothing changed."""
        async with self.pool.connection() as conn:
            seq, self._digest = await publish_kpis(conn, self._clock(), unless_digest=self._digest)
        if seq is not None:
            self.published += 1
        return seq

    async def _run(self) -> None:
        while True:
            try:
                await self.publish_once()
            except Exception:
                log.warning("KPI publication failed; retrying in %.0f s", self.interval_s,
                            exc_info=True)  # fmt: skip
            await asyncio.sleep(self.interval_s)
