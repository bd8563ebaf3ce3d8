"""The rule engine: readings, statuses, events and ``now`` in; alert transitions out.

Pure: no clock reads, no database, broker or web. The same object evaluates the live ingest
stream (per committed batch, then ``advance(wall clock)`` once a second), timeline tests (a driven
clock) and backtests (stored readings replayed, ``advance`` at reading times).

Semantics follow Prometheus/Alertmanager (docs/rules.md):
- a *series* is one potential alert: (rule, device) or (group rule, group labels). Its alert is
  keyed by its labels (the fingerprint), so duplicates merge by construction;
- inactive → pending when the condition becomes true; pending → firing once it has held for
  ``for`` (at exactly active_at + for: the value holds until a reading says otherwise); pending →
  cancelled if it turns false first; firing → resolved when false, after ``keep_firing_for`` if
  set; with a ``clear`` level, an active series stays active until the value crosses the clear
  level (hysteresis), so a tide hovering at a threshold does not flap;
- readings older than the last one a series evaluated are ignored for that series (they are
  stored; state machines only move forward in time).
"""

from __future__ import annotations

import bisect
import hashlib
import heapq
import itertools
import math
from collections import deque
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

import numpy as np

from ioc.core.devices import Device
from ioc.core.localtime import SITE_ZONE
from ioc.rules.language import METRIC_TYPES, TIDE_TYPES, Rule, RuleSet, compare
from ioc.rules.template import render
from ioc.rules.tide import HighWater, TideSource

INACTIVE, PENDING, FIRING = "inactive", "pending", "firing"
RISK_RAISED = "risk_raised"  # an open alert reached a higher risk level (no state change)
ADVISED = "advised"  # an open alert's advisory moved on (the advised low water has passed)
# An advisor adds annotations to the pending/firing alerts of rules labelled ``advisory: NAME``:
# (NAME, device, time) → annotations. It must be pure (a prediction from data, no clock or I/O);
# the rules service passes ioc.core.low_water's low-water advisor (docs/salinity.md).
Advisor = Callable[[str, Device, float], Mapping[str, str]]
# A window buffer never holds more than this many points (oldest dropped first): a device
# publishing far faster than its rule's window needs cannot grow memory without bound.
MAX_WINDOW_POINTS = 10_000
# A window's running sum is recomputed exactly (math.fsum) after this many updates, so adding
# and removing floats for a month cannot drift it across a threshold.
RESUM_EVERY = 4096
# forecast_peak: high waters are fetched for horizon + this much, then reused until needed
HIGH_WATER_LOOKAHEAD_S = 12 * 3600.0


@dataclass(frozen=True, slots=True)
class Transition:
    """One step of one alert: pending, firing, resolved, cancelled (pending that did not last);
    keep_firing (condition cleared, held by keep_firing_for) and refiring (true again meanwhile)
    are recorded in the alert's history but change nothing else; risk_raised: a reading lifted
    an open alert to a higher disaster risk level than it has carried; advised: an open alert's
    advisory changed (the low water it advised has passed: the next one). In both the value,
    annotations and risk level move, the state does not."""

    fingerprint: str
    rule: str
    to: str
    at: float
    labels: Mapping[str, str]
    annotations: Mapping[str, str]
    severity: str
    device_id: str | None
    value: float | None
    reason: Mapping[str, Any]
    active_at: float
    started_at: float | None
    keep_firing_since: float | None = None
    risk_level: int | None = None  # QĐ 18/2021/QĐ-TTg, from the rule's `risk` (None: none)


@dataclass(frozen=True, slots=True)
class OpenAlert:
    """An open alert as stored; ``Engine.restore`` resumes its series from it."""

    fingerprint: str
    rule: str
    state: str  # pending | firing
    active_at: float
    started_at: float | None
    keep_firing_since: float | None
    value: float | None
    labels: Mapping[str, str]


def fingerprint(labels: Mapping[str, str]) -> str:
    text = "\x1f".join(f"{k}\x1e{labels[k]}" for k in sorted(labels))
    return hashlib.blake2b(text.encode(), digest_size=8).hexdigest()


@dataclass(eq=False, slots=True)
class Series:
    rule: Rule
    labels: dict[str, str]
    fingerprint: str
    device: Device | None
    context: dict[str, Any]
    threshold: float | None = None
    clear: float | None = None
    divisor: float | None = None
    state: str = INACTIVE
    active_at: float = 0.0
    started_at: float | None = None
    keep_since: float | None = None
    value: float | None = None
    reason: dict[str, Any] = field(default_factory=dict)
    last_t: float = -math.inf
    window: deque[tuple[float, float]] | None = None
    wsum: float = 0.0  # running sum of the window's values (aggregate sum/mean)
    wupdates: int = 0
    reading: float | None = None  # the raw reading last evaluated (risk `on: reading`)
    risk: int | None = None  # the highest risk level this open alert has carried
    advice: Mapping[str, str] | None = None  # the advisory annotations it carries now
    high_waters: list[HighWater] = field(default_factory=list)  # forecast_peak cache
    high_waters_until: float = -math.inf
    # lifecycle timer (fire after `for`, resolve after keep_firing_for) and condition timer
    # (absence, event expiry, group window); each with a token so stale heap entries are skipped
    deadline: float | None = None
    token: int = 0
    cond_deadline: float | None = None
    cond_queued: float | None = None  # time of this series' one condition entry in the heap
    # anomaly: per local hour of day — count, mean, M2 (Welford)
    hist: np.ndarray | None = None
    members: dict[str, float] = field(default_factory=dict)  # group: fingerprint → started_at
    event_times: deque[float] | None = None  # group over events


