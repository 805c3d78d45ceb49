"""The meaning encoder: a unit's bytes -> one normalised meaning vector, BLT-shaped and tokenizer-free.

    ids (U, L) -> byte embeddings + hash n-gram embeddings (U, L, E)
    -> local byte transformer (bidirectional within the unit) (U, L, E)
    -> patches: the shipped entropy model cuts where the next byte is hard to guess (BLT's entropy patching;
       ``patching: static`` cuts every ``patch_size`` bytes), byte states mean-pooled per patch (U, P, E)
    -> patch transformer (U, P, D) -> mean over the patches -> linear -> L2-normalised meaning (U, meaning_dim)

Why normalised: the objectives that shape the space (translation and next-meaning InfoNCE) compare directions,
and a fixed norm is what keeps a predictability term from collapsing every meaning onto one point.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

import torch
import torch.nn.functional as F
from torch import nn

from blt.entropy import EntropyModel
from blt.hashing import HashNgramEmbedding
from blt.ids import VOCAB_SIZE
from blt.patching import Patcher
from bridges.length_chunks import by_length
from primitives.attention import AttentionMask
from primitives.transformer import Block, init_weights


@dataclass(frozen=True)
class MeaningEncoderConfig:
    """Args:
        byte_dim: E, the width of the byte embeddings and of the local byte transformer.
        ngram_sizes: the n of BLT's hash n-gram embeddings added to each byte's ([]: none).
        hash_table_size: rows of each n-gram table.
        byte_layers: blocks of the local byte transformer (0: bytes are pooled as embedded).
        patching: ``entropy`` (the shipped entropy model's unit threshold for text) or ``static``.
        patch_size: bytes per patch for ``static`` patching.
        max_patch_length: longer entropy patches are split (BLT's cap).
        dim: D, the width of the patch transformer.
        layers: blocks of the patch transformer.
        heads: attention heads in every block.
        max_bytes: the longest unit it encodes.
    """

    byte_dim: int = 128
    ngram_sizes: tuple[int, ...] = (3, 4, 5)
    hash_table_size: int = 2**14
    byte_layers: int = 0
    patching: Literal["entropy", "static"] = "static"  # the shipped codec's: at equal minutes it learned faster
    patch_size: int = 4
    max_patch_length: int = 16
    dim: int = 256
    layers: int = 2
    heads: int = 4
    max_bytes: int = 128

    def __post_init__(self):
        object.__setattr__(self, "ngram_sizes", tuple(self.ngram_sizes))  # a YAML or JSON list
        if self.patching not in ("entropy", "static"):
            raise ValueError(f"patching must be 'entropy' or 'static', got {self.patching!r}")
        if min(self.byte_dim, self.dim, self.layers, self.heads, self.max_bytes, self.patch_size) < 1:
            raise ValueError(f"widths, layers, heads, max_bytes and patch_size must be >= 1: {self}")


CHUNK_TOKENS = 8192  # padded bytes per length chunk (bridges.length_chunks): 64 units of 128 bytes


def group_mask(valid: torch.Tensor) -> AttentionMask:
    """(B, L) bool -> bidirectional attention among each row's valid positions."""
    groups = torch.where(valid, 0, -1)
    return AttentionMask(q_groups=groups, kv_groups=groups)


class MeaningEncoder(nn.Module):
    def __init__(self, config: MeaningEncoderConfig, meaning_dim: int, entropy_model: EntropyModel | None = None,
                 threshold: float | None = None):
        super().__init__()
        self.config = c = config
        self.meaning_dim = meaning_dim
        self.embed = nn.Embedding(VOCAB_SIZE, c.byte_dim)
        self.ngrams = HashNgramEmbedding(c.byte_dim, c.ngram_sizes, c.hash_table_size) if c.ngram_sizes else None
        self.byte_blocks = nn.ModuleList(Block(c.byte_dim, c.heads) for _ in range(c.byte_layers))
        self.to_patch = nn.Linear(c.byte_dim, c.dim)
        self.patch_blocks = nn.ModuleList(Block(c.dim, c.heads) for _ in range(c.layers))
        self.norm = nn.RMSNorm(c.dim)
        self.out = nn.Linear(c.dim, meaning_dim)
        init_weights(self)
        if c.patching == "entropy":
            if entropy_model is None or threshold is None:
                raise ValueError("entropy patching needs the entropy model that cuts the patches and its threshold")
            # A plain attribute in a tuple: the frozen patcher is the shipped model, pinned on its own, not a
            # parameter of this encoder (and never in its state_dict).
            self._patch_model = (entropy_model.eval().requires_grad_(False),)
        self.patcher = Patcher(mode=c.patching, threshold=threshold, patch_size=c.patch_size,
                               max_patch_length=c.max_patch_length if c.patching == "entropy" else None)

    def patches(self, ids: torch.Tensor, lengths: torch.Tensor):
        entropies = self._patch_model[0].entropies(ids, lengths) if self.config.patching == "entropy" else None
        return self.patcher(ids, lengths, entropies)

    def forward(self, ids: torch.Tensor, lengths: torch.Tensor) -> torch.Tensor:
        """Unit rows (U, L) of byte ids, PAD past ``lengths`` (U,) -> meanings (U, meaning_dim), unit norm."""
        if ids.shape[1] > self.config.max_bytes:
            raise ValueError(f"a unit of {ids.shape[1]} ids exceeds the meaning encoder's {self.config.max_bytes}")
        return by_length(self.encode_rows, ids, lengths, CHUNK_TOKENS)  # each chunk padded to its own longest unit

    def encode_rows(self, ids: torch.Tensor, lengths: torch.Tensor) -> torch.Tensor:
        inside = torch.arange(ids.shape[1], device=ids.device) < lengths[:, None]  # (U, L)
        positions = torch.arange(ids.shape[1], device=ids.device).expand_as(ids)
        x = self.embed(ids)
        if self.ngrams is not None:
            x = x + self.ngrams(ids)
        mask = group_mask(inside)
        for block in self.byte_blocks:
            x = block(x, mask, positions)
        patches = self.patches(ids, lengths)  # patches.ids (U, L): -1 at padding
        width = patches.lengths.shape[1]
        sums = x.new_zeros(len(ids), width + 1, x.shape[-1])  # slot 0 collects padding
        sums.scatter_add_(1, (patches.ids + 1)[..., None].expand_as(x), x)
        real = patches.mask()  # (U, P)
        h = self.to_patch(sums[:, 1:] / patches.lengths.clamp(min=1)[..., None])  # (U, P, D) patch means
        mask = group_mask(real)
        patch_positions = torch.arange(width, device=ids.device).expand(len(ids), width)
        for block in self.patch_blocks:
            h = block(h, mask, patch_positions)
        h = self.norm(h)
        pooled = (h * real[..., None]).sum(1) / real.sum(1, keepdim=True).clamp(min=1)  # (U, D)
        return F.normalize(self.out(pooled), dim=-1)
