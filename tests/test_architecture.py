"""The package's layers: each imports only from its own floor and below, and no two packages import each other.

The floors are drawn in docs/architecture.md. A new module or subpackage must be placed on one.
"""
from __future__ import annotations

import ast
from pathlib import Path

PACKAGE = Path(__file__).resolve().parents[1] / "monai_dpe"

#: floor of each top-level module or subpackage of monai_dpe
FLOORS = {
    "formats": 0, "files": 0, "errors": 0, "keys": 0, "extras": 0, "processor": 0, "native_output": 0, "locations": 0,
    "transforms": 1, "networks": 1, "losses": 1, "metrics": 1, "inferers": 1, "visualize": 1,
    "data": 2,
    "engines": 3,
    "cli": 4, "train_cli": 4, "reports": 4,
}


def _unit(module: str) -> str:
    parts = module.split(".")
    return parts[1] if len(parts) > 1 else "__init__"


def _imports() -> list[tuple[str, str, str]]:
    """(importing unit, imported unit, importing module) for every import of monai_dpe, in functions too."""
    found = []
    for path in PACKAGE.rglob("*.py"):
        module = ".".join(path.relative_to(PACKAGE.parent).with_suffix("").parts).removesuffix(".__init__")
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.ImportFrom) and node.module:
                names = [node.module]
            elif isinstance(node, ast.Import):
                names = [alias.name for alias in node.names]
            else:
                continue
            found += [(_unit(module), _unit(name), module) for name in names if name.startswith("monai_dpe.")]
    return found


def test_every_module_has_a_floor():
    units = {_unit(".".join(p.relative_to(PACKAGE.parent).with_suffix("").parts)) for p in PACKAGE.rglob("*.py")}
    units.discard("__init__")
    assert not units - set(FLOORS), f"place these on a floor in FLOORS and docs/architecture.md: {units - set(FLOORS)}"


def test_no_import_goes_up_a_floor():
    upward = sorted({f"{module} -> monai_dpe.{dst}" for src, dst, module in _imports()
                     if dst in FLOORS and src in FLOORS and FLOORS[dst] > FLOORS[src]})
    assert not upward, upward


def test_no_two_packages_import_each_other():
    edges = {(src, dst) for src, dst, _ in _imports() if src != dst and "__init__" not in (src, dst)}
    assert not sorted({tuple(sorted(e)) for e in edges if (e[1], e[0]) in edges})
