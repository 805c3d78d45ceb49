"""The chunk codec: shapes and latent normalisation, the end class and the cap, decoding that cuts at the
first non-byte id (hypothesis, over any bytes), a tiny codec that learns to reconstruct its units, and the
codec inside a ByteLCM (losses, export round trip, where its codec may come from, the segmenter's cap)."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st
from reconstruction_training import train_reconstruction

from blcm import ConfigError
from blcm.data.units import collate_units
from blcm.model import ByteLCM, ByteLCMConfig
from blcm.objective import LossConfig
from blt.ids import EOD, EOS, OFFSET, VOCAB_SIZE, encode, pad_batch
from bridges.chunk_codec import ChunkCodecConfig, ChunkConceptCodec
from bridges.codec import ConceptCodec
from bridges.pretrained import load_codec, save_codec

SMALL = ChunkCodecConfig(max_bytes=32, chunk_bytes=8, byte_dim=8, hidden=64)
UNITS = [b"Hello world. ", b"A", b"The quick brown fox jumps over. ", b"\xff\x00 bytes", "Ça va? 日本".encode()]


def small_codec(seed: int = 0, **fields) -> ChunkConceptCodec:
    torch.manual_seed(seed)
    return ChunkConceptCodec(ChunkCodecConfig(**{**SMALL.__dict__, **fields}), concept_dim=64)


def perfect_logits(units: list[bytes], width: int) -> torch.Tensor:
    """(U, width, V) logits whose argmax is each unit's ids, then EOS to the end."""
    ids = torch.full((len(units), width), EOS)
    for i, u in enumerate(units):
        ids[i, : len(u)] = torch.tensor(list(u)) + OFFSET
    return torch.nn.functional.one_hot(ids, VOCAB_SIZE).float()


def predicting(codec: ChunkConceptCodec, logits: torch.Tensor) -> torch.Tensor:
    """Make the decoder predict ``logits`` (U, max_bytes, V) and return the U concepts that ask for them: every
    chunk latent holds its unit's index and its chunk's, which the patched ``chunk_logits`` reads back."""
    chunks, k = codec.config.chunks, codec.decoder.latent_dim
    per_chunk = logits.view(len(logits), chunks, codec.config.chunk_bytes, -1)
    codec.decoder.chunk_logits = lambda latents: per_chunk[latents[:, 0].long(), latents[:, 1].long()]
    concepts = torch.zeros(len(logits), chunks, k)
    concepts[:, :, 0], concepts[:, :, 1] = torch.arange(len(logits))[:, None], torch.arange(chunks)
    return concepts.flatten(1)


def test_codec_implements_the_protocol_with_layer_normed_latents():
    codec = small_codec().eval()
    assert isinstance(codec, ConceptCodec) and codec.concept_dim == 64 and codec.ready and codec.entropy_model is None
    concepts = codec.encode(UNITS)  # (5, 64): 4 chunks of 16
    assert concepts.shape == (5, 64) and codec.eod_concept().shape == (64,)
    latents = concepts.view(5, 4, 16)
    assert torch.allclose(latents.mean(-1), torch.zeros(5, 4), atol=1e-5)
    assert torch.allclose(latents.var(-1, unbiased=False), torch.ones(5, 4), atol=2e-3)
    alone = torch.cat([codec.encode([u]) for u in UNITS])  # no batch statistics: a unit's concept is its own
    assert torch.allclose(alone, concepts, atol=1e-6)


def test_chunk_latents_depend_only_on_their_chunk():
    codec = small_codec().eval()
    a, b = codec.encode([b"x" * 8 + b"same tail", b"y" * 8 + b"same tail"]).view(2, 4, 16)
    assert not torch.allclose(a[0], b[0]) and torch.allclose(a[1:], b[1:])  # a chunk boundary every 8 bytes


def test_bad_configs_and_units_are_refused():
    with pytest.raises(ValueError, match="multiple of chunk_bytes"):
        ChunkCodecConfig(max_bytes=30, chunk_bytes=8)
    with pytest.raises(ValueError, match="not a multiple of the 4 chunks"):
        ChunkConceptCodec(SMALL, concept_dim=66)
    with pytest.raises(ValueError, match="input_mask"):
        ChunkCodecConfig(input_mask=1.0)
    codec = small_codec()
    with pytest.raises(ValueError, match="33 bytes exceeds the chunk codec's 32"):
        codec.encode([b"a" * 33])
    with pytest.raises(ValueError, match="empty unit"):
        codec.encode([b""])


@settings(max_examples=60, deadline=None)
@given(st.lists(st.binary(min_size=1, max_size=32), min_size=1, max_size=6))
def test_decoding_and_scores_follow_the_argmax_up_to_the_first_end(units):
    codec = small_codec().eval()
    concepts = predicting(codec, perfect_logits(units, 32))
    assert codec.decode(concepts) == units
    ids, lengths = pad_batch(units)
    scores = codec.decoder(ids, lengths, concepts)
    assert scores.exact.tolist() == [1.0] * len(units)
    assert scores.correct.tolist() == [float(min(len(u) + 1, 32)) for u in units]  # a full unit has no end slot
    # One byte wrong anywhere in a unit, or its end missed: not exact, one fewer right.
    wrong = perfect_logits(units, 32)
    position = lengths.clamp(max=31) // 2
    wrong[torch.arange(len(units)), position] = wrong[torch.arange(len(units)), position].roll(1, -1)
    predicting(codec, wrong)
    worse = codec.decoder(ids, lengths, concepts)
    assert worse.exact.tolist() == [0.0] * len(units)
    assert (worse.correct == scores.correct - 1).all() and (worse.nats > scores.nats).all()


