"""Which open alerts are muted, and why: silences, recurring maintenance windows, planned supply
outages, inhibition.

Alertmanager semantics: a suppressed alert still exists and keeps its state (it is stored and
listed, with ``suppressed_by`` saying why); what stops is the noise — the wall screen and
dispatch skip it. Inhibition: while an alert matching an inhibit rule's source matchers is
firing, alerts matching its target matchers that have the same values for the ``equal`` labels
are muted (a cabinet's power loss mutes its lamps; BĐ III mutes BĐ I/II of the same gauge). An
alert never inhibits itself. A planned outage (the power company's announced cut) is a silence
that names its source: while it runs, the alerts it selects (a cabinet's power loss) are muted
with the outage's reference as the reason — and still inhibit their lamps, since inhibition
looks at firing sources whether muted or not.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime, time, timedelta

from ioc.core.localtime import FIXED_OFFSET
from ioc.rules.language import InhibitRule
from ioc.rules.matchers import Matcher, all_match


@dataclass(frozen=True, slots=True)
class Silence:
    id: int
    matchers: tuple[Matcher, ...]
    starts_at: float
    ends_at: float

    def active(self, now: float) -> bool:
        return self.starts_at <= now < self.ends_at


@dataclass(frozen=True, slots=True)
class MaintenanceWindow:
    id: int
    name: str
    matchers: tuple[Matcher, ...]
    weekdays: frozenset[int]  # ISO, 1 = Monday
    start: time  # local (Asia/Ho_Chi_Minh)
    duration_s: float
    valid_from: float | None = None
    valid_to: float | None = None

    def active(self, now: float) -> bool:
        if self.valid_from is not None and now < self.valid_from:
            return False
        if self.valid_to is not None and now >= self.valid_to:
            return False
        local = datetime.fromtimestamp(now, FIXED_OFFSET)
        # a window may run past midnight (or span days): look at occurrences that began on
        # any of the days its duration can reach back over
        for back in range(int(self.duration_s // 86400) + 2):
            day = local.date() - timedelta(days=back)
            if day.isoweekday() not in self.weekdays:
                continue
            begin = datetime.combine(day, self.start, FIXED_OFFSET).timestamp()
            if begin <= now < begin + self.duration_s:
                return True
        return False


@dataclass(frozen=True, slots=True)
class PlannedOutage:
    """A supply cut announced by the power company (``reference`` is its notice number):
    alerts matching ``matchers`` are muted from ``starts_at`` to ``ends_at`` (epoch seconds)."""

    reference: str
    matchers: tuple[Matcher, ...]
    starts_at: float
    ends_at: float
    where: str = ""  # what it cuts, in words ("tủ nb-cab-03", "phường Vị Tân"), for the reason

    def active(self, now: float) -> bool:
        return self.starts_at <= now < self.ends_at


@dataclass(frozen=True, slots=True)
class AlertView:
    key: str  # fingerprint
    labels: Mapping[str, str]
    firing: bool


def suppressions(
    alerts: Sequence[AlertView],
    now: float,
    *,
    silences: Sequence[Silence] = (),
    windows: Sequence[MaintenanceWindow] = (),
    inhibit_rules: Sequence[InhibitRule] = (),
    outages: Sequence[PlannedOutage] = (),
) -> dict[str, dict[str, object] | None]:
    """Fingerprint → why it is muted (``{"silence": id}``, ``{"maintenance": id}``,
    ``{"planned_outage": reference, ...}``, ``{"inhibited_by": fingerprint}``) or None."""
    live_silences = [s for s in silences if s.active(now)]
    live_windows = [w for w in windows if w.active(now)]
    live_outages = [o for o in outages if o.active(now)]
    sources: list[tuple[InhibitRule, list[AlertView]]] = []
    for rule in inhibit_rules:
        srcs = [a for a in alerts if a.firing and all_match(rule.source, a.labels)]
        if srcs:
            sources.append((rule, srcs))
    out: dict[str, dict[str, object] | None] = {}
    for a in alerts:
        why: dict[str, object] | None = None
        for s in live_silences:
            if all_match(s.matchers, a.labels):
                why = {"silence": s.id}
                break
        if why is None:
            for w in live_windows:
                if all_match(w.matchers, a.labels):
                    why = {"maintenance": w.id, "name": w.name}
                    break
        if why is None:
            for o in live_outages:
                if all_match(o.matchers, a.labels):
                    why = {"planned_outage": o.reference, "where": o.where,
                           "starts_at": o.starts_at, "ends_at": o.ends_at}  # fmt: skip
                    break
        if why is None:
            why = _inhibited(a, sources)
        out[a.key] = why
    return out


def _inhibited(
    a: AlertView, sources: Sequence[tuple[InhibitRule, list[AlertView]]]
) -> dict[str, object] | None:
    for rule, srcs in sources:
        if not all_match(rule.target, a.labels):
            continue
        for src in srcs:
            if src.key == a.key:
                continue
            if all(src.labels.get(n, "") == a.labels.get(n, "") for n in rule.equal):
                return {"inhibited_by": src.key, "rule": src.labels.get("alertname", "")}
    return None
