"""The byte concept codec: length chunking, encoder invariants, teacher-forced exact match equal to
greedy decoding, and a tiny autoencoder that learns to reconstruct its units."""

from __future__ import annotations

import pytest
import torch
from hypothesis import given
from hypothesis import strategies as st
from reconstruction_training import train_reconstruction

from blt.ids import pad_batch
from bridges.byte_codec import ByteConceptCodec, ByteConceptEncoderConfig
from bridges.byte_decoder import ByteConceptDecoderConfig
from bridges.codec import ConceptCodec
from bridges.length_chunks import length_chunks

UNITS = [b"Hello world. ", b"A", b"The quick brown fox jumps over the lazy dog. ", b"\xff\x00 bytes", b"Ok."]


def tiny_codec(patching: str = "static", seed: int = 0, decoder: dict | None = None, **encoder) -> ByteConceptCodec:
    torch.manual_seed(seed)
    enc = ByteConceptEncoderConfig(**{
        "dim": 32, "n_layers": 1, "n_heads": 2, "max_positions": None, "pooler_dim": 32, "pooler_layers": 1,
        "pool_queries": 1, "segment_bytes": None, "patching": patching, "patch_size": 4, "entropy_dim": 32,
        "entropy_layers": 1, "entropy_heads": 2, "ngram_sizes": (3, 4, 5, 6, 7, 8), "hash_table_size": 256,
        **encoder})
    dec = ByteConceptDecoderConfig(**{"dim": 32, "n_layers": 1, "n_heads": 2, "slots": 4, "concept_to_inputs": False,
                                      "segment_bytes": None, "max_positions": None, **(decoder or {})})
    return ByteConceptCodec(enc, dec, concept_dim=32, max_unit_bytes=64)


@given(st.lists(st.integers(1, 300), min_size=1, max_size=60), st.integers(1, 2000))
def test_length_chunks_cover_every_row_once_within_budget(lengths, budget):
    lengths = torch.tensor(lengths)
    chunks = length_chunks(lengths, budget)
    assert sorted(torch.cat(chunks).tolist()) == list(range(len(lengths)))
    for chunk in chunks:
        assert len(chunk) == 1 or len(chunk) * int(lengths[chunk].max()) <= budget


def test_codec_implements_the_protocol():
    codec = tiny_codec()
    assert isinstance(codec, ConceptCodec) and codec.concept_dim == 32


@pytest.mark.parametrize("patching", ["static", "space", "entropy"])
def test_concepts_are_batch_normalised_and_do_not_depend_on_batch_mates(patching):
    codec = tiny_codec(patching)
    ids, lengths = pad_batch(UNITS)
    if patching == "entropy":
        with pytest.raises(RuntimeError, match="calibrate"):
            codec.encoder(ids, lengths)
        codec.encoder.calibrate(ids, lengths)
    train = codec.encoder(ids, lengths)  # (5, 32): batch statistics
    assert train.shape == (len(UNITS), 32)
    assert torch.allclose(train.mean(0), torch.zeros(32), atol=1e-5)
    assert torch.allclose(train.var(0, unbiased=False), torch.ones(32), atol=0.05)  # up to eps
    codec.eval()  # running statistics: a unit's concept is the same alone or in any batch
    together = codec.encoder(ids, lengths)
    alone = torch.cat([codec.encode([u]) for u in UNITS])
    assert torch.allclose(together, alone, atol=1e-5)


def test_chunked_encoding_equals_one_chunk():
    codec = tiny_codec().eval()
    ids, lengths = pad_batch(UNITS)
    whole = codec.encoder(ids, lengths)
    codec.encoder.config.chunk_tokens = 1  # one unit per chunk
    assert torch.allclose(codec.encoder(ids, lengths), whole, atol=1e-5)


def test_empty_units_are_refused():
    with pytest.raises(ValueError, match="empty"):
        tiny_codec().encode([b"ok", b""])


def train_autoencoder(codec: ByteConceptCodec, units: list[bytes], steps: int) -> list[float]:
    return train_reconstruction(codec.parameters(), codec.decoder, units, codec.encoder, steps, torch.optim.Adam)


@pytest.fixture(scope="module")
def trained_codec():
    codec = tiny_codec(seed=1)
    losses = train_autoencoder(codec, UNITS, steps=300)
    return codec.eval(), losses


def test_autoencoder_learns_to_reconstruct(trained_codec):
    codec, losses = trained_codec
    assert losses[-1] < 0.1 * losses[0]
    assert codec.decode(codec.encode(UNITS)) == UNITS


