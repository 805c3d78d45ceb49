"""blcm.eval.text: word n-gram generation metrics (REP-4, OVL-3), decoded byte accuracy, chrF, ROUGE-L, and
unit_text (how every command and report shows a unit)."""

from __future__ import annotations

import math

import pytest
from hypothesis import given
from hypothesis import strategies as st

from blcm.eval.text import chrf, decoded_byte_accuracy, ngrams, overlap, repetition, rouge_l, unit_text, words

WORDS = st.lists(st.sampled_from(["the", "cat", "sat", "on", "mat", "dog", "ran", "far", "away"]), max_size=30)


def test_ngrams_are_of_words_not_characters():
    # Character 4-grams of this text repeat ("the " twice, " the" ...); its word 4-grams do not.
    assert repetition("the cat sat on the mat", 4) == 0.0
    assert words("The CAT, sat.") == ["the", "cat", "sat"]
    assert ngrams(["a", "b", "c"], 2) == [("a", "b"), ("b", "c")]


def test_repetition_counts_repeated_ngrams():
    assert repetition("a b c d a b c d", 4) == 1 - 4 / 5  # 5 4-grams, "a b c d" twice
    assert repetition("a b c d a b c d a b c d", 4) == 1 - 4 / 9  # 9 4-grams, 4 distinct
    assert math.isnan(repetition("too short", 4))


@given(WORDS)
def test_repetition_counts_each_ngram_that_repeats_an_earlier_one(tokens):
    value = repetition(" ".join(tokens), 4)
    grams = [tuple(tokens[i : i + 4]) for i in range(len(tokens) - 3)]
    if not grams:
        assert math.isnan(value)
        return
    repeats = sum(g in grams[:i] for i, g in enumerate(grams))  # a slow, independent count
    assert value == pytest.approx(repeats / len(grams))


@given(WORDS, WORDS)
def test_overlap_is_a_share_and_one_against_itself(a, b):
    text, context = " ".join(a), " ".join(b)
    value = overlap(text, context, 3)
    if len(a) < 3:
        assert math.isnan(value)
    else:
        assert 0.0 <= value <= 1.0
        assert overlap(text, text, 3) == 1.0
        assert overlap(text, context + " " + text, 3) == 1.0


def test_overlap_of_disjoint_texts_is_zero():
    assert overlap("one two three four", "five six seven eight", 3) == 0.0


@given(st.binary(max_size=40), st.binary(max_size=40))
def test_decoded_byte_accuracy_is_symmetric_bounded_and_one_only_for_equal_bytes(a, b):
    value = decoded_byte_accuracy(a, b)
    assert value == decoded_byte_accuracy(b, a)
    assert 0.0 <= value <= 1.0
    assert (value == 1.0) == (a == b)


def test_chrf_and_rouge_l_of_identical_texts():
    texts = [b"The cat sat on the mat.", b"A dog ran far away."]
    assert chrf(texts, texts) == 100.0
    assert rouge_l(texts, texts) == [1.0, 1.0]
    assert chrf([b"zzzz qqqq"], [b"The cat sat on the mat."]) < 10
    assert rouge_l([b"zzzz"], [b"the cat"]) == [0.0]
    assert math.isnan(chrf([], []))


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
