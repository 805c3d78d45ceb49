"""Transformer building blocks shared by every byte model and the concept cores: RMSNorm, SwiGLU,
RoPE, attention.

Self-attention takes positions for RoPE (so packed sequences can restart at 0 per unit), unless
built with ``rope=False`` for models that add absolute positions to their inputs (the concept
cores), and an optional ``KVCache`` for incremental decoding; cross-attention attends to a context
(patch bytes, latent slots, contextualizer states) without positions.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F
from einops import rearrange
from torch import nn

from primitives.attention import AttentionMask, attend


class RotaryEmbedding(nn.Module):
    """RoPE on (B, H, L, Dh) given integer positions (B, L)."""

    def __init__(self, head_dim: int, theta: float = 10_000.0):
        super().__init__()
        if head_dim % 2:
            raise ValueError(f"RoPE needs an even head dimension, got {head_dim}")
        inv_freq = theta ** (-torch.arange(0, head_dim, 2, dtype=torch.float32) / head_dim)
        self.register_buffer("inv_freq", inv_freq, persistent=False)

    def forward(self, x: torch.Tensor, positions: torch.Tensor) -> torch.Tensor:
        angles = positions[:, None, :, None].float() * self.inv_freq  # (B, 1, L, Dh/2)
        cos, sin = angles.cos(), angles.sin()
        x1, x2 = x.float().unflatten(-1, (-1, 2)).unbind(-1)  # interleaved pairs
        rotated = torch.stack((x1 * cos - x2 * sin, x1 * sin + x2 * cos), dim=-1)
        return rotated.flatten(-2).type_as(x)


@dataclass
class KVCache:
    """Keys and values seen so far by one self-attention layer, (B, H, T, Dh) each."""

    k: torch.Tensor | None = None
    v: torch.Tensor | None = None

    @property
    def length(self) -> int:
        return 0 if self.k is None else self.k.shape[-2]

    def extend(self, k: torch.Tensor, v: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        self.k = k if self.k is None else torch.cat([self.k, k], dim=-2)
        self.v = v if self.v is None else torch.cat([self.v, v], dim=-2)
        return self.k, self.v


class Attention(nn.Module):
    def __init__(self, dim: int, n_heads: int, backend: str = "auto", context_dim: int | None = None,
                 rope: bool = True):
        super().__init__()
        if dim % n_heads:
            raise ValueError(f"dim {dim} is not divisible by n_heads {n_heads}")
        self.n_heads, self.backend = n_heads, backend
        self.is_cross = context_dim is not None
        self.wq = nn.Linear(dim, dim, bias=False)
        self.wkv = nn.Linear(context_dim or dim, 2 * dim, bias=False)
        self.wo = nn.Linear(dim, dim, bias=False)
        self.rope = RotaryEmbedding(dim // n_heads) if rope and not self.is_cross else None

    def project_kv(self, source: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Keys and values (B, H, Lk, Dh) of a (B, Lk, context_dim) source, before RoPE."""
        k, v = rearrange(self.wkv(source), "b l (two h d) -> two b h l d", two=2, h=self.n_heads)
        return k, v

    def forward(
        self,
        x: torch.Tensor,  # (B, Lq, dim)
        mask: AttentionMask | torch.Tensor | None,  # an AttentionMask, or a dense (B, Lq, Lk) bool tensor
        positions: torch.Tensor | None = None,  # (B, Lq), self-attention with RoPE only
        context: torch.Tensor | None = None,  # (B, Lk, context_dim), cross-attention only
        cache: KVCache | None = None,
        context_kv: tuple[torch.Tensor, torch.Tensor] | None = None,  # project_kv(context), when many calls share it
    ) -> torch.Tensor:
        q = rearrange(self.wq(x), "b l (h d) -> b h l d", h=self.n_heads)
        k, v = context_kv if context_kv is not None else self.project_kv(x if context is None else context)
        if self.rope is not None:
            q, k = self.rope(q, positions), self.rope(k, positions)
        if cache is not None:
            k, v = cache.extend(k, v)
        out = attend(q, k, v, mask, self.backend)
        return self.wo(rearrange(out, "b h l d -> b l (h d)"))


class SwiGLU(nn.Module):
    def __init__(self, dim: int, hidden_mult: float = 8 / 3, multiple_of: int = 32):
        super().__init__()
        # at least one multiple: a very narrow model (dim < 6) would otherwise get no hidden units
        hidden = multiple_of * max(1, round(dim * hidden_mult / multiple_of))
        self.w_gate_up = nn.Linear(dim, 2 * hidden, bias=False)
        self.w_down = nn.Linear(hidden, dim, bias=False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        gate, up = self.w_gate_up(x).chunk(2, dim=-1)
        return self.w_down(F.silu(gate) * up)


class Block(nn.Module):
    """Pre-norm block: self-attention, optional cross-attention to a context, SwiGLU."""

    def __init__(self, dim: int, n_heads: int, backend: str = "auto", context_dim: int | None = None,
                 rope: bool = True):
        super().__init__()
        self.attn_norm = nn.RMSNorm(dim)
        self.attn = Attention(dim, n_heads, backend, rope=rope)
        self.cross = None
        if context_dim is not None:
            self.cross_norm = nn.RMSNorm(dim)
            self.cross = Attention(dim, n_heads, backend, context_dim=context_dim)
        self.ffn_norm = nn.RMSNorm(dim)
        self.ffn = SwiGLU(dim)

    def forward(self, x, mask, positions=None, context=None, context_mask=None, cache=None):
        x = x + self.attn(self.attn_norm(x), mask, positions, cache=cache)
        if self.cross is not None:
            x = x + self.cross(self.cross_norm(x), context_mask, context=context)
        return x + self.ffn(self.ffn_norm(x))


def init_weights(module: nn.Module, std: float | None = 0.02) -> None:
    """GPT-2 style init: normal(0, std) linears and embeddings; residual outputs scaled by depth.

    ``std`` None keeps torch's own initialisation of a freshly built module (N(0, 1) embeddings,
    kaiming-uniform linears), from which the byte codec learns faster (benchmarks/RESULTS.md)."""
    if std is None:
        return
    blocks = [m for m in module.modules() if isinstance(m, Block)]
    residual_std = std / (2 * max(len(blocks), 1)) ** 0.5
    for m in module.modules():
        if isinstance(m, nn.Linear | nn.Embedding):
            nn.init.normal_(m.weight, std=std)
            if getattr(m, "bias", None) is not None:
                nn.init.zeros_(m.bias)
    for b in blocks:
        for out in (b.attn.wo, b.ffn.w_down, *((b.cross.wo,) if b.cross is not None else ())):
            nn.init.normal_(out.weight, std=residual_std)