# Display name of a label value, by (label, value, language): annotations are read by people,
# who read "Phường Ngã Bảy", not "phuong-nga-bay" (the caller knows the site; the engine does not).
LabelNames = Callable[[str, str, str], str]


def _no_names(label: str, value: str, lang: str) -> str:
    return value


class Engine:
    def __init__(
        self,
        ruleset: RuleSet,
        devices: Iterable[Device],
        tide: TideSource | None = None,
        advisor: Advisor | None = None,
        names: LabelNames | None = None,
    ) -> None:
        self._tide = tide  # predicted astronomical tide for residual/forecast rules, if any
        self._advisor = advisor
        self.names: LabelNames = names or _no_names
        self._devices: dict[str, Device] = {}
        self._transitions: list[Transition] = []
        self._heap: list[
            tuple[float, int, int, Series, float]
        ] = []  # (due, order, kind, series, token)
        self._counter = itertools.count()
        self._series: dict[tuple[str, str], Series] = {}  # (rule id, device id | group key)
        self._by_fp: dict[str, Series] = {}
        self._latest: dict[str, dict[str, float]] = {}
        self._now = -math.inf
        self.ignored_out_of_order = 0
        self._groups_by_source: dict[str, list[Rule]] = {}  # source rule id → group rules
        self.set_rules(ruleset)
        self.set_devices(devices)

    # -- configuration -----------------------------------------------------------------------

    def set_rules(self, ruleset: RuleSet) -> None:
        """Install a rule set. Series of unchanged rules keep their state; alerts of rules that
        were removed or changed resolve (reason ``rule changed``), then start afresh."""
        self._ruleset = ruleset
        self._rules: dict[str, Rule] = {r.id: r for r in ruleset.rules if r.enabled}
        # Tear down quietly: a source alert resolving here must not evaluate its groups through
        # the old rules (that would bring back a group series holding an old group rule);
        # memberships are rebuilt below from the series that remain.
        self._groups_by_source = {}
        for key, s in list(self._series.items()):
            new = self._rules.get(key[0])
            if new is None or new != s.rule:
                self._drop(key, s, {"rule": "changed or removed"})
            else:
                s.rule = new  # equal (file and line do not count): hold the rule now in force
        self._index()
        self._rebuild_groups()

    def set_devices(self, devices: Iterable[Device]) -> None:
        self._devices = {d.id: d for d in devices}
        # series of devices whose record changed are rebuilt lazily; absence series eagerly
        for key, s in list(self._series.items()):
            if s.device is not None and self._devices.get(key[1]) != s.device:
                self._drop(key, s, {"device": "changed or removed"})
        self._index()
        self._rebuild_groups()

    def _drop(self, key: tuple[str, str], s: Series, reason: dict[str, Any]) -> None:
        """Remove a series for good: its open alert ends, and its timers with it — an inactive
        series too (an armed absence timer would otherwise raise an alert of a rule or device
        no longer there; ``advance`` also skips heap entries of series that are gone)."""
        self._leave(s, max(self._now, s.last_t), reason)
        del self._series[key]
        if self._by_fp.get(s.fingerprint) is s:
            del self._by_fp[s.fingerprint]

    def _rebuild_groups(self) -> None:
        """Group memberships from the firing source alerts, after rules or devices changed: a
        new or changed group rule counts the alerts already firing, and a group whose members
        changed is evaluated again. Groups over events keep their events (not rebuildable)."""
        members: dict[Series, dict[str, float]] = {}
        sources: dict[Series, dict[str, str]] = {}
        latest: dict[Series, float] = {}
        for s in list(self._series.values()):
            if s.rule.type == "group" or s.state != FIRING:
                continue
            for rule in self._groups_by_source.get(s.rule.id, ()):
                g = self._group_series(rule, tuple((k, s.labels.get(k, "")) for k in rule.group_by))
                started = s.started_at if s.started_at is not None else s.active_at
                members.setdefault(g, {})[s.fingerprint] = started
                sources.setdefault(g, {})[s.fingerprint] = s.rule.id
                latest[g] = max(latest.get(g, -math.inf), s.last_t)
        for g in [g for g in self._series.values() if g.rule.type == "group"]:
            if g.rule.count_event or members.get(g, {}) == g.members:
                continue
            g.members = members.get(g, {})
            g.context["sources"] = sources.get(g, {})
            t = max(self._now, g.last_t, latest.get(g, -math.inf))
            if t > -math.inf:
                self._evaluate_group(g, t)

    def _index(self) -> None:
        self._telemetry_rules: dict[tuple[str, str], list[Rule]] = {}
        self._absence_rules: list[Rule] = []
        self._event_rules: dict[str, list[Rule]] = {}
        self._groups_by_source = {}
        self._event_groups: dict[str, list[Rule]] = {}
        for r in self._rules.values():
            sel = r.select
            if r.type in METRIC_TYPES:
                assert sel.kind is not None and sel.metric is not None
                self._telemetry_rules.setdefault((sel.kind, sel.metric), []).append(r)
            elif r.type == "absence":
                self._absence_rules.append(r)
            elif r.type == "event":
                assert sel.event is not None
                self._event_rules.setdefault(sel.event, []).append(r)
                if r.clear_event:
                    self._event_rules.setdefault(r.clear_event, []).append(r)
            elif r.type == "group":
                for src in (r.count_rule, *r.all_of):
                    if src:
                        self._groups_by_source.setdefault(src, []).append(r)
                if r.count_event:
                    self._event_groups.setdefault(r.count_event, []).append(r)
        self._device_series: dict[str, dict[str, list[Series]]] = {}
        self._absence_by_device: dict[str, list[Series]] = {}
        for rule in self._absence_rules:
            for d in self._devices.values():
                if _selected(rule, d):
                    s = self._series_for(rule, d)
                    if s is not None:
                        self._absence_by_device.setdefault(d.id, []).append(s)

    @property
    def devices(self) -> Mapping[str, Device]:
        return self._devices

    @property
    def rules(self) -> Mapping[str, Rule]:
        return self._rules

    @property
    def ruleset(self) -> RuleSet:
        return self._ruleset

    # -- series ------------------------------------------------------------------------------

    def _series_for(self, rule: Rule, device: Device) -> Series | None:
        key = (rule.id, device.id)
        s = self._series.get(key)
        if s is not None:
            return s
        ctx = _device_context(device)
        labels = {k: render(v, {"device": ctx}) for k, v in rule.labels.items()}
        labels.update(
            alertname=rule.id, device_id=device.id, kind=device.kind, city=device.city,
            ward=device.ward or "",
        )  # fmt: skip
        fp = fingerprint(labels)
        s = Series(rule, labels, fp, device, {"device": ctx, "labels": labels})
        if rule.condition is not None:
            s.threshold, s.clear = rule.condition.levels(device.attributes)
        if rule.divide_by is not None:
            s.divisor = rule.divide_by.resolve(device.attributes)
        if rule.type in ("rate", "aggregate", "residual_rate"):
            s.window = deque(maxlen=MAX_WINDOW_POINTS)
        if rule.type == "anomaly":
            s.hist = np.zeros((24, 3))
        if rule.type == "absence" and self._now > -math.inf:
            self._arm_absence(s, self._now)
        self._series[key] = s
        self._by_fp[fp] = s
        return s

    def _group_series(self, rule: Rule, group: tuple[tuple[str, str], ...]) -> Series:
        key = (rule.id, "\x1f".join(f"{k}={v}" for k, v in group))
        s = self._series.get(key)
        if s is not None and s.rule is not rule:
            # a group series of another version of this rule: it must not judge by old terms
            self._drop(key, s, {"rule": "changed or removed"})
            s = None
        if s is None:
            glabels = dict(group)
            ctx = {"labels": glabels, "group": glabels}
            labels = {k: render(v, ctx) for k, v in rule.labels.items()}
            labels.update(glabels)
            labels["alertname"] = rule.id
            s = Series(
                rule, labels, fingerprint(labels), None, {"group": glabels, "labels": labels}
            )
            if rule.count_event:
                s.event_times = deque(maxlen=MAX_WINDOW_POINTS)
            self._series[key] = s
            self._by_fp[s.fingerprint] = s
        return s

    def _device_rules(self, device: Device, metric: str) -> list[Series]:
        per_device = self._device_series.get(device.id)
        if per_device is None:
            per_device = self._device_series[device.id] = {}
        found = per_device.get(metric)
        if found is None:
            found = []
            for rule in self._telemetry_rules.get((device.kind, metric), ()):
                if _selected(rule, device):
                    s = self._series_for(rule, device)
                    if s is not None:
                        found.append(s)
            per_device[metric] = found
        return found

    # -- state restore -----------------------------------------------------------------------

    def restore(self, alerts: Iterable[OpenAlert]) -> list[OpenAlert]:
        """Resume open alerts after a restart: pending timers keep their deadline, firing alerts
        are not fired again. Returns the alerts that match no current series (their rule or
        device is gone, or the rule changed its labels) for the caller to resolve."""
        orphans: list[OpenAlert] = []
        groups: list[Series] = []
        for a in alerts:
            rule = self._rules.get(a.rule)
            s: Series | None = None
            if rule is not None and rule.type == "group":
                group = tuple((k, a.labels.get(k, "")) for k in rule.group_by)
                s = self._group_series(rule, group)
            elif rule is not None:
                device = self._devices.get(a.labels.get("device_id", ""))
                if device is not None and _selected(rule, device):
                    s = self._series_for(rule, device)
            if s is None or s.fingerprint != a.fingerprint or s.state != INACTIVE:
                orphans.append(a)
                continue
            self._resume(s, a)
            if s.state == FIRING and rule is not None and rule.type != "group":
                self._source_changed(s, FIRING, a.started_at or a.active_at, quiet=True)
            if s.rule.type == "group":
                groups.append(s)
        for g in groups:  # after every source is back, so their memberships are known
            self._recheck_restored_group(g)
        return orphans

    def _recheck_restored_group(self, g: Series) -> None:
        """Schedule a restored group's next evaluation, as a live engine would have it: a
        group over alerts is evaluated at its last known time from its restored members (that
        evaluation then times its window); the events a group over events counted are not
        stored, so it is evaluated once all of them have surely left its window."""
        t0 = max(g.last_t, g.started_at if g.started_at is not None else -math.inf)
        self._set_cond_timer(g, t0 + g.rule.window_s if g.rule.count_event else t0)

    def _resume(self, s: Series, a: OpenAlert) -> None:
        s.state = a.state
        s.active_at = a.active_at
        s.started_at = a.started_at
        s.keep_since = a.keep_firing_since
        s.value = a.value
        s.risk = self._risk_level(s)  # as stored with its value: a restart raises nothing
        # the stored advice is not known here: the first reading refreshes it (time has passed)
        s.advice = {} if s.labels.get("advisory") and self._advisor is not None else None
        s.last_t = max(a.active_at, a.keep_firing_since or -math.inf)
        if a.state == PENDING:
            self._schedule(s, a.active_at + s.rule.for_s)
        elif a.keep_firing_since is not None:
            self._schedule(s, a.keep_firing_since + s.rule.keep_firing_for_s)
        if s.rule.type == "event" and s.rule.resolve_after_s > 0:
            # the event expires resolve_after after the last one known (later repeats before
            # the restart are not stored; a repeat after it pushes the expiry on as usual)
            self._set_cond_timer(s, s.last_t + s.rule.resolve_after_s)

    def preload(self, device_id: str, metric: str, samples: Sequence[tuple[float, float]]) -> None:
        """Fill window buffers (rate, aggregate) from stored readings without evaluating."""
        device = self._devices.get(device_id)
        if device is None:
            return
        for s in self._device_rules(device, metric):
            if s.window is not None and s.rule.type != "residual_rate":
                horizon = samples[-1][0] - s.rule.window_s if samples else 0.0
                s.window.extend(p for p in samples if p[0] >= horizon)
                s.wsum = math.fsum(v for _, v in s.window)
            self._latest.setdefault(device_id, {})[metric] = samples[-1][1] if samples else 0.0

    def seed_history(
        self, device_id: str, metric: str, times: np.ndarray, values: np.ndarray
    ) -> None:
        """Anomaly rules: per-hour-of-day statistics from stored history (vectorised)."""
        device = self._devices.get(device_id)
        if device is None or len(times) == 0:
            return
        # the zone's offset at the newest sample for the whole history: vectorised, and right
        # for a zone without daylight saving such as the site's
        offset = _utc_offset_s(float(times.max()))
        hours = ((times.astype(np.int64) + offset) // 3600) % 24
        n = np.bincount(hours, minlength=24).astype(float)
        sums = np.bincount(hours, weights=values, minlength=24)
        mean = np.divide(sums, n, out=np.zeros(24), where=n > 0)
        m2 = np.bincount(hours, weights=(values - mean[hours]) ** 2, minlength=24)
        for s in self._device_rules(device, metric):
            # a residual baseline learns from the live stream: stored levels are not residuals
            if s.hist is not None and s.rule.baseline == "hour":
                s.hist[:, 0], s.hist[:, 1], s.hist[:, 2] = n, mean, m2

    def seen(self, device_id: str, t: float) -> None:
        """Tell absence rules when a device was last heard of (from storage, at start)."""
        for s in self._absence_by_device.get(device_id, ()):
            if s.state == INACTIVE and s.rule.status is None and t > s.last_t:
                s.last_t = t
                self._set_cond_timer(s, t + s.rule.after_s)

    # -- inputs ------------------------------------------------------------------------------

    def observe_telemetry(
        self, device_id: str, t: float, metrics: Iterable[tuple[str, float]]
    ) -> None:
        device = self._devices.get(device_id)
        if device is None:
            return
        latest = self._latest.setdefault(device_id, {})
        pairs = list(metrics)
        for name, value in pairs:
            latest[name] = value  # requirements see the whole message
        for name, value in pairs:
            for s in self._device_rules(device, name):
                self._evaluate(s, t, value)
        for s in self._absence_by_device.get(device_id, ()):
            wanted = s.rule.select.metric
            if s.rule.status is None and (wanted is None or any(m == wanted for m, _ in pairs)):
                self._heard(s, t)

    def observe_status(self, device_id: str, online: bool, t: float) -> None:
        device = self._devices.get(device_id)
        if device is None:
            return
        for s in self._absence_by_device.get(device_id, ()):
            rule = s.rule
            if rule.status == "offline":
                if t < s.last_t:
                    continue
                self._due(s, t)
                s.last_t = t
                if online:
                    self._set_cond_timer(s, None)
                    self._step(s, t, False, None, {"status": "online"})
                elif s.cond_deadline is None and (s.state == INACTIVE or s.keep_since is not None):
                    # offline again, and not already active for it: inactive, or firing only
                    # by keep_firing_for since it came online (it refires if this lasts)
                    self._set_cond_timer(s, t + rule.after_s)
            elif online and rule.select.metric is None:
                # a sign of life, yet no reading: it counts only for rules on any reading
                self._heard(s, t)

    def observe_event(
        self,
        device_id: str | None,
        event_type: str,
        t: float,
        labels: Mapping[str, str] | None = None,
    ) -> None:
        device = self._devices.get(device_id) if device_id else None
        if device is not None:
            for rule in self._event_rules.get(event_type, ()):
                if not _selected(rule, device):
                    continue
                s = self._series_for(rule, device)
                if s is None or t < s.last_t:
                    continue
                self._due(s, t)
                s.last_t = t
                if event_type == rule.select.event:
                    self._step(s, t, True, None, {"event": event_type})
                    if rule.resolve_after_s > 0:
                        self._set_cond_timer(s, t + rule.resolve_after_s)
                else:  # the clearing event
                    self._set_cond_timer(s, None)
                    self._step(s, t, False, None, {"event": event_type})
        for rule in self._event_groups.get(event_type, ()):
            source = dict(labels or {})
            if device is not None:
                source.update(
                    device_id=device.id, city=device.city, ward=device.ward or "", kind=device.kind
                )
            group = tuple((k, source.get(k, "")) for k in rule.group_by)
            g = self._group_series(rule, group)
            assert g.event_times is not None
            if t >= g.last_t:
                g.event_times.append(t)
            elif rule.window_s > 0 and t <= g.last_t - rule.window_s:
                continue  # older than the group's window: it counts no more
            else:
                # a late event (a report posted over Open311 committed after a newer relayed
                # one, a relay's backlog): counted in its place, the times stay in order
                _insert_in_order(g.event_times, t)
            self._evaluate_group(g, t)

    def advance(self, now: float) -> None:
        """Let time pass: fire pending alerts whose ``for`` elapsed, absences, expiries."""
        self._now = max(self._now, now)
        if not hasattr(self, "_armed"):
            self._armed = True
            for s in self._series.values():
                if s.rule.type == "absence" and s.cond_deadline is None and s.rule.status is None:
                    self._arm_absence(s, now)
        heap = self._heap
        while heap and heap[0][0] <= now:
            _, _, which, s, token = heapq.heappop(heap)
            if self._by_fp.get(s.fingerprint) is not s:
                continue  # its rule or device is gone
            if which == 0 and token == s.token and s.deadline is not None:
                self._lifecycle_timer(s)
            elif which == 1 and token == s.cond_queued:
                s.cond_queued = None
                if s.cond_deadline is None:
                    continue
                if s.cond_deadline > now:  # moved later meanwhile (a reading came): requeue
                    self._queue_condition(s, s.cond_deadline)
                else:
                    self._condition_timer(s)

    def drain(self) -> list[Transition]:
        out, self._transitions = self._transitions, []
        return out

    def open_series(self) -> list[Series]:
        return [s for s in self._series.values() if s.state != INACTIVE]

    def series_of(self, fp: str) -> Series | None:
        return self._by_fp.get(fp)

    def forget(self, fp: str) -> None:
        """An alert was resolved by hand: its series starts again from inactive (if the
        condition still holds, the next evaluation raises it anew)."""
        s = self._by_fp.get(fp)
        if s is None:
            return
        was, kept = s.state, s.keep_since
        s.state = INACTIVE
        s.keep_since = None
        s.started_at = None
        self._schedule(s, None)
        t = max(self._now, s.last_t)
        if t == -math.inf:
            return
        if was == FIRING and s.rule.type != "group":
            self._source_changed(s, "resolved", t)  # its groups no longer count it
        if s.rule.type == "absence" and s.cond_deadline is None:
            # its timer went off when it fired; a device still silent (or still offline: active
            # and not kept firing after coming back) alerts again after another ``after``
            if s.rule.status is None or (was != INACTIVE and kept is None):
                self._set_cond_timer(s, t + s.rule.after_s)

    # -- evaluation --------------------------------------------------------------------------

    def _evaluate(self, s: Series, t: float, raw: float) -> None:
        if t < s.last_t:
            self.ignored_out_of_order += 1
            return
        self._due(s, t)
        s.last_t = t
        rule = s.rule
        value: float | None = raw
        if rule.divide_by is not None:
            if not s.divisor:
                return
            value = raw / s.divisor
        value = value * rule.scale if value is not None else None
        s.reading = raw
        reason: dict[str, Any] = {"metric": rule.select.metric, "reading": raw, "time": t}
        if rule.type in TIDE_TYPES or (rule.type == "anomaly" and rule.baseline == "residual"):
            predicted = self._predicted(s, t)
            if predicted is None:
                return  # no prediction for this gauge: a tide rule never guesses
            value = raw - predicted
            reason["predicted_m"] = predicted
            reason["residual_m"] = value
        if rule.type == "forecast_peak":
            assert value is not None
            peak = self._next_peak(s, t)
            if peak is None:  # no high water within the horizon: nothing to warn of
                self._step(s, t, False, None, reason)
                return
            value = peak.level_m + value
            s.context["peak"] = _peak_context(peak)
            reason.update(peak_time=peak.time, peak_predicted_m=peak.level_m)
        if rule.type in ("rate", "aggregate", "residual_rate"):
            assert s.window is not None and value is not None
            self._window_add(s, t, value)
            w = s.window
            value = _window_value(rule, w, s.wsum)
            reason["window_s"] = rule.window_s
            reason["points"] = len(w)
            if value is None:
                return
        elif rule.type == "anomaly":
            assert value is not None
            value = self._anomaly(s, t, value, reason)
        if value is None:
            return
        reason["value"] = value
        active = self._condition(s, t, value, reason)
        self._step(s, t, active, value, reason)

    def _window_add(self, s: Series, t: float, value: float) -> None:
        """Append to a window, drop what left it, keep its running sum (bounded: the deque's
        maxlen, and O(1) per reading for sums over 12 h or 24 h of rain)."""
        w = s.window
        assert w is not None
        if len(w) == w.maxlen:
            s.wsum -= w[0][1]  # the deque drops it on append
        w.append((t, value))
        s.wsum += value
        horizon = t - s.rule.window_s
        while w and w[0][0] < horizon:
            s.wsum -= w.popleft()[1]
        s.wupdates += 1
        if s.wupdates >= RESUM_EVERY:
            s.wupdates = 0
            s.wsum = math.fsum(v for _, v in w)

    def _predicted(self, s: Series, t: float) -> float | None:
        if self._tide is None or s.device is None:
            return None
        return self._tide.level_m(s.device.id, t)

    def _next_peak(self, s: Series, t: float) -> HighWater | None:
        """The highest predicted high water in (t, t + horizon]; fetched ahead and cached."""
        assert self._tide is not None and s.device is not None
        end = t + s.rule.horizon_s
        if end > s.high_waters_until:
            until = end + HIGH_WATER_LOOKAHEAD_S
            s.high_waters = list(self._tide.high_waters(s.device.id, t, until))
            s.high_waters_until = until
        ahead = [hw for hw in s.high_waters if t < hw.time <= end]
        return max(ahead, key=lambda hw: hw.level_m) if ahead else None

    def _condition(self, s: Series, t: float, value: float, reason: dict[str, Any]) -> bool:
        rule = s.rule
        if rule.schedule is not None and s.device is not None:
            if not rule.schedule.active(t, s.device.lat, s.device.lon):
                reason["schedule"] = "outside"
                return False
        if rule.type == "anomaly":
            return bool(reason.get("anomalous"))
        cond = rule.condition
        assert cond is not None
        if s.threshold is None:
            return False
        limit = s.threshold
        if s.state != INACTIVE and s.clear is not None:
            limit = s.clear  # hysteresis: stay active until the clear level is crossed
        reason["threshold"] = s.threshold
        if s.clear is not None:
            reason["clear"] = s.clear
        if not cond.test(value, limit):
            return False
        if rule.requires and s.device is not None:
            latest = self._latest.get(s.device.id, {})
            for req in rule.requires:
                other = latest.get(req.metric)
                bound = req.threshold.resolve(s.device.attributes)
                if other is None or bound is None or not compare(req.op, other, bound):
                    return False
                reason[req.metric] = other
        return True

    def _anomaly(self, s: Series, t: float, raw: float, reason: dict[str, Any]) -> float:
        """z-score of the reading against its baseline: the same local hour of day, or (baseline
        residual) the tide residual over all hours — the semi-diurnal tide drifts ~50 min a day,
        so an hour-of-day baseline of a tidal level is as wide as the tide itself."""
        assert s.hist is not None
        if s.rule.baseline == "residual":
            hour = 0  # one bucket: the residual has no time of day
        else:
            hour = datetime.fromtimestamp(t, SITE_ZONE).hour  # the site's local hour
        n, mean, m2 = s.hist[hour]
        z = 0.0
        if n >= s.rule.min_samples:
            std = math.sqrt(m2 / (n - 1)) if n > 1 else 0.0
            # min_std: a spread below it is sensor noise, not a yardstick (a quiet residual of
            # 4 mm would make a 3 cm shower-driven rise a "6-sigma" event)
            std = max(std, 1e-9, abs(mean) * 0.01, s.rule.min_std)
            z = (raw - mean) / std
            reason.update(mean=float(mean), std=float(std), z=float(z))
            if s.rule.baseline == "hour":
                reason["hour"] = hour
            reason["anomalous"] = abs(z) > s.rule.z
        # Welford update of this hour's statistics (after judging the reading)
        n += 1
        delta = raw - mean
        mean += delta / n
        m2 += delta * (raw - mean)
        s.hist[hour] = (n, mean, m2)
        return float(z)

    def _heard(self, s: Series, t: float) -> None:
        if t < s.last_t:
            return
        self._due(s, t)
        s.last_t = t
        self._set_cond_timer(s, t + s.rule.after_s)
        if s.state != INACTIVE:
            self._step(s, t, False, None, {"heard_at": t})

    def _arm_absence(self, s: Series, now: float) -> None:
        base = s.last_t if s.last_t > -math.inf else now
        self._set_cond_timer(s, base + s.rule.after_s)

    # -- lifecycle ---------------------------------------------------------------------------

    def _due(self, s: Series, t: float) -> None:
        """Run this series' timers that fall at or before ``t``, in order, at their own time."""
        while True:
            d1 = s.deadline if s.deadline is not None and s.deadline <= t else None
            d2 = s.cond_deadline if s.cond_deadline is not None and s.cond_deadline <= t else None
            if d1 is None and d2 is None:
                return
            if d2 is None or (d1 is not None and d1 <= d2):
                self._lifecycle_timer(s)
            else:
                self._condition_timer(s)

    def _lifecycle_timer(self, s: Series) -> None:
        at = s.deadline
        assert at is not None
        self._schedule(s, None)
        s.last_t = max(s.last_t, at)  # a later reading older than this step must not undo it
        if s.state == PENDING:
            s.state = FIRING
            s.started_at = at
            reason = dict(s.reason, held_for_s=s.rule.for_s)
            self._emit(s, FIRING, at, reason)
        elif s.state == FIRING and s.keep_since is not None:
            reason = dict(s.reason, kept_firing_for_s=s.rule.keep_firing_for_s)
            self._resolve(s, at, reason)

    def _condition_timer(self, s: Series) -> None:
        at = s.cond_deadline
        assert at is not None
        self._set_cond_timer(s, None)
        rule = s.rule
        s.last_t = max(s.last_t, at)
        if rule.type == "absence":
            reason: dict[str, Any] = {"silent_for_s": rule.after_s}
            if rule.status == "offline":
                reason = {"offline_for_s": rule.after_s}
            self._step(s, at, True, None, reason)
        elif rule.type == "event":
            self._step(s, at, False, None, {"expired_after_s": rule.resolve_after_s})
        elif rule.type == "group":
            self._evaluate_group(s, at)

    def _step(
        self, s: Series, t: float, active: bool, value: float | None, reason: dict[str, Any]
    ) -> None:
        rule = s.rule
        if active:
            if s.state == INACTIVE:
                s.state = PENDING
                s.active_at = t
                s.started_at = None
                s.value = value
                s.reason = reason
                self._emit(s, PENDING, t, reason)
                if rule.for_s <= 0:
                    s.state = FIRING
                    s.started_at = t
                    self._emit(s, FIRING, t, reason)
                else:
                    self._schedule(s, t + rule.for_s)
            else:
                s.value = value
                if s.state == FIRING and s.keep_since is not None:
                    s.keep_since = None
                    self._schedule(s, None)
                    self._emit(s, "refiring", t, reason)
                if rule.risk is not None:
                    # A flood that goes on rising past BĐ III + 1 m, or rain from 150 to 250 mm
                    # in 24 h, is a higher risk level than when its alert opened: say so while
                    # it is open, not only at the next state change.
                    level = self._risk_level(s)
                    if level is not None and (s.risk is None or level > s.risk):
                        self._emit(s, RISK_RAISED, t, reason)
                if s.advice is not None and self._advice(s, t) != s.advice:
                    # "take water at 13:32" is no help at 14:00: the next low water
                    self._emit(s, ADVISED, t, reason)
        else:
            # No value (a forecast with no high water left in its horizon) keeps the last one:
            # the transition still says what the alert was about.
            if value is not None:
                s.value = value
            if s.state == PENDING:
                s.state = INACTIVE
                self._schedule(s, None)
                self._emit(s, "cancelled", t, reason)
            elif s.state == FIRING:
                if rule.keep_firing_for_s > 0:
                    if s.keep_since is None:
                        s.keep_since = t
                        self._schedule(s, t + rule.keep_firing_for_s)
                        self._emit(s, "keep_firing", t, reason)
                else:
                    self._resolve(s, t, reason)

    def _resolve(self, s: Series, t: float, reason: dict[str, Any]) -> None:
        s.state = INACTIVE
        s.keep_since = None
        self._schedule(s, None)
        self._emit(s, "resolved", t, reason)

    def _leave(self, s: Series, t: float, reason: dict[str, Any]) -> None:
        if s.state == PENDING:
            s.state = INACTIVE
            self._emit(s, "cancelled", t, reason)
        elif s.state == FIRING:
            self._resolve(s, t, reason)
        self._schedule(s, None)
        self._set_cond_timer(s, None)

    def _emit(self, s: Series, to: str, t: float, reason: Mapping[str, Any]) -> None:
        ctx = dict(s.context)
        ctx["value"] = s.value if s.value is not None else ""
        ctx["threshold"] = s.threshold if s.threshold is not None else ""
        ctx["clear"] = s.clear if s.clear is not None else ""
        ctx["metric"] = s.rule.select.metric or ""
        ctx["count"] = reason.get("count", "")
        window_s = s.rule.window_s or s.rule.after_s
        ctx.setdefault("peak", {})
        annotations = {}
        for key, text in s.rule.annotations.items():
            # summary_vi is Vietnamese: decimal comma, units in words, a group's members by name
            lang = key.rsplit("_", 1)[-1] if key.endswith(("_vi", "_en")) else None
            ctx["window"] = _human(window_s, lang)
            if s.device is None and "group" in ctx:
                ctx["group"] = {
                    k: self._label_name(k, v, lang or "vi") for k, v in s.context["group"].items()
                }
            annotations[key] = render(text, ctx, lang)
        risk_level = self._risk_level(s)
        if to in ("resolved", "cancelled"):
            s.risk = None
        elif risk_level is not None and (s.risk is None or risk_level > s.risk):
            s.risk = risk_level
        if to in ("resolved", "cancelled"):
            s.advice = None
        else:
            # every transition of an open alert rewrites its stored annotations: the advice
            # goes with each, as of its time
            advice = self._advice(s, t)
            if advice is not None:
                annotations.update(advice)
                s.advice = advice
        tr = Transition(
            fingerprint=s.fingerprint,
            rule=s.rule.id,
            to=to,
            at=t,
            labels=s.labels,
            annotations=annotations,
            severity=s.rule.severity,
            device_id=s.device.id if s.device else None,
            value=s.value,
            reason=reason,
            active_at=s.active_at,
            started_at=s.started_at,
            keep_firing_since=s.keep_since,
            risk_level=risk_level,
        )
        self._transitions.append(tr)
        if to in (FIRING, "resolved") and s.rule.type != "group":
            self._source_changed(s, to, t)

    def _advice(self, s: Series, t: float) -> Mapping[str, str] | None:
        advisory = s.labels.get("advisory")
        if not advisory or self._advisor is None or s.device is None:
            return None
        return dict(self._advisor(advisory, s.device, t))

    @staticmethod
    def _risk_level(s: Series) -> int | None:
        risk = s.rule.risk
        if risk is None:
            return None
        judged = s.reading if risk.on == "reading" else s.value
        return risk.level_for(judged, s.device.attributes if s.device is not None else {})

    def _label_name(self, label: str, value: str, lang: str) -> str:
        # a cabinet (or any device) the engine knows is named from its own record, which also
        # covers devices registered through the API after the site file was read
        device = self._devices.get(value) if label in ("cabinet", "device_id") else None
        return device.name if device is not None else self.names(label, value, lang)

    def _schedule(self, s: Series, deadline: float | None) -> None:
        s.token += 1
        s.deadline = deadline
        if deadline is not None:
            heapq.heappush(self._heap, (deadline, next(self._counter), 0, s, s.token))

    def _set_cond_timer(self, s: Series, deadline: float | None) -> None:
        """Condition timers move on every reading (absence: last seen + after). The heap keeps
        one entry per series, at or before its deadline, and requeues it when it comes due
        early — not one entry per reading, which would grow with the message rate."""
        s.cond_deadline = deadline
        if deadline is not None and (s.cond_queued is None or deadline < s.cond_queued):
            self._queue_condition(s, deadline)

    def _queue_condition(self, s: Series, at: float) -> None:
        s.cond_queued = at
        heapq.heappush(self._heap, (at, next(self._counter), 1, s, at))

    # -- groups ------------------------------------------------------------------------------

    def _source_changed(self, src: Series, to: str, t: float, *, quiet: bool = False) -> None:
        for rule in self._groups_by_source.get(src.rule.id, ()):
            group = tuple((k, src.labels.get(k, "")) for k in rule.group_by)
            g = self._group_series(rule, group)
            if to == FIRING:
                g.members[src.fingerprint] = t
            else:
                g.members.pop(src.fingerprint, None)
            g.context.setdefault("sources", {})[src.fingerprint] = src.rule.id
            if to != FIRING:
                g.context["sources"].pop(src.fingerprint, None)
            if not quiet:
                self._evaluate_group(g, t)

    def _evaluate_group(self, g: Series, t: float) -> None:
        # a source's reading may be older than the group's last step (sources are separate
        # series, each in order on its own): a group moves forward in time only
        t = max(t, g.last_t)
        self._due_group_only(g, t)
        g.last_t = t
        rule = g.rule
        reason: dict[str, Any] = {}
        next_check: float | None = None
        if rule.all_of:
            sources: dict[str, str] = g.context.get("sources", {})
            present = set(sources.values())
            active = all(r in present for r in rule.all_of)
            reason["firing"] = sorted(present)
        else:
            if rule.count_event:
                assert g.event_times is not None
                times: Iterable[float] = g.event_times
                while g.event_times and g.event_times[0] <= t - rule.window_s:
                    g.event_times.popleft()
            else:
                times = g.members.values()
            counted = sorted(x for x in times if rule.window_s <= 0 or x > t - rule.window_s)
            count = len(counted)
            active = count >= rule.min_count
            reason["count"] = count
            if rule.window_s > 0 and counted:
                next_check = counted[0] + rule.window_s
        if active:
            g.value = float(reason.get("count", 0))
        self._step(g, t, active, g.value, reason)
        self._set_cond_timer(g, next_check)

    def _due_group_only(self, g: Series, t: float) -> None:
        if g.deadline is not None and g.deadline <= t:
            self._lifecycle_timer(g)


def _insert_in_order(times: deque[float], t: float) -> None:
    """Insert ``t`` into the ascending ``times``; when the deque is full its oldest time goes."""
    if times.maxlen is not None and len(times) == times.maxlen:
        times.popleft()
    times.insert(bisect.bisect_right(times, t), t)


def _selected(rule: Rule, device: Device) -> bool:
    sel = rule.select
    return sel.matches(device.kind, device.city, device.ward, device.id, device.attributes)


def _device_context(device: Device) -> dict[str, Any]:
    ctx: dict[str, Any] = dict(device.attributes)
    ctx.update(
        id=device.id, name=device.name, kind=device.kind, city=device.city, ward=device.ward or ""
    )
    return ctx


def _peak_context(hw: HighWater) -> dict[str, Any]:
    """Template fields of a forecast peak: {peak.time} (HH:MM dd/MM, Asia/Ho_Chi_Minh) and
    {peak.level} (metres)."""
    local = datetime.fromtimestamp(hw.time, SITE_ZONE)
    return {"time": local.strftime("%H:%M %d/%m"), "level": hw.level_m}


def _utc_offset_s(t: float) -> int:
    offset = datetime.fromtimestamp(t, SITE_ZONE).utcoffset()
    return int(offset.total_seconds()) if offset is not None else 0


def _window_value(rule: Rule, w: deque[tuple[float, float]], total: float) -> float | None:
    if not w:
        return None
    if rule.type in ("rate", "residual_rate"):
        t0, v0 = w[0]
        t1, v1 = w[-1]
        # a rate needs at least half its window of data, or one early noisy pair decides it
        if t1 - t0 < rule.window_s / 2:
            return None
        return (v1 - v0) / ((t1 - t0) / 3600.0)
    fn = rule.function
    if fn == "count":
        return float(len(w))
    if fn == "mean":
        return total / len(w)
    if fn == "min":
        return min(v for _, v in w)
    if fn == "max":
        return max(v for _, v in w)
    return total


def _human(seconds: float, lang: str | None = None) -> str:
    vi = lang == "vi"
    if seconds <= 0:
        return ""
    if seconds % 3600 == 0:
        return f"{int(seconds // 3600)} {'giờ' if vi else 'h'}"
    if seconds % 60 == 0:
        return f"{int(seconds // 60)} {'phút' if vi else 'min'}"
    return f"{int(seconds)} {'giây' if vi else 's'}"
