"""The meaning encoder, decoder and objective: shapes, invariants, and that each learns on a tiny task."""

import sys
from pathlib import Path

import pytest
import torch
import torch.nn.functional as F
from hypothesis import given, settings
from hypothesis import strategies as st

from blcm.meaning import MeaningLossConfig, MeaningModel, NextMeaning, next_meaning_nce, noised
from blt.ids import pad_batch
from bridges.meaning_codec import MeaningCodec, MeaningCodecConfig
from primitives.sampling import sample_next

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tools"))
from meaning_data import Batches  # noqa: E402

TINY = {"encoder": {"byte_dim": 32, "dim": 32, "layers": 1, "heads": 2, "ngram_sizes": [3],
                    "hash_table_size": 256, "max_bytes": 64},
        "decoder": {"dim": 32, "n_layers": 1, "n_heads": 2, "prefix": 2, "max_bytes": 64}}


def tiny_codec(patching: str = "static", seed: int = 0) -> MeaningCodec:
    torch.manual_seed(seed)
    config = MeaningCodecConfig(encoder={**TINY["encoder"], "patching": patching}, decoder=TINY["decoder"])
    return MeaningCodec(config, 16).eval()


@pytest.mark.parametrize("patching", ["entropy", "static"])
def test_meanings_are_unit_vectors_of_meaning_dim(patching):
    codec = tiny_codec(patching)
    meanings = codec.encode([b"Hello there.", b"x", "Grüße aus Köln.".encode(), bytes(range(64))])
    assert meanings.shape == (4, 16)
    assert torch.allclose(meanings.norm(dim=-1), torch.ones(4), atol=1e-5)
    assert codec.eod_concept().shape == (16,)


@settings(max_examples=15, deadline=None)
@given(st.lists(st.binary(min_size=1, max_size=64), min_size=1, max_size=6))
def test_a_unit_means_the_same_alone_and_in_any_batch(units):
    """Padding and the length buckets never leak between units."""
    codec = tiny_codec("entropy")
    together = codec.encode(units)
    alone = torch.cat([codec.encode([u]) for u in units])
    assert torch.allclose(together, alone, atol=1e-5)


@settings(max_examples=10, deadline=None)
@given(st.lists(st.binary(min_size=1, max_size=64), min_size=1, max_size=5))
def test_decoder_scores_a_unit_the_same_alone_and_in_a_batch(units):
    codec = tiny_codec()
    meanings = F.normalize(torch.randn(len(units), 16), dim=-1)
    ids, lengths = pad_batch(units)
    with torch.no_grad():
        together = codec.decoder(ids, lengths, meanings).nats
        alone = torch.cat([codec.decoder(*pad_batch([u]), meanings[i : i + 1]).nats for i, u in enumerate(units)])
    assert torch.allclose(together, alone, atol=1e-4)


def test_greedy_writing_is_what_the_decoder_scores_best():
    """The KV-cached generation and the teacher-forced scores are the same model: a greedily written unit is
    reproduced by every teacher-forced argmax."""
    codec = tiny_codec()
    meanings = F.normalize(torch.randn(3, 16), dim=-1)
    units = codec.decoder.generate(meanings, max_bytes=20)
    assert any(units)
    for unit, meaning in zip(units, meanings, strict=True):
        if not unit:
            continue
        scores = codec.decoder(*pad_batch([unit]), meaning[None])
        # every written byte is the argmax; the end too when the unit ended before the limit
        assert scores.correct.item() >= len(unit) + (len(unit) < 20)


def test_units_too_long_or_empty_are_refused():
    codec = tiny_codec()
    with pytest.raises(ValueError, match="exceeds the meaning codec's 64"):
        codec.encode([b"a" * 65])
    with pytest.raises(ValueError, match="empty unit"):
        codec.encode([b""])


def test_top_p_keeps_the_nucleus():
    logits = torch.tensor([[4.0, 3.0, 0.0, -1.0]]).repeat(200, 1)  # p ≈ 0.72, 0.26, 0.01, 0.005
    g = torch.Generator().manual_seed(0)
    assert set(sample_next(logits, 1.0, None, g, top_p=0.5).tolist()) == {0}
    assert set(sample_next(logits, 1.0, None, g, top_p=0.9).tolist()) == {0, 1}
    assert len(set(sample_next(logits, 1.0, None, g, top_p=1.0).tolist())) >= 3
    with pytest.raises(ValueError, match="top_p"):
        sample_next(logits, 1.0, None, g, top_p=0.0)


