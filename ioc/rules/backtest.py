"""Backtest: replay stored readings through the same engine and report the alerts it would raise.

Pure like the engine: the caller supplies the readings (one time-ordered array pair per device and
metric) and the device events. Everything runs through ``Engine`` exactly as live, with
``advance(t)`` at each reading time.

Speed: when every rule reading a metric is a plain threshold rule (no window, schedule,
requirement or anomaly state), no rule requires the metric and the rule set has no absence or
group rule, each series is first reduced with numpy to the readings where its class changes
(below clear / between / above threshold, for every such rule at once). That is exact for those
rules: a run of readings of one class moves the state machine no further than its first reading
does (a clear level on the wrong side of its threshold is clamped, ``Condition.levels``), and
``for`` timers run at their own deadlines, not at readings. The reported alert times are
identical; an alert's ``value`` is the value at its change point.
"""

from __future__ import annotations

from collections import Counter, defaultdict
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field
from datetime import datetime

import numpy as np

from ioc.core.devices import Device
from ioc.core.localtime import FIXED_OFFSET
from ioc.rules.engine import Engine, Transition
from ioc.rules.language import Rule, RuleSet
from ioc.rules.tide import TideSource


@dataclass(frozen=True, slots=True)
class Stream:
    device_id: str
    metric: str
    times: np.ndarray  # epoch seconds, ascending
    values: np.ndarray


@dataclass
class BacktestAlert:
    fingerprint: str
    rule: str
    severity: str
    labels: dict[str, str]
    device_id: str | None
    active_at: float
    started_at: float | None = None
    resolved_at: float | None = None
    value: float | None = None
    summary_vi: str = ""
    summary_en: str = ""


@dataclass
class BacktestResult:
    alerts: list[BacktestAlert] = field(default_factory=list)  # alerts that fired
    per_day: dict[str, dict[str, int]] = field(default_factory=dict)  # rule → local day → n
    readings: int = 0
    evaluated: int = 0  # after reduction
    transitions: int = 0
    pending_only: int = 0  # became pending, never fired


def compressible_metrics(ruleset: RuleSet) -> set[tuple[str, str]]:
    """(kind, metric) pairs whose every rule is a plain threshold rule (see module doc)."""
    rules = [r for r in ruleset.rules if r.enabled]
    if any(r.type in ("absence", "group") for r in rules):
        return set()
    by_metric: dict[tuple[str, str], list[Rule]] = defaultdict(list)
    for r in rules:
        if r.select.kind and r.select.metric:
            by_metric[(r.select.kind, r.select.metric)].append(r)
    # a metric another rule requires is read at every one of its readings (the latest value
    # when that rule evaluates), whatever its own rules' classes: never reduced
    required = {(r.select.kind, q.metric) for r in rules for q in r.requires}
    return {
        key
        for key, rs in by_metric.items()
        if key not in required
        and all(r.type == "threshold" and not r.requires and r.schedule is None for r in rs)
    }


def reduce_stream(
    times: np.ndarray, values: np.ndarray, limits: Sequence[tuple[str, float, float]]
) -> tuple[np.ndarray, np.ndarray]:
    """Keep the readings where the class (per rule: 0 clear, 1 between, 2 over) changes."""
    if len(times) == 0:
        return times, values
    code = np.zeros(len(values), dtype=np.int64)
    for op, threshold, clear in limits:
        if op in (">", ">="):
            over = values > threshold if op == ">" else values >= threshold
            held = values > clear if op == ">" else values >= clear
        else:
            over = values < threshold if op == "<" else values <= threshold
            held = values < clear if op == "<" else values <= clear
        cls = over.astype(np.int64) + held.astype(np.int64)  # 2 over, 1 between, 0 clear
        code = code * 3 + cls
    keep = np.empty(len(code), dtype=bool)
    keep[0] = True
    np.not_equal(code[1:], code[:-1], out=keep[1:])
    return times[keep], values[keep]


class StreamReducer:
    """Applies the exact reduction (module doc) to each series as it arrives, so a month of
    minute data never sits in memory whole; counts the readings it saw."""

    def __init__(self, ruleset: RuleSet, devices: Iterable[Device]) -> None:
        self.ruleset = ruleset
        self.devices = {d.id: d for d in devices}
        self.fast = compressible_metrics(ruleset)
        self.readings = 0

    def __call__(self, st: Stream) -> Stream:
        self.readings += len(st.times)
        dev = self.devices.get(st.device_id)
        if dev is None or (dev.kind, st.metric) not in self.fast:
            return st
        t, v = reduce_stream(st.times, st.values, _limits(self.ruleset, dev, st.metric))
        # copies: the reduced series must not keep the whole fetched buffer alive
        return Stream(st.device_id, st.metric, t.copy(), v.copy())


