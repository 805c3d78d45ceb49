"""What the local byte encoder and decoder share: their stack's settings and learned byte positions."""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import nn


@dataclass
class LocalStackConfig:
    """The fields the local byte encoder and decoder share; each may give them its own defaults."""

    dim: int = 128
    n_layers: int = 2
    n_heads: int = 4
    window: int | None = None  # causal self-attention sees at most the last `window` bytes (itself included)
    max_positions: int | None = None  # learned absolute byte positions for this many bytes (None: RoPE only)
    init_std: float | None = 0.02  # init_weights (None: torch's own initialisation)
    backend: str = "auto"


class LearnedPositions(nn.Embedding):
    """Learned absolute position embeddings for ``max_positions`` positions; past the table the last one
    repeats (a generated unit may run longer than the training units)."""

    def __init__(self, max_positions: int, dim: int):
        super().__init__(max_positions, dim)

    def forward(self, positions: torch.Tensor) -> torch.Tensor:
        return super().forward(positions.clamp(max=self.num_embeddings - 1))
