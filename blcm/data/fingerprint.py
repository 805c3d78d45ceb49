"""One fingerprint of a set of input files, for what is computed from them once and kept: `blcm prepare`'s
settings (a rerun on changed inputs is refused) and the byte-stream cache (changed inputs are read again)."""

from __future__ import annotations

import hashlib
import json
import os
from collections.abc import Iterable
from pathlib import Path


def input_files(paths: Iterable[str | os.PathLike]) -> list[Path]:
    """The files ``paths`` name, in the order they are read: a file as it is, a directory as every file
    below it sorted by path."""
    files = []
    for p in map(Path, paths):
        files += sorted(f for f in p.rglob("*") if f.is_file()) if p.is_dir() else [p]
    return files


def fingerprint(paths: Iterable[str | os.PathLike]) -> str:
    """A digest of the input files' absolute paths, sizes and modification times, in the order they are read.

    The order of ``paths`` counts: documents are read in that order, so other orders are other data. Missing
    files are left out (the readers report them). The digest of absolute paths is what a prepared directory's
    manifest holds: keep it as it is, or every prepared directory is refused as prepared from other inputs.
    """
    files = input_files(Path(p).resolve() for p in paths)
    rows = [[str(f), f.stat().st_size, f.stat().st_mtime_ns] for f in files if f.exists()]
    return hashlib.sha1(json.dumps(rows).encode()).hexdigest()
