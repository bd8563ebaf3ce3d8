"""Scenarios as data: a YAML timeline of :class:`~ioc.simulators.conditions.Conditions` changes.

A file (``ioc/simulators/scenarios/NAME.yaml``, or any path) holds::

    name: vi-thanh-spring-tide-flood
    description: {vi: "…", en: "…"}
    start: 2026-10-18T17:00:00+07:00      # default start, RFC 3339 with offset
    duration: 12h                          # default length: 90s, 45m, 1h30m, 2d
    timeline:
      - at: "+0h"                          # offset from start, or an RFC 3339 time
        set: {tide_factor: 1.3, rain_mm_h: {vi-thanh: 5}}
      - at: "+1h"
        ramp: 1h                           # numbers move linearly to their targets over 1 h
        set: {rain_mm_h: {vi-thanh: 60}}
      - at: "+5h"
        clear: [rain_mm_h, camera_events.nb-cam-01]   # a field, or one key of it

``set`` merges: mapping fields update the keys given, set fields (``cabinet_power_loss``,
``silent_devices``) add the ids given; ``clear`` (applied first) removes a whole field (back to
its default) or one key/id. ``ramp`` applies to numbers only; everything else changes at ``at``.
An absolute ``at`` keeps its distance from the file's ``start`` when a run starts elsewhere.

Every problem is a :class:`ScenarioError` naming the file and the step, e.g.
``flood.yaml: timeline[2].set.rain_mm_h.vi-thanh: 'heavy' is not a number``.
"""

from __future__ import annotations

import bisect
import dataclasses
import math
import re
import typing
from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from pathlib import Path
from types import MappingProxyType
from typing import Any, Final

from ioc.core import durations, yamlfile
from ioc.core.catalogue import EVENT_TYPES
from ioc.core.site import Site
from ioc.core.yamlfile import DataFileError
from ioc.simulators.conditions import Conditions

SCENARIO_DIR: Final = Path(__file__).with_name("scenarios")
_SLUG: Final = re.compile(r"^[a-z0-9]+(?:-[a-z0-9]+)*$")
_STEP_KEYS: Final = frozenset({"at", "set", "clear", "ramp", "note"})
_TOP_KEYS: Final = frozenset({"name", "description", "start", "duration", "timeline"})

# Value a mapping key stands for when absent (what the models assume), so a ramp that starts
# from "not set" starts from the right number: full road capacity, no report boost.
_ABSENT: Final[Mapping[str, float]] = MappingProxyType(
    {"traffic_capacity": 1.0, "report_boost": 1.0, "salinity_factor": 1.0}
)
# Plausibility bounds per numeric field; a value outside is a typo, not a scenario.
_BOUNDS: Final[Mapping[str, tuple[float, float]]] = MappingProxyType(
    {
        "rain_mm_h": (0.0, 500.0),
        "water_offset_m": (-5.0, 10.0),
        "tide_factor": (0.0, 5.0),
        "traffic_capacity": (0.0, 1.0),
        "report_boost": (0.0, 1000.0),
        "salinity_factor": (0.0, 10.0),
    }
)
# Allowed words of the text-valued mappings, from the shared event catalogue.
_VOCABULARY: Final[Mapping[str, frozenset[str]]] = MappingProxyType(
    {"lamp_faults": EVENT_TYPES["lighting"], "camera_events": EVENT_TYPES["traffic"]}
)
# Device-keyed fields and the kind (and traffic role) their ids must have; None = any device.
_DEVICE_KEYS: Final[Mapping[str, tuple[str | None, str | None]]] = MappingProxyType(
    {
        "cabinet_power_loss": ("cabinet", None),
        "feeder_cut": ("cabinet", None),
        "lamp_faults": ("lighting", None),
        "traffic_capacity": ("traffic", "detector"),
        "camera_events": ("traffic", "camera"),
        "silent_devices": (None, None),
    }
)


class ScenarioError(DataFileError):
    """A scenario file that cannot be used; ``where`` names the entry (``timeline[3].at``)."""


# ----------------------------------------------------------------------- field typing