def test_teacher_forced_exact_match_equals_greedy_decoding(trained_codec):
    codec, _ = trained_codec
    torch.manual_seed(0)
    ids, lengths = pad_batch(UNITS)
    for model, noise in ((codec, 0.0), (codec, 1.5), (tiny_codec(seed=3).eval(), 0.0)):
        concepts = model.encoder(ids, lengths) + noise * torch.randn(len(UNITS), 32)
        exact = model.decoder(ids, lengths, concepts).exact.bool().tolist()
        assert exact == [d == u for d, u in zip(model.decode(concepts), UNITS, strict=True)]
    assert all(codec.decoder(ids, lengths, codec.encoder(ids, lengths)).exact)  # the trained one: all exact


def test_entropy_loss_trains_the_entropy_model():
    codec = tiny_codec("entropy")
    ids, lengths = pad_batch(UNITS * 4)
    model = codec.encoder.entropy_model
    opt = torch.optim.Adam(model.parameters(), lr=1e-2)
    first = None
    for _ in range(30):
        loss = codec.encoder.entropy_loss(ids, lengths)
        first = first if first is not None else loss.item()
        opt.zero_grad()
        loss.backward()
        opt.step()
    assert loss.item() < 0.7 * first
    with pytest.raises(ValueError, match="no entropy model"):
        tiny_codec("static").encoder.entropy_loss(ids, lengths)


# The ablation ladder's levers: each variant still trains to exact reconstruction, and its inference is the
# same alone or in a batch.
LEVERS = [({"pool_queries": 4, "max_positions": 64}, {}),
          ({}, {"concept_to_inputs": True, "max_positions": 64}),
          ({}, {"window": 4}),
          ({}, {"input_mask": 0.2}),
          ({"pool_queries": 4, "segment_bytes": 16, "max_positions": 64},
           {"slots": 4, "segment_bytes": 16, "max_positions": 64})]


@pytest.mark.parametrize(("encoder", "decoder"), LEVERS)
def test_every_lever_still_learns_to_reconstruct(encoder, decoder):
    codec = tiny_codec(seed=1, decoder=decoder, **encoder)
    losses = train_autoencoder(codec, UNITS, steps=300)
    codec.eval()
    assert losses[-1] < 0.2 * losses[0]
    assert codec.decode(codec.encode(UNITS)) == UNITS
    assert torch.allclose(codec.encode(UNITS), torch.cat([codec.encode([u]) for u in UNITS]), atol=1e-5)


def test_input_mask_hides_bytes_in_training_only():
    codec = tiny_codec(decoder={"input_mask": 0.5})
    ids, lengths = pad_batch(UNITS)
    concepts = torch.randn(len(UNITS), 32)
    codec.train()
    torch.manual_seed(0)
    first = codec.decoder(ids, lengths, concepts)
    torch.manual_seed(1)
    assert not torch.allclose(first.nats, codec.decoder(ids, lengths, concepts).nats)  # a fresh mask each call
    codec.eval()
    clean = codec.decoder(ids, lengths, concepts)
    torch.testing.assert_close(clean, codec.decoder(ids, lengths, concepts))
    with pytest.raises(ValueError, match="input_mask"):
        tiny_codec(decoder={"input_mask": 1.0})


def test_pool_queries_widen_the_pooled_vector():
    codec = tiny_codec(pool_queries=3)
    assert codec.encoder.out.in_features == 3 * 32
    assert codec.encode(UNITS).shape == (len(UNITS), 32)


def test_segment_routing_pools_each_stretch_into_its_own_slot():
    """With no layer mixing bytes or patches, query k sees only the patches that start in bytes [8k, 8k+8)."""
    codec = tiny_codec(n_layers=0, pooler_layers=0, patch_size=4, pool_queries=3, segment_bytes=8,
                       ngram_sizes=(), decoder={"slots": 3, "segment_bytes": 8}).eval()
    encoder = codec.encoder
    unit = bytearray(b"abcdefghijklmnop")  # 16 bytes: segments 0 and 1; slot 2 has nothing to pool

    def pooled(data: bytes) -> torch.Tensor:
        ids, lengths = pad_batch([data])
        patches = encoder.patches(ids, lengths)
        x, mask = encoder.local(ids, patches.ids)
        return encoder.pool_patches(encoder.patch_norm(x), patches, mask)[0]  # (K, D)

    before = pooled(bytes(unit))
    unit[10] = ord("Z")  # segment 1
    after = pooled(bytes(unit))
    torch.testing.assert_close(after[0], before[0])
    assert not torch.allclose(after[1], before[1])
    assert (before[2] == 0).all() and (after[2] == 0).all()
    with pytest.raises(ValueError, match="segment routing"):
        tiny_codec(pool_queries=3, segment_bytes=8)  # the decoder does not route


