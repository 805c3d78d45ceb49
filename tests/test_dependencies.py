"""The dependency rule, checked on the source: each package imports only the packages its row names, and only
blcm imports Lightning."""

from __future__ import annotations

import ast
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
MAY_IMPORT = {
    "primitives": {"primitives"},
    "blt": {"primitives", "blt"},
    "concept_core": {"primitives", "concept_core"},
    "bridges": {"primitives", "blt", "concept_core", "bridges"},
    "blcm": {"primitives", "blt", "concept_core", "bridges", "blcm", "lightning"},
}
GUARDED = set(MAY_IMPORT) | {"lightning", "pytorch_lightning"}


def imports(package: str) -> dict[str, set[str]]:
    """Module name -> the top-level packages it imports (absolute imports, any depth in the module)."""
    found = {}
    for path in sorted((ROOT / package).rglob("*.py")):
        module = ".".join(path.relative_to(ROOT).with_suffix("").parts).removesuffix(".__init__")
        names = set()
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.Import):
                names |= {a.name.split(".")[0] for a in node.names}
            elif isinstance(node, ast.ImportFrom):
                assert not node.level, f"{module}: relative import of {node.module}"
                names.add(node.module.split(".")[0])
        found[module] = names
    return found


@pytest.mark.parametrize("package", MAY_IMPORT)
def test_each_package_imports_only_its_row(package):
    for module, names in imports(package).items():
        forbidden = (names & GUARDED) - MAY_IMPORT[package]
        assert not forbidden, (
            f"{module} imports {sorted(forbidden)}; {package} may import {sorted(MAY_IMPORT[package])}"
        )


def test_the_table_covers_every_package():
    packages = {p.parent.name for p in ROOT.glob("*/__init__.py")}
    assert packages == set(MAY_IMPORT)


def test_the_check_catches_a_forbidden_import(tmp_path, monkeypatch):
    (tmp_path / "primitives").mkdir()
    (tmp_path / "primitives" / "leaky.py").write_text("from blt.ids import EOD\n")
    monkeypatch.setattr(sys.modules[__name__], "ROOT", tmp_path)
    with pytest.raises(AssertionError, match=r"primitives.leaky imports \['blt'\]"):
        test_each_package_imports_only_its_row("primitives")
