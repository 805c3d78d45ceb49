"""`blcm prepare --segmenter modality`: documents tagged by content, non-text cut in fixed spans or by the
shipped entropy model, and every unit of a batch carrying its document's modality."""

import json

import numpy as np
import pytest

from blcm.cli import main
from blcm.data import prepare as prep
from blcm.data.units import PreparedUnits, collate_units
from bridges.modality import MODALITIES
from tests.test_prepare import read_docs, run


def test_modality_prepare_tags_documents_and_cuts_non_text_into_fixed_spans(tmp_path, capsys):
    src = tmp_path / "mixed"
    src.mkdir()
    wav = b"RIFF" + (36 + 600).to_bytes(4, "little") + b"WAVEfmt " + bytes(range(200)) * 3
    (src / "speech.dat").write_bytes(wav)  # the extension says nothing: the content does
    (src / "picture.png").write_bytes(b"\x89PNG\r\n\x1a\n" + bytes(range(256)) * 2)
    (src / "cut.wav").write_bytes(wav[:20])  # truncated: still a WAV by its header, kept whole
    (src / "note.txt").write_bytes(b"A sentence here. And another one! Fin.")
    out = tmp_path / "out"
    manifest = run([src], out, segmenter="modality", valid_percent=0)
    assert manifest["splits"]["train"]["modalities"] == {"png": 1, "text": 1, "wav": 2}
    tags = [t for s in manifest["splits"]["train"]["shards"]
            for t in json.loads((out / "train" / s["name"] / "modalities.json").read_text())]
    docs = read_docs(out, "train")
    assert [d for d, _ in docs] == [(src / n).read_bytes() for n in ("cut.wav", "note.txt", "picture.png",
                                                                    "speech.dat")]  # lossless, sorted by path
    assert tags == ["wav", "text", "png", "wav"]
    units = np.load(out / "train" / "shard-00000" / "units.npy")[:, 1]
    doc_index = np.load(out / "train" / "shard-00000" / "docs.npy")
    note = units[doc_index[1, 0] : doc_index[1, 0] + doc_index[1, 1]]
    picture = units[doc_index[2, 0] : doc_index[2, 0] + doc_index[2, 1]]
    assert list(note) == [17, 17, 4]  # sentences: "A sentence here. ", "And another one! ", "Fin."
    assert (picture[:-1] == 32).all()  # fixed spans of max_unit_bytes
    assert "(png 1, text 1, wav 2)" in prep.summary(out, manifest)
    # Every unit of a batch carries its document's modality, not its own sniff (a WAV's later spans are not WAVs).
    ds = PreparedUnits(out, "train", max_units=64)
    batch = collate_units([ds[i] for i in range(len(ds))])
    expected = [MODALITIES.index(tag) for tag, w in zip(tags, (ds[i] for i in range(len(ds))), strict=True)
                for _ in w]
    assert batch.unit_modalities.tolist() == expected
    assert collate_units([list(ds[3])]).unit_modalities.tolist()[1] == MODALITIES.index("binary")  # sniffed


def test_modality_prepare_can_cut_non_text_where_the_shipped_model_is_surprised(tmp_path, capsys):
    src = tmp_path / "mixed"
    src.mkdir()
    wav = b"RIFF" + (36 + 6000).to_bytes(4, "little") + b"WAVEfmt " + np.random.default_rng(0).integers(
        0, 64, 6000, dtype=np.uint8).tobytes()
    (src / "speech.wav").write_bytes(wav)
    (src / "note.txt").write_bytes(b"A sentence here. And another one! Fin.")
    out = tmp_path / "out"
    assert main(["prepare", str(src), "--out", str(out), "--segmenter", "modality", "--other-segmenter", "entropy",
                 "--max-unit-bytes", "128", "--valid-percent", "0", "--no-progress"]) == 0
    manifest = json.loads((out / "manifest.json").read_text())
    assert manifest["settings"]["segmenter"]["other"]["kind"] == "entropy"
    docs = read_docs(out, "train")
    assert [d for d, _ in docs] == [b"A sentence here. And another one! Fin.", wav]  # lossless
    units = np.load(out / "train" / "shard-00000" / "units.npy")[:, 1]
    speech = units[3:]
    assert speech.sum() == len(wav) and speech.min() >= 16 and speech.max() <= 128
    assert speech.mean() == pytest.approx(64, rel=0.25)  # half of --max-unit-bytes on average
    assert main(["prepare", str(src), "--out", str(tmp_path / "o2"), "--other-segmenter", "entropy"]) == 2
    assert "use it with segmenter 'modality'" in capsys.readouterr().err
