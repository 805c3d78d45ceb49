"""unit_text: how every command and report shows a unit."""

from hypothesis import given
from hypothesis import strategies as st

from blcm.unit_text import unit_text


def test_newlines_invalid_utf8_and_the_limit():
    assert unit_text(b"a\nb") == "a⏎b"
    assert unit_text(b"ok \xff") == "ok \ufffd"
    assert unit_text(b"abcdef", limit=3) == "abc…"
    assert unit_text("text too", limit=4) == "text…"


def test_cells_escape_pipes_and_show_empty_units():
    assert unit_text(b" a|b \n", cell=True) == "a\\|b ⏎"
    assert unit_text(b"", cell=True) == "∅"
    assert unit_text(b"  ", cell=True) == "∅"
    assert unit_text(b"", cell=False) == ""


@given(st.binary(max_size=300), st.integers(1, 400))
def test_one_line_and_never_past_the_limit(unit, limit):
    text = unit_text(unit, limit)
    assert "\n" not in text
    assert len(text) <= limit + 1
    cell = unit_text(unit, limit, cell=True)
    assert "\n" not in cell and cell.count("|") == cell.count("\\|")
