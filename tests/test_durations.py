"""The one duration grammar (ioc/core/durations.py) and the three places that read durations."""

from __future__ import annotations

from datetime import timedelta

import pytest

from ioc.core import durations
from ioc.rules.language import parse_duration as rule_duration
from ioc.simulators.scenario import parse_duration as scenario_duration
from ioc.storage.readings import QueryError, parse_bucket


@pytest.mark.parametrize(
    ("text", "seconds"),
    [("90s", 90), ("10m", 600), ("1h30m", 5400), ("2d", 172_800), ("1.5h", 5400),
     ("1d2h3m4s", 93_784), (" 5m ", 300), (45, 45), (2.5, 2.5), ("0s", 0)],
)  # fmt: skip
def test_the_grammar_and_every_reader_agree(text: str | float, seconds: float) -> None:
    assert durations.parse_seconds(text) == seconds
    assert rule_duration(text) == seconds
    assert scenario_duration(text) == timedelta(seconds=seconds)
    if isinstance(text, str) and seconds > 0:
        assert parse_bucket(text.strip()) == timedelta(seconds=seconds)


@pytest.mark.parametrize("text", ["", "soon", "1 hour", "30m1h", "1h 30m", "5", "-5m", "1w"])
def test_anything_else_is_refused_naming_it(text: str) -> None:
    with pytest.raises(ValueError, match="is not a duration"):
        durations.parse_seconds(text)
    with pytest.raises(ValueError, match="is not a duration"):
        rule_duration(text)
    with pytest.raises(QueryError, match=r"bucket: .* is not a duration"):
        parse_bucket(text)


def test_numbers_are_seconds_but_not_negative_or_infinite() -> None:
    for bad in (-1, float("inf"), float("nan"), True):
        with pytest.raises(ValueError):
            durations.parse_seconds(bad)
    with pytest.raises(QueryError, match="bucket"):
        parse_bucket("0m")  # a bucket must have a width
