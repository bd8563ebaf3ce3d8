"""One way to read the YAML data files (ioc/core/yamlfile.py): every loader refuses a broken
file with the same kind of error — file, line and column, what is wrong — and no module parses
YAML any other way."""

from __future__ import annotations

import ast
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from ioc.core.calendar import load_calendar
from ioc.core.site import load_site
from ioc.core.yamlfile import DataFileError, LineMap, parse_with_lines, read
from ioc.dispatch.notification_routes import load_routes
from ioc.routing.table import load_routing
from ioc.simulators.scenario import load_scenario

ROOT = Path(__file__).resolve().parents[1]
BROKEN = "a: 1\nb: [2, 3\nc: 4\n"  # the list is never closed

LOADERS: dict[str, Callable[[Path], Any]] = {
    "site": load_site,
    "routing": load_routing,
    "calendar": load_calendar,
    "scenario": lambda p: load_scenario(str(p)),
    "notification routes": lambda p: load_routes(p, environ={}),
}


@pytest.mark.parametrize("kind", sorted(LOADERS))
def test_every_loader_names_file_line_and_column(tmp_path: Path, kind: str) -> None:
    path = tmp_path / "broken.yaml"
    path.write_text(BROKEN, encoding="utf-8")
    with pytest.raises(DataFileError) as err:
        LOADERS[kind](path)
    assert err.value.path == path
    assert err.value.where.startswith("line ") and ", column " in err.value.where
    assert str(err.value).startswith(f"{path}: line ") and "not valid YAML" in str(err.value)


@pytest.mark.parametrize("kind", sorted(LOADERS))
def test_every_loader_names_a_missing_file(tmp_path: Path, kind: str) -> None:
    path = tmp_path / "missing.yaml"
    with pytest.raises(DataFileError, match=r"missing\.yaml: cannot read"):
        LOADERS[kind](path)


def test_text_that_is_not_utf8_is_named(tmp_path: Path) -> None:
    path = tmp_path / "latin1.yaml"
    path.write_bytes("tên: Vị Thanh\n".encode("latin-1", errors="replace") + b"\xff\n")
    with pytest.raises(DataFileError, match="not UTF-8"):
        read(path)


def test_lines_are_kept_for_the_checkers_that_report_them() -> None:
    doc = parse_with_lines("rules:\n  - id: a\n    for: 10m\n", "pack.yaml")
    assert isinstance(doc, LineMap) and doc.line_of("rules") == 1
    rule = doc["rules"][0]
    assert isinstance(rule, LineMap) and rule.line_of("for") == 3


def test_no_module_parses_yaml_another_way() -> None:
    offenders = []
    for path in sorted((ROOT / "ioc").rglob("*.py")):
        if path.name == "yamlfile.py" and path.parent.name == "core":
            continue
        for node in ast.walk(ast.parse(path.read_text("utf-8"))):
            if (isinstance(node, ast.Attribute) and isinstance(node.value, ast.Name)
                    and node.value.id == "yaml" and node.attr in {"load", "safe_load",
                                                                  "load_all", "safe_load_all"}):
                offenders.append(f"{path.relative_to(ROOT)}:{node.lineno}")
    assert not offenders, f"read YAML through ioc.core.yamlfile: {offenders}"