def replay(
    ruleset: RuleSet,
    devices: Iterable[Device],
    streams: Iterable[Stream],
    events: Sequence[tuple[float, str, str]] = (),
    *,
    start: float,
    end: float,
    progress: Callable[[int, int], None] | None = None,
    reducer: StreamReducer | None = None,
    tide: TideSource | None = None,
) -> BacktestResult:
    """``streams`` raw, or already passed through ``reducer`` (then give it here too, for the
    count of readings). ``tide``: the predicted tide for residual and forecast rules."""
    devs = list(devices)
    engine = Engine(ruleset, devs, tide=tide)
    by_id = {d.id: d for d in devs}
    result = BacktestResult()
    parts_t: list[np.ndarray] = []
    parts_s: list[np.ndarray] = []
    parts_v: list[np.ndarray] = []
    keys: list[tuple[str, str]] = []
    reduce = StreamReducer(ruleset, devs) if reducer is None else None
    for st in streams:
        if st.device_id not in by_id:
            continue
        if reduce is not None:
            st = reduce(st)
        t, v = st.times, st.values
        idx = len(keys)
        keys.append((st.device_id, st.metric))
        parts_t.append(t)
        parts_v.append(v)
        parts_s.append(np.full(len(t), idx, dtype=np.int32))
    result.readings = (reduce or reducer).readings  # type: ignore[union-attr]
    times = np.concatenate(parts_t) if parts_t else np.zeros(0)
    series = np.concatenate(parts_s) if parts_s else np.zeros(0, dtype=np.int32)
    values = np.concatenate(parts_v) if parts_v else np.zeros(0)
    order = np.argsort(times, kind="stable")
    times, series, values = times[order], series[order], values[order]
    result.evaluated = len(times)
    ev = sorted(events)
    collector = _Collector(result)
    engine.advance(start)
    n = len(times)
    tl, sl, vl = times.tolist(), series.tolist(), values.tolist()
    e_i = 0
    i = 0
    step = max(1, n // 100)
    next_report = step
    while i < n:
        t = tl[i]
        while e_i < len(ev) and ev[e_i][0] <= t:
            et, dev_id, etype = ev[e_i]
            engine.advance(et)
            engine.observe_event(dev_id, etype, et)
            e_i += 1
        engine.advance(t)
        device_id, metric = keys[sl[i]]
        metrics = [(metric, vl[i])]
        j = i + 1
        # one message: every metric of this device at this time (requirements see them all)
        while j < n and tl[j] == t and keys[sl[j]][0] == device_id:
            metrics.append((keys[sl[j]][1], vl[j]))
            j += 1
        engine.observe_telemetry(device_id, t, metrics)
        collector.take(engine.drain())
        i = j
        if progress is not None and i >= next_report:
            progress(i, n)
            next_report += step
    for et, dev_id, etype in ev[e_i:]:
        engine.advance(et)
        engine.observe_event(dev_id, etype, et)
    engine.advance(end)
    collector.take(engine.drain())
    if progress is not None:
        progress(n, n)
    result.alerts.sort(key=lambda a: (a.started_at or 0, a.rule))
    return result


def _limits(ruleset: RuleSet, device: Device, metric: str) -> list[tuple[str, float, float]]:
    out: list[tuple[str, float, float]] = []
    for r in ruleset.rules:
        if not r.enabled or r.select.metric != metric or r.condition is None:
            continue
        if not r.select.matches(
            device.kind, device.city, device.ward, device.id, device.attributes
        ):
            continue
        threshold, c = r.condition.levels(device.attributes)  # clamped as the engine does
        if threshold is None:
            continue
        clear = threshold if c is None else c
        divisor = 1.0
        if r.divide_by is not None:
            div = r.divide_by.resolve(device.attributes)
            if not div:
                continue
            divisor = div
        # thresholds compare against value / divisor * scale: move them to the raw scale
        factor = divisor / r.scale if r.scale else divisor
        op = r.condition.op
        if factor < 0:
            op = {">": "<", ">=": "<=", "<": ">", "<=": ">="}[op]
        out.append((op, threshold * factor, clear * factor))
    return out


class _Collector:
    def __init__(self, result: BacktestResult) -> None:
        self.result = result
        self.open: dict[str, BacktestAlert] = {}
        self.days: dict[str, Counter[str]] = defaultdict(Counter)

    def take(self, transitions: list[Transition]) -> None:
        for tr in transitions:
            self.result.transitions += 1
            if tr.to == "pending":
                self.open[tr.fingerprint] = BacktestAlert(
                    tr.fingerprint, tr.rule, tr.severity, dict(tr.labels), tr.device_id,
                    tr.active_at, value=tr.value,
                    summary_vi=tr.annotations.get("summary_vi", ""),
                    summary_en=tr.annotations.get("summary_en", ""),
                )  # fmt: skip
            elif tr.to == "firing":
                a = self.open.get(tr.fingerprint)
                if a is None:
                    continue
                a.started_at = tr.at
                self.result.alerts.append(a)
                day = datetime.fromtimestamp(tr.at, FIXED_OFFSET).date().isoformat()
                self.result.per_day.setdefault(tr.rule, {})
                per = self.result.per_day[tr.rule]
                per[day] = per.get(day, 0) + 1
            elif tr.to in ("resolved", "cancelled"):
                a = self.open.pop(tr.fingerprint, None)
                if a is None:
                    continue
                if a.started_at is None:
                    self.result.pending_only += 1
                else:
                    a.resolved_at = tr.at