def test_noised_meanings_are_unit_vectors_or_zero():
    torch.manual_seed(0)
    m = F.normalize(torch.randn(500, 16), dim=-1)
    out = noised(m, 1.0, 0.2)
    norms = out.norm(dim=-1)
    assert ((norms - 1).abs() < 1e-5).logical_or(norms == 0).all()
    assert 0.1 < (norms == 0).float().mean() < 0.3
    cosine = F.cosine_similarity(out[norms > 0], m[norms > 0])
    assert cosine.min() > 0.3 and cosine.mean() > 0.75  # σ <= 1: still near its meaning


def test_next_meaning_term_scores_a_perfect_predictor_high():
    torch.manual_seed(0)
    predictor = NextMeaning(16, dim=32, layers=1, heads=2)
    meanings = F.normalize(torch.randn(2, 5, 16), dim=-1)
    valid = torch.tensor([[True] * 5, [True, True, True, False, False]])
    loss, accuracy = next_meaning_nce(predictor, meanings, valid, 0.05)
    assert loss.item() > 0 and 0 <= accuracy.item() <= 1
    assert predictor(meanings, valid).shape == (2, 5, 16)


def word_pairs() -> list[tuple[bytes, bytes]]:
    """A toy 'translation': each sentence and its upper-cased, reversed spelling."""
    words = ["cat", "house", "river", "green", "music", "winter", "bread", "light", "stone", "paper", "cloud",
             "horse"]
    english = [f"the {a} and the {b}.".encode() for a, b in zip(words, words[3:] + words[:3], strict=True)]
    return [(e, e.upper()[::-1]) for e in english]


def test_translations_meet_after_a_few_steps():
    """The translation term on a tiny parallel set: a unit ends nearer its own translation than the others."""
    codec = tiny_codec()
    model = MeaningModel(codec.encoder, codec.decoder, MeaningLossConfig(next=0.0, writing=0.0, temperature=0.1))
    model.train()
    pairs = word_pairs()
    a, b = pad_batch([p[0] for p in pairs]), pad_batch([p[1] for p in pairs])
    windows = (*pad_batch([p[0] for p in pairs[:4]]), torch.ones(2, 2, dtype=torch.bool), [b""] * 4)

    def gap() -> float:
        with torch.no_grad():
            sim = codec.encoder(*a) @ codec.encoder(*b).T
        off = ~torch.eye(len(pairs), dtype=torch.bool)
        return float(sim.diagonal().mean() - sim[off].mean())

    before = gap()
    optimizer = torch.optim.AdamW(model.parameters(), lr=3e-3)
    for _ in range(40):
        total, _ = model.losses((*a, *b), windows)
        optimizer.zero_grad()
        total.backward()
        optimizer.step()
    assert gap() > before + 0.3


def test_the_decoder_learns_to_write_from_meanings():
    """The writing term on a tiny task: bits per byte fall, and the meaning is what lowers them."""
    codec = tiny_codec()
    model = MeaningModel(codec.encoder, codec.decoder, MeaningLossConfig(translation=0.0, next=0.0, noise=0.2,
                                                                         unconditional=0.0))
    model.train()
    pairs = word_pairs()
    a = pad_batch([p[0] for p in pairs])
    windows = (*pad_batch([p[0] for p in pairs[:4]]), torch.ones(2, 2, dtype=torch.bool), [b""] * 4)
    optimizer = torch.optim.AdamW(model.parameters(), lr=3e-3)
    first = None
    for _ in range(60):
        total, terms = model.losses((*a, *a), windows)
        first = terms["writing"] if first is None else first
        optimizer.zero_grad()
        total.backward()
        optimizer.step()
    assert terms["writing"] < 0.5 * first


def test_cross_writing_writes_the_english_unit_from_its_translations_meaning():
    """With cross_writing the writing term is the decoder's nats of each English unit given its translation's
    meaning (and of the window units given their own); the translations themselves are not written."""
    codec = tiny_codec()
    loss = MeaningLossConfig(noise=0.0, unconditional=0.0, writing_units=1000, cross_writing=True)
    model = MeaningModel(codec.encoder, codec.decoder, loss).eval()
    pairs = word_pairs()[:4]
    a, b = pad_batch([p[0] for p in pairs]), pad_batch([p[1] for p in pairs])
    w = pad_batch([p[0] for p in word_pairs()[4:8]])
    with torch.no_grad():
        _, terms = model.losses((*a, *b), (*w, torch.ones(2, 2, dtype=torch.bool), [b""] * 4))
        nats = codec.decoder(*a, codec.encoder(*b)).nats.sum() + codec.decoder(*w, codec.encoder(*w)).nats.sum()
        ends = (a[1] + 1).sum() + (w[1] + 1).sum()
    assert torch.allclose(terms["writing"], nats / ends, rtol=1e-5)


