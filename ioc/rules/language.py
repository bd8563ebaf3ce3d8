"""The rule language: YAML files → validated ``Rule`` objects, or every problem with file and line.

A rule file holds ``rules:`` (a list) and optionally ``inhibit_rules:`` (Alertmanager's shape).
Nothing in a rule file is ever executed: thresholds are numbers or ``device.<attribute>`` with one
optional ``* + -`` constant, templates are ``{name}`` / ``{name:.2f}`` look-ups, matchers are
Alertmanager's ``name="v"`` / ``!=`` / ``=~`` / ``!~`` (regular expressions, full match).
See docs/rules.md for the reference and ``ioc/rules/packs/default.yaml`` for examples.
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from ioc.core import durations, yamlfile
from ioc.core.catalogue import EVENT_TYPES, KINDS, METRICS
from ioc.core.yamlfile import LineMap
from ioc.rules.matchers import Matcher, MatcherError, parse_matcher
from ioc.rules.schedule import Schedule, ScheduleError, parse_schedule
from ioc.rules.template import TemplateError, check_template

RULE_TYPES = (
    "threshold", "rate", "aggregate", "absence", "event", "group", "anomaly",
    "residual", "residual_rate", "forecast_peak",
)  # fmt: skip
# Rule types that read the predicted astronomical tide (ioc.rules.tide.TideSource) of the gauge.
TIDE_TYPES = ("residual", "residual_rate", "forecast_peak")
# Rule types evaluated on every reading of one metric (kind + metric selected).
METRIC_TYPES = ("threshold", "rate", "aggregate", "anomaly", *TIDE_TYPES)
CONDITION_TYPES = ("threshold", "rate", "aggregate", *TIDE_TYPES)
BASELINES = ("hour", "residual")  # anomaly: same local hour of day, or the tide residual
RISK_LEVELS = (1, 2, 3, 4, 5)  # QĐ 18/2021/QĐ-TTg Art. 4(3): at most five levels
SEVERITIES = ("info", "warning", "critical")
OPS = (">", ">=", "<", "<=")
AGGREGATES = ("mean", "min", "max", "sum", "count")
RULE_ID = re.compile(r"^[a-z0-9][a-z0-9-]{0,62}$")
LABEL_NAME = re.compile(r"^[a-zA-Z_][a-zA-Z0-9_]*$")
# Labels the engine sets itself on every device alert; a rule may not override them.
RESERVED_LABELS = frozenset({"alertname", "rule", "device_id", "kind", "city", "ward"})
_EXPR = re.compile(r"^\s*device\.([A-Za-z_][A-Za-z0-9_]*)\s*(?:([*+-])\s*(-?\d+(?:\.\d+)?)\s*)?$")


@dataclass(frozen=True, slots=True)
class Problem:
    file: str
    line: int
    message: str

    def __str__(self) -> str:
        return f"{self.file}:{self.line}: {self.message}"


class RuleErrors(ValueError):
    def __init__(self, problems: list[Problem]) -> None:
        super().__init__("\n".join(str(p) for p in problems))
        self.problems = problems


def compare(op: str, a: float, b: float) -> bool:
    """``a op b`` for the four operators of the language (OPS)."""
    if op == ">":
        return a > b
    if op == ">=":
        return a >= b
    if op == "<":
        return a < b
    return a <= b


@dataclass(frozen=True, slots=True)
class Expr:
    """A number, or a device attribute optionally scaled/offset by a constant."""

    constant: float | None = None
    attribute: str | None = None
    op: str | None = None
    operand: float = 0.0
    text: str = ""

    def resolve(self, attributes: Mapping[str, Any]) -> float | None:
        if self.attribute is None:
            return self.constant
        raw = attributes.get(self.attribute)
        if isinstance(raw, bool) or not isinstance(raw, int | float):
            return None
        v = float(raw)
        if self.op == "*":
            return v * self.operand
        if self.op == "+":
            return v + self.operand
        if self.op == "-":
            return v - self.operand
        return v


@dataclass(frozen=True, slots=True)
class Selector:
    kinds: frozenset[str] = frozenset()
    metric: str | None = None
    event: str | None = None
    cities: frozenset[str] = frozenset()
    wards: frozenset[str] = frozenset()
    devices: frozenset[str] = frozenset()
    attributes: tuple[tuple[str, frozenset[Any]], ...] = ()

    def matches(
        self, kind: str, city: str, ward: str | None, device_id: str, attrs: Mapping[str, Any]
    ) -> bool:
        if self.kinds and kind not in self.kinds:
            return False
        if self.cities and city not in self.cities:
            return False
        if self.wards and ward not in self.wards:
            return False
        if self.devices and device_id not in self.devices:
            return False
        return all(attrs.get(name) in allowed for name, allowed in self.attributes)

    @property
    def kind(self) -> str | None:
        """The one kind selected (metric rules select exactly one)."""
        return next(iter(self.kinds)) if len(self.kinds) == 1 else None


@dataclass(frozen=True, slots=True)
class Condition:
    op: str
    threshold: Expr
    clear: Expr | None = None  # hysteresis: once active, stays active until this is crossed

    def test(self, value: float, limit: float) -> bool:
        return compare(self.op, value, limit)

    def levels(self, attributes: Mapping[str, Any]) -> tuple[float | None, float | None]:
        """Threshold and clear level for one device. A clear level on the wrong side of the
        threshold (constants are refused at validation, device attributes can still do it)
        would end the alert on the reading after it starts, again and again: it is clamped to
        the threshold, i.e. no hysteresis. The engine and the backtest reduction both use it."""
        threshold = self.threshold.resolve(attributes)
        clear = self.clear.resolve(attributes) if self.clear is not None else None
        if threshold is not None and clear is not None:
            clear = min(clear, threshold) if ">" in self.op else max(clear, threshold)
        return threshold, clear


@dataclass(frozen=True, slots=True)
class Requirement:
    """Another metric of the same device that must hold too (latest value), e.g. dim > 0."""

    metric: str
    op: str
    threshold: Expr


@dataclass(frozen=True, slots=True)
class Risk:
    """The disaster risk level an alert carries (QĐ 18/2021/QĐ-TTg), as data of its rule: a
    fixed ``level``, or ``steps`` (level, lower bound) — the highest step the value reaches
    (``>=``; for a rule whose condition is ``<``/``<=``, ``<=`` its bound). ``on: reading``
    judges the raw reading (e.g. the water level of a residual rule) instead of the rule's value.
    ``source`` names the article; it is required, so every level in a pack has one."""

    source: str
    level: int | None = None
    level_of: Expr | None = None  # a device attribute holding the level (e.g. by its station)
    steps: tuple[tuple[int, Expr], ...] = ()
    on: str = "value"  # value | reading
    descending: bool = False  # the condition is < / <=: lower values mean higher risk

    def level_for(self, value: float | None, attributes: Mapping[str, Any]) -> int | None:
        if self.level is not None:
            return self.level
        if self.level_of is not None:
            raw = self.level_of.resolve(attributes)
            return int(raw) if raw is not None and raw == int(raw) and 1 <= raw <= 5 else None
        if value is None:
            return None
        best: int | None = None
        for level, bound in self.steps:
            b = bound.resolve(attributes)
            if b is None:
                continue
            if (value <= b) if self.descending else (value >= b):
                best = level if best is None else max(best, level)
        return best


@dataclass(frozen=True, slots=True)
class Rule:
    id: str
    type: str
    select: Selector
    labels: Mapping[str, str]
    annotations: Mapping[str, str]
    # where the rule was read: not part of what it means, so a rule that only moved in its
    # file (a rule inserted above it) is unchanged on reload and keeps its alerts
    file: str = field(compare=False)
    line: int = field(compare=False)
    condition: Condition | None = None
    for_s: float = 0.0
    keep_firing_for_s: float = 0.0
    schedule: Schedule | None = None
    divide_by: Expr | None = None  # derived ratio: value / expression (e.g. free-flow speed)
    scale: float = 1.0
    requires: tuple[Requirement, ...] = ()
    window_s: float = 0.0  # rate, aggregate, group (events)
    function: str | None = None  # aggregate
    after_s: float = 0.0  # absence
    status: str | None = None  # absence: "offline" — the device says it is offline
    resolve_after_s: float = 0.0  # event
    clear_event: str | None = None  # event
    group_by: tuple[str, ...] = ()  # group
    count_rule: str | None = None  # group: alerts of this rule
    count_event: str | None = None  # group: events of this type
    all_of: tuple[str, ...] = ()  # group: every one of these rules firing in the group
    min_count: int = 1  # group
    z: float = 0.0  # anomaly
    min_samples: int = 0  # anomaly: per hour of day before judging
    min_std: float = 0.0  # anomaly: floor of the spread, in the metric's unit
    baseline: str = "hour"  # anomaly: hour (same local hour of day) | residual (tide removed)
    horizon_s: float = 0.0  # forecast_peak: how far ahead to look for the next high water
    risk: Risk | None = None
    enabled: bool = True

    @property
    def severity(self) -> str:
        return self.labels["severity"]

    @property
    def device_rule(self) -> bool:
        return self.type != "group"


@dataclass(frozen=True, slots=True)
class InhibitRule:
    source: tuple[Matcher, ...]
    target: tuple[Matcher, ...]
    equal: tuple[str, ...]
    file: str
    line: int


@dataclass(frozen=True, slots=True)
class RuleSet:
    rules: tuple[Rule, ...] = ()
    inhibit_rules: tuple[InhibitRule, ...] = ()
    sources: tuple[str, ...] = field(default=())

    def by_id(self) -> dict[str, Rule]:
        return {r.id: r for r in self.rules}


def parse_duration(value: Any) -> float:
    """``90`` (seconds), ``"30s"``, ``"10m"``, ``"1h30m"``, ``"2d"`` → seconds
    (:mod:`ioc.core.durations`, the one grammar)."""
    return durations.parse_seconds(value)


def parse_expr(value: Any) -> Expr:
    if isinstance(value, bool):
        raise ValueError(f"{value!r} is not a number or device.<attribute>")
    if isinstance(value, int | float):
        return Expr(constant=float(value), text=str(value))
    if isinstance(value, str):
        m = _EXPR.match(value)
        if m:
            return Expr(
                attribute=m.group(1),
                op=m.group(2),
                operand=float(m.group(3)) if m.group(3) else 0.0,
                text=value.strip(),
            )
    raise ValueError(
        f"{value!r} is not a number or 'device.<attribute>' with an optional '* k', '+ k', '- k'"
    )


class _FileParser:
    def __init__(self, file: str) -> None:
        self.file = file
        self.problems: list[Problem] = []

    def problem(self, line: int, message: str) -> None:
        self.problems.append(Problem(self.file, line, message))

    def line_of(self, m: Any, key: str) -> int:
        return m.line_of(key) if isinstance(m, LineMap) else 0

    def parse(self, text: str) -> tuple[list[Rule], list[InhibitRule]]:
        try:
            doc = yamlfile.parse_with_lines(text, self.file)
        except yamlfile.DataFileError as exc:
            self.problem(yamlfile.syntax_line(exc), exc.message)
            return [], []
        if doc is None:
            return [], []
        if not isinstance(doc, LineMap):
            self.problem(1, "a rule file is a mapping with 'rules:' (and 'inhibit_rules:')")
            return [], []
        for key in doc:
            if key not in ("rules", "inhibit_rules"):
                self.problem(
                    self.line_of(doc, key), f"unknown top-level key {key!r} (rules, inhibit_rules)"
                )
        rules: list[Rule] = []
        raw_rules = doc.get("rules", [])
        if not isinstance(raw_rules, list):
            self.problem(self.line_of(doc, "rules"), "'rules' must be a list")
            raw_rules = []
        for item in raw_rules:
            rule = self.rule(item, self.line_of(doc, "rules"))
            if rule is not None:
                rules.append(rule)
        inhibits: list[InhibitRule] = []
        raw_inhibits = doc.get("inhibit_rules", [])
        if not isinstance(raw_inhibits, list):
            self.problem(self.line_of(doc, "inhibit_rules"), "'inhibit_rules' must be a list")
            raw_inhibits = []
        for item in raw_inhibits:
            inhibit = self.inhibit(item, self.line_of(doc, "inhibit_rules"))
            if inhibit is not None:
                inhibits.append(inhibit)
        return rules, inhibits

    # -- pieces ------------------------------------------------------------------------------

    def duration(self, m: LineMap, key: str, where: str) -> float:
        if key not in m:
            return 0.0
        try:
            return parse_duration(m[key])
        except ValueError as exc:
            self.problem(self.line_of(m, key), f"{where}: '{key}': {exc}")
            return 0.0

    def expr(self, m: LineMap, key: str, where: str) -> Expr | None:
        try:
            return parse_expr(m[key])
        except ValueError as exc:
            self.problem(self.line_of(m, key), f"{where}: '{key}': {exc}")
            return None

    def names(self, value: Any, line: int, where: str) -> frozenset[str]:
        items = value if isinstance(value, list) else [value]
        if not all(isinstance(v, str) for v in items):
            self.problem(line, f"{where}: expected a name or a list of names, got {value!r}")
            return frozenset()
        return frozenset(items)

    def selector(self, m: Any, line: int, where: str) -> Selector | None:
        if not isinstance(m, LineMap):
            self.problem(line, f"{where}: 'select' must be a mapping (kind, metric, city, ...)")
            return None
        known = ("kind", "metric", "event", "city", "ward", "devices", "attributes")
        for key in m:
            if key not in known:
                self.problem(self.line_of(m, key), f"{where}: unknown select key {key!r} {known}")
        kinds = self.names(m.get("kind", []), self.line_of(m, "kind"), where)
        for k in sorted(kinds - KINDS):
            self.problem(
                self.line_of(m, "kind"), f"{where}: kind {k!r} is not one of {sorted(KINDS)}"
            )
            return None
        kind = next(iter(kinds)) if len(kinds) == 1 else None
        metric = m.get("metric")
        if metric is not None:
            if kind is None:
                self.problem(self.line_of(m, "metric"), f"{where}: a metric needs one kind")
            elif kind is not None and kind in METRICS and metric not in METRICS[kind]:
                self.problem(
                    self.line_of(m, "metric"),
                    f"{where}: {kind} has no metric {metric!r} (one of {sorted(METRICS[kind])})",
                )
        event = m.get("event")
        if (
            event is not None
            and kind is not None
            and kind in EVENT_TYPES
            and event not in EVENT_TYPES[kind]
        ):
            self.problem(
                self.line_of(m, "event"),
                f"{where}: {kind} has no event {event!r} (one of {sorted(EVENT_TYPES[kind])})",
            )
        attrs: list[tuple[str, frozenset[Any]]] = []
        raw_attrs = m.get("attributes", {})
        if not isinstance(raw_attrs, dict):
            self.problem(self.line_of(m, "attributes"), f"{where}: attributes must be a mapping")
        else:
            for name, allowed in raw_attrs.items():
                values = allowed if isinstance(allowed, list) else [allowed]
                attrs.append((str(name), frozenset(values)))
        return Selector(
            kinds=kinds,
            metric=metric,
            event=event,
            cities=self.names(m.get("city", []), self.line_of(m, "city"), where),
            wards=self.names(m.get("ward", []), self.line_of(m, "ward"), where),
            devices=self.names(m.get("devices", []), self.line_of(m, "devices"), where),
            attributes=tuple(sorted(attrs, key=lambda a: a[0])),
        )

    def condition(self, m: LineMap, where: str) -> Condition | None:
        raw = m.get("when")
        if not isinstance(raw, LineMap):
            self.problem(
                self.line_of(m, "when") if "when" in m else m.line,
                f"{where}: needs 'when: {{op: \">=\", threshold: ..., clear: ...}}'",
            )
            return None
        for key in raw:
            if key not in ("op", "threshold", "clear"):
                self.problem(self.line_of(raw, key), f"{where}: unknown 'when' key {key!r}")
        op = raw.get("op")
        if op not in OPS:
            self.problem(self.line_of(raw, "op"), f"{where}: op {op!r} is not one of {OPS}")
            return None
        if "threshold" not in raw:
            self.problem(raw.line, f"{where}: 'when' needs a threshold")
            return None
        threshold = self.expr(raw, "threshold", where)
        clear = self.expr(raw, "clear", where) if "clear" in raw else None
        if threshold is None:
            return None
        if clear is not None and threshold.attribute is None and clear.attribute is None:
            assert threshold.constant is not None and clear.constant is not None
            wrong = (
                clear.constant > threshold.constant
                if ">" in op
                else clear.constant < threshold.constant
            )
            if wrong:
                side = "at or below" if ">" in op else "at or above"
                self.problem(
                    self.line_of(raw, "clear"),
                    f"{where}: clear level {clear.constant} must be {side} the threshold "
                    f"{threshold.constant} for op {op!r} (hysteresis)",
                )
        return Condition(op=op, threshold=threshold, clear=clear)

    def labels(self, m: LineMap, where: str) -> dict[str, str] | None:
        raw = m.get("labels")
        if not isinstance(raw, dict):
            self.problem(m.line, f"{where}: needs 'labels' with at least 'severity'")
            return None
        out: dict[str, str] = {}
        for name, value in raw.items():
            line = self.line_of(raw, name)
            if not LABEL_NAME.match(str(name)):
                self.problem(line, f"{where}: label name {name!r} is not a valid label name")
            elif name in RESERVED_LABELS:
                self.problem(line, f"{where}: label {name!r} is set by the engine itself")
            elif not isinstance(value, str | int | float) or isinstance(value, bool):
                self.problem(line, f"{where}: label {name!r} must be a string")
            else:
                out[str(name)] = str(value)
                try:
                    check_template(str(value))
                except TemplateError as exc:
                    self.problem(line, f"{where}: label {name!r}: {exc}")
        if out.get("severity") not in SEVERITIES:
            self.problem(
                self.line_of(raw, "severity"),
                f"{where}: labels.severity {out.get('severity')!r} is not one of {SEVERITIES}",
            )
            return None
        return out

    def annotations(self, m: LineMap, where: str) -> dict[str, str] | None:
        raw = m.get("annotations")
        if not isinstance(raw, dict) or not {"summary_vi", "summary_en"} <= set(raw):
            self.problem(
                self.line_of(m, "annotations") if "annotations" in m else m.line,
                f"{where}: needs 'annotations' with summary_vi and summary_en (Vietnamese and "
                "English messages)",
            )
            return None
        out: dict[str, str] = {}
        for name, value in raw.items():
            line = self.line_of(raw, name)
            if not isinstance(value, str):
                self.problem(line, f"{where}: annotation {name!r} must be a string")
                continue
            try:
                check_template(value)
            except TemplateError as exc:
                self.problem(line, f"{where}: annotation {name!r}: {exc}")
            out[str(name)] = value
        return out

    def rule(self, item: Any, list_line: int) -> Rule | None:
        if not isinstance(item, LineMap):
            self.problem(list_line, f"each rule must be a mapping, got {item!r}")
            return None
        rid = item.get("id")
        if not isinstance(rid, str) or not RULE_ID.match(rid):
            self.problem(
                self.line_of(item, "id") if "id" in item else item.line,
                f"rule id {rid!r} must be 1-63 lower-case letters, digits or '-'",
            )
            return None
        where = f"rule {rid}"
        rtype = item.get("type")
        if rtype not in RULE_TYPES:
            self.problem(
                self.line_of(item, "type") if "type" in item else item.line,
                f"{where}: type {rtype!r} is not one of {RULE_TYPES}",
            )
            return None
        known = {
            "id", "type", "select", "when", "for", "keep_firing_for", "schedule", "value",
            "requires", "window", "function", "after", "status", "resolve_after", "clear_event",
            "group_by", "count", "all_of", "min_count", "z", "min_samples", "labels",
            "annotations", "enabled", "baseline", "horizon", "risk", "min_std",
        }  # fmt: skip
        for key in item:
            if key not in known:
                self.problem(self.line_of(item, key), f"{where}: unknown key {key!r}")
        n_before = len(self.problems)
        select = self.selector(
            item.get("select", LineMap()), self.line_of(item, "select") or item.line, where
        )
        labels = self.labels(item, where)
        annotations = self.annotations(item, where)
        kw: dict[str, Any] = {}
        kw["for_s"] = self.duration(item, "for", where)
        kw["keep_firing_for_s"] = self.duration(item, "keep_firing_for", where)
        if "schedule" in item:
            try:
                kw["schedule"] = parse_schedule(item["schedule"])
            except ScheduleError as exc:
                self.problem(self.line_of(item, "schedule"), f"{where}: schedule: {exc}")
        needs_metric = rtype in METRIC_TYPES
        if select is not None and needs_metric and select.metric is None:
            self.problem(item.line, f"{where}: a {rtype} rule needs select.kind and select.metric")
        if rtype in CONDITION_TYPES:
            kw["condition"] = self.condition(item, where)
        if rtype in ("rate", "aggregate", "residual_rate") or (
            rtype == "group" and "count" in item
        ):
            kw["window_s"] = self.duration(item, "window", where)
            if rtype != "group" and kw["window_s"] <= 0:
                self.problem(item.line, f"{where}: a {rtype} rule needs a 'window' (e.g. 10m)")
        for key, types in (
            ("horizon", ("forecast_peak",)), ("baseline", ("anomaly",)), ("min_std", ("anomaly",))
        ):  # fmt: skip
            if key in item and rtype not in types:
                self.problem(self.line_of(item, key), f"{where}: '{key}' is for {types} rules")
        if rtype == "forecast_peak":
            kw["horizon_s"] = self.duration(item, "horizon", where)
            if kw["horizon_s"] <= 0:
                self.problem(
                    self.line_of(item, "horizon") if "horizon" in item else item.line,
                    f"{where}: a forecast_peak rule needs a 'horizon' (e.g. 6h)",
                )
        if "risk" in item:
            kw["risk"] = self.risk(item, kw.get("condition"), where)
        if rtype == "aggregate":
            fn = item.get("function")
            if fn not in AGGREGATES:
                self.problem(
                    self.line_of(item, "function") if "function" in item else item.line,
                    f"{where}: function {fn!r} is not one of {AGGREGATES}",
                )
            kw["function"] = fn
        if "value" in item:
            raw_value = item["value"]
            if not isinstance(raw_value, LineMap) or not set(raw_value) <= {"divide_by", "scale"}:
                self.problem(
                    self.line_of(item, "value"), f"{where}: value takes divide_by and/or scale"
                )
            else:
                if "divide_by" in raw_value:
                    kw["divide_by"] = self.expr(raw_value, "divide_by", where)
                scale = raw_value.get("scale", 1.0)
                if isinstance(scale, bool) or not isinstance(scale, int | float):
                    self.problem(self.line_of(raw_value, "scale"), f"{where}: scale is a number")
                else:
                    kw["scale"] = float(scale)
        if "requires" in item:
            kw["requires"] = self.requirements(item, select, where)
        if rtype == "absence":
            kw["after_s"] = self.duration(item, "after", where)
            if kw["after_s"] <= 0:
                self.problem(item.line, f"{where}: an absence rule needs 'after' (e.g. 30m)")
            status = item.get("status")
            if status not in (None, "offline"):
                self.problem(self.line_of(item, "status"), f"{where}: status may only be offline")
            kw["status"] = status
        if rtype == "event":
            if select is not None and select.event is None:
                self.problem(item.line, f"{where}: an event rule needs select.event")
            kw["resolve_after_s"] = self.duration(item, "resolve_after", where)
            kw["clear_event"] = item.get("clear_event")
            if kw["resolve_after_s"] <= 0 and kw["clear_event"] is None:
                self.problem(
                    item.line, f"{where}: an event rule needs resolve_after and/or clear_event"
                )
        if rtype == "group":
            self.group(item, where, kw)
        if rtype == "anomaly":
            z = item.get("z", 4.0)
            if isinstance(z, bool) or not isinstance(z, int | float) or z <= 0:
                self.problem(self.line_of(item, "z"), f"{where}: z must be a positive number")
            kw["z"] = float(z) if isinstance(z, int | float) else 4.0
            ms = item.get("min_samples", 7)
            kw["min_samples"] = ms if isinstance(ms, int) and ms >= 2 else 7
            baseline = item.get("baseline", "hour")
            if baseline not in BASELINES:
                self.problem(
                    self.line_of(item, "baseline"),
                    f"{where}: baseline {baseline!r} is not one of {BASELINES}",
                )
            kw["baseline"] = baseline if baseline in BASELINES else "hour"
            min_std = item.get("min_std", 0.0)
            if isinstance(min_std, bool) or not isinstance(min_std, int | float) or min_std < 0:
                self.problem(self.line_of(item, "min_std"), f"{where}: min_std is a number ≥ 0")
            else:
                kw["min_std"] = float(min_std)
        enabled = item.get("enabled", True)
        kw["enabled"] = bool(enabled)
        if len(self.problems) > n_before or select is None or labels is None:
            return None
        if annotations is None or (needs_metric and select.metric is None):
            return None
        if rtype in CONDITION_TYPES and kw.get("condition") is None:
            return None
        return Rule(
            id=rid,
            type=rtype,
            select=select,
            labels=labels,
            annotations=annotations,
            file=self.file,
            line=item.line,
            **kw,
        )

    def risk(self, item: LineMap, condition: Condition | None, where: str) -> Risk | None:
        raw = item["risk"]
        line = self.line_of(item, "risk")
        shape = (
            "risk is {source: TEXT, level: 1-5 | device.<attribute>} or {source: TEXT, "
            "levels: [{level: N, from: "
            "number | device.<attribute>}, ...]} (optional on: value | reading)"
        )
        if not isinstance(raw, LineMap) or not set(raw) <= {"source", "level", "levels", "on"}:
            self.problem(line, f"{where}: {shape}")
            return None
        source = raw.get("source")
        if not isinstance(source, str) or not source.strip():
            self.problem(self.line_of(raw, "source") if "source" in raw else line,
                         f"{where}: risk needs 'source' (the article of QĐ 18/2021/QĐ-TTg, or "
                         "why the level is illustrative)")  # fmt: skip
            return None
        on = raw.get("on", "value")
        if on not in ("value", "reading"):
            self.problem(self.line_of(raw, "on"), f"{where}: risk.on is value or reading")
            return None
        if ("level" in raw) == ("levels" in raw):
            self.problem(line, f"{where}: risk needs exactly one of level, levels")
            return None
        descending = condition is not None and "<" in condition.op
        if "level" in raw:
            lv = raw["level"]
            if isinstance(lv, str):  # device.<attribute>: the device's own level (1-5)
                level_of = self.expr(raw, "level", where)
                if level_of is None:
                    return None
                return Risk(source=source, level_of=level_of, on=on, descending=descending)
            if lv not in RISK_LEVELS or isinstance(lv, bool):
                self.problem(self.line_of(raw, "level"), f"{where}: risk level {lv!r} is not 1-5")
                return None
            return Risk(source=source, level=int(lv), on=on, descending=descending)
        if item.get("type") == "group":
            self.problem(line, f"{where}: a group rule's risk is one fixed level")
            return None
        steps_raw = raw["levels"]
        if not isinstance(steps_raw, list) or not steps_raw:
            self.problem(self.line_of(raw, "levels"), f"{where}: risk.levels is a list")
            return None
        steps: list[tuple[int, Expr]] = []
        for st in steps_raw:
            if not isinstance(st, LineMap) or set(st) != {"level", "from"}:
                self.problem(self.line_of(raw, "levels"),
                             f"{where}: each risk step is {{level: 1-5, from: bound}}")  # fmt: skip
                return None
            if st["level"] not in RISK_LEVELS or isinstance(st["level"], bool):
                self.problem(st.line, f"{where}: risk level {st['level']!r} is not 1-5")
                return None
            bound = self.expr(st, "from", where)
            if bound is None:
                return None
            steps.append((int(st["level"]), bound))
        levels = [lv for lv, _ in steps]
        if levels != sorted(set(levels)):
            self.problem(self.line_of(raw, "levels"),
                         f"{where}: risk levels must ascend without repeats")  # fmt: skip
            return None
        return Risk(source=source, steps=tuple(steps), on=on, descending=descending)

    def requirements(
        self, item: LineMap, select: Selector | None, where: str
    ) -> tuple[Requirement, ...]:
        raw = item["requires"]
        if not isinstance(raw, list):
            self.problem(self.line_of(item, "requires"), f"{where}: requires is a list")
            return ()
        out: list[Requirement] = []
        for r in raw:
            if not isinstance(r, LineMap) or set(r) != {"metric", "op", "threshold"}:
                self.problem(
                    self.line_of(item, "requires"),
                    f"{where}: each requirement is {{metric, op, threshold}}",
                )
                continue
            kind = select.kind if select else None
            if kind is not None and kind in METRICS and r["metric"] not in METRICS[kind]:
                self.problem(r.line, f"{where}: {kind} has no metric {r['metric']!r}")
                continue
            if r["op"] not in OPS:
                self.problem(r.line, f"{where}: op {r['op']!r} is not one of {OPS}")
                continue
            threshold = self.expr(r, "threshold", where)
            if threshold is not None:
                out.append(Requirement(str(r["metric"]), str(r["op"]), threshold))
        return tuple(out)

    def group(self, item: LineMap, where: str, kw: dict[str, Any]) -> None:
        gb = item.get("group_by")
        gb_list = gb if isinstance(gb, list) else [gb]
        if gb is None or not all(isinstance(g, str) and LABEL_NAME.match(g) for g in gb_list):
            self.problem(
                self.line_of(item, "group_by") if "group_by" in item else item.line,
                f"{where}: a group rule needs group_by (label names, e.g. ward or cabinet)",
            )
        kw["group_by"] = tuple(str(g) for g in gb_list if isinstance(g, str))
        count = item.get("count")
        all_of = item.get("all_of")
        if (count is None) == (all_of is None):
            self.problem(item.line, f"{where}: a group rule needs exactly one of count, all_of")
            return
        if count is not None:
            if (
                not isinstance(count, LineMap)
                or len(count) != 1
                or not set(count) <= {"rule", "event"}
            ):
                self.problem(
                    self.line_of(item, "count"),
                    f"{where}: count is {{rule: ID}} or {{event: TYPE}}",
                )
                return
            kw["count_rule"] = count.get("rule")
            kw["count_event"] = count.get("event")
            mc = item.get("min_count")
            if not isinstance(mc, int) or isinstance(mc, bool) or mc < 1:
                self.problem(
                    self.line_of(item, "min_count") if "min_count" in item else item.line,
                    f"{where}: min_count must be a whole number ≥ 1",
                )
                return
            kw["min_count"] = mc
            if kw["count_event"] is not None and kw.get("window_s", 0) <= 0:
                self.problem(item.line, f"{where}: counting events needs a 'window'")
        else:
            if not isinstance(all_of, list) or len(all_of) < 2:
                self.problem(self.line_of(item, "all_of"), f"{where}: all_of lists ≥ 2 rule ids")
                return
            kw["all_of"] = tuple(str(a) for a in all_of)

    def inhibit(self, item: Any, list_line: int) -> InhibitRule | None:
        if not isinstance(item, LineMap):
            self.problem(list_line, "each inhibit rule must be a mapping")
            return None
        where = f"inhibit rule at line {item.line}"
        for key in item:
            if key not in ("source_matchers", "target_matchers", "equal"):
                self.problem(self.line_of(item, key), f"{where}: unknown key {key!r}")
        parsed: dict[str, tuple[Matcher, ...]] = {}
        for key in ("source_matchers", "target_matchers"):
            raw = item.get(key)
            if not isinstance(raw, list) or not raw:
                self.problem(self.line_of(item, key) or item.line, f"{where}: {key} is a list")
                return None
            out: list[Matcher] = []
            for text in raw:
                try:
                    out.append(parse_matcher(text))
                except MatcherError as exc:
                    self.problem(self.line_of(item, key), f"{where}: {key}: {exc}")
            parsed[key] = tuple(out)
        equal = item.get("equal", [])
        if not isinstance(equal, list) or not all(isinstance(e, str) for e in equal):
            self.problem(self.line_of(item, "equal"), f"{where}: equal is a list of label names")
            return None
        return InhibitRule(
            parsed["source_matchers"], parsed["target_matchers"], tuple(equal), self.file, item.line
        )


def parse_rules_text(text: str, file: str) -> tuple[list[Rule], list[InhibitRule], list[Problem]]:
    p = _FileParser(file)
    rules, inhibits = p.parse(text)
    return rules, inhibits, p.problems


def rule_files(path: Path) -> list[Path]:
    if path.is_dir():
        return sorted([*path.glob("*.yaml"), *path.glob("*.yml")])
    return [path]


def check_rules(sources: Iterable[tuple[str, str]]) -> tuple[RuleSet, list[Problem]]:
    """Parse (file name, text) pairs into one rule set; cross-file checks included."""
    rules: list[Rule] = []
    inhibits: list[InhibitRule] = []
    problems: list[Problem] = []
    names: list[str] = []
    for file, text in sources:
        names.append(file)
        file_rules, file_inhibits, file_problems = parse_rules_text(text, file)
        rules.extend(file_rules)
        inhibits.extend(file_inhibits)
        problems.extend(file_problems)
    seen: dict[str, Rule] = {}
    for r in rules:
        if r.id in seen:
            first = seen[r.id]
            problems.append(
                Problem(
                    r.file,
                    r.line,
                    f"duplicate rule id {r.id!r} (first at {first.file}:{first.line})",
                )
            )
        seen.setdefault(r.id, r)
    for r in rules:
        for ref in (r.count_rule, *r.all_of):
            if ref is None:
                continue
            if ref not in seen:
                problems.append(Problem(r.file, r.line, f"rule {r.id}: unknown rule {ref!r}"))
            elif seen[ref].type == "group":
                problems.append(
                    Problem(r.file, r.line, f"rule {r.id}: {ref!r} is a group rule (not allowed)")
                )
    problems.sort(key=lambda p: (p.file, p.line))
    return RuleSet(tuple(seen.values()), tuple(inhibits), tuple(names)), problems


def load_rules(path: Path) -> RuleSet:
    """All rule files under ``path`` (a file or a directory); raises ``RuleErrors``."""
    files = rule_files(path)
    if not files:
        raise RuleErrors([Problem(str(path), 0, "no rule files (*.yaml) found")])
    sources: list[tuple[str, str]] = []
    problems: list[Problem] = []
    for f in files:
        try:
            sources.append((str(f), f.read_text(encoding="utf-8")))
        except (OSError, UnicodeDecodeError) as exc:
            problems.append(Problem(str(f), 0, f"cannot read: {exc}"))
    ruleset, more = check_rules(sources)
    problems.extend(more)
    if problems:
        raise RuleErrors(problems)
    return ruleset


DEFAULT_PACK = Path(__file__).parent / "packs"
