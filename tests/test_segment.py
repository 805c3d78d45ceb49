from __future__ import annotations

import gzip
import json
import math
import re

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from blt.entropy import EntropyModel, EntropyModelConfig
from bridges.segment import (
    KINDS,
    EntropySegmenter,
    FixedSegmenter,
    SentenceSegmenter,
    build_segmenter,
    char_start,
)
from tests.conftest import shared_file


def tiny_model() -> EntropyModel:
    torch.manual_seed(0)
    return EntropyModel(EntropyModelConfig(dim=16, n_layers=1, n_heads=2, context=32)).eval()


_MODEL = tiny_model()


class ScriptedEntropy(torch.nn.Module):
    """Stands in for an EntropyModel: entropy 1.0 everywhere except 5.0 at the listed positions."""

    def __init__(self, spikes: list[int]):
        super().__init__()
        self.spikes = spikes
        self.anchor = torch.nn.Parameter(torch.zeros(1))  # the segmenter asks for the model's device

    def entropies(self, ids: torch.Tensor, lengths: torch.Tensor) -> torch.Tensor:
        h = torch.ones(ids.shape, dtype=torch.float32)
        h[:, [s for s in self.spikes if s < ids.shape[1]]] = 5.0
        return h


def check_units(units: list[bytes], document: bytes, max_bytes: int) -> None:
    assert b"".join(units) == document
    assert all(0 < len(u) <= max_bytes for u in units)
    assert (units == []) == (document == b"")


def split_text(text: str, max_bytes: int = 256) -> list[str]:
    return [u.decode() for u in SentenceSegmenter(max_bytes).split(text.encode())]


# ---------------------------------------------------------------------------------------------
# Properties, any bytes

# Text that exercises the patterns: terminators, closers, clause marks, whitespace of all kinds,
# multi-byte characters of every length, plus arbitrary characters.
FRAGMENTS = [". ", "! ", "? ", "…", "。", "！", "？", "؟ ", "। ", "\n", "\n\n", " ", "\t", "\u3000", ", ", "、",
             "，", "— ", "\"", "」", "»", " »", "Mr. ", "J. ", "e.g. ", "a", "Z", "é", "中", "ह", "😀", "word "]
texts = st.lists(st.one_of(st.sampled_from(FRAGMENTS), st.text(max_size=4)), max_size=120).map("".join)
# Bytes that are mostly text-like but may break UTF-8 anywhere.
text_bytes = st.lists(st.one_of(st.sampled_from(FRAGMENTS).map(str.encode), st.binary(max_size=4)),
                      max_size=120).map(b"".join)


@settings(max_examples=300)
@given(st.one_of(st.binary(max_size=600), text_bytes), st.sampled_from([4, 5, 7, 16, 64, 256]))
def test_sentence_lossless_any_bytes(document, max_bytes):
    check_units(SentenceSegmenter(max_bytes).split(document), document, max_bytes)


@settings(max_examples=300)
@given(texts, st.sampled_from([4, 5, 6, 7, 12, 32, 256]))
def test_sentence_never_cuts_inside_a_character(text, max_bytes):
    document = text.encode()
    units = SentenceSegmenter(max_bytes).split(document)
    check_units(units, document, max_bytes)
    assert "".join(u.decode() for u in units) == text  # every unit is valid UTF-8 on its own


@settings(max_examples=100)
@given(texts)
def test_sentence_units_after_the_first_start_at_a_non_space(text):
    # Uncapped (a cap can force a cut inside a run of whitespace), whitespace stays with the unit before.
    for unit in SentenceSegmenter(10_000).split(text.encode())[1:]:
        assert not unit[:1].isspace() and not unit.startswith("\u3000".encode())


@settings(max_examples=200)
@given(st.binary(max_size=600), st.integers(1, 80))
def test_fixed_lossless(document, size):
    units = FixedSegmenter(size).split(document)
    check_units(units, document, size)
    assert all(len(u) == size for u in units[:-1])


@settings(max_examples=40)
@given(st.one_of(st.binary(max_size=40), st.binary(min_size=100, max_size=400)), st.sampled_from([None, 5.0, 5.5]),
       st.integers(1, 20), st.integers(20, 64))
def test_entropy_lossless(document, threshold, min_bytes, max_bytes):
    seg = EntropySegmenter(_MODEL, threshold=threshold, min_bytes=min_bytes, max_bytes=max_bytes, target_bytes=30)
    check_units(seg.split(document), document, max_bytes)


def test_char_start():
    data = "a中b😀".encode()  # a | e4 b8 ad | b | f0 9f 98 80
    assert [char_start(data, i) for i in range(len(data) + 1)] == [0, 1, 1, 1, 4, 5, 5, 5, 5, 9]
    assert char_start(b"\x80\x80\x80\x80\x80", 4) == 4  # no lead byte: not UTF-8, cut where asked
    assert char_start(b"a\xc3\x80\x80", 3) == 3  # the 2-byte character ends before the cut


