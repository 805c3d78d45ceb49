"""The shipped chunk codec: verified at load, the default of `blcm encode/decode/reconstruct`, exact on held-out
shared units it never trained on, and the start of every shipped ByteLCM config."""

import gzip
import json
import shutil
from pathlib import Path

import numpy as np
import pytest
import torch
import yaml
from hypothesis import given, settings
from hypothesis import strategies as st

from blcm.cli import main
from blcm.data.prepare import make_segmenter
from blcm.lightning import ByteLCMModule
from blcm.lightning.config import instantiate
from blt.pretrained import PretrainedError
from bridges import pretrained
from bridges.chunk_codec import ChunkConceptCodec
from bridges.pretrained import PINNED, SHIPPED_CODEC, load_codec
from tests.conftest import shared_file

ROOT = Path(__file__).resolve().parents[1]
SAMPLE = ROOT / "examples" / "sample.txt"


@pytest.fixture(scope="module")
def codec() -> ChunkConceptCodec:
    return load_codec()


def held_out_units(path: Path, field: str = "text", n: int = 400) -> list[bytes]:
    """Sentence units (<= 128 bytes, as the codec trained) of a shared valid file, a fixed seeded sample."""
    segment = make_segmenter("sentence", 128).split
    with gzip.open(path, "rt", encoding="utf-8") as lines:
        units = [u for line in lines if field in (r := json.loads(line)) for u in segment(r[field].encode())]
    rng = np.random.default_rng(0)
    return [units[i] for i in rng.choice(len(units), size=min(n, len(units)), replace=False)]


def exact_share(codec: ChunkConceptCodec, units: list[bytes]) -> float:
    return float(np.mean([d == u for d, u in zip(codec.decode(codec.encode(units)), units, strict=True)]))


def test_the_shipped_codec_is_pinned_and_loads_as_1024_d_concepts(codec):
    assert set(PINNED) == {"config.json", "model.safetensors"}
    assert codec.concept_dim == 1024 and codec.config.max_bytes == 128 and not codec.training
    assert all(p.dtype == torch.float32 for p in codec.parameters())  # fp16 on disk, float32 to compute


