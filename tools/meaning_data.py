"""The data the meaning space trains and is measured on, from the shared corpora (../shared/data).

- English documents as lists of sentence units (en/train, en/valid): the next-meaning term's windows.
- Translation pairs of units (parallel/train, parallel/valid): a paragraph and its translation cut into units; where
  both give the same number of units, unit i of one is paired with unit i of the other.

Batches are drawn with a torch.Generator, whose state a checkpoint keeps, so a resumed run draws what the
uninterrupted one would have.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

import torch

from blcm.data.documents import iter_records, read_jsonl
from blt.ids import decode, pad_batch
from bridges.segment import SentenceSegmenter

SHARED = Path(__file__).resolve().parents[1].parent / "shared" / "data"
UNIT_BYTES = 128
CONTEXT_BYTES = 256  # the most text before a window unit kept for a decoder that reads it


def texts_before(units: list[bytes], start: bytes = b"") -> list[bytes]:
    """The text before each of a document's consecutive ``units`` (``start``: the text before the first), its last
    CONTEXT_BYTES: what a decoder that reads context reads."""
    out, text = [], start[-CONTEXT_BYTES:]
    for unit in units:
        out.append(text)
        text = (text + unit)[-CONTEXT_BYTES:]
    return out


def english_documents(split: str, unit_bytes: int = UNIT_BYTES) -> list[list[bytes]]:
    """en/{split}'s documents as sentence units of at most ``unit_bytes``; documents of fewer than 2 units dropped."""
    segment = SentenceSegmenter(unit_bytes).split
    docs = (segment(doc.data) for doc in iter_records([str(SHARED / "en" / f"{split}.jsonl.gz")]))
    return [units for units in docs if len(units) >= 2]


def translation_pairs(split: str, unit_bytes: int = UNIT_BYTES) -> list[tuple[bytes, bytes]]:
    """(English unit, its translation's unit) for every locale of parallel/{split} (see the module docstring)."""
    segment = SentenceSegmenter(unit_bytes).split
    pairs = []
    for _, record in read_jsonl(SHARED / "parallel" / f"{split}.jsonl.gz"):
        english = segment(record["en"].encode())
        for locale, text in record.items():
            if locale in ("id", "source", "en"):
                continue
            theirs = segment(text.encode())
            if len(theirs) == len(english):
                pairs += [(a, b) for a, b in zip(english, theirs, strict=True) if a != b]
    return pairs


def paragraph_pairs(split: str, unit_bytes: int = UNIT_BYTES) -> list[tuple[list[bytes], list[bytes]]]:
    """(English paragraph, its translation) as lists of units, for every locale of parallel/{split}: every pair,
    whether or not both sides give the same number of units (a paragraph's meaning is the mean of its units')."""
    segment = SentenceSegmenter(unit_bytes).split
    pairs = []
    for _, record in read_jsonl(SHARED / "parallel" / f"{split}.jsonl.gz"):
        english = segment(record["en"].encode())
        pairs += [(english, segment(text.encode())) for locale, text in record.items()
                  if locale not in ("id", "source", "en") and text != record["en"]]
    return [(a, b) for a, b in pairs if a and b]


@dataclass
class Batches:
    """Seeded draws of translation pairs (distinct English units, so no pair is another's false negative) and of
    windows of consecutive units of English documents."""

    pairs: list[tuple[bytes, bytes]]
    documents: list[list[bytes]]
    generator: torch.Generator
    paragraphs: list[tuple[list[bytes], list[bytes]]] = field(default_factory=list)

    def __post_init__(self):
        by_english: dict[bytes, list[bytes]] = {}
        for a, b in self.pairs:
            by_english.setdefault(a, []).append(b)
        self.english = list(by_english)
        self.translations = [by_english[a] for a in self.english]

    def draw(self, n: int) -> torch.Tensor:
        return torch.randint(0, 2**62, (n,), generator=self.generator)

    def pair_batch(self, size: int) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]:
        """(ids_a, lengths_a, ids_b, lengths_b) of ``size`` pairs with distinct English units."""
        rows = torch.randperm(len(self.english), generator=self.generator)[:size].tolist()
        picks = self.draw(len(rows)).tolist()
        a = [self.english[r] for r in rows]
        b = [self.translations[r][p % len(self.translations[r])] for r, p in zip(rows, picks, strict=True)]
        return (*pad_batch(a), *pad_batch(b))

    def paragraph_batch(self, size: int) -> tuple[torch.Tensor, ...]:
        """(ids_a, lengths_a, paragraph_a, ids_b, lengths_b, paragraph_b): the units of ``size`` paragraph pairs
        with distinct English paragraphs, each unit's paragraph index (0 … size-1) beside it."""
        order = torch.randperm(len(self.paragraphs), generator=self.generator).tolist()
        chosen, seen = [], set()
        for i in order:
            if len(chosen) == size:
                break
            english = tuple(self.paragraphs[i][0])
            if english not in seen:
                seen.add(english)
                chosen.append(self.paragraphs[i])
        out = []
        for side in (0, 1):
            units = [pair[side] for pair in chosen]
            index = torch.repeat_interleave(torch.arange(len(units)), torch.tensor([len(u) for u in units]))
            out += [*pad_batch([u for paragraph in units for u in paragraph]), index]
        return tuple(out)

    def views(self, ids: torch.Tensor, lengths: torch.Tensor, drop: float = 0.2) -> tuple[torch.Tensor, torch.Tensor]:
        """The units (U, L) with each space-separated word dropped with probability ``drop`` (at least one word
        kept): a second view of each unit for the identity term."""
        out = []
        for row, n in zip(ids, lengths.tolist(), strict=True):
            words = decode(row[:n]).split(b" ")
            keep = (torch.rand(len(words), generator=self.generator) >= drop).tolist()
            kept = [w for w, k in zip(words, keep, strict=True) if k] or words[:1]
            out.append(b" ".join(kept))
        return pad_batch(out)

    def window_batch(self, docs: int, units: int) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, list[bytes]]:
        """(ids (docs·units, L), lengths, valid (docs, units), before): ``units`` consecutive units of ``docs``
        documents from a random start (a shorter document fills what it has; the rest are one-byte PAD rows, not
        valid), and the document's text before each row (its last CONTEXT_BYTES; b"" for a PAD row)."""
        chosen = torch.randint(0, len(self.documents), (docs,), generator=self.generator).tolist()
        starts = self.draw(docs).tolist()
        rows, before, valid = [], [], torch.zeros(docs, units, dtype=torch.bool)
        for i, (d, s) in enumerate(zip(chosen, starts, strict=True)):
            doc = self.documents[d]
            start = s % max(len(doc) - units + 1, 1)
            window = doc[start : start + units]
            valid[i, : len(window)] = True
            rows += window + [b" "] * (units - len(window))
            before += texts_before(window, b"".join(doc[:start])) + [b""] * (units - len(window))
        ids, lengths = pad_batch(rows)
        return ids, lengths, valid, before
