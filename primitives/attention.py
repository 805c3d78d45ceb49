"""Attention masks and the backends that apply them.

One mask description, ``AttentionMask``, covers every pattern byte-lcm needs:

* causal (``causal=True``), with an optional sliding ``window``;
* causal within a unit for packed sequences (``q_groups == kv_groups`` = unit ids);
* patch cross-attention (query group = patch id, key group = the byte's patch id);
* decoder bytes that see only their own latent slots (group = unit id on both sides).

A query may see a key when their groups are equal (when groups are given), neither group
is negative (negative marks padding), and the causal/window constraints hold. Queries are
aligned to the *end* of the keys, so a KV-cached step (Lq < Lk) stays causal.

A mask no pattern describes (the concept cores' interleaved or context-dropping masks) can be given
as a dense boolean tensor (B, Lq, Lk), True = may attend.

Backends: ``sdpa`` (dense boolean mask; CPU and GPU), ``flex`` (flex_attention with a block
mask built from the same predicate), ``xformers`` (CUDA only, optional extra ``cuda``).
A query with no visible key outputs zeros on every backend.
"""

from __future__ import annotations

import functools
from dataclasses import dataclass

import torch
import torch.nn.functional as F

BACKENDS = ("auto", "sdpa", "flex", "xformers")


@dataclass(frozen=True)
class AttentionMask:
    q_groups: torch.Tensor | None = None  # (B, Lq) int64, < 0 = padding
    kv_groups: torch.Tensor | None = None  # (B, Lk) int64, < 0 = padding
    causal: bool = False
    window: int | None = None  # a query sees keys at most window - 1 positions back

    def __post_init__(self):
        if (self.q_groups is None) != (self.kv_groups is None):
            raise ValueError("q_groups and kv_groups must be given together")
        if self.window is not None and (not self.causal or self.window < 1):
            raise ValueError("a sliding window needs causal=True and window >= 1")

    @property
    def is_plain_causal(self) -> bool:
        return self.causal and self.q_groups is None and self.window is None

    def allowed(self, b, q_idx, kv_idx, q_len: int, kv_len: int):
        """The mask predicate, written once; broadcasts over tensors and runs inside flex_attention."""
        ok = None
        if self.q_groups is not None:
            qg, kg = self.q_groups[b, q_idx], self.kv_groups[b, kv_idx]
            ok = (qg == kg) & (qg >= 0) & (kg >= 0)
        if self.causal:
            q_pos = q_idx + (kv_len - q_len)
            c = kv_idx <= q_pos
            if self.window is not None:
                c = c & (q_pos - kv_idx < self.window)
            ok = c if ok is None else ok & c
        return ok

    def dense(self, q_len: int, kv_len: int, device=None) -> torch.Tensor:
        """The mask as a boolean tensor (B or 1, Lq, Lk): the reference every backend must match."""
        device = device or (self.q_groups.device if self.q_groups is not None else None)
        batch = self.q_groups.shape[0] if self.q_groups is not None else 1
        b = torch.arange(batch, device=device)[:, None, None]
        q = torch.arange(q_len, device=device)[None, :, None]
        k = torch.arange(kv_len, device=device)[None, None, :]
        ok = self.allowed(b, q, k, q_len, kv_len)
        if ok is None:
            return torch.ones(1, q_len, kv_len, dtype=torch.bool, device=device)
        return ok.expand(batch, q_len, kv_len)


def resolve_backend(backend: str, device: torch.device) -> str:
    if backend not in BACKENDS:
        raise ValueError(f"unknown attention backend {backend!r}; choose one of {BACKENDS}")
    if backend == "auto":
        return "xformers" if device.type == "cuda" and _xformers_available() else "sdpa"
    if backend == "xformers" and device.type != "cuda":
        raise ValueError("the xformers backend has CUDA kernels only; use 'sdpa' or 'flex' on CPU")
    return backend


def attend(
    q: torch.Tensor,
    k: torch.Tensor,
    v: torch.Tensor,
    mask: AttentionMask | torch.Tensor | None = None,
    backend: str = "auto",
) -> torch.Tensor:
    """Scaled dot-product attention. q (B, H, Lq, Dh), k/v (B, H, Lk, Dh) -> (B, H, Lq, Dh)."""
    backend = resolve_backend(backend, q.device)
    if backend == "sdpa":
        return _sdpa(q, k, v, mask)
    if backend == "flex":
        return _flex(q, k, v, mask)
    return _xformers(q, k, v, mask)


