import pytest
import torch
from torch import nn

from primitives.attention import AttentionMask
from primitives.transformer import Attention, Block, KVCache, RotaryEmbedding, SwiGLU, init_weights


def test_rope_rejects_odd_head_dim():
    with pytest.raises(ValueError):
        RotaryEmbedding(7)


def test_rope_position_zero_is_identity_and_norm_preserved():
    torch.manual_seed(0)
    rope = RotaryEmbedding(16)
    x = torch.randn(2, 3, 5, 16)
    pos = torch.zeros(2, 5, dtype=torch.long)
    torch.testing.assert_close(rope(x, pos), x)
    pos = torch.randint(0, 1000, (2, 5))
    y = rope(x, pos)
    assert y.shape == x.shape and y.dtype == x.dtype
    torch.testing.assert_close(y.norm(dim=-1), x.norm(dim=-1), atol=1e-4, rtol=1e-5)
    assert not torch.allclose(y, x)


@pytest.mark.parametrize("shift", [1, 7, 123])
def test_rope_scores_depend_only_on_relative_position(shift):
    torch.manual_seed(0)
    rope = RotaryEmbedding(32)
    B, H, L, D = 2, 2, 9, 32
    q, k = torch.randn(B, H, L, D), torch.randn(B, H, L, D)
    pos = torch.arange(L).expand(B, -1)
    scores = rope(q, pos) @ rope(k, pos).transpose(-1, -2)
    shifted = rope(q, pos + shift) @ rope(k, pos + shift).transpose(-1, -2)
    torch.testing.assert_close(shifted, scores, atol=2e-4, rtol=1e-4)
    # ...but absolute offsets between q and k positions do matter
    moved = rope(q, pos + shift) @ rope(k, pos).transpose(-1, -2)
    assert not torch.allclose(moved, scores, atol=1e-3)


def test_rope_pair_dot_product_formula():
    """q at position m and k at position n: score depends on m - n only, for any m, n."""
    torch.manual_seed(1)
    rope = RotaryEmbedding(8)
    q, k = torch.randn(1, 1, 1, 8), torch.randn(1, 1, 1, 8)

    def score(m, n):
        return (rope(q, torch.tensor([[m]])) * rope(k, torch.tensor([[n]]))).sum().item()

    for m, n in [(0, 3), (5, 8), (100, 103)]:
        assert score(m, n) == pytest.approx(score(0, 3), abs=1e-4)


def test_attention_rejects_indivisible_heads():
    with pytest.raises(ValueError):
        Attention(30, 4)


@pytest.mark.parametrize("window", [None, 3])
def test_attention_kv_cache_matches_full(window):
    torch.manual_seed(0)
    attn = Attention(32, 4, backend="sdpa").eval()
    B, L = 2, 11
    x = torch.randn(B, L, 32)
    pos = torch.arange(L).expand(B, -1)
    mask = AttentionMask(causal=True, window=window)
    full = attn(x, mask, pos)
    assert full.shape == (B, L, 32)
    cache = KVCache()
    steps = []
    for t in range(L):
        steps.append(attn(x[:, t : t + 1], mask, pos[:, t : t + 1], cache=cache))
        assert cache.length == t + 1
    torch.testing.assert_close(torch.cat(steps, 1), full, atol=1e-5, rtol=1e-5)


def test_attention_kv_cache_chunks_match_full():
    torch.manual_seed(0)
    attn = Attention(32, 2, backend="sdpa").eval()
    x = torch.randn(1, 10, 32)
    pos = torch.arange(10)[None]
    mask = AttentionMask(causal=True)
    full = attn(x, mask, pos)
    cache = KVCache()
    out = [attn(x[:, a:b], mask, pos[:, a:b], cache=cache) for a, b in ((0, 4), (4, 5), (5, 10))]
    torch.testing.assert_close(torch.cat(out, 1), full, atol=1e-5, rtol=1e-5)


