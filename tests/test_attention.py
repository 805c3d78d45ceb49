import math

import pytest
import torch

import primitives.attention as attention
from primitives.attention import AttentionMask, attend, resolve_backend


def reference_mask(q_len, kv_len, batch=1, q_groups=None, kv_groups=None, causal=False, window=None):
    """Brute-force (B, Lq, Lk) mask: queries are aligned to the end of the keys."""
    out = torch.zeros(batch, q_len, kv_len, dtype=torch.bool)
    for b in range(batch):
        for i in range(q_len):
            pos = i + kv_len - q_len
            for j in range(kv_len):
                ok = True
                if q_groups is not None:
                    qg, kg = int(q_groups[b, i]), int(kv_groups[b, j])
                    ok = qg == kg and qg >= 0 and kg >= 0
                if causal:
                    ok = ok and j <= pos
                    if window is not None:
                        ok = ok and pos - j < window
                out[b, i, j] = ok
    return out


def naive_attention(q, k, v, dense):
    """softmax(QK^T / sqrt(d)) over the visible keys; rows with no visible key -> 0."""
    scores = q @ k.transpose(-1, -2) / math.sqrt(q.shape[-1])
    allowed = dense[:, None].expand_as(scores)
    scores = scores.masked_fill(~allowed, float("-inf"))
    weights = torch.softmax(scores, -1).nan_to_num(0.0)
    return weights @ v


def unit_groups(lengths_per_row, total):
    """Packed units: row -> [0]*a + [1]*b + ... then -1 padding."""
    rows = []
    for lengths in lengths_per_row:
        g = [u for u, n in enumerate(lengths) for _ in range(n)]
        rows.append(g + [-1] * (total - len(g)))
    return torch.tensor(rows, dtype=torch.long)


def patch_cross_groups():
    # bytes of 2 rows with patch ids (row 1 shorter: padding -1), queries = k per patch
    byte_ids = torch.tensor([[0, 0, 0, 1, 1, 2, 3, 3, 3, 3],
                             [0, 1, 1, 1, 2, 2, -1, -1, -1, -1]])
    k = 2
    num_patches = 4
    q = torch.arange(num_patches).repeat_interleave(k).expand(2, -1).clone()
    q[1, 3 * k:] = -1  # row 1 has 3 patches
    return q, byte_ids


def slot_groups():
    slot_mask = torch.tensor([[True, True, False], [True, False, False], [False, False, False]])
    kv = torch.where(slot_mask, 0, -1)
    q = torch.zeros(3, 1, dtype=torch.long).expand(-1, 7)
    return q, kv


def mask_cases():
    """(name, AttentionMask, q_len, kv_len, batch, reference)"""
    cases = []
    for L in (1, 5, 13):
        cases.append((f"causal{L}", AttentionMask(causal=True), L, L, 1, reference_mask(L, L, causal=True)))
    for w in (1, 3, 20):
        cases.append((f"window{w}", AttentionMask(causal=True, window=w), 11, 11, 1,
                      reference_mask(11, 11, causal=True, window=w)))
    g = unit_groups([[3, 4, 2], [5], [1, 1, 6], []], 9)
    cases.append(("unit", AttentionMask(g, g, causal=True), 9, 9, 4,
                  reference_mask(9, 9, 4, g, g, causal=True)))
    cases.append(("unit_window", AttentionMask(g, g, causal=True, window=2), 9, 9, 4,
                  reference_mask(9, 9, 4, g, g, causal=True, window=2)))
    cases.append(("unit_noncausal", AttentionMask(g, g), 9, 9, 4, reference_mask(9, 9, 4, g, g)))
    qg, kg = patch_cross_groups()
    cases.append(("patch_cross", AttentionMask(qg, kg), qg.shape[1], kg.shape[1], 2,
                  reference_mask(qg.shape[1], kg.shape[1], 2, qg, kg)))
    qg, kg = slot_groups()
    cases.append(("slots", AttentionMask(qg, kg), 7, 3, 3, reference_mask(7, 3, 3, qg, kg)))
    for lq, lk in ((1, 6), (3, 8), (4, 4)):
        cases.append((f"kv_cache{lq}_{lk}", AttentionMask(causal=True), lq, lk, 1,
                      reference_mask(lq, lk, causal=True)))
    cases.append(("kv_cache_window", AttentionMask(causal=True, window=3), 2, 7, 1,
                  reference_mask(2, 7, causal=True, window=3)))
    gk = unit_groups([[2, 3, 3]], 8)
    gq = gk[:, -3:]
    cases.append(("kv_cache_unit", AttentionMask(gq, gk, causal=True), 3, 8, 1,
                  reference_mask(3, 8, 1, gq, gk, causal=True)))
    return cases