def _dense(mask: AttentionMask | torch.Tensor, q_len: int, kv_len: int, device) -> torch.Tensor:
    """Either kind of mask as a boolean tensor (B or 1, Lq, Lk)."""
    return mask if torch.is_tensor(mask) else mask.dense(q_len, kv_len, device)


def _is_plain_causal(mask: AttentionMask | torch.Tensor) -> bool:
    return isinstance(mask, AttentionMask) and mask.is_plain_causal


def _sdpa(q, k, v, mask):
    q_len, kv_len = q.shape[-2], k.shape[-2]
    if mask is None:
        return F.scaled_dot_product_attention(q, k, v)
    if _is_plain_causal(mask) and q_len == kv_len:
        return F.scaled_dot_product_attention(q, k, v, is_causal=True)
    dense = _dense(mask, q_len, kv_len, q.device)  # (B, Lq, Lk)
    empty = ~dense.any(-1, keepdim=True)  # rows with nothing to see would give NaN
    out = F.scaled_dot_product_attention(q, k, v, attn_mask=(dense | empty)[:, None])
    return out.masked_fill(empty[:, None], 0.0)


def _flex(q, k, v, mask):
    from torch.nn.attention.flex_attention import create_block_mask

    if mask is None or (isinstance(mask, AttentionMask) and mask.q_groups is None and not mask.causal):
        return _compiled_flex()(q, k, v)  # no constraint: mask_mod would return None
    q_len, kv_len = q.shape[-2], k.shape[-2]
    if torch.is_tensor(mask):
        batch = mask.shape[0]

        def mask_mod(b, h, q_idx, kv_idx):
            return mask[b, q_idx, kv_idx]
    else:
        batch = mask.q_groups.shape[0] if mask.q_groups is not None else None

        def mask_mod(b, h, q_idx, kv_idx):
            return mask.allowed(b, q_idx, kv_idx, q_len, kv_len)

    block_mask = create_block_mask(mask_mod, batch, None, q_len, kv_len, device=q.device)
    return _compiled_flex()(q, k, v, block_mask=block_mask)


@functools.cache
def _compiled_flex():
    """flex_attention is only fused (and fast) when compiled; eager runs materialise the scores."""
    from torch.nn.attention.flex_attention import flex_attention

    return torch.compile(flex_attention, dynamic=False)


@functools.cache
def _xformers_available() -> bool:
    try:
        import xformers.ops  # noqa: F401
    except ImportError:
        return False
    return True


def _xformers(q, k, v, mask):
    if not _xformers_available():
        raise ImportError("the xformers backend needs the optional extra: pip install 'byte-lcm[cuda]'")
    import xformers.ops as xops

    q, k, v = (t.transpose(1, 2) for t in (q, k, v))  # xformers wants (B, L, H, Dh)
    q_len, kv_len = q.shape[1], k.shape[1]
    if mask is None:
        return xops.memory_efficient_attention(q, k, v).transpose(1, 2)
    if _is_plain_causal(mask) and q_len == kv_len:
        return xops.memory_efficient_attention(q, k, v, attn_bias=xops.LowerTriangularMask()).transpose(1, 2)
    dense = _dense(mask, q_len, kv_len, q.device)  # (B, Lq, Lk)
    empty = ~dense.any(-1, keepdim=True)
    # xformers needs the bias's last dimension stored with a stride that is a multiple of 8.
    stride = -(-kv_len // 8) * 8
    bias = q.new_zeros(dense.shape[0], q.shape[2], q_len, stride)[..., :kv_len]
    bias.masked_fill_(~(dense | empty)[:, None], float("-inf"))
    out = xops.memory_efficient_attention(q, k, v, attn_bias=bias.expand(q.shape[0], -1, -1, -1))
    return out.masked_fill(empty[..., None], 0.0).transpose(1, 2)  # empty (B, Lq, 1, 1) over (B, Lq, H, Dh)
