"""The windows a prepared split's documents are cut into, computed from unit counts alone.

A document of ``n`` units is followed by one end-of-document (EOD) unit; the ``n + 1`` units are cut into
windows of up to ``max_units`` consecutive units that overlap by one: window ``j`` of a document starts at
unit ``j * (max_units - 1)``. So every window has a (context, next) pair, every unit after the first is a
prediction target in exactly one window, and the EOD unit is the last unit of the document's last window.
With ``max_units = 1`` (no pairs at all; only PreparedUnits allows it) the windows are the single units.
"""

from __future__ import annotations

from typing import NamedTuple

import numpy as np


class WindowIndex(NamedTuple):
    """One row per window, documents in order and each document's windows in order."""

    doc: np.ndarray  # (n_windows,) int64: the window's document
    offset: np.ndarray  # (n_windows,) int64: its first unit within the document
    units: np.ndarray  # (n_windows,) int64: its units, the EOD unit included
    eod: np.ndarray  # (n_windows,) bool: it ends with the EOD unit (the document's last window)

    @property
    def real(self) -> np.ndarray:
        """(n_windows,) the document units in each window (the EOD unit left out)."""
        return self.units - self.eod


def window_index(doc_unit_counts: np.ndarray, max_units: int) -> WindowIndex:
    """The windows (see the module docstring) of documents of ``doc_unit_counts`` (n_docs,) units each."""
    if max_units < 1:
        raise ValueError(f"max_units must be >= 1, got {max_units}")
    total = np.asarray(doc_unit_counts, dtype=np.int64) + 1  # the document's units and its EOD unit
    stride = max(max_units - 1, 1)  # one-unit windows cannot overlap
    per_doc = 1 + -(-np.maximum(total - max_units, 0) // stride)  # windows per document
    doc = np.repeat(np.arange(len(total)), per_doc)
    j = np.arange(len(doc)) - np.repeat(np.cumsum(per_doc) - per_doc, per_doc)  # the window within its document
    offset = j * stride
    return WindowIndex(doc, offset, np.minimum(max_units, total[doc] - offset), j == per_doc[doc] - 1)


def longest_unit(unit_lengths: np.ndarray, start: np.ndarray, real: np.ndarray) -> np.ndarray:
    """(n_windows,) the longest of units ``[start, start + real)`` of ``unit_lengths`` (n_units,) for each
    window; 1 for a window of its EOD unit alone (one id)."""
    # reduceat takes the maximum from each index up to the next; each window's end is its own index, and the
    # padding unit keeps an end at the last unit inside the array, as reduceat requires.
    lengths = np.append(np.asarray(unit_lengths, dtype=np.int64), 0)
    start, real = np.asarray(start, dtype=np.int64), np.asarray(real, dtype=np.int64)
    longest = np.ones(len(start), dtype=np.int64)
    has = real > 0
    if has.any():
        bounds = np.stack([start[has], start[has] + real[has]], axis=1).ravel()
        longest[has] = np.maximum.reduceat(lengths, bounds)[::2]
    return longest
