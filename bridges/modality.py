"""What kind of bytes a document holds, from its content (not its file name).

``sniff`` looks for the signatures of common container formats first (a WAV's ``RIFF....WAVE``
header, PNG's 8-byte signature, ...), then calls the rest text when it is UTF-8 with few control
characters, and ``binary`` otherwise. A truncated file keeps its signature, so a cut-off WAV is
still ``wav``. A model's per-modality tables are indexed by ``modality_index`` (its place in MODALITIES).
"""

from __future__ import annotations

import torch

from blt.ids import decode

SIGNATURES: tuple[tuple[str, int, bytes], ...] = (  # (modality, offset, magic bytes)
    ("png", 0, b"\x89PNG\r\n\x1a\n"),
    ("jpeg", 0, b"\xff\xd8\xff"),
    ("gif", 0, b"GIF87a"),
    ("gif", 0, b"GIF89a"),
    ("pdf", 0, b"%PDF-"),
    ("gzip", 0, b"\x1f\x8b"),
    ("zip", 0, b"PK\x03\x04"),
    ("flac", 0, b"fLaC"),
    ("ogg", 0, b"OggS"),
)
MODALITIES = ("text", "wav", *dict.fromkeys(m for m, _, _ in SIGNATURES), "binary")
SNIFF_BYTES = 4096  # the prefix the text test reads
MAX_CONTROL_SHARE = 0.01  # text may hold a few control characters (form feeds, escapes), not many
_TEXT_CONTROLS = frozenset(b"\t\n\r\f\v")


def sniff(data: bytes) -> str:
    """One of MODALITIES. Empty data is ``text`` (it has nothing that says otherwise)."""
    head = bytes(data[:SNIFF_BYTES])
    if head[:4] == b"RIFF" and head[8:12] == b"WAVE":
        return "wav"
    for modality, offset, magic in SIGNATURES:
        if head[offset : offset + len(magic)] == magic:
            return modality
    return "text" if looks_like_text(head, complete=len(data) <= SNIFF_BYTES) else "binary"


def looks_like_text(head: bytes, complete: bool) -> bool:
    """UTF-8 (a character cut by the end of an incomplete prefix allowed) with few control characters."""
    try:
        head.decode("utf-8")
    except UnicodeDecodeError as e:
        # The prefix may end inside a multi-byte character: only that is forgiven.
        if complete or e.start < len(head) - 3 or e.reason != "unexpected end of data":
            return False
    controls = sum(1 for b in head if (b < 0x20 and b not in _TEXT_CONTROLS) or b == 0x7F)
    return controls <= MAX_CONTROL_SHARE * max(len(head), 1)


def modality_index(modality: str) -> int:
    if modality not in MODALITIES:
        raise ValueError(f"unknown modality {modality!r}: one of {', '.join(MODALITIES)}")
    return MODALITIES.index(modality)


def unit_modalities(ids: torch.Tensor, lengths: torch.Tensor) -> torch.Tensor:
    """(U,) the index in MODALITIES of each unit's content, sniffed unit by unit."""
    rows = zip(ids.tolist(), lengths.tolist(), strict=True)
    return torch.tensor([MODALITIES.index(sniff(decode(row[:n]))) for row, n in rows], dtype=torch.long,
                        device=ids.device)