# ---------------------------------------------------------------------------------------------
# Sentences, concrete


@pytest.mark.parametrize("text, units", [
    ("Hello world. How are you? Fine!", ["Hello world. ", "How are you? ", "Fine!"]),
    ("Trailing spaces stay.   Next one.", ["Trailing spaces stay.   ", "Next one."]),
    ('He said "Stop." Then he left.', ['He said "Stop." ', "Then he left."]),
    ("It works (mostly.) Really?) No.", ["It works (mostly.) ", "Really?) ", "No."]),
    ('"Stop!" she said. Wait... Then go.', ['"Stop!" she said. ', "Wait... ", "Then go."]),
    ("Numbers like 3.14 and 2.5. Stay whole.", ["Numbers like 3.14 and 2.5. ", "Stay whole."]),
    ("No terminator at the end", ["No terminator at the end"]),
    ("  Leading space. B", ["  Leading space. ", "B"]),
])
def test_english(text, units):
    assert split_text(text) == units


@pytest.mark.parametrize("text, units", [
    ("Mr. Smith met Dr. Who. They talked.", ["Mr. Smith met Dr. Who. ", "They talked."]),
    ("J. Smith and John F. Kennedy met. Yes.", ["J. Smith and John F. Kennedy met. ", "Yes."]),
    ("Fruit, e.g. apples, i.e. food. Next.", ["Fruit, e.g. apples, i.e. food. ", "Next."]),
    ("See Fig. 3 and No. 5 here. Done.", ["See Fig. 3 and No. 5 here. ", "Done."]),
    ("Apples, pears, etc. and more. Done.", ["Apples, pears, etc. and more. ", "Done."]),
    ("Apples, pears, etc. The end.", ["Apples, pears, etc. ", "The end."]),
])
def test_abbreviations(text, units):
    assert split_text(text) == units


@pytest.mark.parametrize("text, units", [
    # French: spaces (often no-break) before ! ? and inside « ».
    ("Bonjour ! Comment ça va ? Très bien.", ["Bonjour ! ", "Comment ça va ? ", "Très bien."]),
    ("Il a dit « Non ! » Puis il est parti. M. Dupont est là.",
     ["Il a dit « Non ! » ", "Puis il est parti. ", "M. Dupont est là."]),
    ("Il a dit «\u00a0Oui.\u00a0» Fin.", ["Il a dit «\u00a0Oui.\u00a0» ", "Fin."]),
    # Spanish: the opening ¿ ¡ start the next unit.
    ("¿Qué tal? ¡Muy bien! Gracias.", ["¿Qué tal? ", "¡Muy bien! ", "Gracias."]),
    # Chinese and Japanese: full-width terminators, no whitespace.
    ("今天天气很好。我们去公园吧！你呢？好的", ["今天天气很好。", "我们去公园吧！", "你呢？", "好的"]),
    ("「いいえ。」彼は言った。本当？はい。", ["「いいえ。」", "彼は言った。", "本当？", "はい。"]),
    ("これはペンです。 それは本です。", ["これはペンです。 ", "それは本です。"]),
    ("Mixed?！Yes", ["Mixed?！", "Yes"]),
    # Arabic: ؟ and the Latin period; the Arabic comma does not end a sentence.
    ("مرحبا، كيف حالك؟ أنا بخير. شكرا", ["مرحبا، كيف حالك؟ ", "أنا بخير. ", "شكرا"]),
    # Hindi: the danda, with or without a following space.
    ("मैं ठीक हूँ। तुम कैसे हो? अच्छा।ठीक", ["मैं ठीक हूँ। ", "तुम कैसे हो? ", "अच्छा।", "ठीक"]),
])
def test_multilingual(text, units):
    assert split_text(text) == units


@pytest.mark.parametrize("text, units", [
    ("Title\n\nFirst paragraph\n \nSecond", ["Title\n\n", "First paragraph\n \n", "Second"]),
    ("One.\n\n\n  Two", ["One.\n\n\n  ", "Two"]),
    ("lowercase end.\n\nnext starts low", ["lowercase end.\n\n", "next starts low"]),
    ("Windows\r\n\r\nlines", ["Windows\r\n\r\n", "lines"]),
    ("A single\nnewline is not a break", ["A single\nnewline is not a break"]),
    ("\n\nStarts blank", ["\n\n", "Starts blank"]),
])
def test_paragraphs(text, units):
    assert split_text(text) == units


