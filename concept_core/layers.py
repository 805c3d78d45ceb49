"""Transformer pieces for the concept models: a causal transformer with a KV cache, sinusoidal
position and timestep embeddings, and the AdaLN-modulated denoiser block of the Two-Tower LCM.

concept_core never imports blt (see DESIGN.md), so it keeps its own small set of blocks; they
sit on torch's RMSNorm and scaled_dot_product_attention.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from einops import rearrange
from torch import nn


def sinusoidal(values: torch.Tensor, dim: int, max_period: float = 10_000.0) -> torch.Tensor:
    """Sinusoidal features of positions or timesteps: (...,) -> (..., dim)."""
    half = dim // 2
    freqs = torch.exp(-math.log(max_period) * torch.arange(half, device=values.device, dtype=torch.float32) / half)
    angles = values.float()[..., None] * freqs
    emb = torch.cat([angles.cos(), angles.sin()], dim=-1)
    return F.pad(emb, (0, dim % 2))


class SwiGLU(nn.Module):
    def __init__(self, dim: int, hidden_mult: float = 8 / 3):
        super().__init__()
        hidden = 32 * max(1, round(dim * hidden_mult / 32))
        self.w_gate_up = nn.Linear(dim, 2 * hidden, bias=False)
        self.w_down = nn.Linear(hidden, dim, bias=False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        gate, up = self.w_gate_up(x).chunk(2, dim=-1)
        return self.w_down(F.silu(gate) * up)


@dataclass
class KVCache:
    """Keys and values (B, H, T, Dh) of every position seen so far by one attention layer."""

    k: torch.Tensor | None = None
    v: torch.Tensor | None = None


class MultiHeadAttention(nn.Module):
    def __init__(self, dim: int, n_heads: int, context_dim: int | None = None):
        super().__init__()
        if dim % n_heads:
            raise ValueError(f"dim {dim} is not divisible by n_heads {n_heads}")
        self.n_heads = n_heads
        self.wq = nn.Linear(dim, dim, bias=False)
        self.wkv = nn.Linear(context_dim or dim, 2 * dim, bias=False)
        self.wo = nn.Linear(dim, dim, bias=False)

    def project_kv(self, source: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Keys and values (B, H, L, Dh) of a (B, L, Dc) source."""
        return tuple(rearrange(self.wkv(source), "b l (two h d) -> two b h l d", two=2, h=self.n_heads))

    def forward(self, x, mask: torch.Tensor | None, context=None, cache: KVCache | None = None, context_kv=None):
        """x (B, Lq, D); mask (B, Lq, Lk) bool, True = may attend; rows with no key give zeros.
        ``context_kv``: the context's ``project_kv``, when many calls read the same context."""
        q = rearrange(self.wq(x), "b l (h d) -> b h l d", h=self.n_heads)
        k, v = context_kv if context_kv is not None else self.project_kv(x if context is None else context)
        if cache is not None:
            cache.k = k = k if cache.k is None else torch.cat([cache.k, k], dim=2)
            cache.v = v = v if cache.v is None else torch.cat([cache.v, v], dim=2)
        if mask is None:
            out = F.scaled_dot_product_attention(q, k, v)
        else:
            empty = ~mask.any(-1, keepdim=True)  # (B, Lq, 1)
            out = F.scaled_dot_product_attention(q, k, v, attn_mask=(mask | empty)[:, None])
            out = out.masked_fill(empty[:, None], 0.0)
        return self.wo(rearrange(out, "b h l d -> b l (h d)"))


class CausalBlock(nn.Module):
    def __init__(self, dim: int, n_heads: int):
        super().__init__()
        self.attn_norm, self.ffn_norm = nn.RMSNorm(dim), nn.RMSNorm(dim)
        self.attn = MultiHeadAttention(dim, n_heads)
        self.ffn = SwiGLU(dim)

    def forward(self, x, mask, cache=None):
        x = x + self.attn(self.attn_norm(x), mask, cache=cache)
        return x + self.ffn(self.ffn_norm(x))


