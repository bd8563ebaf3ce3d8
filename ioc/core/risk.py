"""Disaster risk levels of QĐ 18/2021/QĐ-TTg: names, colours and CAP severity per level.

The levels an alert carries come from its rule (``risk:`` in the rule pack, docs/rules.md); this
module holds what a level *means* to the people who see it, read from
``ioc/site_data/risk_levels.yaml`` (the decision's article in the file).
"""

from __future__ import annotations

from dataclasses import dataclass
from functools import cache
from typing import Any, Final

from ioc.core import yamlfile
from ioc.core.packaged import SITE_DATA

RISK_FILE: Final = SITE_DATA / "risk_levels.yaml"
CAP_SEVERITIES: Final = ("Minor", "Moderate", "Severe", "Extreme")


@dataclass(frozen=True, slots=True)
class RiskLevel:
    level: int
    colour: str
    colour_vi: str
    colour_en: str
    name_vi: str
    name_en: str
    cap_severity: str

    def as_json(self) -> dict[str, Any]:
        return {
            "level": self.level, "colour": self.colour, "colour_vi": self.colour_vi,
            "colour_en": self.colour_en, "name_vi": self.name_vi, "name_en": self.name_en,
        }  # fmt: skip


class RiskTableError(ValueError):
    pass


def parse_levels(raw: Any) -> dict[int, RiskLevel]:
    if (
        not isinstance(raw, dict)
        or not isinstance(raw.get("levels"), list)
        or not raw.get("source")
    ):
        raise RiskTableError("risk_levels.yaml: needs 'source' and a list 'levels'")
    out: dict[int, RiskLevel] = {}
    for item in raw["levels"]:
        try:
            lv = RiskLevel(**item)
        except TypeError as exc:
            raise RiskTableError(f"risk_levels.yaml: {item!r}: {exc}") from exc
        if lv.level not in range(1, 6) or lv.cap_severity not in CAP_SEVERITIES:
            raise RiskTableError(f"risk_levels.yaml: level {lv.level}: not 1-5 or bad CAP severity")
        out[lv.level] = lv
    if sorted(out) != [1, 2, 3, 4, 5]:
        raise RiskTableError("risk_levels.yaml: levels 1 to 5, each once")
    return out


@cache
def risk_levels() -> dict[int, RiskLevel]:
    return parse_levels(yamlfile.read(RISK_FILE))


def risk_level(level: int | None) -> RiskLevel | None:
    return risk_levels().get(level) if level is not None else None