# How a Conditions field is written and combined: derived from its annotation, so a field added
# to Conditions with one of these types works in scenario files without a change here.
_NUMBER, _FLAG, _TEXT, _NUMBER_MAP, _TEXT_MAP, _ID_SET = (
    "number",
    "flag",
    "text",
    "number_map",
    "text_map",
    "id_set",
)


def _field_shapes() -> dict[str, str]:
    shapes: dict[str, str] = {}
    for name, hint in typing.get_type_hints(Conditions).items():
        origin, args = typing.get_origin(hint), typing.get_args(hint)
        if hint is bool:
            shapes[name] = _FLAG
        elif hint in (int, float):
            shapes[name] = _NUMBER
        elif hint is str:
            shapes[name] = _TEXT
        elif origin in (Mapping, dict) and args[1] in (int, float):
            shapes[name] = _NUMBER_MAP
        elif origin in (Mapping, dict) and args[1] is str:
            shapes[name] = _TEXT_MAP
        elif origin in (frozenset, set):
            shapes[name] = _ID_SET
        else:  # pragma: no cover - a new Conditions field needs a shape here
            raise TypeError(f"Conditions.{name}: {hint} has no scenario representation")
    return shapes


FIELDS: Final[Mapping[str, str]] = MappingProxyType(_field_shapes())
_DEFAULTS: Final = Conditions()


# ------------------------------------------------------------------------- timeline


@dataclass(frozen=True, slots=True)
class Ramp:
    """A number moving linearly from ``v0`` at offset ``t0`` to ``v1`` at ``t1`` (seconds)."""

    t0: float
    t1: float
    v0: float
    v1: float

    def at(self, s: float) -> float:
        if s >= self.t1:
            return self.v1
        if s <= self.t0:
            return self.v0
        return self.v0 + (self.v1 - self.v0) * (s - self.t0) / (self.t1 - self.t0)


@dataclass(frozen=True, slots=True)
class Step:
    """One timeline entry, validated: changes applied ``offset_s`` seconds after the start."""

    offset_s: float
    set: Mapping[str, Any]
    clear: tuple[str, ...] = ()
    ramp_s: float = 0.0
    note: str | None = None


# A field's value inside the timeline: a number or Ramp, a dict key -> number/Ramp or text, or a
# set of ids. Snapshots are plain dicts copied per step (timelines have tens of steps).
_State = dict[str, Any]


def _value(v: Any, s: float) -> Any:
    return v.at(s) if isinstance(v, Ramp) else v


def _ramp_end(state: _State) -> float:
    end = -math.inf
    for v in state.values():
        items = v.values() if isinstance(v, dict) else (v,)
        for x in items:
            if isinstance(x, Ramp):
                end = max(end, x.t1)
    return end


