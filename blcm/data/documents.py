"""Reading documents from JSONL(.gz) files (a ``text`` field per line), directories (every file below them),
or any other file (its raw bytes are one document). Bad files and lines are skipped with a warning that names
them, and counted; nothing is dropped silently. ``read_jsonl`` is the project's one reader of JSONL(.gz) lines
(`blcm eval`'s parallel file too)."""

from __future__ import annotations

import gzip
import json
import logging
import os
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

from blcm import DataError

log = logging.getLogger("blcm")


@dataclass
class SkipReport:
    """What a read skipped, so the end of a run can say so."""

    items: list[str] = field(default_factory=list)

    def skip(self, what: str, why: str) -> None:
        self.items.append(f"{what}: {why}")
        log.warning("skipped %s: %s", what, why)

    def summary(self) -> str | None:
        return f"skipped {len(self.items)} bad file(s)/line(s)" if self.items else None

    def named(self, limit: int = 5) -> str | None:
        """The summary naming the first ``limit`` skipped files/lines."""
        if not self.items:
            return None
        more = f" and {len(self.items) - limit} more" if len(self.items) > limit else ""
        return f"{self.summary()}: {'; '.join(self.items[:limit])}{more}"


def is_jsonl(path: Path) -> bool:
    name = path.name.lower()
    return name.endswith((".jsonl", ".jsonl.gz", ".ndjson", ".ndjson.gz"))


@dataclass(frozen=True)
class Document:
    """One document of an input: its bytes, where it came from, and a stable key for splitting."""

    data: bytes
    source: str  # the JSONL "source" field when present, else the file name
    key: str  # "<source>/<JSONL id>", else "<file>:<ordinal in the file>" (JSONL) or the file's path


def iter_documents(paths: list[str | os.PathLike], text_field: str = "text",
                   skipped: SkipReport | None = None) -> Iterator[bytes]:
    """Yield each document's bytes from JSONL(.gz) files, other files, and directories (recursively)."""
    for doc in iter_records(paths, text_field, skipped):
        yield doc.data


def iter_records(paths: list[str | os.PathLike], text_field: str = "text",
                 skipped: SkipReport | None = None) -> Iterator[Document]:
    """Like :func:`iter_documents`, with each document's source and key; the order is deterministic
    (inputs in the order given, the files below a directory sorted by path)."""
    skipped = skipped if skipped is not None else SkipReport()
    for raw in paths:
        path = Path(raw)
        if path.is_dir():
            for file in sorted(p for p in path.rglob("*") if p.is_file()):
                yield from _iter_file(file, file.relative_to(path).as_posix(), text_field, skipped)
        elif not path.exists():
            raise DataError(f"no such file or directory: {path}")
        else:
            yield from _iter_file(path, path.name, text_field, skipped)


def _iter_file(path: Path, key: str, text_field: str, skipped: SkipReport) -> Iterator[Document]:
    if is_jsonl(path):
        yield from _iter_jsonl(path, text_field, skipped)
        return
    try:
        text = path.read_bytes()
    except OSError as e:
        skipped.skip(str(path), e.strerror or str(e))
        return
    yield Document(text, path.name, key)


def _iter_jsonl(path: Path, text_field: str, skipped: SkipReport) -> Iterator[Document]:
    ordinal = 0
    for where, record in read_jsonl(path, skipped):
        if not isinstance(record, dict) or text_field not in record:
            skipped.skip(where, f"no {text_field!r} field")
            continue
        text = record[text_field]
        if not isinstance(text, str):
            skipped.skip(where, f"{text_field!r} is not a string")
            continue
        source = record.get("source")
        source = source if isinstance(source, str) and source else path.name
        doc_id = record.get("id")
        key = f"{source}/{doc_id}" if doc_id is not None else f"{path.name}:{ordinal}"
        ordinal += 1
        yield Document(text.encode("utf-8"), source, key)


def read_jsonl(path: str | os.PathLike, skipped: SkipReport | None = None) -> Iterator[tuple[str, object]]:
    """The one JSONL(.gz) reader: each non-blank line's JSON value, with where it is (``"<path>:<line>"``). A line
    that is not valid JSON (or not UTF-8), and a file that cannot be read (from where it fails: a truncated gzip
    yields its readable lines first), go into ``skipped`` (named, logged, counted), or with no ``skipped`` raise a
    DataError that names them. A missing file is a DataError either way."""
    path = Path(path)

    def bad(what: str, why: str) -> None:
        if skipped is None:
            raise DataError(f"{what}: {why}")
        skipped.skip(what, why)

    opener = gzip.open if path.name.lower().endswith(".gz") else open
    try:
        with opener(path, "rb") as f:
            for lineno, line in enumerate(f, 1):
                if not line.strip():
                    continue
                try:
                    record = json.loads(line)
                except (json.JSONDecodeError, UnicodeDecodeError) as e:
                    bad(f"{path}:{lineno}", f"not valid JSON ({e})")
                    continue
                yield f"{path}:{lineno}", record
    except FileNotFoundError:
        raise DataError(f"no such file or directory: {path}") from None
    except (OSError, EOFError) as e:  # gzip.BadGzipFile is an OSError
        bad(str(path), f"unreadable ({e})")
