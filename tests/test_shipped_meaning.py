"""The shipped meaning codec: verified at load, `blcm encode/decode/reconstruct --part meaning` without a model,
translations nearer each other than other sentences, and a core on it whose continuations follow their prompt."""

import shutil
from pathlib import Path

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from blcm.cli import main
from blt.pretrained import PretrainedError
from bridges.meaning_codec import MeaningCodec
from bridges.pretrained import meaning as shipped
from bridges.pretrained.meaning import PINNED, SHIPPED_MEANING, load_meaning_codec

ROOT = Path(__file__).resolve().parents[1]
SAMPLE = ROOT / "examples" / "sample.txt"
# Sentences of the kind the meaning trained on (system administration), with translations it never saw.
PAIRS = [("The package is installed with the apt command.", "Das Paket wird mit dem Befehl apt installiert."),
         ("The network card is not detected at boot.", "La carte réseau n'est pas détectée au démarrage."),
         ("Each user has a home directory.", "Cada usuario tiene un directorio personal."),
         ("The server sends an email to the administrator.", "Il server invia un'email all'amministratore.")]


@pytest.fixture(scope="module")
def codec() -> MeaningCodec:
    return load_meaning_codec()


def test_the_shipped_meaning_codec_is_pinned_fitted_and_unit_norm(codec):
    assert set(PINNED) == {"config.json", "model.safetensors"}
    assert codec.ready and not codec.training and all(p.dtype == torch.float32 for p in codec.parameters())
    meanings = codec.embed([b"Hello there.", bytes(range(100))])
    assert meanings.shape == (2, codec.concept_dim)
    assert torch.allclose(meanings.norm(dim=-1), torch.ones(2), atol=1e-4)
    concepts = codec.encode([b"Hello there.", bytes(range(100))])
    assert torch.allclose(codec.meanings(concepts), meanings, atol=1e-4)  # concepts are the scaled meanings


@pytest.mark.parametrize("damage", ["flip a byte", "truncate"])
def test_a_changed_shipped_file_is_refused_in_one_line(monkeypatch, tmp_path, damage):
    copy = tmp_path / "meaning-codec"
    shutil.copytree(SHIPPED_MEANING, copy)
    weights = copy / "model.safetensors"
    data = bytearray(weights.read_bytes())
    if damage == "flip a byte":
        data[len(data) // 2] ^= 0xFF
    else:
        data = data[:-7]
    weights.write_bytes(bytes(data))
    monkeypatch.setattr(shipped, "SHIPPED_MEANING", copy)
    with pytest.raises(PretrainedError, match="reinstall byte-lcm") as error:
        shipped.load_meaning_codec()
    assert "\n" not in str(error.value) and "model.safetensors" in str(error.value)


def test_a_translation_is_nearer_than_the_other_sentences(codec):
    english = F.normalize(codec.encode([a.encode() for a, _ in PAIRS]), dim=-1)
    theirs = F.normalize(codec.encode([b.encode() for _, b in PAIRS]), dim=-1)
    similarity = theirs @ english.T  # (4, 4): row i should peak at column i
    assert (similarity.argmax(-1) == torch.arange(len(PAIRS))).all(), similarity


def test_encode_part_meaning_and_spelling_without_a_model(tmp_path, capsys):
    meanings, spelling = tmp_path / "meanings.npy", tmp_path / "spelling.npy"
    assert main(["encode", str(SAMPLE), "--part", "meaning", "--out", str(meanings)]) == 0
    assert main(["encode", str(SAMPLE), "--part", "spelling", "--out", str(spelling)]) == 0
    m, s = np.load(meanings), np.load(spelling)
    assert m.dtype == np.float32 and m.shape[1] == load_meaning_codec().concept_dim and s.shape == (len(m), 1024)
    written = tmp_path / "written.txt"
    assert main(["decode", str(meanings), "--part", "meaning", "--temperature", "0.7", "--seed", "0",
                 "--out", str(written)]) == 0
    assert len(written.read_bytes()) > 0
    capsys.readouterr()
    assert main(["encode", str(SAMPLE), "--part", "meaning", "--model", str(tmp_path), "--out", str(meanings)]) == 2
    assert "--part picks a shipped codec" in capsys.readouterr().err


TOPICS = {"cats": ["The cat sleeps on the sofa.", "My cat chases a small mouse.", "The kitten drinks warm milk."],
          "network": ["The server restarts the network.", "The router assigns an address.",
                      "The firewall blocks the port."],
          "farm": ["The farmer plants corn in spring.", "The cows graze in the field.", "The harvest fills the barn."]}


def test_a_core_on_the_meaning_space_continues_each_prompt_its_own_way(codec):
    """A small core trained briefly on three topics' documents: greedy continuations of three prompts differ (a core
    that sat on the mean meaning would write the same unit for all three)."""
    from blcm.data.units import collate_units
    from blcm.model import ByteLCM, ByteLCMConfig
    from blt.ids import EOD, encode

    torch.manual_seed(0)
    model = ByteLCM(ByteLCMConfig(concept_dim=codec.concept_dim, codec=codec.config,
                                  core={"variant": "base", "model_dim": 64, "n_layers": 2, "n_heads": 2}))
    model.load_codec(codec)
    model.codec.requires_grad_(False).eval()
    docs = [[encode((s + " ").encode()).numpy() for s in sentences] + [np.array([EOD])]
            for sentences in TOPICS.values()]
    optimizer = torch.optim.AdamW(model.core.parameters(), lr=3e-3)
    for _ in range(60):
        total = model.losses(collate_units(docs), "joint").total
        optimizer.zero_grad()
        total.backward()
        optimizer.step()
    model.eval()
    continuations = [model.generate(s[0].encode(), max_units=1, seed=0, reencode=True) for s in TOPICS.values()]
    assert all(continuations) and len(set(continuations)) == 3, continuations