CASES = mask_cases()


@pytest.mark.parametrize("case", CASES, ids=[c[0] for c in CASES])
def test_dense_matches_reference(case):
    _, mask, q_len, kv_len, batch, ref = case
    dense = mask.dense(q_len, kv_len)
    assert dense.dtype == torch.bool
    assert dense.shape == (batch, q_len, kv_len)
    assert torch.equal(dense, ref)


def test_dense_hand_checked():
    # keys 0..5, queries are the last 2 positions (4, 5), window 2
    dense = AttentionMask(causal=True, window=2).dense(2, 6)[0]
    assert dense.tolist() == [[False, False, False, True, True, False],
                              [False, False, False, False, True, True]]
    g = torch.tensor([[0, 0, 1, -1]])
    assert AttentionMask(g, g, causal=True).dense(4, 4)[0].tolist() == [
        [True, False, False, False],
        [True, True, False, False],
        [False, False, True, False],
        [False, False, False, False],
    ]


def test_no_mask_is_all_true():
    dense = AttentionMask().dense(3, 4)
    assert dense.shape == (1, 3, 4) and dense.all()


def test_mask_validation():
    g = torch.zeros(1, 3, dtype=torch.long)
    with pytest.raises(ValueError):
        AttentionMask(q_groups=g)
    with pytest.raises(ValueError):
        AttentionMask(kv_groups=g)
    with pytest.raises(ValueError):
        AttentionMask(window=4)  # window without causal
    with pytest.raises(ValueError):
        AttentionMask(causal=True, window=0)


def test_is_plain_causal():
    g = torch.zeros(1, 3, dtype=torch.long)
    assert AttentionMask(causal=True).is_plain_causal
    assert not AttentionMask(causal=True, window=2).is_plain_causal
    assert not AttentionMask(g, g, causal=True).is_plain_causal
    assert not AttentionMask().is_plain_causal


def qkv(batch, q_len, kv_len, heads=2, dim=8, seed=0):
    gen = torch.Generator().manual_seed(seed)
    q = torch.randn(batch, heads, q_len, dim, generator=gen)
    k = torch.randn(batch, heads, kv_len, dim, generator=gen)
    v = torch.randn(batch, heads, kv_len, dim, generator=gen)
    return q, k, v


@pytest.mark.parametrize("case", CASES, ids=[c[0] for c in CASES])
def test_sdpa_matches_naive(case):
    _, mask, q_len, kv_len, batch, ref = case
    batch = max(batch, 2) if mask.q_groups is None else batch  # broadcast a (1, Lq, Lk) mask too
    q, k, v = qkv(batch, q_len, kv_len)
    out = attend(q, k, v, mask, backend="sdpa")
    assert out.shape == q.shape
    expected = naive_attention(q, k, v, ref)
    torch.testing.assert_close(out, expected, atol=1e-5, rtol=1e-5)
    empty = ~ref.any(-1)  # (B or 1, Lq)
    if empty.any():
        rows = empty[:, None, :, None].expand_as(out)
        assert (out[rows] == 0).all()
    assert torch.isfinite(out).all()


def test_sdpa_empty_rows_are_zero():
    g = torch.tensor([[0, 0, -1, -1]])
    q, k, v = qkv(1, 4, 4)
    out = attend(q, k, v, AttentionMask(g, g), backend="sdpa")
    assert (out[:, :, 2:] == 0).all()
    assert (out[:, :, :2] != 0).any()


def test_sdpa_no_mask_and_plain_causal():
    q, k, v = qkv(2, 6, 6)
    full = torch.ones(1, 6, 6, dtype=torch.bool)
    torch.testing.assert_close(attend(q, k, v, None, "sdpa"), naive_attention(q, k, v, full), atol=1e-5, rtol=1e-5)
    torch.testing.assert_close(attend(q, k, v, AttentionMask(), "sdpa"), naive_attention(q, k, v, full),
                               atol=1e-5, rtol=1e-5)
    causal = torch.ones(6, 6, dtype=torch.bool).tril()[None]
    torch.testing.assert_close(attend(q, k, v, AttentionMask(causal=True), "sdpa"),
                               naive_attention(q, k, v, causal), atol=1e-5, rtol=1e-5)


def test_kv_cache_alignment_matches_last_rows_of_full():
    """A query block at the end of the keys gives the same output as those rows of the full pass."""
    q, k, v = qkv(2, 10, 10)
    for mask in (AttentionMask(causal=True), AttentionMask(causal=True, window=3)):
        full = attend(q, k, v, mask, "sdpa")
        for lq in (1, 4):
            part = attend(q[:, :, -lq:], k, v, mask, "sdpa")
            torch.testing.assert_close(part, full[:, :, -lq:], atol=1e-6, rtol=1e-5)


