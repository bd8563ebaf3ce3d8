"""Alertmanager label matchers: ``name="value"``, ``name!="value"``, ``name=~"re"``, ``name!~"re"``.

Used by inhibit rules, silences and maintenance windows. Regular expressions are anchored (full
match), as in Alertmanager. A missing label matches as the empty string.
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from typing import Any

_MATCHER = re.compile(r'^\s*([a-zA-Z_][a-zA-Z0-9_]*)\s*(=~|!~|!=|=)\s*"((?:[^"\\]|\\.)*)"\s*$')
OPERATORS = ("=", "!=", "=~", "!~")


class MatcherError(ValueError):
    pass


@dataclass(frozen=True, slots=True)
class Matcher:
    name: str
    op: str
    value: str
    pattern: re.Pattern[str] | None = None

    def matches(self, labels: Mapping[str, str]) -> bool:
        v = labels.get(self.name, "")
        if self.op == "=":
            return v == self.value
        if self.op == "!=":
            return v != self.value
        assert self.pattern is not None
        hit = self.pattern.fullmatch(v) is not None
        return hit if self.op == "=~" else not hit

    def as_dict(self) -> dict[str, str]:
        return {"name": self.name, "op": self.op, "value": self.value}

    def __str__(self) -> str:
        return f'{self.name}{self.op}"{self.value}"'


def make_matcher(name: str, op: str, value: str) -> Matcher:
    if not re.fullmatch(r"[a-zA-Z_][a-zA-Z0-9_]*", name or ""):
        raise MatcherError(f"label name {name!r} is not valid")
    if op not in OPERATORS:
        raise MatcherError(f"operator {op!r} is not one of {OPERATORS}")
    if not isinstance(value, str):
        raise MatcherError(f"value of {name!r} must be a string")
    pattern = None
    if op in ("=~", "!~"):
        try:
            pattern = re.compile(value)
        except re.error as exc:
            raise MatcherError(f"{name}{op}{value!r}: bad regular expression: {exc}") from None
    return Matcher(name, op, value, pattern)


def parse_matcher(text: Any) -> Matcher:
    if isinstance(text, Mapping):
        return make_matcher(str(text.get("name")), str(text.get("op", "=")), str(text.get("value")))
    if not isinstance(text, str):
        raise MatcherError(f'{text!r} is not a matcher like severity="critical"')
    m = _MATCHER.match(text)
    if not m:
        raise MatcherError(
            f'{text!r} is not a matcher like severity="critical" or rule=~"flood-.*"'
        )
    return make_matcher(m.group(1), m.group(2), m.group(3).replace('\\"', '"'))


def all_match(matchers: Iterable[Matcher], labels: Mapping[str, str]) -> bool:
    return all(m.matches(labels) for m in matchers)
