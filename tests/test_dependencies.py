"""The dependency rule (DESIGN.md), checked on the source: blt never imports concept_core, bridges or blcm;
concept_core imports only blt's leaf modules (which import nothing of blt but each other), never bridges or
blcm; bridges never imports blcm; only blcm imports Lightning."""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
PACKAGES = ("blt", "concept_core", "bridges", "blcm")
BLT_LEAVES = {"blt.attention", "blt.transformer", "blt.sampling"}  # torch/einops only, and each other


def imports(package: str) -> dict[str, set[str]]:
    """Module name -> the modules it imports (absolute names, any depth)."""
    found = {}
    for path in sorted((ROOT / package).rglob("*.py")):
        module = ".".join(path.relative_to(ROOT).with_suffix("").parts).removesuffix(".__init__")
        names = set()
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.Import):
                names |= {a.name for a in node.names}
            elif isinstance(node, ast.ImportFrom) and node.module and not node.level:
                names.add(node.module)
        found[module] = names
    return found


def top(name: str) -> str:
    return name.split(".")[0]


@pytest.mark.parametrize("package", PACKAGES)
def test_the_dependency_rule(package):
    allowed = {"blt": {"blt"}, "concept_core": {"concept_core"}, "bridges": {"blt", "concept_core", "bridges"},
               "blcm": set(PACKAGES)}[package]
    for module, names in imports(package).items():
        for name in names:
            if top(name) == "lightning":
                assert package == "blcm", f"{module} imports {name}: only blcm imports Lightning"
            if top(name) == "blt" and package == "concept_core":
                assert name in BLT_LEAVES, f"{module} imports {name}: concept_core may import only {BLT_LEAVES}"
            elif top(name) in PACKAGES:
                assert top(name) in allowed, f"{module} imports {name}"


def test_blt_leaves_import_only_each_other():
    blt = imports("blt")
    for leaf in BLT_LEAVES:
        inside = {name for name in blt[leaf] if top(name) in PACKAGES}
        assert inside <= BLT_LEAVES, f"{leaf} imports {inside - BLT_LEAVES}"
