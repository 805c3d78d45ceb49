"""The shipped entropy model: verified at load, the default of `blcm patch`, a threshold per modality."""

import io
import json
import math
import os
import random
import shutil
import struct
import wave
import zlib
from pathlib import Path

import pytest
import torch

from blcm.cli import main
from blt import pretrained
from blt.ids import pad_batch
from blt.patching import Patcher
from blt.pretrained import (
    PINNED,
    SHIPPED,
    ModalityThresholds,
    PretrainedError,
    load_entropy_model,
    load_shipped_entropy_model,
    load_thresholds,
    verify,
)
from bridges.modality import sniff
from tests.conftest import shared_file
from tools.ship_entropy_model import sample


def synthetic_wav(seconds: float = 0.25) -> bytes:
    """8 kHz 16-bit mono PCM: a chirp with a little noise, as the shared speech prompts are."""
    rng = random.Random(0)
    n = int(8000 * seconds)
    samples = [int(8000 * math.sin(2 * math.pi * (200 + 400 * t / n) * t / 8000) + rng.gauss(0, 300)) for t in range(n)]
    out = io.BytesIO()
    with wave.open(out, "wb") as w:
        w.setnchannels(1)
        w.setsampwidth(2)
        w.setframerate(8000)
        w.writeframes(struct.pack(f"<{n}h", *samples))
    return out.getvalue()


def synthetic_png(size: int = 32) -> bytes:
    """A gradient image, deflate-compressed as every PNG is."""
    def chunk(kind: bytes, data: bytes) -> bytes:
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))

    rows = b"".join(b"\x00" + bytes((x * 7 + y * 3) % 256 for x in range(size) for _ in range(3)) for y in range(size))
    header = struct.pack(">IIBBBBB", size, size, 8, 2, 0, 0, 0)
    return b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", header) + chunk(b"IDAT", zlib.compress(rows)) + chunk(b"IEND", b"")


FILES = {
    "text": b"The State of the Union is strong. We will build new roads and schools.\n" * 3,
    "wav": synthetic_wav(),
    "png": synthetic_png(),
    "random": random.Random(1).randbytes(3000),
    "empty": b"",
    "invalid-utf8": b"caf\xc3 \xff\xfe na\xefve \xc3\x28 text",
}


@pytest.fixture
def no_model_configured(monkeypatch, tmp_path):
    """A fresh install: no flag, no environment variable, no runs/ directory to find a model in."""
    monkeypatch.delenv("BLCM_ENTROPY_MODEL", raising=False)
    monkeypatch.chdir(tmp_path)


def test_the_synthetic_files_sniff_as_what_they_stand_for():
    assert [sniff(FILES[k]) for k in ("text", "wav", "png", "random")] == ["text", "wav", "png", "binary"]


def test_the_shipped_model_loads_verified_with_a_threshold_for_every_modality():
    model, thresholds = load_shipped_entropy_model()
    assert not model.training and model.head.weight.dtype == torch.float32
    assert 0.5e6 < model.num_params() < 2e6 and sum(size for size, _ in PINNED.values()) < 4 << 20
    for table in ("target_patch_sizes", "file", "unit"):
        assert {"text", "wav", "png", "binary"} <= set(getattr(thresholds, table))
    assert thresholds.pick("file", "jpeg") == thresholds.file["binary"]  # no values of its own: the fallback's


@pytest.mark.parametrize("mode", ["entropy", "monotonic", "both", "space", "static"])
@pytest.mark.parametrize("kind", list(FILES))
def test_patch_works_out_of_the_box_in_every_mode(no_model_configured, tmp_path, capsys, mode, kind):
    path = tmp_path / f"{kind}.bin"
    path.write_bytes(FILES[kind])
    assert main(["patch", str(path), "--mode", mode, "--format", "json"]) == 0
    out = json.loads(capsys.readouterr().out)
    assert sum(out["lengths"]) == len(FILES[kind]) and all(n > 0 for n in out["lengths"])
    if mode in ("entropy", "monotonic", "both"):
        assert out["model"] == "shipped" and len(out["entropies"]) == len(FILES[kind])


def test_patch_takes_the_threshold_of_the_files_modality(no_model_configured, tmp_path, capsys):
    _, thresholds = load_shipped_entropy_model()
    for kind, modality in (("text", "text"), ("wav", "wav"), ("png", "png"), ("random", "binary")):
        path = tmp_path / kind
        path.write_bytes(FILES[kind])
        assert main(["patch", str(path), "--format", "json"]) == 0
        out = json.loads(capsys.readouterr().out)
        assert out["modality"] == modality and out["threshold"] == thresholds.file[modality]
    assert main(["patch", str(path), "--format", "json", "--modality", "wav"]) == 0
    assert json.loads(capsys.readouterr().out)["threshold"] == thresholds.file["wav"]


