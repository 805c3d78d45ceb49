"""The window index (blcm.data.windows) against a plain Python reference, its rules as properties, and the
longest unit of each window."""

from collections import Counter
from itertools import pairwise

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from blcm.data.windows import longest_unit, window_index

counts = st.lists(st.integers(0, 40), max_size=12)


def reference(doc_unit_counts: list[int], max_units: int) -> list[tuple[int, int, int, bool]]:
    """(document, first unit, units, ends with EOD) per window, by walking each document's n + 1 units."""
    rows = []
    for doc, n in enumerate(doc_unit_counts):
        start = 0
        while True:
            end = min(start + max_units, n + 1)
            rows.append((doc, start, end - start, end == n + 1))
            if end == n + 1:
                break
            start += max(max_units - 1, 1)
    return rows


def rows(index) -> list[tuple[int, int, int, bool]]:
    return list(zip(index.doc.tolist(), index.offset.tolist(), index.units.tolist(), index.eod.tolist(),
                    strict=True))


def test_a_small_example():
    index = window_index(np.array([3, 0, 5]), max_units=3)
    # document 0: units 0 1 2 + EOD(3); document 1: EOD alone; document 2: units 0-4 + EOD(5)
    assert rows(index) == [(0, 0, 3, False), (0, 2, 2, True),
                           (1, 0, 1, True),
                           (2, 0, 3, False), (2, 2, 3, False), (2, 4, 2, True)]
    assert index.real.tolist() == [3, 1, 0, 3, 3, 1]


@settings(max_examples=300)
@given(counts, st.integers(1, 20))
def test_matches_the_reference(doc_unit_counts, max_units):
    assert rows(window_index(np.array(doc_unit_counts, dtype=np.int64), max_units)) == reference(
        doc_unit_counts, max_units)


@settings(max_examples=300)
@given(counts, st.integers(2, 20))
def test_the_rules(doc_unit_counts, max_units):
    index = window_index(np.array(doc_unit_counts, dtype=np.int64), max_units)
    assert index.doc.tolist() == sorted(index.doc.tolist())
    for doc, n in enumerate(doc_unit_counts):
        mine = [r for r in rows(index) if r[0] == doc]
        assert mine, "every document has a window"
        for j, (_, offset, units, eod) in enumerate(mine):
            assert offset == j * (max_units - 1)  # window j starts at unit j * (max_units - 1)
            assert units <= max_units and (units >= 2 or n == 0)  # a (context, next) pair in each
            assert eod == (j == len(mine) - 1)
        for (_, a, units, _), (_, b, _, _) in pairwise(mine):
            assert b == a + units - 1  # consecutive windows overlap by one unit
        _, last_offset, last_units, _ = mine[-1]
        assert last_offset + last_units - 1 == n  # the EOD unit (unit n) is the last window's last unit
        targets = Counter(u for _, offset, units, _ in mine for u in range(offset + 1, offset + units))
        assert targets == Counter(range(1, n + 1))  # every unit after the first is a target exactly once


def test_one_unit_windows_do_not_overlap():
    assert rows(window_index(np.array([2]), max_units=1)) == [(0, 0, 1, False), (0, 1, 1, False), (0, 2, 1, True)]
    with pytest.raises(ValueError, match="max_units"):
        window_index(np.array([2]), max_units=0)


@settings(max_examples=200)
@given(st.lists(st.integers(1, 300), max_size=60), st.data())
def test_longest_unit_is_the_maximum_over_each_window(unit_lengths, data):
    n = len(unit_lengths)
    spans = data.draw(st.lists(st.integers(0, n).flatmap(lambda s: st.tuples(st.just(s), st.integers(0, n - s))),
                               max_size=20))
    start = np.array([s for s, _ in spans], dtype=np.int64)
    real = np.array([r for _, r in spans], dtype=np.int64)
    expected = [max(unit_lengths[s : s + r]) if r else 1 for s, r in spans]
    assert longest_unit(np.array(unit_lengths, dtype=np.int64), start, real).tolist() == expected
