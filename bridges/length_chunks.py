"""Rows of very different lengths in chunks of similar length, so that almost no compute goes to padding."""

from __future__ import annotations

import torch


def length_chunks(lengths: torch.Tensor, max_tokens: int) -> list[torch.Tensor]:
    """Row indices sorted by length (longest first), cut so that each chunk's padded size
    (rows x its longest row) stays within ``max_tokens`` (at least one row per chunk)."""
    order = lengths.argsort(descending=True, stable=True)
    sorted_lengths = lengths[order].tolist()
    chunks, i = [], 0
    while i < len(order):
        rows = max(1, max_tokens // max(sorted_lengths[i], 1))
        chunks.append(order[i : i + rows])
        i += rows
    return chunks


def by_length(fn, ids: torch.Tensor, lengths: torch.Tensor, max_tokens: int, *per_row: torch.Tensor) -> torch.Tensor:
    """``fn(ids, *per_row, lengths)`` over length chunks (``ids`` trimmed to each chunk's longest
    row), with the results put back in the original row order."""
    chunks = length_chunks(lengths, max_tokens)
    outs = []
    for chunk in chunks:
        chunk_lengths = lengths[chunk]
        width = int(chunk_lengths.max())
        outs.append(fn(ids[chunk, :width], *(r[chunk] for r in per_row), chunk_lengths))
    return torch.cat(outs)[torch.cat(chunks).argsort()]
