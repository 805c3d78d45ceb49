"""Reading documents from JSONL(.gz) files (a ``text`` field per line), directories (every file below them),
or any other file (its raw bytes are one document). Bad files and lines are skipped with a warning that names
them, and counted; nothing is dropped silently."""

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

    text: bytes
    source: str  # the JSONL "source" field when present, else the file name
    key: str  # "<source>/<JSONL id>", else "<file>:<ordinal in the file>" (JSONL) or the file's path


def iter_documents(paths: list[str | os.PathLike], text_field: str = "text",
                   skipped: SkipReport | None = None) -> Iterator[bytes]:
    """Yield each document's bytes from JSONL(.gz) files, other files, and directories (recursively)."""
    for doc in iter_records(paths, text_field, skipped):
        yield doc.text


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
    opener = gzip.open if path.name.lower().endswith(".gz") else open
    ordinal = 0
    try:
        with opener(path, "rb") as f:
            for lineno, line in enumerate(f, 1):
                if not line.strip():
                    continue
                try:
                    record = json.loads(line)
                    text = record[text_field]
                except (json.JSONDecodeError, UnicodeDecodeError) as e:
                    skipped.skip(f"{path}:{lineno}", f"not valid JSON ({e})")
                    continue
                except (KeyError, TypeError):
                    skipped.skip(f"{path}:{lineno}", f"no {text_field!r} field")
                    continue
                if not isinstance(text, str):
                    skipped.skip(f"{path}:{lineno}", f"{text_field!r} is not a string")
                    continue
                source = record.get("source")
                source = source if isinstance(source, str) and source else path.name
                doc_id = record.get("id")
                key = f"{source}/{doc_id}" if doc_id is not None else f"{path.name}:{ordinal}"
                ordinal += 1
                yield Document(text.encode("utf-8"), source, key)
    except (OSError, EOFError, gzip.BadGzipFile) as e:
        skipped.skip(str(path), f"unreadable ({e})")
