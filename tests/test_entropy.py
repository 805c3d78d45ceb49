import json
import math

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from blt.entropy import MAX_ENTROPY, EntropyModel, EntropyModelConfig
from blt.ids import BOS, VOCAB_SIZE, encode, pad_batch

CONTEXT = 16


def tiny(context=CONTEXT, window=None, seed=0, sharpen=True):
    torch.manual_seed(seed)
    model = EntropyModel(EntropyModelConfig(dim=32, n_layers=2, n_heads=2, context=context, window=window,
                                            backend="sdpa")).eval()
    if sharpen:  # a random init predicts ~uniform; spread the entropies so comparisons mean something
        with torch.no_grad():
            model.head.weight.mul_(20.0)
    return model


def reference_entropies(model, data: bytes) -> torch.Tensor:
    """Entropy of byte t from one forward pass over the documented window that scores it.

    Bytes [0, context) are scored by the first window (x[0] = BOS); later bytes by windows that
    start at context - left + i * stride and keep their last `stride` positions.
    """
    width = model.config.context
    left = width // 2
    stride = width - left
    x = torch.cat([torch.tensor([BOS]), encode(data)[:-1]])
    out = []
    for t in range(len(data)):
        s = 0 if t < width else width - left + ((t - width) // stride) * stride
        assert t < width or t - s >= left  # every later byte keeps at least `left` bytes of context
        logp = torch.log_softmax(model(x[None, s : t + 1]).float()[0, -1], -1)
        out.append(-(logp.exp() * logp).sum())
    return torch.stack(out) if out else torch.zeros(0)


TEXTS = [b"a", b"hello", b"x" * 15, b"0123456789abcdef", b"0123456789abcdefg",
         b"The quick brown fox jumps over the lazy dog", bytes(range(100, 200)) + b"tail!"]


def test_entropies_match_window_reference():
    model = tiny()
    ids, lengths = pad_batch(TEXTS)
    h = model.entropies(ids, lengths)
    assert h.shape == ids.shape and h.dtype == torch.float32
    for row, text in enumerate(TEXTS):
        torch.testing.assert_close(h[row, : len(text)], reference_entropies(model, text), atol=1e-5, rtol=1e-5)


@pytest.mark.parametrize("context", [16, 15, 7])
def test_entropies_independent_of_batch(context):
    """THE key property: a sequence's entropies do not depend on what it is batched with."""
    model = tiny(context=context)
    gen = torch.Generator().manual_seed(0)
    texts = [bytes(torch.randint(0, 256, (n,), generator=gen).tolist()) for n in (1, 5, context - 1, context,
                                                                                  context + 1, 2 * context + 3, 100)]
    alone = [model.entropies(*pad_batch([t]))[0] for t in texts]
    for order in (texts, texts[::-1]):
        ids, lengths = pad_batch(order)
        batched = model.entropies(ids, lengths)
        for row, text in enumerate(order):
            torch.testing.assert_close(batched[row, : len(text)], alone[texts.index(text)], atol=1e-5, rtol=1e-5)
            assert (batched[row, len(text) :] == 0).all()
    # extra padding and tiny inner batches change nothing either
    ids, lengths = pad_batch(texts, pad_to=150)
    for bs in (1, 3):
        batched = model.entropies(ids, lengths, batch_size=bs)
        for row, text in enumerate(texts):
            torch.testing.assert_close(batched[row, : len(text)], alone[row], atol=1e-5, rtol=1e-5)


def test_short_row_with_long_row_both_sides_of_context():
    model = tiny()
    long = bytes(range(60)) * 2  # 120 bytes, windowed path
    for short in (b"abc", b"abcdefghijklmnopqrstuvwxyz"):  # shorter and longer than context
        alone = model.entropies(*pad_batch([short]))[0]
        both = model.entropies(*pad_batch([short, long]))
        torch.testing.assert_close(both[0, : len(short)], alone, atol=1e-5, rtol=1e-5)
        torch.testing.assert_close(both[1], model.entropies(*pad_batch([long]))[0], atol=1e-5, rtol=1e-5)


def test_sliding_window_model_batch_invariant():
    model = tiny(window=5)
    texts = [b"short", b"a somewhat longer text than the context of sixteen"]
    ids, lengths = pad_batch(texts)
    batched = model.entropies(ids, lengths)
    for row, text in enumerate(texts):
        torch.testing.assert_close(batched[row, : len(text)], model.entropies(*pad_batch([text]))[0],
                                   atol=1e-5, rtol=1e-5)
        torch.testing.assert_close(batched[row, : len(text)], reference_entropies(model, text), atol=1e-5, rtol=1e-5)


_MODEL = tiny()


@settings(max_examples=40, deadline=None)
@given(st.lists(st.binary(max_size=70), min_size=1, max_size=4), st.integers(0, 5))
def test_entropies_bounded_and_zero_at_padding(texts, extra):
    width = max(len(t) for t in texts) + extra
    ids, lengths = pad_batch(texts, pad_to=width)
    h = _MODEL.entropies(ids, lengths)
    assert h.shape == (len(texts), width)
    assert torch.isfinite(h).all()
    assert (h >= 0).all()
    assert (h <= math.log(VOCAB_SIZE) + 1e-4).all()
    inside = torch.arange(width) < lengths[:, None]
    assert (h[~inside] == 0).all()
    if inside.any():
        assert (h[inside] > 0).all()


def test_max_entropy_constant():
    assert abs(MAX_ENTROPY - math.log(260)) < 1e-12


def test_forward_shape_and_causality():
    model = tiny()
    ids = encode(b"abcdefghij")[None]
    logits = model(ids)
    assert logits.shape == (1, 10, VOCAB_SIZE)
    changed = ids.clone()
    changed[0, 6] = encode(b"Z")[0]
    torch.testing.assert_close(model(changed)[:, :6], logits[:, :6])
    assert not torch.allclose(model(changed)[:, 6:], logits[:, 6:])


def test_loss_ignores_pad_targets():
    model = tiny(sharpen=False)
    ids, _ = pad_batch([b"hello world"])
    padded, _ = pad_batch([b"hello world"], pad_to=20)
    torch.testing.assert_close(model.loss(padded), model.loss(ids))
    # random init: close to a uniform prediction
    assert abs(model.loss(ids).item() - math.log(VOCAB_SIZE)) < 0.5


def test_training_reduces_loss_and_entropy():
    torch.manual_seed(0)
    model = EntropyModel(EntropyModelConfig(dim=32, n_layers=1, n_heads=2, context=32, backend="sdpa"))
    text = b"abc" * 20
    batch = torch.cat([torch.tensor([BOS]), encode(text)])[None, :33]
    ids, lengths = pad_batch([text])
    model.eval()
    h_before = model.entropies(ids, lengths)[0, 3:].mean().item()
    model.train()
    opt = torch.optim.Adam(model.parameters(), lr=1e-2)
    first = model.loss(batch).item()
    for _ in range(40):
        loss = model.loss(batch)
        opt.zero_grad()
        loss.backward()
        opt.step()
    model.eval()
    last = model.loss(batch).item()
    h_after = model.entropies(ids, lengths)[0, 3:].mean().item()
    assert last < 0.2 * first, (first, last)
    assert h_after < 0.3 * h_before, (h_before, h_after)
    # the windowed path (text longer than context) sees the pattern too
    assert model.entropies(ids, lengths)[0, 40:].max().item() < 1.0


def test_save_and_load_round_trip(tmp_path):
    model = tiny()
    target = tmp_path / "sub" / "entropy"
    assert model.save_pretrained(target) == target
    assert sorted(p.name for p in target.iterdir()) == ["config.json", "model.safetensors"]
    config = json.loads((target / "config.json").read_text())
    assert config["type"] == "EntropyModel" and config["context"] == CONTEXT
    loaded = EntropyModel.from_pretrained(target)
    assert not loaded.training
    assert loaded.config == model.config
    ids, lengths = pad_batch([b"round trip", b"a longer string, longer than sixteen bytes"])
    assert torch.equal(loaded.entropies(ids, lengths), model.entropies(ids, lengths))
    assert torch.equal(loaded(ids), model(ids))

    # saving over an existing export replaces it atomically and leaves no temp dirs behind
    other = tiny(seed=1)
    other.save_pretrained(target)
    reloaded = EntropyModel.from_pretrained(target)
    assert torch.equal(reloaded(ids), other(ids))
    assert not torch.equal(reloaded(ids), model(ids))
    assert sorted(p.name for p in (tmp_path / "sub").iterdir()) == ["entropy"]


def test_from_pretrained_missing_files(tmp_path):
    with pytest.raises(FileNotFoundError):
        EntropyModel.from_pretrained(tmp_path / "nope")
    tiny().save_pretrained(tmp_path / "m")
    (tmp_path / "m" / "model.safetensors").unlink()
    with pytest.raises(FileNotFoundError):
        EntropyModel.from_pretrained(tmp_path / "m")
    tiny().save_pretrained(tmp_path / "c")
    (tmp_path / "c" / "config.json").unlink()
    with pytest.raises(FileNotFoundError):
        EntropyModel.from_pretrained(tmp_path / "c")


def test_from_pretrained_wrong_type(tmp_path):
    tiny().save_pretrained(tmp_path / "m")
    cfg = json.loads((tmp_path / "m" / "config.json").read_text())
    cfg["type"] = "LocalEncoder"
    (tmp_path / "m" / "config.json").write_text(json.dumps(cfg))
    with pytest.raises(ValueError):
        EntropyModel.from_pretrained(tmp_path / "m")


def reference_log_probs(model, data: bytes) -> torch.Tensor:
    """log p(byte t) from the same documented window that scores its entropy."""
    width = model.config.context
    stride = width - width // 2
    ids = encode(data)
    x = torch.cat([torch.tensor([BOS]), ids[:-1]])
    out = []
    for t in range(len(data)):
        s = 0 if t < width else width - width // 2 + ((t - width) // stride) * stride
        out.append(torch.log_softmax(model(x[None, s : t + 1]).float()[0, -1], -1)[ids[t]])
    return torch.stack(out)


def test_log_probs_match_window_reference_and_are_batch_independent():
    model = tiny()
    ids, lengths = pad_batch(TEXTS)
    logp = model.log_probs(ids, lengths)
    assert logp.shape == ids.shape and bool((logp <= 0).all())
    for row, text in enumerate(TEXTS):
        torch.testing.assert_close(logp[row, : len(text)], reference_log_probs(model, text), atol=1e-5, rtol=1e-5)
        alone = model.log_probs(*pad_batch([text]))[0]
        torch.testing.assert_close(alone, logp[row, : len(text)], atol=1e-5, rtol=1e-5)
    assert bool((logp[ids == 0] == 0).all())  # padding scores zero


def naive_greedy(model, prompt: bytes, n: int) -> bytes:
    ids = torch.cat([torch.tensor([BOS]), encode(prompt)])[None] if prompt else torch.tensor([[BOS]])
    out = bytearray()
    for _ in range(n):
        logits = model(ids)[0, -1]
        logits[:2] = float("-inf")
        nxt = int(logits.argmax())
        if nxt < 4:
            break
        out.append(nxt - 4)
        ids = torch.cat([ids, torch.tensor([[nxt]])], dim=1)
    return bytes(out)


@pytest.mark.parametrize("prompt", [b"", b"a", b"hello wor"])
def test_generate_with_kv_cache_equals_full_recompute(prompt):
    model = tiny(context=64, sharpen=False)
    n = 20
    got = model.generate(prompt, max_new_bytes=n, stop_at_end=True)
    assert got == naive_greedy(model, prompt, n)
    assert len(got) <= n


def test_generate_crops_the_prompt_to_the_context_and_checks_arguments():
    model = tiny(context=16, sharpen=False)
    long_prompt = b"0123456789" * 5
    got = model.generate(long_prompt, max_new_bytes=5, stop_at_end=False)
    assert len(got) == 5  # without stopping, exactly max_new_bytes
    assert got == model.generate(long_prompt[-11:], max_new_bytes=5, stop_at_end=False)  # 16 - 5 bytes kept
    assert got != model.generate(long_prompt[-10:], max_new_bytes=5, stop_at_end=False)
    with pytest.raises(ValueError, match="max_new_bytes"):
        model.generate(b"a", max_new_bytes=16)
    with pytest.raises(ValueError, match="max_new_bytes"):
        model.generate(b"a", max_new_bytes=0)
    sampled = model.generate(b"ab", max_new_bytes=8, temperature=1.0, top_k=5, stop_at_end=False,
                             generator=torch.Generator().manual_seed(0))
    assert len(sampled) == 8