def test_unknown_backend_raises():
    q, k, v = qkv(1, 3, 3)
    with pytest.raises(ValueError, match="unknown attention backend"):
        attend(q, k, v, None, backend="nope")
    with pytest.raises(ValueError):
        resolve_backend("cuda", torch.device("cpu"))


def test_xformers_on_cpu_raises():
    q, k, v = qkv(1, 3, 3)
    with pytest.raises(ValueError, match="CUDA"):
        attend(q, k, v, AttentionMask(causal=True), backend="xformers")


def test_auto_resolves_to_sdpa_on_cpu():
    assert resolve_backend("auto", torch.device("cpu")) == "sdpa"
    assert resolve_backend("sdpa", torch.device("cpu")) == "sdpa"
    assert resolve_backend("flex", torch.device("cpu")) == "flex"
    q, k, v = qkv(1, 5, 5)
    mask = AttentionMask(causal=True, window=2)
    assert torch.equal(attend(q, k, v, mask), attend(q, k, v, mask, "sdpa"))


def test_flex_mask_logic_eager(monkeypatch):
    """flex's block mask from the shared predicate, run by eager flex_attention (fast on CPU)."""
    import torch.nn.attention.flex_attention as fa
    from torch.nn.attention.flex_attention import flex_attention

    monkeypatch.setattr(attention, "_compiled_flex", lambda: flex_attention)
    monkeypatch.setattr(fa, "_FLEX_ATTENTION_DISABLE_COMPILE_DEBUG", True)  # plain eager, no dynamo
    for name, mask, q_len, kv_len, batch, ref in CASES:
        q, k, v = qkv(max(batch, 2) if mask.q_groups is None else batch, q_len, kv_len)
        sdpa = attend(q, k, v, mask, "sdpa")
        flex = attend(q, k, v, mask, "flex")
        torch.testing.assert_close(flex, sdpa, atol=1e-5, rtol=1e-5, msg=name)
        empty = ~ref.any(-1)
        assert (flex[empty[:, None, :, None].expand_as(flex)] == 0).all(), name
    q, k, v = qkv(2, 6, 6)
    torch.testing.assert_close(attend(q, k, v, None, "flex"), attend(q, k, v, None, "sdpa"), atol=1e-5, rtol=1e-5)
    torch.testing.assert_close(attend(q, k, v, AttentionMask(), "flex"), attend(q, k, v, None, "sdpa"),
                               atol=1e-5, rtol=1e-5)


def test_flex_compiled_matches_sdpa():
    """The real (torch.compile'd) flex path on one L=128 shape; ~30 s cold on 2 CPU cores, ~5 s warm."""
    L = 128
    q, k, v = qkv(2, L, L, heads=2, dim=16)
    g = unit_groups([[40, 50, 20], [100]], L)  # padding at the end of both rows: empty query rows
    qg = torch.arange(L).div(8, rounding_mode="floor").expand(2, -1).clone()  # 16 "patches" of 8 queries
    qg[1, 100:] = -1
    for mask in (AttentionMask(g, g, causal=True), AttentionMask(qg, g)):
        sdpa = attend(q, k, v, mask, "sdpa")
        flex = attend(q, k, v, mask, "flex")
        torch.testing.assert_close(flex, sdpa, atol=1e-5, rtol=1e-4)
    assert (flex[1, :, 100:] == 0).all()


@pytest.mark.slow
def test_flex_compiled_more_masks():
    L = 128
    q, k, v = qkv(1, L, L, heads=2, dim=16, seed=1)
    for mask in (AttentionMask(causal=True), AttentionMask(causal=True, window=17)):
        torch.testing.assert_close(attend(q, k, v, mask, "flex"), attend(q, k, v, mask, "sdpa"), atol=1e-5, rtol=1e-4)


@pytest.mark.skipif(not (torch.cuda.is_available() and attention._xformers_available()),
                    reason="xformers needs CUDA and the optional extra")
@pytest.mark.parametrize("case", CASES, ids=[c[0] for c in CASES])
def test_xformers_matches_sdpa(case):
    _, mask, q_len, kv_len, batch, _ = case
    dev = torch.device("cuda")
    mask = AttentionMask(None if mask.q_groups is None else mask.q_groups.to(dev),
                         None if mask.kv_groups is None else mask.kv_groups.to(dev), mask.causal, mask.window)
    q, k, v = (t.to(dev) for t in qkv(max(batch, 2) if mask.q_groups is None else batch, q_len, kv_len))
    torch.testing.assert_close(attend(q, k, v, mask, "xformers"), attend(q, k, v, mask, "sdpa"),
                               atol=2e-3, rtol=2e-3)
