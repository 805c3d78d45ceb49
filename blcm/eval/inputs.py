"""What `blcm eval` reads: documents (grouped by source or modality), a parallel file, and their units."""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Sequence
from dataclasses import dataclass, replace

from blcm import DataError
from blcm.data.documents import Document, SkipReport, iter_records, read_jsonl
from bridges.modality import sniff

GROUPS = ("source", "modality")


@dataclass
class EvalDocument:
    source: str
    units: list[bytes]  # the first `window` units of the document
    modality: str | None = None  # the whole document's (bridges.modality.sniff); None: each unit sniffed


def read_documents(paths: Sequence[str], max_docs: int | None, text_field: str = "text",
                   group_by: str = "source") -> list[Document]:
    """Up to ``max_docs`` non-empty documents of ``paths``, taken in turn from each group (so every group is
    represented), each group's in file order; DataError when there are none. The group, which the report
    breaks every metric down by, is the document's ``source``, or with ``group_by="modality"`` what its
    content is (bridges.modality.sniff: text, wav, png, ...), put in its ``source``."""
    if group_by not in GROUPS:
        raise ValueError(f"group_by must be one of {GROUPS}, got {group_by!r}")
    skipped = SkipReport()
    by_source: dict[str, list[Document]] = defaultdict(list)
    for doc in iter_records(list(paths), text_field, skipped):
        if doc.data:
            if group_by == "modality":
                doc = replace(doc, source=sniff(doc.data))
            by_source[doc.source].append(doc)
    if not by_source:
        reason = skipped.named() or "they are empty"
        raise DataError(f"no documents with text in {', '.join(map(str, paths))}: {reason}")
    queues = list(by_source.values())
    total = sum(map(len, queues))
    limit = total if max_docs is None else min(max_docs, total)
    docs = []
    for i in range(max(map(len, queues))):
        docs += [q[i] for q in queues if i < len(q)]
    return docs[:limit]


def read_parallel(path: str, limit: int | None) -> list[dict[str, str]]:
    """Records {"en": ..., "<locale>": ...} of a parallel JSONL(.gz) file (other fields dropped)."""
    records = []
    for where, record in read_jsonl(path):
        if not isinstance(record, dict):
            raise DataError(f"{where} is not a JSON object of texts by language")
        texts = {k: v for k, v in record.items() if k not in ("id", "source") and isinstance(v, str) and v}
        if "en" in texts and len(texts) > 1:
            records.append(texts)
        if limit is not None and len(records) >= limit:
            break
    if not records:
        raise DataError(f"{path} holds no record with an 'en' text and a translation")
    return records


def data_summary(docs: list[EvalDocument]) -> dict:
    sources = defaultdict(int)
    for d in docs:
        sources[d.source] += 1
    return {"documents": len(docs), "units": sum(len(d.units) for d in docs),
            "bytes": sum(len(u) for d in docs for u in d.units), "sources": dict(sorted(sources.items()))}