@dataclass(frozen=True)
class Scenario:
    """A named timeline of conditions with a default start and duration."""

    name: str
    description: Mapping[str, str]
    start: datetime
    duration: timedelta
    steps: tuple[Step, ...]
    path: Path | None = None
    _offsets: list[float] = field(init=False, repr=False, compare=False)
    _states: list[_State] = field(init=False, repr=False, compare=False)
    _ramp_ends: list[float] = field(init=False, repr=False, compare=False)
    _settled: list[Conditions] = field(init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        state: _State = {}
        offsets: list[float] = []
        states: list[_State] = []
        for step in self.steps:
            state = _apply(state, step)
            offsets.append(step.offset_s)
            states.append(state)
        setattr_ = object.__setattr__
        setattr_(self, "_offsets", offsets)
        setattr_(self, "_states", states)
        setattr_(self, "_ramp_ends", [_ramp_end(s) for s in states])
        # Once its ramps are done a snapshot is constant: build its Conditions once.
        setattr_(self, "_settled", [_conditions(s, math.inf) for s in states])

    @property
    def end(self) -> datetime:
        return self.start + self.duration

    def with_start(self, start: datetime) -> Scenario:
        """The same timeline starting at ``start`` (steps keep their offsets)."""
        return dataclasses.replace(self, start=start)

    def conditions_at(self, t: datetime) -> Conditions:
        """The conditions in force at simulated time ``t`` (a normal day before the first step)."""
        s = (t - self.start).total_seconds()
        i = bisect.bisect_right(self._offsets, s) - 1
        if i < 0:
            return _DEFAULTS
        if s >= self._ramp_ends[i]:
            return self._settled[i]
        return _conditions(self._states[i], s)

    def device_ids(self) -> frozenset[str]:
        """Every device id the timeline names (in device-keyed fields)."""
        ids: set[str] = set()
        for step in self.steps:
            for name, value in step.set.items():
                if name in _DEVICE_KEYS:
                    ids.update(value)
        return frozenset(ids)

    def check_site(self, site: Site) -> None:
        """Raise :class:`ScenarioError` if a step names a device or city the site lacks."""
        where_file = self.path or Path(f"{self.name}.yaml")
        for i, step in enumerate(self.steps):
            for name, value in step.set.items():
                where = f"timeline[{i}].set.{name}"
                for key in value if isinstance(value, Mapping | frozenset) else ():
                    problem = _site_problem(site, name, key)
                    if problem:
                        raise ScenarioError(where_file, f"{where}.{key}", problem)


def _site_problem(site: Site, name: str, key: str) -> str | None:
    if name == "rain_mm_h" and key not in site.cities_by_id:
        return f"{key!r} is not a city of the site ({sorted(site.cities_by_id)})"
    if name == "water_offset_m":
        dev = site.devices_by_id.get(key)
        if key not in site.cities_by_id and (dev is None or dev.kind != "flood"):
            return f"{key!r} is neither a city nor a flood station of the site"
    if name == "salinity_factor":
        dev = site.devices_by_id.get(key)
        if key not in site.cities_by_id and (dev is None or dev.kind != "salinity"):
            return f"{key!r} is neither a city nor a salinity station of the site"
    if name == "report_boost":
        city = key.split("/", 1)[0]
        if "/" not in key or city not in site.cities_by_id:
            return f"{key!r} must be 'city/category' with a city of the site"
    if name in _DEVICE_KEYS:
        kind, role = _DEVICE_KEYS[name]
        dev = site.devices_by_id.get(key)
        if dev is None:
            return f"no device {key!r} in the site"
        if kind is not None and dev.kind != kind:
            return f"{key!r} is a {dev.kind} device, {name} needs a {kind}"
        if role is not None and dev.attributes.get("role", "detector") != role:
            return f"{key!r} is a traffic {dev.attributes.get('role')}, {name} needs a {role}"
    return None


def _apply(prev: _State, step: Step) -> _State:
    state: _State = {k: (dict(v) if isinstance(v, dict) else v) for k, v in prev.items()}
    s = step.offset_s
    for entry in step.clear:
        name, _, key = entry.partition(".")
        if not key:
            state.pop(name, None)
        elif FIELDS[name] == _ID_SET:
            state[name] = state.get(name, frozenset()) - {key}
        elif name in state:
            state[name].pop(key, None)
    for name, target in step.set.items():
        shape = FIELDS[name]
        if shape == _NUMBER:
            state[name] = _ramped(state.get(name, getattr(_DEFAULTS, name)), target, s, step)
        elif shape == _NUMBER_MAP:
            current = state.setdefault(name, {})
            for key, value in target.items():
                start = current.get(key, _ABSENT.get(name, 0.0))
                current[key] = _ramped(start, value, s, step)
        elif shape == _TEXT_MAP:
            state.setdefault(name, {}).update(target)
        elif shape == _ID_SET:
            state[name] = state.get(name, frozenset()) | target
        else:
            state[name] = target
    return state


def _ramped(current: Any, target: float, s: float, step: Step) -> float | Ramp:
    if step.ramp_s <= 0:
        return float(target)
    return Ramp(s, s + step.ramp_s, float(_value(current, s)), float(target))


def _conditions(state: _State, s: float) -> Conditions:
    kwargs: dict[str, Any] = {}
    for name, v in state.items():
        shape = FIELDS[name]
        if shape in (_NUMBER_MAP, _TEXT_MAP):
            kwargs[name] = MappingProxyType({k: _value(x, s) for k, x in v.items()})
        else:
            kwargs[name] = _value(v, s)
    return Conditions(**kwargs)


# ------------------------------------------------------------------------------ loading


def available_scenarios() -> list[str]:
    """Names of the scenarios shipped with the package."""
    return sorted(p.stem for p in SCENARIO_DIR.glob("*.yaml"))


def load_scenario(name_or_path: str | Path) -> Scenario:
    """A shipped scenario by name (``normal-day``) or a scenario file by path."""
    text = str(name_or_path)
    if isinstance(name_or_path, Path) or "/" in text or text.endswith((".yaml", ".yml")):
        path = Path(name_or_path)
    else:
        path = SCENARIO_DIR / f"{text}.yaml"
        if not path.exists():
            raise ScenarioError(
                path, "", f"no scenario {text!r}; shipped: {', '.join(available_scenarios())}"
            )
    return _Parser(path).scenario(yamlfile.read(path, ScenarioError))


def parse_duration(text: str | float | int) -> timedelta:
    """``"90s"``, ``"45m"``, ``"1h30m"``, ``"2d"`` (or a number of seconds) as a timedelta."""
    return durations.parse(text)  # the one grammar


class _Parser:
    def __init__(self, path: Path) -> None:
        self.path = path

    def fail(self, where: str, message: str) -> typing.NoReturn:
        raise ScenarioError(self.path, where, message)

    def scenario(self, raw: Any) -> Scenario:
        if not isinstance(raw, dict):
            self.fail("", "a scenario file must be a mapping with name, start, timeline, …")
        unknown = set(raw) - _TOP_KEYS
        if unknown:
            self.fail(sorted(unknown)[0], f"unknown key; expected {sorted(_TOP_KEYS)}")
        name = raw.get("name")
        if not isinstance(name, str) or not _SLUG.match(name):
            self.fail("name", f"{name!r} must be a lower-case slug like 'normal-day'")
        desc = raw.get("description")
        if not isinstance(desc, dict) or not all(
            isinstance(desc.get(lang), str) and desc[lang].strip() for lang in ("vi", "en")
        ):
            self.fail("description", "needs non-empty 'vi' and 'en' texts")
        start = self.time(raw.get("start"), "start")
        try:
            duration = parse_duration(raw.get("duration", ""))
        except ValueError as exc:
            self.fail("duration", str(exc))
        if duration <= timedelta(0):
            self.fail("duration", "must be positive")
        timeline = raw.get("timeline", [])
        if not isinstance(timeline, list):
            self.fail("timeline", "must be a list of steps")
        steps: list[Step] = []
        for i, item in enumerate(timeline):
            step = self.step(item, f"timeline[{i}]", start, duration)
            if steps and step.offset_s < steps[-1].offset_s:
                self.fail(f"timeline[{i}].at", "steps must be in time order")
            steps.append(step)
        return Scenario(
            name=name,
            description=MappingProxyType({k: str(v) for k, v in desc.items()}),
            start=start,
            duration=duration,
            steps=tuple(steps),
            path=self.path,
        )

    def time(self, value: Any, where: str) -> datetime:
        if isinstance(value, str):
            try:
                value = datetime.fromisoformat(value)
            except ValueError:
                self.fail(where, f"{value!r} is not an RFC 3339 time")
        if not isinstance(value, datetime):
            self.fail(where, f"{value!r} is not an RFC 3339 time like 2026-10-18T17:00:00+07:00")
        if value.tzinfo is None:
            self.fail(where, f"{value.isoformat()} needs a UTC offset (+07:00)")
        return value

    def step(self, item: Any, where: str, start: datetime, duration: timedelta) -> Step:
        if not isinstance(item, dict):
            self.fail(where, "a step must be a mapping with 'at' and 'set' and/or 'clear'")
        unknown = set(item) - _STEP_KEYS
        if unknown:
            self.fail(
                f"{where}.{sorted(unknown)[0]}", f"unknown key; expected {sorted(_STEP_KEYS)}"
            )
        offset = self.offset(item.get("at"), f"{where}.at", start)
        if offset > duration.total_seconds():
            self.fail(f"{where}.at", f"is after the scenario's end ({duration})")
        ramp_s = 0.0
        if "ramp" in item:
            try:
                ramp_s = parse_duration(item["ramp"]).total_seconds()
            except ValueError as exc:
                self.fail(f"{where}.ramp", str(exc))
        sets = item.get("set", {})
        if not isinstance(sets, dict):
            self.fail(f"{where}.set", "must be a mapping of Conditions fields")
        clear = item.get("clear", [])
        if not isinstance(clear, list):
            self.fail(f"{where}.clear", "must be a list of field or field.key names")
        if not sets and not clear:
            self.fail(where, "a step needs 'set' or 'clear'")
        values = {name: self.value(name, v, f"{where}.set.{name}") for name, v in sets.items()}
        for j, entry in enumerate(clear):
            fname = entry.partition(".")[0] if isinstance(entry, str) else None
            if fname not in FIELDS:
                self.fail(f"{where}.clear[{j}]", f"{entry!r} is not a field; {self.known()}")
        note = item.get("note")
        return Step(offset, MappingProxyType(values), tuple(clear), ramp_s, note)

    def offset(self, value: Any, where: str, start: datetime) -> float:
        if value is None:
            self.fail(where, "missing: '+2h' (after the start) or an RFC 3339 time")
        if isinstance(value, int | float) and not isinstance(value, bool):
            value = f"{value}s"
        if isinstance(value, str) and value.strip().startswith("+"):
            try:
                return parse_duration(value.strip()[1:]).total_seconds()
            except ValueError as exc:
                self.fail(where, str(exc))
        if isinstance(value, str) and durations.is_duration(value):
            self.fail(where, f"{value!r}: write offsets with a sign, '+{value}'")
        offset = (self.time(value, where) - start).total_seconds()
        if offset < 0:
            self.fail(where, f"{value} is before the scenario's start {start.isoformat()}")
        return offset

    def known(self) -> str:
        return f"known: {sorted(FIELDS)}"

    def value(self, name: str, raw: Any, where: str) -> Any:
        shape = FIELDS.get(name)
        if shape is None:
            self.fail(where, f"{name!r} is not a Conditions field; {self.known()}")
        if shape == _NUMBER:
            return self.number(name, raw, where)
        if shape == _FLAG:
            if not isinstance(raw, bool):
                self.fail(where, f"{raw!r} is not true or false")
            return raw
        if shape == _TEXT:
            if not isinstance(raw, str):
                self.fail(where, f"{raw!r} is not a text")
            return raw
        if shape == _ID_SET:
            if not isinstance(raw, list) or not all(isinstance(x, str) and x for x in raw):
                self.fail(where, "must be a list of device ids")
            return frozenset(raw)
        if not isinstance(raw, dict) or not raw:
            self.fail(where, "must be a non-empty mapping of key: value")
        out: dict[str, Any] = {}
        for key, v in raw.items():
            if not isinstance(key, str):
                self.fail(where, f"key {key!r} must be a text")
            if shape == _NUMBER_MAP:
                out[key] = self.number(name, v, f"{where}.{key}")
            else:
                words = _VOCABULARY.get(name)
                if not isinstance(v, str) or (words is not None and v not in words):
                    allowed = f"one of {sorted(words)}" if words else "a text"
                    self.fail(f"{where}.{key}", f"{v!r} is not {allowed}")
                out[key] = v
        return MappingProxyType(out)

    def number(self, name: str, raw: Any, where: str) -> float:
        if isinstance(raw, bool) or not isinstance(raw, int | float) or not math.isfinite(raw):
            self.fail(where, f"{raw!r} is not a number")
        lo, hi = _BOUNDS.get(name, (-math.inf, math.inf))
        if not lo <= raw <= hi:
            self.fail(where, f"{raw} is outside {lo}..{hi} for {name}")
        return float(raw)