@pytest.fixture
def shipped_copy(tmp_path, monkeypatch) -> Path:
    """The shipped files in a scratch directory the package loads instead, for tests that damage them."""
    copy = tmp_path / "entropy-bytes"
    shutil.copytree(SHIPPED, copy)
    monkeypatch.setattr(pretrained, "SHIPPED", copy)
    return copy


@pytest.mark.parametrize("damage, message", [
    (lambda data: data[: len(data) // 2], "truncated"),
    (lambda data: data[:-1] + bytes([data[-1] ^ 1]), "SHA-256"),
])
@pytest.mark.parametrize("name", sorted(PINNED))
def test_a_damaged_file_is_refused_in_one_line_naming_it(shipped_copy, no_model_configured, capsys, damage, message,
                                                         name):
    path = shipped_copy / name
    path.write_bytes(damage(path.read_bytes()))
    with pytest.raises(PretrainedError, match=message) as error:
        load_shipped_entropy_model()
    assert str(path) in str(error.value)
    Path("f.txt").write_bytes(b"abc")
    assert main(["patch", "f.txt"]) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and str(path) in err and message in err


def test_a_missing_file_is_refused(shipped_copy):
    (shipped_copy / "model.safetensors").unlink()
    with pytest.raises(PretrainedError, match="model.safetensors is missing"):
        verify(shipped_copy, PINNED)


def test_an_export_without_thresholds_calibrates_on_the_file(tiny_entropy_model_dir, no_model_configured, tmp_path,
                                                             capsys):
    model, thresholds = load_entropy_model(tiny_entropy_model_dir)
    assert thresholds is None and model.config.dim == 32
    (tmp_path / "t.txt").write_bytes(FILES["text"])
    os.environ["BLCM_ENTROPY_MODEL"] = str(tiny_entropy_model_dir)
    try:
        assert main(["patch", "t.txt", "--format", "json"]) == 0
    finally:
        del os.environ["BLCM_ENTROPY_MODEL"]
    out = json.loads(capsys.readouterr().out)
    assert out["model"] == str(tiny_entropy_model_dir)
    assert len(FILES["text"]) / len(out["lengths"]) == pytest.approx(4.5, rel=0.15)  # calibrated to 4.5 on the file


def test_thresholds_round_trip_and_bad_files_are_refused(tmp_path):
    t = ModalityThresholds({"text": 4.5, "binary": 3.0}, {"text": 1.0, "binary": 2.0},
                           {"text": 1.1, "binary": 2.1}, 128)
    t.save(tmp_path)
    assert load_thresholds(tmp_path) == t and t.pick("unit", "wav") == 2.1
    (tmp_path / "thresholds.json").write_text(json.dumps({"file": {}}))
    with pytest.raises(PretrainedError, match="not a thresholds file"):
        load_thresholds(tmp_path)
    with pytest.raises(ValueError, match="fallback"):
        ModalityThresholds({"text": 4.5}, {"text": 1.0}, {"text": 1.0}, 128)


def mean_patch_size(model, rows: list[bytes], threshold: float) -> float:
    ids, lengths = pad_batch(rows)
    entropies = model.entropies(ids, lengths)
    return float(lengths.sum()) / int(Patcher("entropy")(ids, lengths, entropies, threshold).counts.sum())


@pytest.mark.parametrize("modality", ["text", "wav", "png"])
def test_per_modality_thresholds_hit_their_targets_on_held_out_files(modality):
    """On files the thresholds were not calibrated on (the held-out text of en/ and multilingual/, the WAV and PNG
    files of the 10% held-out split), whole files and 128-byte units alike come within 10% of the modality's
    target mean patch size."""
    from blcm.data.corpus import in_valid_split
    from blcm.data.documents import iter_records
    from blcm.data.prepare import make_segmenter

    if modality == "text":
        paths = [shared_file("en", "valid.jsonl.gz"), shared_file("multilingual", "valid.jsonl.gz")]
        docs = [d.data for d in iter_records(paths)]
    else:
        folder = shared_file("bytes", "speech-en" if modality == "wav" else "images")
        docs = [p.read_bytes() for p in sorted(folder.glob(f"*.{modality}")) if in_valid_split(p.name, 10)]
    model, thresholds = load_shipped_entropy_model()
    target = thresholds.target_patch_sizes[modality]
    files = sample(docs, 1 << 18, piece=4096)  # past its first 256 bytes a piece scores as the whole file would
    segment = make_segmenter("modality", 128)
    units = [u for piece in sample(docs, 1 << 17, piece=1 << 16) for u in segment.split(piece)]
    with torch.inference_mode():
        assert mean_patch_size(model, files, thresholds.file[modality]) == pytest.approx(target, rel=0.1)
        assert mean_patch_size(model, units, thresholds.unit[modality]) == pytest.approx(target, rel=0.1)
