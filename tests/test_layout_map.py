"""README's *The layout* is the one map of the code: every module of the five packages has a row there (its own,
or its directory's), and every row names a file or directory that exists."""

from __future__ import annotations

import re
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
PACKAGES = ("primitives", "blt", "concept_core", "bridges", "blcm")


def layout_rows() -> set[str]:
    readme = (ROOT / "README.md").read_text()
    start = readme.index("## The layout")
    end = readme.index("\n## ", start + 1)
    return set(re.findall(r"^\| `([^`]+)` \|", readme[start:end], re.M))


def names_for(path: Path) -> set[str]:
    """How a row may name a module: its path, its path inside its package, or a directory above it (below the
    package: a package's own row does not cover its modules)."""
    relative = path.relative_to(ROOT)
    package = ROOT / relative.parts[0]
    names = {str(relative), str(path.relative_to(package))}
    for parent in path.parents:
        if parent == package:
            break
        names |= {f"{parent.relative_to(ROOT)}/", f"{parent.relative_to(package)}/"}
    return names


def test_every_module_has_a_row():
    rows = layout_rows()
    # a package's __init__ is covered by its modules' rows, unless it is the package's one module (pretrained/)
    modules = [p for package in PACKAGES for p in sorted((ROOT / package).rglob("*.py"))
               if p.name != "__init__.py" or not any(q.name != "__init__.py" for q in p.parent.glob("*.py"))]
    assert modules
    missing = [str(p.relative_to(ROOT)) for p in modules if not names_for(p) & rows]
    assert not missing, f"README.md's layout has no row for {missing}"


def test_every_row_names_something_that_exists():
    candidates = [ROOT, *(ROOT / p for p in PACKAGES)]
    stale = [row for row in layout_rows() if not any((base / row).exists() for base in candidates)]
    assert not stale, f"README.md's layout names what is not there: {stale}"
