"""Modality sniffing from content and the ModalitySegmenter (text -> sentences, other bytes -> another cut)."""

from __future__ import annotations

import pytest
import torch
from hypothesis import given
from hypothesis import strategies as st

from bridges.modality import MODALITIES, SNIFF_BYTES, sniff
from bridges.segment import FixedSegmenter, ModalitySegmenter, SentenceSegmenter, build_segmenter
from tests.conftest import shared_file

WAV_HEADER = b"RIFF\x24\x08\x00\x00WAVEfmt "


@pytest.mark.parametrize("data, modality", [
    (WAV_HEADER + b"\x00" * 100, "wav"),
    (WAV_HEADER, "wav"),  # truncated after the header
    (b"\x89PNG\r\n\x1a\n" + b"\x00" * 10, "png"),
    (b"\xff\xd8\xff\xe0" + b"\x00" * 10, "jpeg"),
    (b"%PDF-1.7\n", "pdf"),
    (b"\x1f\x8b\x08\x00", "gzip"),
    (b"Plain ASCII text.\n", "text"),
    ("Ünïcödé — 日本語の文。".encode(), "text"),
    (b"", "text"),
    (b"RIFF\x00\x00\x00\x00AVI LIST", "binary"),  # RIFF, but not WAVE
    (bytes(range(256)), "binary"),
    (b"text with \x00 NULs \x00\x00 everywhere \x00", "binary"),
    ("Invalid \xff UTF-8".encode("latin-1"), "binary"),
])
def test_sniff(data, modality):
    assert sniff(data) == modality


def test_a_character_cut_by_the_sniffed_prefix_is_still_text():
    data = ("a" * (SNIFF_BYTES - 1) + "é" + " more").encode()  # "é" straddles the 4096-byte prefix
    assert sniff(data) == "text"
    assert sniff(data[:SNIFF_BYTES]) == "binary"  # but a document that really ends mid-character is not


def test_sniff_the_shared_speech_and_images():
    speech = shared_file("bytes", "speech-en")
    images = shared_file("bytes", "images")
    assert {sniff(p.read_bytes()) for p in sorted(speech.glob("*.wav"))[:10]} == {"wav"}
    assert {sniff(p.read_bytes()) for p in sorted(images.glob("*.png"))[:10]} == {"png"}
    assert sniff((speech / "transcripts.json").read_bytes()) == "text"


def segmenter() -> ModalitySegmenter:
    return ModalitySegmenter(SentenceSegmenter(max_bytes=32), FixedSegmenter(size=16))


@given(st.binary(max_size=300) | st.text(max_size=200).map(str.encode) | st.binary(max_size=200).map(
    lambda b: WAV_HEADER + b))
def test_modality_segmenter_is_lossless_and_capped(data):
    seg = segmenter()
    units = seg.split(data)
    assert b"".join(units) == data and all(units) and all(len(u) <= seg.max_bytes for u in units)
    if sniff(data) != "text":
        assert units == FixedSegmenter(size=16).split(data)


def test_modality_segmenter_dispatches_and_round_trips_its_config():
    seg = segmenter()
    assert seg.split(b"One sentence. Two sentences.") == [b"One sentence. ", b"Two sentences."]
    assert seg.split(WAV_HEADER + b"x" * 20) == [(WAV_HEADER + b"x" * 20)[i : i + 16] for i in (0, 16, 32)]
    config = seg.to_config()
    assert config == {"kind": "modality", "text": {"kind": "sentence", "max_bytes": 32},
                      "other": {"kind": "fixed", "size": 16}}
    assert build_segmenter(config).to_config() == config and seg.max_bytes == 32
    assert set(MODALITIES) >= {"text", "wav", "png", "binary"}


@pytest.mark.parametrize("config, message", [
    ({"kind": "modality", "text": {"kind": "sentence"}}, "'text' and 'other'"),
    ({"kind": "modality", "text": {"kind": "modality"}, "other": {"kind": "fixed"}}, "'text' and 'other'"),
])
def test_bad_modality_configs(config, message):
    with pytest.raises(ValueError, match=message):
        build_segmenter(config)


def test_an_entropy_config_without_a_model_cuts_with_the_shipped_one():
    from blt.pretrained import load_shipped_entropy_model

    seg = build_segmenter({"kind": "modality", "text": {"kind": "sentence"}, "other": {"kind": "entropy"}})
    shipped, _ = load_shipped_entropy_model()
    assert seg.other.entropy_model.config == shipped.config
    assert torch.equal(seg.other.entropy_model.head.weight, shipped.head.weight)
