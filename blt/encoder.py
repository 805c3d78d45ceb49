"""LocalEncoder: bytes -> one vector per patch.

bytes (B, L) -> byte + hash n-gram embeddings -> local transformer over the bytes of a row
-> k queries per patch, initialised from the max-pooled byte states of that patch
-> cross-attention in which a patch's queries see only that patch's bytes -> (B, P, out_dim).
"""

from __future__ import annotations

from dataclasses import dataclass, field

import torch
import torch.nn.functional as F
from einops import rearrange, repeat
from torch import nn

from blt.hashing import HashNgramEmbedding
from blt.ids import VOCAB_SIZE
from blt.local_stack import LearnedPositions, LocalStackConfig
from primitives.attention import AttentionMask
from primitives.transformer import Attention, Block, SwiGLU, init_weights


@dataclass
class LocalEncoderConfig(LocalStackConfig):
    n_layers: int = 1
    out_dim: int = 256
    queries_per_patch: int = 2
    ngram_sizes: tuple[int, ...] = field(default_factory=lambda: (3, 4, 5, 6, 7, 8))
    hash_table_size: int = 2**14
    causal: bool = False  # bytes see the whole row (a unit) unless causal; a window needs causal


class PatchPooling(nn.Module):
    """Cross-attention from patch queries to the bytes of their own patch, then an FFN."""

    def __init__(self, dim: int, n_heads: int, backend: str):
        super().__init__()
        self.query_norm, self.byte_norm, self.ffn_norm = nn.RMSNorm(dim), nn.RMSNorm(dim), nn.RMSNorm(dim)
        self.cross = Attention(dim, n_heads, backend, context_dim=dim)
        self.ffn = SwiGLU(dim)

    def forward(self, queries, byte_states, mask):
        queries = queries + self.cross(self.query_norm(queries), mask, context=self.byte_norm(byte_states))
        return queries + self.ffn(self.ffn_norm(queries))


class LocalEncoder(nn.Module):
    def __init__(self, config: LocalEncoderConfig):
        super().__init__()
        self.config = c = config
        self.embed = nn.Embedding(VOCAB_SIZE, c.dim)
        self.hash_embed = HashNgramEmbedding(c.dim, c.ngram_sizes, c.hash_table_size) if c.ngram_sizes else None
        self.positions = LearnedPositions(c.max_positions, c.dim) if c.max_positions else None
        self.blocks = nn.ModuleList(Block(c.dim, c.n_heads, c.backend) for _ in range(c.n_layers))
        self.init_queries = nn.Linear(c.dim, c.queries_per_patch * c.dim, bias=False)
        self.pool = PatchPooling(c.dim, c.n_heads, c.backend)
        self.out = nn.Linear(c.queries_per_patch * c.dim, c.out_dim, bias=False)
        init_weights(self, c.init_std)

    def forward(
        self,
        ids: torch.Tensor,  # (B, L) byte ids
        patch_ids: torch.Tensor,  # (B, L) patch index per byte, -1 at padding (Patches.ids)
        num_patches: int | None = None,  # P; default: the largest patch index + 1
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """-> (patch vectors (B, P, out_dim), patch mask (B, P) bool)."""
        c = self.config
        batch, length = ids.shape
        counts = F.pad(patch_ids, (1, 0), value=-1).amax(dim=1) + 1  # (B,) the pad column serves empty rows
        P = int(counts.max()) if num_patches is None else num_patches
        valid = patch_ids >= 0
        x = self.embed(ids)
        if self.hash_embed is not None:
            x = x + self.hash_embed(ids)  # (B, L, D)
        positions = torch.arange(length, device=ids.device).expand(batch, -1)
        if self.positions is not None:
            x = x + self.positions(positions)

        groups = torch.where(valid, 0, -1)
        byte_mask = AttentionMask(groups, groups, causal=c.causal, window=c.window)
        for block in self.blocks:
            x = block(x, byte_mask, positions)

        # Max-pool each patch's bytes into its first query estimate (scatter_reduce over patch ids).
        index = repeat(patch_ids.clamp(min=0), "b l -> b l d", d=c.dim)
        pooled = x.new_full((batch, P, c.dim), float("-inf"))
        pooled = pooled.scatter_reduce(1, index, x.masked_fill(~valid[..., None], float("-inf")),
                                       reduce="amax", include_self=True)
        patch_mask = torch.arange(P, device=ids.device) < counts[:, None]  # (B, P)
        pooled = pooled.masked_fill(~patch_mask[..., None], 0.0)  # (B, P, D)

        k = c.queries_per_patch
        queries = rearrange(self.init_queries(pooled), "b p (k d) -> b (p k) d", k=k)
        query_groups = repeat(torch.arange(P, device=ids.device), "p -> b (p k)", b=batch, k=k)
        query_groups = query_groups.masked_fill(~repeat(patch_mask, "b p -> b (p k)", k=k), -1)
        pooled_mask = AttentionMask(query_groups, patch_ids)
        queries = self.pool(queries, x, pooled_mask)  # (B, P·k, D)
        patches = self.out(rearrange(queries, "b (p k) d -> b p (k d)", k=k))
        return patches.masked_fill(~patch_mask[..., None], 0.0), patch_mask