@pytest.mark.parametrize("damage", ["flip a byte", "truncate", "remove"])
def test_a_changed_shipped_file_is_refused_in_one_line(monkeypatch, tmp_path, damage):
    copy = tmp_path / "chunk-codec"
    shutil.copytree(SHIPPED_CODEC, copy)
    weights = copy / "model.safetensors"
    data = bytearray(weights.read_bytes())
    if damage == "flip a byte":
        data[len(data) // 2] ^= 0xFF
        weights.write_bytes(bytes(data))
    elif damage == "truncate":
        weights.write_bytes(bytes(data[:-7]))
    else:
        weights.unlink()
    monkeypatch.setattr(pretrained, "SHIPPED_CODEC", copy)
    with pytest.raises(PretrainedError, match="reinstall byte-lcm") as error:
        pretrained.load_codec()
    assert "\n" not in str(error.value) and "model.safetensors" in str(error.value)


def test_the_examples_round_trip_exactly(codec):
    units = make_segmenter("sentence", 128).split(SAMPLE.read_bytes())
    decoded = codec.decode(codec.encode(units))
    assert decoded == units and b"".join(decoded) == SAMPLE.read_bytes()


def test_cuts_inside_a_utf8_character_stay_lossless(codec):
    text = ("é" * 90 + "。" * 60 + "ж" * 90).encode()
    units = [text[i : i + 127] for i in range(0, len(text), 127)]  # odd cuts: units start and end mid-character
    assert any(0x80 <= u[0] < 0xC0 for u in units[1:])
    assert b"".join(codec.decode(codec.encode(units))) == text


def test_write_pins_rewrites_an_empty_or_a_filled_pin_table(tmp_path):
    from blt.pretrained import pin_files, write_pins

    module = tmp_path / "module.py"
    module.write_text('"""Doc."""\nPINNED = {\n}\n\n\ndef f():\n    return {}\n')
    pins = pin_files(SHIPPED_CODEC, ["config.json"])
    write_pins(module, pins)
    write_pins(module, pins)  # a filled table is rewritten in place, nothing after it touched
    namespace: dict = {}
    exec(module.read_text(), namespace)
    assert namespace["PINNED"] == pins == {"config.json": PINNED["config.json"]} and namespace["f"]() == {}
    module.write_text("nothing = 1\n")
    with pytest.raises(ValueError, match="no PINNED"):
        write_pins(module, pins)


def test_encode_decode_and_reconstruct_use_the_shipped_codec_without_a_model(tmp_path, capsys):
    concepts = tmp_path / "concepts.npy"
    assert main(["encode", str(SAMPLE), "--out", str(concepts)]) == 0
    assert np.load(concepts).shape[1] == 1024
    decoded = tmp_path / "decoded.txt"
    assert main(["decode", str(concepts), "--out", str(decoded)]) == 0
    assert decoded.read_bytes() == SAMPLE.read_bytes()
    capsys.readouterr()
    assert main(["reconstruct", str(SAMPLE)]) == 0
    units = len(make_segmenter("sentence", 128).split(SAMPLE.read_bytes()))
    assert f"{units}/{units} unit(s) reconstructed exactly" in capsys.readouterr().err


def test_held_out_english_units_round_trip(codec):
    units = held_out_units(shared_file("en", "valid.jsonl.gz"))
    assert exact_share(codec, units) >= 0.97


def test_held_out_french_and_spanish_units_round_trip(codec):
    units = held_out_units(shared_file("multilingual", "valid.jsonl.gz"))
    assert exact_share(codec, units) >= 0.9


@pytest.mark.parametrize("locale", ["de-DE", "ru-RU", "ja-JP"])
def test_held_out_parallel_units_round_trip_in_other_scripts(codec, locale):
    units = held_out_units(shared_file("parallel", "valid.jsonl.gz"), field=locale, n=200)
    assert exact_share(codec, units) >= 0.8


def test_small_latent_noise_keeps_most_units(codec):
    units = held_out_units(shared_file("en", "valid.jsonl.gz"), n=200)
    concepts = codec.encode(units)
    noisy = concepts + 0.2 * torch.randn(concepts.shape, generator=torch.Generator().manual_seed(0))
    clean = exact_share(codec, units)
    assert np.mean([d == u for d, u in zip(codec.decode(noisy), units, strict=True)]) >= 0.85 * clean


def test_random_bytes_round_trip(codec):
    rng = np.random.default_rng(0)
    units = [rng.integers(0, 256, size=n, dtype=np.uint8).tobytes() for n in rng.integers(1, 129, size=300)]
    assert exact_share(codec, units) >= 0.9


@settings(max_examples=300, derandomize=True)
@given(unit=st.binary(min_size=1, max_size=128))
def test_any_bytes_round_trip(codec, unit):
    assert codec.decode(codec.encode([unit])) == [unit]


@settings(max_examples=300, derandomize=True)
@given(text=st.text(min_size=1, max_size=40))
def test_any_unicode_text_round_trips(codec, text):
    unit = text.encode()[:128]  # up to 4 bytes a character: cut to the unit cap, mid-character or not
    assert codec.decode(codec.encode([unit])) == [unit]


# Real sentences in scripts the training text lacks: 0 to 32 of its 730,434 units hold one (Hebrew most); the codec
# met them as synthetic UTF-8 of their script (tools/codec_data.py), never as these words.
ABSENT_SCRIPTS = {
    "Bengali": "আমি প্রতিদিন সকালে বাংলা সংবাদপত্র পড়ি।",
    "Hebrew": "הספרייה העירונית פתוחה בכל יום מלבד שבת.",
    "Tibetan": "བོད་ཀྱི་སྐད་ཡིག་ནི་རྒྱ་ཆེན་པོ་ཡིན།",
    "Dhivehi (Thaana)": "ދިވެހިރާއްޖެއަކީ ރީތި ޤައުމެކެވެ.",
    "Hindi": "मैं हर सुबह हिंदी में अख़बार पढ़ता हूँ।",
    "Tamil": "நான் தினமும் செய்தித்தாள் படிப்பேன்.",
    "Telugu": "నేను ప్రతి ఉదయం వార్తాపత్రిక చదువుతాను.",
    "Gujarati": "હું દરરોજ સવારે છાપું વાંચું છું.",
    "Amharic (Ethiopic)": "በየቀኑ ጠዋት ጋዜጣ አነባለሁ።",
    "Georgian": "ყოველ დილით გაზეთს ვკითხულობ.",
    "Armenian": "Ես ամեն առավոտ թերթ եմ կարդում։",
    "Khmer": "ខ្ញុំអានកាសែតរៀងរាល់ព្រឹក។",
}


@pytest.mark.parametrize("script", sorted(ABSENT_SCRIPTS))
def test_sentences_in_scripts_the_training_text_lacks_round_trip(codec, script):
    unit = ABSENT_SCRIPTS[script].encode()
    assert len(unit) <= 128
    assert codec.decode(codec.encode([unit])) == [unit]


def test_held_out_wav_spans_round_trip(codec):
    import sys

    shared_file("bytes", "speech-en")
    sys.path.insert(0, str(ROOT / "tools"))
    from codec_data import binary_files, binary_spans

    spans = binary_spans(binary_files("valid")["wav"])
    rng = np.random.default_rng(0)
    units = [spans[i] for i in rng.choice(len(spans), size=300, replace=False)]
    assert exact_share(codec, units) >= 0.9


def test_reconstruct_gives_back_a_random_binary_file(tmp_path, capsys):
    data = np.random.default_rng(1).integers(0, 256, size=6000, dtype=np.uint8).tobytes()
    path = tmp_path / "random.bin"
    path.write_bytes(data)
    assert main(["reconstruct", str(path), "--max-units", "1000"]) == 0
    exact, units = map(int, capsys.readouterr().err.split(" unit(s)")[0].split()[-1].split("/"))
    assert units >= 47 and exact >= 0.95 * units


def shipped_config(name: str) -> dict:
    return yaml.safe_load((ROOT / "configs" / f"{name}.yaml").read_text())["model"]["init_args"]


@pytest.mark.parametrize("name", ["tiny", "small"])
def test_the_shipped_configs_train_the_core_on_the_frozen_shipped_meaning_codec(name):
    from bridges.pretrained.meaning import load_meaning_codec

    module = instantiate(ByteLCMModule, {**shipped_config(name), "export_dir": None})
    assert not any(p.requires_grad for p in module.model.codec.parameters())
    assert all(p.requires_grad for p in module.model.core.parameters())
    units = make_segmenter("sentence", 128).split(SAMPLE.read_bytes())
    assert torch.equal(module.model.codec.encode(units), load_meaning_codec().encode(units))


def test_base_starts_from_the_same_codec():
    base, tiny = shipped_config("base"), shipped_config("tiny")
    assert (base["init_codec_from"], base["freeze_codec"]) == ("shipped", True)
    assert base["model"]["codec"] == tiny["model"]["codec"] and base["model"]["concept_dim"] == 512
