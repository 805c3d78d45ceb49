"""A synthetic concept process with a known next-concept rule, for the concept-core tests.

c_{i+1} = normalise(R c_i) + noise, with R a fixed random rotation; every document ends with a
fixed end-of-document concept. A model that learns R beats copying the last concept, and its
predictions are closer to the true next concept than to the other concepts of the batch.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F


class SyntheticConcepts:
    def __init__(self, dim: int = 16, noise: float = 0.05, seed: int = 0):
        g = torch.Generator().manual_seed(seed)
        self.dim, self.noise = dim, noise
        self.rotation = torch.linalg.qr(torch.randn(dim, dim, generator=g))[0]
        self.eod = F.normalize(torch.randn(dim, generator=g), dim=0)

    def next(self, c: torch.Tensor) -> torch.Tensor:
        """The noiseless rule: (..., d) -> (..., d)."""
        return F.normalize(c @ self.rotation.T, dim=-1)

    def batch(self, batch: int, length: int, generator: torch.Generator, with_eod: bool = False,
              min_length: int | None = None) -> tuple[torch.Tensor, torch.Tensor]:
        """(B, N, d) concepts and (B, N) mask; rows of random length in [min_length, length] when given,
        each ending with the EOD concept when ``with_eod``."""
        c = F.normalize(torch.randn(batch, self.dim, generator=generator), dim=-1)
        seq = [c]
        for _ in range(length - 1):
            c = F.normalize(self.next(c) + self.noise * torch.randn(batch, self.dim, generator=generator), dim=-1)
            seq.append(c)
        concepts = torch.stack(seq, dim=1)
        lengths = torch.full((batch,), length)
        if min_length is not None:
            lengths = torch.randint(min_length, length + 1, (batch,), generator=generator)
        mask = torch.arange(length) < lengths[:, None]
        if with_eod:
            concepts[torch.arange(batch), lengths - 1] = self.eod
        return concepts.masked_fill(~mask[..., None], 0.0), mask
