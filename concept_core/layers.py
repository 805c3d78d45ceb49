"""Transformer pieces for the concept models: a causal transformer with a KV cache, sinusoidal
position and timestep embeddings, and the AdaLN-modulated denoiser block of the Two-Tower LCM.

Attention, SwiGLU, the pre-norm block and the KV cache come from ``primitives.transformer``; the cores use them
without RoPE (their positions are added to the inputs) and with dense boolean masks on the sdpa backend, which is
why their stack is their own (the byte models' stacks use RoPE and ``AttentionMask`` groups).
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from einops import rearrange
from torch import nn

from primitives.transformer import Attention, Block, KVCache, SwiGLU

BACKEND = "sdpa"  # dense boolean masks; the same kernel on CPU and GPU


def sinusoidal(values: torch.Tensor, dim: int, max_period: float = 10_000.0) -> torch.Tensor:
    """Sinusoidal features of positions or timesteps: (...,) -> (..., dim)."""
    half = dim // 2
    freqs = torch.exp(-math.log(max_period) * torch.arange(half, device=values.device, dtype=torch.float32) / half)
    angles = values.float()[..., None] * freqs
    emb = torch.cat([angles.cos(), angles.sin()], dim=-1)
    return F.pad(emb, (0, dim % 2))


def causal_mask(key_valid: torch.Tensor, num_queries: int) -> torch.Tensor:
    """(B, T) valid keys -> (B, Lq, T): the last Lq keys are the queries; each sees valid keys up to itself."""
    total = key_valid.shape[1]
    q_pos = torch.arange(total - num_queries, total, device=key_valid.device)
    allowed = torch.arange(total, device=key_valid.device)[None, :] <= q_pos[:, None]  # (Lq, T)
    return allowed[None] & key_valid[:, None, :]


class CausalTransformer(nn.Module):
    """A stack of pre-norm blocks over (B, N, D); with caches, each call appends to them."""

    def __init__(self, dim: int, n_layers: int, n_heads: int):
        super().__init__()
        self.blocks = nn.ModuleList(Block(dim, n_heads, BACKEND, rope=False) for _ in range(n_layers))
        self.norm = nn.RMSNorm(dim)

    def new_caches(self) -> list[KVCache]:
        return [KVCache() for _ in self.blocks]

    def masked(self, x: torch.Tensor, mask: torch.Tensor | None, caches: list[KVCache] | None = None) -> torch.Tensor:
        """x (B, Lq, D) through every block under a dense mask (B, Lq, T) (None: all see all), then the norm."""
        for i, block in enumerate(self.blocks):
            x = block(x, mask, cache=None if caches is None else caches[i])
        return self.norm(x)

    def forward(self, x: torch.Tensor, key_valid: torch.Tensor, caches: list[KVCache] | None = None):
        """x (B, N, D) new positions; key_valid (B, T) for all positions so far (T = cached + N)."""
        return self.masked(x, causal_mask(key_valid, x.shape[1]), caches)

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
        self.self_attn = Attention(dim, n_heads, BACKEND, rope=False)
        self.cross_attn = Attention(dim, n_heads, BACKEND, context_dim=context_dim)
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