def test_long_sentence_prefers_clause_then_space_then_hard_cut():
    long = "alpha beta gamma, delta epsilon zeta eta theta iota kappa lambda mu nu xi omicron pi."
    units = split_text(long, max_bytes=64)
    assert units[0] == "alpha beta gamma, "  # the comma, though a space comes later within the cap
    assert all(len(u.encode()) <= 64 for u in units) and "".join(units) == long
    words = "word " * 30
    assert split_text(words, 32) == ["word " * 6, "word " * 6, "word " * 6, "word " * 6, "word " * 6]
    assert split_text("中" * 30, 32) == ["中" * 10, "中" * 10, "中" * 10]  # 30 bytes: back off from 32
    assert split_text("x" * 70, 32) == ["x" * 32, "x" * 32, "x" * 6]
    # A comma in the first quarter would leave a scrap: the last space wins.
    assert split_text("a, " + "bb " * 20, 32)[0] == "a, " + "bb " * 9
    # Full-width clause marks need no whitespace.
    assert split_text("一二三四五六七、八九十一二三四五六七八九十", 32)[0] == "一二三四五六七、"


def test_sentence_on_invalid_utf8():
    doc = b"\xff\xfe Hello. W\x80rld! \xc3" + b"\x80" * 20
    units = SentenceSegmenter(8).split(doc)
    check_units(units, doc, 8)
    assert SentenceSegmenter().split(b"") == []


# ---------------------------------------------------------------------------------------------
# Entropy cuts


def test_entropy_cuts_at_spikes_with_min_and_max():
    doc = bytes(range(100))
    seg = EntropySegmenter(ScriptedEntropy([3, 10, 12, 40, 41]), threshold=2.0, min_bytes=5, max_bytes=20)
    units = seg.split(doc)
    check_units(units, doc, 20)
    # 3 is too early (min 5); 10 cuts; 12 is too close; 30 forced (max 20); 40 cuts; 41 too close;
    # then forced cuts every 20.
    assert [len(u) for u in units] == [10, 20, 10, 20, 20, 20]
    assert seg.split(b"short") == [b"short"]  # at most min_bytes: no model call needed


def test_entropy_auto_threshold_hits_target():
    doc = bytes(range(256)) * 8
    seg = EntropySegmenter(ScriptedEntropy(list(range(0, len(doc), 32))), min_bytes=4, max_bytes=256,
                           target_bytes=32)
    units = seg.split(doc)
    check_units(units, doc, 256)
    assert all(len(u) == 32 for u in units)  # the spikes, exactly
    real = EntropySegmenter(_MODEL, min_bytes=4, max_bytes=64, target_bytes=16)
    mean = len(doc) / len(real.split(doc))
    assert 12 <= mean <= 20


# ---------------------------------------------------------------------------------------------
# Configs


def test_config_round_trip(tiny_entropy_model_dir):
    model = EntropyModel.from_pretrained(tiny_entropy_model_dir)
    segmenters = [SentenceSegmenter(), SentenceSegmenter(128), FixedSegmenter(17),
                  EntropySegmenter(model), EntropySegmenter(model, threshold=3.5, min_bytes=2, max_bytes=90)]
    doc = "A test. Of configs, in two sentences? Yes — with ünïcödé.".encode() * 4
    for seg in segmenters:
        config = seg.to_config()
        assert json.loads(json.dumps(config)) == config and config["kind"] in KINDS
        rebuilt = build_segmenter(json.loads(json.dumps(config)), entropy_model=model)
        assert type(rebuilt) is type(seg) and rebuilt.to_config() == config
        assert rebuilt.split(doc) == seg.split(doc)
        assert repr(rebuilt) == repr(seg)


@pytest.mark.parametrize("config, message", [
    ({"kind": "words"}, "unknown segmenter kind 'words'; choose one of ['entropy', 'fixed', 'modality', 'sentence']"),
    ({"max_bytes": 10}, "'kind' key"),
    ({"kind": "sentence", "max_bytes": 3}, "max_bytes must be an int >= 4"),
    ({"kind": "sentence", "max_len": 3}, "bad 'sentence' segmenter config"),
    ({"kind": "fixed", "size": 0}, "size must be"),
])
def test_bad_configs(config, message):
    with pytest.raises(ValueError, match=re.escape(message)):
        build_segmenter(config)


@pytest.mark.parametrize("kwargs, message", [
    ({"threshold": math.nan}, "finite"),
    ({"threshold": 10.0}, "no boundary"),
    ({"min_bytes": 0}, "min_bytes"),
    ({"min_bytes": 30, "max_bytes": 20}, "min_bytes"),
    ({"target_bytes": 0}, "target_bytes"),
])
def test_bad_entropy_arguments(kwargs, message):
    with pytest.raises(ValueError, match=message):
        EntropySegmenter(_MODEL, **kwargs)


# ---------------------------------------------------------------------------------------------
# Real data


def test_lossless_on_english_validation_documents():
    path = shared_file("en", "valid.jsonl.gz")
    with gzip.open(path, "rt", encoding="utf-8") as f:
        docs = [json.loads(line)["text"].encode() for _, line in zip(range(50), f, strict=False)]
    for max_bytes in (256, 128):
        seg = SentenceSegmenter(max_bytes)
        for doc in docs:
            units = seg.split(doc)
            check_units(units, doc, max_bytes)
            assert all(u.decode() for u in units)
    fixed = FixedSegmenter(64)
    assert all(b"".join(fixed.split(doc)) == doc for doc in docs)
