"""The meaning decoder that reads the text before a unit (``context`` > 0): its ids, its scores and generation, the
codec writing units in order, the windows' texts, and generation handing the prompt to the decoder."""

import random
import sys
from pathlib import Path

import pytest
import torch
import torch.nn.functional as F
from hypothesis import given, settings
from hypothesis import strategies as st
from test_meaning import TINY

from blcm.meaning import MeaningLossConfig, MeaningModel
from blt.ids import PAD, encode, pad_batch
from bridges.meaning_codec import MeaningCodec, MeaningCodecConfig

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tools"))
from meaning_data import CONTEXT_BYTES, Batches  # noqa: E402


def context_codec(context: int, seed: int = 0) -> MeaningCodec:
    torch.manual_seed(seed)
    config = MeaningCodecConfig(encoder={**TINY["encoder"], "patching": "static"},
                                decoder={**TINY["decoder"], "context": context})
    return MeaningCodec(config, 16).eval()


@settings(max_examples=25, deadline=None)
@given(st.lists(st.binary(max_size=20), min_size=1, max_size=5), st.integers(0, 12))
def test_context_ids_are_the_last_bytes_left_padded(texts, width):
    ids = context_codec(width).decoder.context_ids(texts, len(texts))
    assert ids.shape == (len(texts), width)
    for row, text in zip(ids, texts, strict=True):
        kept = text[-width:] if width else b""
        assert torch.equal(row[width - len(kept) :], encode(kept))
        assert (row[: width - len(kept)] == PAD).all()


def test_a_decoder_without_context_ignores_the_text_before():
    codec = context_codec(0)
    concepts = codec.encode([b"The cat sleeps.", b"Dogs bark loudly."])
    assert codec.decode(concepts) == codec.decode(concepts, before=[b"Something else entirely. ", b"Or this. "])


def test_the_text_before_changes_the_scores_and_greedy_writing_is_their_argmax():
    """The context is read (other text, other scores), and the KV-cached generation after a context is the model the
    teacher-forced scores are: every written byte is the argmax given the same context."""
    decoder = context_codec(8).decoder
    meanings = F.normalize(torch.randn(2, 16), dim=-1)
    unit = pad_batch([b"a b c.", b"a b c."])
    before = [b"Once upon a time ", b"1234 5678 "]
    with torch.no_grad():
        nats = decoder(*unit, meanings[:1].expand(2, -1), decoder.context_ids(before, 2)).nats
    assert not torch.allclose(nats[0], nats[1])
    units = decoder.generate(meanings, max_bytes=12, before=before)
    assert any(units)
    for written, meaning, text in zip(units, meanings, before, strict=True):
        if written:
            scores = decoder(*pad_batch([written]), meaning[None], decoder.context_ids([text], 1))
            assert scores.correct.item() >= len(written) + (len(written) < 12)


def test_a_context_reading_codec_writes_each_unit_after_its_own_text():
    """Units are written in one batch, each after its own text (the same as alone); a wrong count is refused."""
    codec = context_codec(8)
    concepts = codec.encode([b"The cat sleeps.", b"The cat sleeps."])
    texts = [b"Prompt. ", b"Zzz 999 "]
    together = codec.decode(concepts, before=texts)
    assert together == [codec.decode(concepts[i : i + 1], before=[t])[0] for i, t in enumerate(texts)]
    with pytest.raises(ValueError, match="texts before"):
        codec.decode(concepts, before=[b"one"])


def test_window_rows_carry_the_text_before_them():
    docs = [[f"Unit {d}.{i} of some text. ".encode() for i in range(30)] for d in range(4)]
    batches = Batches([], docs, torch.Generator().manual_seed(0))
    ids, lengths, valid, before = batches.window_batch(6, 5)
    texts = [b"".join(doc) for doc in docs]
    rows = [bytes(b - 4 for b in row[:n].tolist()) for row, n in zip(ids, lengths.tolist(), strict=True)]
    assert len(before) == len(rows) == valid.numel()
    for unit, text, real in zip(rows, before, valid.reshape(-1).tolist(), strict=True):
        if not real:
            assert text == b""
            continue
        assert len(text) <= CONTEXT_BYTES
        home = next(t for t in texts if unit in t)
        assert text + unit in home  # the text is what precedes the unit in its document
        assert len(text) == CONTEXT_BYTES or home.startswith(text + unit)


