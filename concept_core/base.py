"""Base-LCM: a causal transformer regresses the next concept with MSE (Meta's Base-LCM).

Contextualizer (PreNet Linear d -> model_dim + sinusoidal positions -> causal transformer, KV-cached
at inference; concept_core.context) -> PostNet (Linear model_dim -> d).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

import torch
from torch import nn

from concept_core.context import ContextConfig, ContextState, ContextualizedModel
from concept_core.interface import Sampling
from concept_core.next_concept import next_concept_pairs


@dataclass
class BaseLCMConfig(ContextConfig):
    n_layers: int = 2
    variant: Literal["base"] = "base"  # names the config in a YAML file or an export


class BaseLCM(ContextualizedModel):
    """Deterministic next-concept regression: the prediction at position i is compared with concept i+1."""

    def __init__(self, config: BaseLCMConfig, concept_dim: int):
        super().__init__(config, concept_dim, config.n_layers)
        self.postnet = nn.Linear(config.model_dim, concept_dim)

    def forward(self, concepts: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
        """(B, N, d) -> (B, N, d): at each position, the predicted next concept."""
        return self.postnet(self.contextualizer(concepts, mask))

    def loss(self, concepts: torch.Tensor, mask: torch.Tensor | None = None,
             targets: torch.Tensor | None = None) -> torch.Tensor:
        pairs = next_concept_pairs(concepts, mask, targets, self.concept_dim)
        pred = self(pairs.concepts, pairs.mask)[:, :-1]  # (B, N-1, d) predictions of concepts 1..N-1
        return pairs.mean((pred - pairs.targets).pow(2).mean(-1))

    @torch.no_grad()
    def sample(self, state: ContextState, sampling: Sampling, generator: torch.Generator | None = None) -> torch.Tensor:
        return self.postnet(state.hidden[:, -1])  # (B, d); regression has nothing to sample