def test_the_end_of_document_unit_decodes_to_no_bytes():
    codec = small_codec().eval()
    logits = perfect_logits([b"ignored"], 32)
    logits[0, 0] = torch.nn.functional.one_hot(torch.tensor(EOD), VOCAB_SIZE).float()
    assert codec.decode(predicting(codec, logits)) == [b""]


def test_max_unit_bytes_caps_what_decoding_returns():
    codec = small_codec().eval()
    concepts = predicting(codec, perfect_logits([b"z" * 32], 32))
    codec.max_unit_bytes = 20
    assert codec.decode(concepts) == [b"z" * 20]


def test_decoding_chunk_by_chunk_equals_cutting_the_full_argmax():
    codec = small_codec().eval()
    concepts = 3 * torch.randn(64, 64, generator=torch.Generator().manual_seed(0))  # far out: early and late ends
    ids = codec.decoder.logits(concepts).argmax(-1)  # (64, 32): every position, no chunk skipped
    ends = [next((t for t, i in enumerate(row.tolist()) if i < OFFSET), len(row)) for row in ids]
    expected = [bytes(i - OFFSET for i in row[:end].tolist()) for row, end in zip(ids, ends, strict=True)]
    assert codec.decode(concepts) == expected and len(set(map(len, expected))) > 1


def test_a_tiny_codec_learns_to_reconstruct_its_units():
    codec = small_codec(hidden=128).train()
    losses = train_reconstruction(codec.parameters(), codec.decoder, UNITS, codec.concepts, steps=250)
    assert losses[-1] < 0.05 * losses[0]
    assert codec.eval().decode(codec.encode(UNITS)) == UNITS


def test_input_masking_hides_bytes_in_training_only():
    codec = small_codec(input_mask=0.5)
    ids, lengths = pad_batch(UNITS)
    torch.manual_seed(1)
    assert not torch.allclose(codec.train().concepts(ids, lengths), codec.train().concepts(ids, lengths))
    assert torch.allclose(codec.eval().concepts(ids, lengths), codec.concepts(ids, lengths))


def test_save_and_load_a_codec(tmp_path):
    codec = small_codec().eval()
    save_codec(codec, tmp_path / "codec", torch.float16)
    loaded = load_codec(tmp_path / "codec")
    assert loaded.config == codec.config and loaded.concept_dim == 64
    assert torch.allclose(loaded.encode(UNITS), codec.encode(UNITS), atol=0.05)  # fp16 weights


def chunk_lcm_config(segmenter_bytes: int = 32, **codec) -> ByteLCMConfig:
    return ByteLCMConfig(concept_dim=64, segmenter={"kind": "sentence", "max_bytes": segmenter_bytes},
                         codec={**SMALL.__dict__, **codec},
                         core={"variant": "base", "model_dim": 32, "n_layers": 1, "n_heads": 2},
                         loss=LossConfig(concept_noise=0.3))


def test_a_byte_lcm_on_the_chunk_codec_trains_exports_and_takes_a_codec(tmp_path):
    torch.manual_seed(0)
    model = ByteLCM(chunk_lcm_config())
    ids = [encode(u).numpy() for u in (b"One. ", b"Two words. ", b"Three? ")]
    batch = collate_units([[ids[0], ids[1], np.array([EOD])], [ids[2]]])
    terms = model.losses(batch, "joint").terms
    assert set(terms) == {"reconstruction", "core"} and all(torch.isfinite(v) for v in terms.values())
    model.save_pretrained(tmp_path / "export")
    again = ByteLCM.from_pretrained(tmp_path / "export")
    assert torch.equal(again.encode(b"One. Two words."), model.eval().encode(b"One. Two words."))
    trained = small_codec(seed=3).eval()
    model.load_codec(trained)
    assert torch.equal(model.codec.encode(UNITS), trained.encode(UNITS))
    with pytest.raises(ValueError, match="make the model's codec config match"):
        model.load_codec(small_codec(hidden=32))


def test_a_codec_comes_from_one_place_and_frozen_needs_a_trained_one(tmp_path):
    from blcm.lightning.byte_lcm import ByteLCMModule, model_to_train

    torch.manual_seed(3)
    export = ByteLCM(chunk_lcm_config()).save_pretrained(tmp_path / "export")
    # init_from brings its codec: the shipped one (another shape, which would be refused) is not loaded
    model = model_to_train(chunk_lcm_config(), None, init_from=str(export), init_codec_from="shipped")
    for name, tensor in ByteLCM.from_pretrained(export).state_dict().items():
        assert torch.equal(model.state_dict()[name], tensor), name
    with pytest.raises(ConfigError, match="freeze_codec keeps a trained"):
        ByteLCMModule(chunk_lcm_config(), init_entropy_from=None, freeze_codec=True)


def test_the_segmenter_cap_must_fit_the_codec():
    with pytest.raises(ValueError, match="set segmenter.max_bytes <= 32"):
        ByteLCM(chunk_lcm_config(segmenter_bytes=64))

