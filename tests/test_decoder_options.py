"""LocalDecoder's options, the codec ablation levers: a sliding window, learned positions, a per-row input
bias and segment routing keep the KV-cached decode equal to the full forward pass, and do what they say."""

import pytest
import torch
from test_encoder_decoder import decoder

from blt.ids import VOCAB_SIZE

DECODER_OPTIONS = [{"window": 3}, {"max_positions": 6}, {"window": 2, "max_positions": 32},
                   {"segment_bytes": 2}]  # 9 positions over 3 slots: the clamp past the last slot runs


@pytest.mark.parametrize("overrides", DECODER_OPTIONS)
def test_decoder_options_keep_cached_forward_equal_to_full(overrides):
    from primitives.transformer import KVCache

    dec = decoder(**overrides)
    slots, bias = torch.randn(2, 3, 48), torch.randn(2, 32)
    ids = torch.randint(4, VOCAB_SIZE, (2, 9))  # longer than max_positions=6: the last position repeats
    full = dec(ids, slots, input_bias=bias)
    caches = [KVCache() for _ in dec.blocks]
    parts = [dec(ids[:, a:b], slots, caches=caches, start=a, input_bias=bias) for a, b in ((0, 1), (1, 5), (5, 9))]
    torch.testing.assert_close(torch.cat(parts, 1), full, atol=1e-5, rtol=1e-5)


@pytest.mark.parametrize("overrides", DECODER_OPTIONS)
def test_generate_with_options_cache_equals_no_cache(overrides):
    dec = decoder(**overrides)
    with torch.no_grad():
        dec.head.weight.mul_(50.0)
    slots, bias = torch.randn(3, 4, 48), torch.randn(3, 32)
    fast = dec.generate(slots, max_bytes=10, input_bias=bias)
    assert torch.equal(fast, dec.generate(slots, max_bytes=10, use_cache=False, input_bias=bias))
    assert not torch.equal(fast, dec.generate(slots, max_bytes=10, input_bias=-bias))  # the bias is read


def test_windowed_decoder_forgets_bytes_beyond_its_window():
    dec = decoder(window=3)
    slots = torch.randn(2, 4, 48)
    ids = torch.randint(4, VOCAB_SIZE, (2, 10))
    logits = dec(ids, slots)
    changed = ids.clone()
    changed[:, 2] = (changed[:, 2] - 4 + 1) % 256 + 4
    new = dec(changed, slots)
    # position t sees t-2 .. t in each layer: 2 layers reach back 4 bytes, so byte 2 reaches positions 2..6 only
    torch.testing.assert_close(new[:, 7:], logits[:, 7:], atol=1e-6, rtol=1e-6)
    assert not torch.allclose(new[:, 6], logits[:, 6], atol=1e-4)


def test_learned_positions_tell_repeated_bytes_apart():
    dec = decoder(max_positions=16)
    ids = torch.full((1, 8), 4 + ord("a"))
    logits = dec(ids, torch.zeros(1, 1, 48), torch.zeros(1, 1, dtype=torch.bool))  # no slots: the bytes alone
    with torch.no_grad():
        dec.positions.weight.zero_()
    same = dec(ids, torch.zeros(1, 1, 48), torch.zeros(1, 1, dtype=torch.bool))
    assert not torch.allclose(logits[0, 3], logits[0, 6], atol=1e-4)  # positions differ, so do the outputs
    torch.testing.assert_close(same[0, 3], same[0, 6], atol=1e-5, rtol=1e-5)  # RoPE alone: same bytes look alike