def test_kv_cache_extend():
    cache = KVCache()
    assert cache.length == 0
    k1, v1 = torch.randn(1, 2, 3, 4), torch.randn(1, 2, 3, 4)
    k, v = cache.extend(k1, v1)
    assert k is k1 and cache.length == 3
    k2, v2 = torch.randn(1, 2, 2, 4), torch.randn(1, 2, 2, 4)
    k, v = cache.extend(k2, v2)
    assert cache.length == 5
    assert torch.equal(k, torch.cat([k1, k2], -2)) and torch.equal(v, torch.cat([v1, v2], -2))


def test_attention_is_causal():
    torch.manual_seed(0)
    attn = Attention(32, 4, backend="sdpa").eval()
    x = torch.randn(1, 8, 32)
    pos = torch.arange(8)[None]
    y = attn(x, AttentionMask(causal=True), pos)
    x2 = x.clone()
    x2[:, 5:] += 1.0
    y2 = attn(x2, AttentionMask(causal=True), pos)
    torch.testing.assert_close(y2[:, :5], y[:, :5])
    assert not torch.allclose(y2[:, 5:], y[:, 5:])


def test_cross_attention_shapes_and_no_rope():
    torch.manual_seed(0)
    cross = Attention(32, 4, backend="sdpa", context_dim=48)
    assert cross.is_cross and cross.rope is None
    x, ctx = torch.randn(2, 5, 32), torch.randn(2, 7, 48)
    out = cross(x, None, context=ctx)
    assert out.shape == (2, 5, 32)
    # cross-attention ignores key order (no positions): permuting the context changes nothing
    perm = torch.randperm(7)
    torch.testing.assert_close(cross(x, None, context=ctx[:, perm]), out, atol=1e-5, rtol=1e-5)


@pytest.mark.parametrize("context_dim", [None, 24])
def test_block_shape(context_dim):
    torch.manual_seed(0)
    block = Block(32, 4, backend="sdpa", context_dim=context_dim)
    x = torch.randn(3, 6, 32)
    pos = torch.arange(6).expand(3, -1)
    ctx = None if context_dim is None else torch.randn(3, 4, context_dim)
    y = block(x, AttentionMask(causal=True), pos, context=ctx)
    assert y.shape == x.shape
    assert torch.isfinite(y).all()
    assert (block.cross is None) == (context_dim is None)


def test_block_kv_cache_matches_full():
    torch.manual_seed(0)
    block = Block(32, 2, backend="sdpa", context_dim=16).eval()
    x, ctx = torch.randn(2, 7, 32), torch.randn(2, 3, 16)
    pos = torch.arange(7).expand(2, -1)
    full = block(x, AttentionMask(causal=True), pos, context=ctx)
    cache = KVCache()
    steps = [block(x[:, t : t + 1], AttentionMask(causal=True), pos[:, t : t + 1], context=ctx, cache=cache)
             for t in range(7)]
    torch.testing.assert_close(torch.cat(steps, 1), full, atol=1e-5, rtol=1e-5)


@pytest.mark.parametrize("dim", [32, 48, 64])
def test_swiglu_shape(dim):
    ffn = SwiGLU(dim)
    hidden = ffn.w_down.in_features
    assert hidden % 32 == 0
    assert ffn.w_gate_up.out_features == 2 * hidden
    x = torch.randn(2, 5, dim)
    assert ffn(x).shape == (2, 5, dim)


def test_swiglu_formula():
    torch.manual_seed(0)
    ffn = SwiGLU(32)
    x = torch.randn(4, 32)
    gate, up = ffn.w_gate_up(x).chunk(2, -1)
    torch.testing.assert_close(ffn(x), ffn.w_down(torch.nn.functional.silu(gate) * up))


def test_init_weights_scales_residual_outputs():
    torch.manual_seed(0)
    model = nn.ModuleList([Block(64, 4, backend="sdpa") for _ in range(8)])
    init_weights(model, std=0.02)
    residual = torch.cat([b.attn.wo.weight.flatten() for b in model] + [b.ffn.w_down.weight.flatten() for b in model])
    other = torch.cat([b.attn.wq.weight.flatten() for b in model])
    assert other.std().item() == pytest.approx(0.02, rel=0.1)
    assert residual.std().item() == pytest.approx(0.02 / 16**0.5, rel=0.1)