def test_the_decoders_stage_leaves_the_encoder_as_it_is():
    """writing_only trains the decoder on the meanings of a fixed encoder: its loss falls, the encoder's weights do
    not move (no gradient reaches them)."""
    codec = tiny_codec()
    model = MeaningModel(codec.encoder, codec.decoder, MeaningLossConfig(noise=0.2, unconditional=0.0)).train()
    before = {k: v.clone() for k, v in codec.encoder.state_dict().items()}
    units = [p[0] for p in word_pairs()[:8]]
    windows = (*pad_batch(units), torch.ones(2, 4, dtype=torch.bool), [b""] * 8)
    optimizer = torch.optim.AdamW(codec.decoder.parameters(), lr=3e-3)
    first = None
    for _ in range(40):
        total, terms = model.writing_only(windows)
        first = terms["writing"] if first is None else first
        optimizer.zero_grad()
        total.backward()
        assert all(p.grad is None for p in codec.encoder.parameters())
        optimizer.step()
    assert terms["writing"] < 0.6 * first
    assert all(torch.equal(v, codec.encoder.state_dict()[k]) for k, v in before.items())


def test_paragraph_batches_and_meanings():
    """A paragraph batch holds distinct English paragraphs with each unit's paragraph index; a paragraph's
    meaning is the normalised mean of its units' meanings; the paragraph term is refused without paragraphs."""
    english = [[b"One cat.", b"Two dogs."], [b"A house."], [b"Red sky.", b"Blue sea.", b"Green land."]]
    paragraphs = [(e, [u.upper() for u in e][: 1 + i % 2]) for i, e in enumerate(english)] * 3  # repeats
    batches = Batches([], [], torch.Generator().manual_seed(0), paragraphs)
    ids_a, len_a, par_a, ids_b, len_b, par_b = batches.paragraph_batch(5)
    assert int(par_a.max()) == 2 and int(par_b.max()) == 2  # only 3 distinct English paragraphs
    assert len(ids_a) == 6 and len(par_b) == len(ids_b)
    codec = tiny_codec()
    model = MeaningModel(codec.encoder, codec.decoder, MeaningLossConfig(paragraph=1.0))
    with torch.no_grad():
        pooled = model.paragraph_meanings(ids_a, len_a, par_a)
        units = codec.encoder(ids_a, len_a)
    for q in range(3):
        assert torch.allclose(pooled[q], F.normalize(units[par_a == q].mean(0), dim=-1), atol=1e-6)
    windows = (*pad_batch([b"x.", b"y."]), torch.ones(1, 2, dtype=torch.bool), [b""] * 2)
    pairs = (*pad_batch([b"a b."]), *pad_batch([b"A B."]))
    _, terms = model.losses(pairs, windows, (ids_a, len_a, par_a, ids_b, len_b, par_b))
    assert terms["paragraph"] > 0
    with pytest.raises(ValueError, match="no paragraph pairs"):
        model.losses(pairs, windows)


def test_word_dropped_views_and_the_identity_term():
    """A view keeps a subset of a unit's words in order (never none); the identity term needs views, and training
    it makes a unit nearer its own view than the others' after a few steps."""
    units = [p[0] for p in word_pairs()[:8]]
    batches = Batches([], [], torch.Generator().manual_seed(0))
    ids, lengths = pad_batch(units)
    view_ids, view_lengths = batches.views(ids, lengths, drop=0.5)
    for unit, row, n in zip(units, view_ids, view_lengths.tolist(), strict=True):
        words, kept = unit.split(b" "), bytes(int(b) - 4 for b in row[:n]).split(b" ")
        rest = iter(words)
        assert kept and all(any(w == v for v in rest) for w in kept)  # a subsequence: in order, none made up
    codec = tiny_codec()
    model = MeaningModel(codec.encoder, codec.decoder, MeaningLossConfig(translation=0.0, next=0.0, writing=0.0,
                                                                         identity=1.0, temperature=0.1)).train()
    windows = (ids, lengths, torch.ones(2, 4, dtype=torch.bool), [b""] * 8)
    pairs = (*pad_batch([b"a b."]), *pad_batch([b"A B."]))
    with pytest.raises(ValueError, match="word-dropped views"):
        model.losses(pairs, windows)
    held_views = [Batches([], [], torch.Generator().manual_seed(s)).views(ids, lengths) for s in range(1, 6)]

    def held_out() -> float:  # the term on views not trained on
        with torch.no_grad():
            return sum(float(model.losses(pairs, windows, views=v)[1]["identity"]) for v in held_views) / 5

    before = held_out()
    optimizer = torch.optim.AdamW(model.parameters(), lr=3e-3)
    for _ in range(80):
        total, _ = model.losses(pairs, windows, views=batches.views(ids, lengths))
        optimizer.zero_grad()
        total.backward()
        optimizer.step()
    assert held_out() < 0.5 * before