def test_segment_routing_decoder_reads_slot_k_from_byte_k_times_s():
    codec = tiny_codec(pool_queries=3, segment_bytes=4, decoder={"slots": 3, "segment_bytes": 4}).eval()
    local = codec.decoder.local
    slots = torch.randn(1, 3, 32)
    ids = torch.randint(4, 260, (1, 12))
    no_cross = torch.zeros(1, 3, dtype=torch.bool)  # slots reach the bytes only through the routed inputs
    logits = local(ids, slots, no_cross)
    moved = slots.clone()
    moved[0, 1] += 1.0
    new = local(ids, moved, no_cross)
    torch.testing.assert_close(new[:, :4], logits[:, :4])  # bytes 0..3 read slot 0 and see nothing later
    assert not torch.allclose(new[:, 4], logits[:, 4])


def test_codec_levers_reach_the_modules_that_use_them():
    codec = tiny_codec(max_positions=64, pool_queries=2, segment_bytes=8,
                       decoder={"slots": 2, "segment_bytes": 8, "window": 3, "max_positions": 65,
                                "concept_to_inputs": True}).eval()
    assert codec.encoder.local.positions.num_embeddings == 64
    local = codec.decoder.local.config
    assert (local.window, local.max_positions, local.segment_bytes) == (3, 65, 8)
    ids, lengths = pad_batch(UNITS)
    concepts = codec.encode(UNITS)
    scores = codec.decoder(ids, lengths, concepts)
    with torch.no_grad():
        codec.decoder.to_inputs.weight.zero_()  # the concept no longer reaches the byte inputs
    assert not torch.allclose(codec.decoder(ids, lengths, concepts).nats, scores.nats)


@pytest.mark.parametrize("init_std", [None, 0.02])
def test_init_std_sets_the_codec_scale_but_not_the_entropy_models(init_std):
    codec = tiny_codec("entropy", init_std=init_std, decoder={"init_std": init_std, "concept_to_inputs": True})
    embeddings = [codec.encoder.local.embed, codec.decoder.local.embed, *codec.encoder.local.hash_embed.modules()]
    embeddings = [m.weight for m in embeddings if isinstance(m, torch.nn.Embedding)]
    linears = [codec.encoder.local.blocks[0].attn.wq, codec.encoder.out, codec.decoder.to_slots,
               codec.decoder.to_inputs, codec.decoder.local.head]
    want = 1.0 if init_std is None else init_std
    for weight in embeddings:
        assert weight.std().item() == pytest.approx(want, rel=0.1)
    for m in linears:  # torch's kaiming-uniform bound 1/sqrt(fan_in): std 1/sqrt(3 fan_in)
        fan_in = m.weight.shape[1]
        assert m.weight.std().item() == pytest.approx((3 * fan_in) ** -0.5 if init_std is None else 0.02, rel=0.15)
    assert codec.entropy_model.embed.weight.std().item() == pytest.approx(0.02, rel=0.1)


def test_each_modality_patches_at_its_own_threshold():
    from blt.entropy import MAX_ENTROPY
    from bridges.modality import modality_index

    codec = tiny_codec("entropy")
    encoder = codec.encoder
    text, wav = modality_index("text"), modality_index("wav")
    encoder.entropy_thresholds.fill_(0.0)  # every byte above it: one-byte patches
    encoder.entropy_thresholds[wav] = MAX_ENTROPY - 1e-4  # none above it: only the max_patch_length starts
    ids, lengths = pad_batch([UNITS[2], UNITS[2]])
    patches = encoder.patches(ids, lengths, torch.tensor([text, wav]))
    assert patches.counts[0] == lengths[0] and patches.counts[1] < lengths[1] / 2
    concepts = codec.encode([UNITS[2]], "text"), codec.encode([UNITS[2]], "wav")
    assert not torch.allclose(*concepts)  # different patches, different concept
    with pytest.raises(ValueError, match="unknown modality"):
        codec.encode([UNITS[2]], "mp3")


def test_calibration_gives_each_modality_in_the_batch_its_own_threshold():
    import random

    from blt.patching import Patcher
    from bridges.modality import modality_index

    codec = tiny_codec("entropy", target_patch_size=3.0)
    encoder = codec.encoder
    rng = random.Random(0)
    text = [b"The cat sat on the mat and looked at the moon. " * 2] * 12
    noise = [bytes([0]) + rng.randbytes(95) for _ in range(12)]  # sniffed as binary
    ids, lengths = pad_batch(text + noise)
    modalities = torch.tensor([modality_index("text")] * 12 + [modality_index("binary")] * 12)
    encoder.calibrate(ids, lengths, modalities)
    thresholds = encoder.entropy_thresholds
    assert thresholds[modality_index("text")] != thresholds[modality_index("binary")]
    assert thresholds[modality_index("wav")] == thresholds[modality_index("png")]  # absent: the whole batch's
    entropies = encoder.entropy_model.entropies(ids, lengths)
    for rows in (slice(0, 12), slice(12, 24)):
        patches = Patcher("entropy")(ids[rows], lengths[rows], entropies[rows], thresholds[modalities[rows]][:, None])
        assert float(lengths[rows].sum()) / int(patches.counts.sum()) == pytest.approx(3.0, rel=0.1)

