"""The spelling codec's training data (tools/codec_data.py) and its trainer (tools/ship_codec.py train)."""

import json
import random
import sys
from pathlib import Path

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "tools"))

import codec_data  # noqa: E402
import ship_codec  # noqa: E402
from codec_data import (  # noqa: E402
    HELD_OUT_SCRIPTS,
    UNIT_BYTES,
    Mixture,
    binary_spans,
    check_held_out_scripts,
    script_unit,
    training_scripts,
    unicode_scripts,
)

from bridges.pretrained import load_codec  # noqa: E402
from tests.conftest import shared_file  # noqa: E402


def test_held_out_scripts_are_real_scripts_never_drawn_in_training():
    scripts = unicode_scripts()
    assert set(HELD_OUT_SCRIPTS) <= set(scripts)
    assert not set(HELD_OUT_SCRIPTS) & set(training_scripts())
    assert {"LATIN", "BENGALI", "TIBETAN", "HEBREW", "THAANA", "CJK", "HANGUL", "OTHER"} <= set(training_scripts())
    owners = {}
    for name, chars in scripts.items():
        for c in chars:
            assert c not in owners, f"{c!r} in {owners.get(c)} and {name}"
            owners[c] = name


@settings(max_examples=60, deadline=None)
@given(seed=st.integers(0, 2**32), script=st.sampled_from(sorted(unicode_scripts())))
def test_a_script_unit_is_valid_utf8_of_its_script_within_the_unit_cap(seed, script):
    unit = script_unit(random.Random(seed), script)
    assert 1 <= len(unit) <= UNIT_BYTES
    own = set(unicode_scripts()[script])
    assert all(c in own or c.isascii() for c in unit.decode("utf-8"))


def test_the_held_out_check_refuses_a_text_with_an_unseen_script():
    ogham = unicode_scripts()["OGHAM"][3]
    check_held_out_scripts({"en": [b"plain text", "καλημέρα".encode()]})
    with pytest.raises(ValueError, match="en holds held-out script"):
        check_held_out_scripts({"en": [b"plain", f"a {ogham} b".encode()]})


@settings(max_examples=30, deadline=None)
@given(files=st.lists(st.binary(min_size=1, max_size=600), min_size=1, max_size=4))
def test_binary_spans_cut_files_losslessly(files):
    spans = binary_spans(files)
    assert all(1 <= len(s) <= UNIT_BYTES for s in spans)
    assert b"".join(spans) == b"".join(files)


def test_the_mixture_draws_in_its_shares_and_replays_from_its_generator_state():
    texts, binaries = [b"a text unit.", b"another one!"], [bytes(range(256)) * 4]
    mixture = Mixture(texts, binaries, {"text": 0.5, "random": 0.25, "scripts": 0.0, "binary": 0.25}, seed=1)
    state = mixture.generator.get_state()
    first = mixture.batch(400)
    assert all(1 <= len(u) <= UNIT_BYTES for u in first)
    share = sum(u in texts for u in first) / len(first)
    assert 0.4 < share < 0.6
    mixture.generator.set_state(state)
    assert mixture.batch(400) == first  # a resumed run draws what the uninterrupted one would have
    assert mixture.batch(400) != first


@pytest.mark.parametrize("weights, message", [({"text": 1.0, "speech": 1.0}, "unknown sources"),
                                              ({"text": -1.0, "random": 2.0}, ">= 0"),
                                              ({"binary": 1.0}, "has no data")])
def test_the_mixture_refuses_bad_weights(weights, message):
    with pytest.raises(ValueError, match=message):
        Mixture([b"t"], [], weights)


def test_held_out_binary_files_never_train():
    shared_file("bytes", "images")  # skips without the shared data
    train, valid = codec_data.binary_files("train"), codec_data.binary_files("valid")
    for kind in ("wav", "png"):
        assert train[kind] and valid[kind] and not set(train[kind]) & set(valid[kind])


def test_train_writes_a_curve_an_export_and_resumes(tmp_path, monkeypatch):
    """A few seconds of the trainer on tiny data: a curve row per evaluation, a loadable export, and a resume that
    goes on from the checkpoint's step with the checkpoint's recipe."""
    texts = {"en": [b"The cat sat on the mat.", b"A dog barked twice.", b"Rain fell all day."]}
    sets = {"en/valid": [b"The cat sat."], "random bytes": [bytes([7, 200, 13])]}
    monkeypatch.setattr(ship_codec, "SHARED", tmp_path)
    monkeypatch.setattr(ship_codec, "RUNS", tmp_path / "runs")
    monkeypatch.setattr(ship_codec, "text_units", lambda split: texts)
    binaries = {"wav": [bytes(range(256))], "png": [b"\x89PNG" * 64]}
    monkeypatch.setattr(ship_codec, "binary_files", lambda split: binaries)
    monkeypatch.setattr(ship_codec, "curve_sets", lambda: sets)
    common = ["--name", "tiny", "--hidden", "64", "--batch-size", "16", "--eval-minutes", "0.02"]
    assert ship_codec.main(["train", *common, "--minutes", "0.05", "--chunk-bytes", "16"]) == 0
    run = tmp_path / "runs" / "tiny"
    rows = [json.loads(line) for line in (run / "curve.jsonl").read_text().splitlines()]
    assert len(rows) >= 2 and {"en/valid", "random bytes", "en/valid σ=0.2", "step"} <= set(rows[-1])
    assert rows[-1]["minutes"] - rows[-2]["minutes"] > 0.01  # no twin row at the budget's end
    assert rows[-1]["step"] > rows[0]["step"] > 0
    codec = load_codec(run / "export")
    assert codec.config.chunk_bytes == 16 and codec.config.hidden == 64
    steps = torch.load(run / "last.pt", weights_only=True)["step"]
    assert ship_codec.main(["train", "--name", "tiny", "--minutes", "0.01", "--chunk-bytes", "8", "--resume"]) == 0
    state = torch.load(run / "last.pt", weights_only=True)
    assert state["step"] > steps and state["args"]["chunk_bytes"] == 16  # the checkpoint's recipe, not the flag's


def test_package_no_ship_reports_a_candidate_and_leaves_the_shipped_codec_alone(tmp_path, monkeypatch):
    from bridges.chunk_codec import ChunkCodecConfig, ChunkConceptCodec
    from bridges.pretrained import SHIPPED_CODEC, save_codec

    torch.manual_seed(0)
    export = save_codec(ChunkConceptCodec(ChunkCodecConfig(hidden=32), 1024), tmp_path / "export")
    sets = {name: [b"some unit.", bytes([0, 255, 9])] for name in (
        "en/valid", "multilingual/valid", "parallel/fr-FR/valid", "random bytes", "wav spans", "png spans",
        "unseen script/OGHAM", "script/LATIN")}
    monkeypatch.setattr(ship_codec, "SHARED", tmp_path)
    monkeypatch.setattr(ship_codec, "held_out_sets", lambda units, per_script: sets)
    shipped = {p.name: p.read_bytes() for p in SHIPPED_CODEC.iterdir()}
    out = tmp_path / "report"
    assert ship_codec.main(["package", "--export", str(export), "--no-ship", "--out", str(out)]) == 0
    report = json.loads(out.with_suffix(".json").read_text())
    assert set(report["sets"]) == set(sets) and report["pinned"] is None and report["dtype"] in ("fp16", "fp32")
    assert {"random bytes", "unseen scripts mean", "parallel/valid lowest locale"} <= set(report["summary"])
    assert {p.name: p.read_bytes() for p in SHIPPED_CODEC.iterdir()} == shipped