def test_the_decoder_learns_to_read_the_text_before():
    """Documents that repeat one random word, with no meaning to read (every meaning zeroed): a decoder that reads 12
    bytes of context learns to copy the word before (a third of the nats of one that reads none, in the same steps)."""
    rng = random.Random(0)
    docs = [[bytes(rng.choice(b"abcdefghijklmnopqrstuvwxyz") for _ in range(4)) + b". "] * 6 for _ in range(64)]

    def final_loss(context: int) -> float:
        codec = context_codec(context, seed=1)
        model = MeaningModel(codec.encoder, codec.decoder, MeaningLossConfig(unconditional=1.0)).train()
        batches = Batches([], docs, torch.Generator().manual_seed(0))
        optimizer = torch.optim.AdamW(codec.decoder.parameters(), lr=3e-3)
        for _ in range(120):
            total, terms = model.writing_only(batches.window_batch(8, 4))
            optimizer.zero_grad()
            total.backward()
            optimizer.step()
        return float(terms["writing"])

    assert final_loss(12) < 0.5 * final_loss(0)


def test_generation_hands_the_text_so_far_to_the_decoder(monkeypatch):
    """Re-encoding, each unit is written after the prompt and the units written before it; planning, the plan is
    written in one batch, every unit after the prompt."""
    from blcm.model import ByteLCM, ByteLCMConfig

    codec = context_codec(8)
    torch.manual_seed(0)
    model = ByteLCM(ByteLCMConfig(concept_dim=16, codec=codec.config, segmenter={"kind": "sentence", "max_bytes": 64},
                                  core={"variant": "base", "model_dim": 32, "n_layers": 1, "n_heads": 2})).eval()
    model.load_codec(codec)
    seen, decode = [], model.codec.decode

    def recording(concepts, *args, before=None):
        seen.append(before)
        return [u or b"x" for u in decode(concepts, *args, before=before)]  # an empty unit would stop generation

    monkeypatch.setattr(model.codec, "decode", recording)
    prompt = b"The cat sleeps. "
    reencoded = list(model.iter_generate(prompt, max_units=3, seed=0, eod_threshold=2.0, reencode=True))
    assert seen == [[prompt], [prompt + reencoded[0]], [prompt + reencoded[0] + reencoded[1]]][: len(seen)]
    assert len(seen) == len(reencoded) >= 2
    seen.clear()
    planned = list(model.iter_generate(prompt, max_units=3, seed=0, eod_threshold=2.0))
    assert seen == [[prompt] * len(planned)]  # one batch: every planned unit reads the prompt's end


def test_a_model_takes_another_decoder_only_on_its_own_encoder(tmp_path):
    """use_meaning_decoder swaps in a decoder stage's decoder (its config too); a codec of another encoder, or a
    model without a meaning codec, is refused."""
    from blcm.model import ByteLCM, ByteLCMConfig

    def model_of(codec):
        model = ByteLCM(ByteLCMConfig(concept_dim=16, codec=codec.config,
                                      segmenter={"kind": "sentence", "max_bytes": 64},
                                      core={"variant": "base", "model_dim": 32, "n_layers": 1, "n_heads": 2}))
        model.load_codec(codec)
        return model.eval()

    model, staged = model_of(context_codec(0)), context_codec(8, seed=0)
    staged.decoder.load_state_dict({k: v + 0.01 for k, v in staged.decoder.state_dict().items()})
    model.use_meaning_decoder(staged)
    assert model.config.codec.decoder.context == 8 and model.codec.decoder is staged.decoder
    assert model.generate(b"The cat sleeps. ", max_units=1, seed=0, eod_threshold=2.0) is not None
    with pytest.raises(ValueError, match="not this model's"):
        model.use_meaning_decoder(context_codec(8, seed=1))


def test_ignoring_the_meaning_writes_what_the_text_before_alone_gives():
    codec = context_codec(8)
    concepts = codec.encode([b"The cat sleeps.", b"Dogs bark loudly."])
    codec.config = MeaningCodecConfig(**{**vars(codec.config), "ignore_meaning": True})
    zero = torch.zeros(1, 16)
    first = codec.decode(concepts[:1], before=[b"Prompt. "])[0]
    assert first == codec.decoder.generate(zero, max_bytes=64, before=[b"Prompt. "])[0]
    assert codec.decode(concepts[1:], before=[b"Prompt. "])[0] == first
