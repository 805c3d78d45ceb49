"""Hash n-gram embeddings (BLT): each byte also embeds the n-grams that end at it, n = 3..8.

The hash is a polynomial over byte ids modulo the Mersenne prime 2**31 - 1, computed in int64
with no overflow, so it is the same in every process and on every device (unlike ``hash()``).
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from blt.ids import PAD

_PRIME = 2**31 - 1
_BASE = 1_000_003
_SALT = 0x9E3779B1  # distinct tables per n even for equal windows


def hash_ngrams(ids: torch.Tensor, n: int, table_size: int) -> torch.Tensor:
    """Indices (B, L) into a table of ``table_size`` for the n-gram ending at each position.

    Positions with fewer than n bytes before them see PAD on their left, as in BLT.
    """
    if n < 1:
        raise ValueError(f"n-gram size must be >= 1, got {n}")
    if ids.shape[-1] == 0:  # unfold needs at least n columns
        return torch.zeros_like(ids)
    windows = F.pad(ids, (n - 1, 0), value=PAD).unfold(-1, n, 1)  # (B, L, n)
    powers = torch.tensor([pow(_BASE, n - 1 - j, _PRIME) for j in range(n)], device=ids.device)
    h = (windows * powers).sum(-1)  # each term < 2**40, the sum < 2**43: exact in int64
    h = (h + n * _SALT) % _PRIME
    return h % table_size


class HashNgramEmbedding(nn.Module):
    """Sum of one embedding table per n-gram size. ids (B, L) -> (B, L, dim)."""

    def __init__(self, dim: int, ngram_sizes: tuple[int, ...] = (3, 4, 5, 6, 7, 8), table_size: int = 2**14):
        super().__init__()
        self.ngram_sizes, self.table_size = tuple(ngram_sizes), table_size
        self.tables = nn.ModuleList(nn.Embedding(table_size, dim) for _ in self.ngram_sizes)

    def forward(self, ids: torch.Tensor) -> torch.Tensor:
        out = 0
        for n, table in zip(self.ngram_sizes, self.tables, strict=True):
            out = out + table(hash_ngrams(ids, n, self.table_size))
        return out