def causal_mask(key_valid: torch.Tensor, num_queries: int) -> torch.Tensor:
    """(B, T) valid keys -> (B, Lq, T): the last Lq keys are the queries; each sees valid keys up to itself."""
    total = key_valid.shape[1]
    q_pos = torch.arange(total - num_queries, total, device=key_valid.device)
    allowed = torch.arange(total, device=key_valid.device)[None, :] <= q_pos[:, None]  # (Lq, T)
    return allowed[None] & key_valid[:, None, :]


class CausalTransformer(nn.Module):
    """A stack of causal blocks over (B, N, D); with caches, each call appends to them."""

    def __init__(self, dim: int, n_layers: int, n_heads: int):
        super().__init__()
        self.blocks = nn.ModuleList(CausalBlock(dim, n_heads) for _ in range(n_layers))
        self.norm = nn.RMSNorm(dim)

    def new_caches(self) -> list[KVCache]:
        return [KVCache() for _ in self.blocks]

    def forward(self, x: torch.Tensor, key_valid: torch.Tensor, caches: list[KVCache] | None = None):
        """x (B, N, D) new positions; key_valid (B, T) for all positions so far (T = cached + N)."""
        mask = causal_mask(key_valid, x.shape[1])
        for i, block in enumerate(self.blocks):
            x = block(x, mask, None if caches is None else caches[i])
        return self.norm(x)

    def extended(self, caches: list[KVCache], key_valid: torch.Tensor, x: torch.Tensor):
        """Run new positions x (B, n, D) after the cached ones, leaving ``caches`` untouched (the layers
        concatenate onto fresh cache objects). -> (new caches, key_valid (B, T+n), hidden (B, n, D))."""
        caches = [KVCache(c.k, c.v) for c in caches]
        key_valid = torch.cat([key_valid, key_valid.new_ones(len(x), x.shape[1])], dim=1)
        return caches, key_valid, self(x, key_valid, caches)


class TimestepEmbedding(nn.Module):
    """Diffusion timestep -> a conditioning vector (sinusoidal features through an MLP)."""

    def __init__(self, dim: int, features: int = 256):
        super().__init__()
        self.features = features
        self.mlp = nn.Sequential(nn.Linear(features, dim), nn.SiLU(), nn.Linear(dim, dim))

    def forward(self, t: torch.Tensor) -> torch.Tensor:
        return self.mlp(sinusoidal(t, self.features))


class AdaLNDenoiserBlock(nn.Module):
    """Self-attention -> cross-attention -> FFN, each pre-normed and modulated by the timestep
    embedding with (shift, scale, gate); the modulation starts at zero so each sublayer starts as
    the identity (DiT's adaLN-Zero, as in the Two-Tower LCM)."""

    def __init__(self, dim: int, n_heads: int, context_dim: int):
        super().__init__()
        self.norms = nn.ModuleList(nn.RMSNorm(dim, elementwise_affine=False) for _ in range(3))
        self.self_attn = MultiHeadAttention(dim, n_heads)
        self.cross_attn = MultiHeadAttention(dim, n_heads, context_dim=context_dim)
        self.ffn = SwiGLU(dim)
        self.modulation = nn.Sequential(nn.SiLU(), nn.Linear(dim, 9 * dim))
        nn.init.zeros_(self.modulation[1].weight)
        nn.init.zeros_(self.modulation[1].bias)

    def forward(self, x, cond, self_mask, context, cross_mask, context_kv=None):
        """x (B, N, D) noisy inputs; cond (B, N, D) timestep embeddings; context (B, M, Dc), or its keys
        and values ``cross_attn.project_kv(context)`` as ``context_kv`` (computed once for all sampling steps)."""
        shift, scale, gate = rearrange(self.modulation(cond), "b n (three k d) -> three k b n d", three=3, k=3)
        h = self.norms[0](x) * (1 + scale[0]) + shift[0]
        x = x + gate[0] * self.self_attn(h, self_mask)
        h = self.norms[1](x) * (1 + scale[1]) + shift[1]
        x = x + gate[1] * self.cross_attn(h, cross_mask, context=context, context_kv=context_kv)
        h = self.norms[2](x) * (1 + scale[2]) + shift[2]
        return x + gate[2] * self.ffn(h)
