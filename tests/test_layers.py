"""The layers of docs/architecture.md, checked by reading every import (no code is run).

A *unit* is a subpackage of ``ioc`` (``ioc.core``, ``ioc.ingest``, ...), ``ioc.__main__`` or the
``mqttclient`` library. ``ALLOWED`` says which units each may import — the table in
docs/architecture.md — and the tests below hold the code to it: no unit imports the roof
(``ioc.app``), the floor (``ioc.core``) imports no other unit, ``ioc.rules`` imports only the floor,
and the unit graph has no cycle. Imports under ``if TYPE_CHECKING:`` count: a type is a dependency.
"""

from __future__ import annotations

import ast
from collections.abc import Iterator
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]

FLOOR = "ioc.core"
ROOF = "ioc.app"

# unit → the units it may import (besides itself). Read top to bottom: each line may use only
# units above it, so the table is itself the proof that the graph has no cycle.
ALLOWED: dict[str, frozenset[str]] = {
    "mqttclient": frozenset(),
    FLOOR: frozenset(),
    "ioc.embedded": frozenset({FLOOR}),
    "ioc.storage": frozenset({FLOOR, "ioc.embedded"}),
    "ioc.rules": frozenset({FLOOR}),
    "ioc.live": frozenset({FLOOR, "ioc.storage"}),
    "ioc.ingest": frozenset({FLOOR, "ioc.storage", "ioc.live", "mqttclient"}),
    "ioc.routing": frozenset({FLOOR, "ioc.rules", "ioc.ingest"}),
    "ioc.dispatch": frozenset({FLOOR, "ioc.storage", "mqttclient"}),
    "ioc.provision": frozenset({FLOOR, "ioc.storage"}),
    "ioc.alerting": frozenset(
        {FLOOR, "ioc.storage", "ioc.rules", "ioc.ingest", "ioc.live", "ioc.routing",
         "ioc.dispatch", "mqttclient"}
    ),
    "ioc.incidents": frozenset(
        {FLOOR, "ioc.storage", "ioc.live", "ioc.routing", "ioc.alerting", "ioc.dispatch"}
    ),
    "ioc.cap": frozenset({FLOOR, "ioc.routing"}),
    "ioc.kpi": frozenset({FLOOR, "ioc.storage", "ioc.live", "ioc.routing"}),
    "ioc.open311": frozenset({FLOOR, "ioc.storage", "ioc.routing", "ioc.incidents"}),
    "ioc.simulators": frozenset({FLOOR, "mqttclient"}),
    "ioc.api": frozenset(
        {FLOOR, "ioc.storage", "ioc.rules", "ioc.live", "ioc.routing", "ioc.dispatch",
         "ioc.provision", "ioc.alerting", "ioc.incidents", "ioc.cap", "ioc.kpi", "ioc.open311",
         "ioc.ingest"}
    ),
    ROOF: frozenset(
        {FLOOR, "ioc.storage", "ioc.embedded", "ioc.rules", "ioc.live", "ioc.ingest",
         "ioc.routing", "ioc.dispatch", "ioc.provision", "ioc.alerting", "ioc.incidents",
         "ioc.cap", "ioc.kpi", "ioc.open311", "ioc.simulators", "ioc.api", "mqttclient"}
    ),
    "ioc.__main__": frozenset({ROOF}),
}


def unit_of(module: str) -> str | None:
    """The unit a dotted module name belongs to; None outside ours (stdlib, third party)."""
    parts = module.split(".")
    if parts[0] == "mqttclient":
        return "mqttclient"
    if parts[0] != "ioc":
        return None
    if len(parts) == 1:
        return "ioc"  # the package itself: only __version__
    return f"ioc.{parts[1]}"


def module_name(path: Path) -> str:
    parts = list(path.relative_to(ROOT).with_suffix("").parts)
    if parts[-1] == "__init__":
        parts.pop()
    return ".".join(parts)


def imported_modules(path: Path) -> Iterator[tuple[int, str]]:
    """(line, absolute module) for every import in a file, relative ones resolved."""
    yield from imports_in(path.read_text("utf-8"), module_name(path), path.name == "__init__.py")


def imports_in(source: str, name: str, is_package: bool) -> Iterator[tuple[int, str]]:
    package = name.split(".") if is_package else name.split(".")[:-1]
    for node in ast.walk(ast.parse(source, name)):
        if isinstance(node, ast.Import):
            for alias in node.names:
                yield node.lineno, alias.name
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                base = package[: len(package) - node.level + 1]
                target = ".".join([*base, node.module] if node.module else base)
            else:
                target = node.module or ""
            yield node.lineno, target
            for alias in node.names:  # `from ioc import core` imports the unit ioc.core
                if target == "ioc" and not alias.name.startswith("__"):
                    yield node.lineno, f"ioc.{alias.name}"


def unit_imports() -> dict[str, dict[str, list[str]]]:
    """unit → imported unit → ['file:line', ...] over every source file of ioc and mqttclient."""
    found: dict[str, dict[str, list[str]]] = {}
    for top in ("ioc", "mqttclient"):
        for path in sorted((ROOT / top).rglob("*.py")):
            source = unit_of(module_name(path))
            assert source is not None
            for line, module in imported_modules(path):
                target = unit_of(module)
                if target is None or target == source or target == "ioc":
                    continue
                where = f"{path.relative_to(ROOT)}:{line}"
                found.setdefault(source, {}).setdefault(target, []).append(where)
    return found


IMPORTS = unit_imports()


def test_every_unit_is_in_the_table() -> None:
    units = {unit_of(module_name(p)) for top in ("ioc", "mqttclient")
             for p in (ROOT / top).rglob("*.py")} - {"ioc"}
    assert units <= set(ALLOWED), f"add to ALLOWED and docs/architecture.md: {units - set(ALLOWED)}"


@pytest.mark.parametrize("unit", sorted(ALLOWED))
def test_unit_imports_only_what_the_table_allows(unit: str) -> None:
    wrong = {target: places for target, places in IMPORTS.get(unit, {}).items()
             if target not in ALLOWED[unit]}
    assert not wrong, f"{unit} may not import {sorted(wrong)}: {wrong}"


def test_the_rules_the_architecture_states() -> None:
    # Stated separately so that loosening the table cannot loosen them silently.
    assert not [u for u, targets in IMPORTS.items() if ROOF in targets and u != "ioc.__main__"]
    assert set(IMPORTS.get(FLOOR, {})) == set()
    assert set(IMPORTS.get("ioc.rules", {})) <= {FLOOR}
    assert set(IMPORTS.get("mqttclient", {})) == set()


def test_the_table_has_no_cycle() -> None:
    # Each unit may import only units listed before it: then no cycle is possible.
    order = list(ALLOWED)
    for position, unit in enumerate(order):
        later = ALLOWED[unit] - set(order[:position])
        assert not later, f"{unit} may import {sorted(later)}, listed after it"


def test_the_checker_sees_a_forbidden_import() -> None:
    # The reader must resolve relative imports and `from ioc import x`, or the tests above pass
    # vacuously.
    source = "from ioc import app\nfrom ..storage import feed\nimport mqttclient\n"
    targets = {unit_of(m) for _, m in imports_in(source, "ioc.rules.probe", is_package=False)}
    assert targets >= {"ioc.app", "ioc.storage", "mqttclient"}
    assert "ioc.storage" in IMPORTS["ioc.ingest"]  # the real tree is read too
