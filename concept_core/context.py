"""The contextualizer every core reads its context with, and its KV-cached generation state.

PreNet (Linear d -> model_dim, + sinusoidal positions) -> causal transformer. Base-LCM puts a PostNet
on it, Two-Tower's denoiser cross-attends to it, Quant-LCM's head conditions on it, and One-Tower
runs its noisy queries through the same transformer.

Positions are per row: a row's first valid concept has position 0 whether its padding comes
first (left-aligned generation prompts) or last (training batches).
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import nn

from concept_core.interface import (
    ConceptInputError,
    ConceptModel,
    check_concepts,
    check_extension,
    check_left_aligned,
)
from concept_core.layers import CausalTransformer, sinusoidal
from primitives.transformer import KVCache


@dataclass
class ContextState:
    """What the contextualizer has read so far, to append concepts without re-reading the document.
    ``extend`` returns a new state and leaves the one it was given usable."""

    caches: list[KVCache]  # one per layer, keys/values (B, H, T, Dh)
    key_valid: torch.Tensor  # (B, T) False on each row's (left) padding
    next_position: torch.Tensor  # (B,) the position the next concept of each row will have
    hidden: torch.Tensor  # (B, T, D) contextualizer outputs; row b's newest at [b, -1]


def positions_of(mask: torch.Tensor) -> torch.Tensor:
    """(B, N) valid concepts -> (B, N) positions, 0 at each row's first valid concept (padding: clamped)."""
    return (mask.long().cumsum(1) - 1).clamp(min=0)


class Contextualizer(nn.Module):
    """Concepts (B, N, d) -> causal hidden states (B, N, model_dim): h_i reads concepts 0..i."""

    def __init__(self, concept_dim: int, model_dim: int, n_layers: int, n_heads: int, max_positions: int):
        super().__init__()
        self.model_dim, self.max_positions = model_dim, max_positions
        self.prenet = nn.Linear(concept_dim, model_dim)
        self.transformer = CausalTransformer(model_dim, n_layers, n_heads)

    @property
    def concept_dim(self) -> int:
        return self.prenet.in_features

    def embed(self, concepts: torch.Tensor, positions: torch.Tensor) -> torch.Tensor:
        """(B, N, d) concepts at (B, N) positions -> (B, N, model_dim) transformer inputs."""
        if positions.numel() and int(positions.max()) >= self.max_positions:  # One-Tower on N=1 embeds no pair
            raise ConceptInputError(f"documents are limited to max_positions={self.max_positions} concepts; "
                                    f"got one of {int(positions.max()) + 1}")
        x = self.prenet(concepts)  # (B, N, D)
        return x + sinusoidal(positions, self.model_dim).to(x.dtype)

    def forward(self, concepts: torch.Tensor, mask: torch.Tensor, caches: list[KVCache] | None = None) -> torch.Tensor:
        """Full-sequence pass: (B, N, d), (B, N) -> (B, N, model_dim); fills ``caches`` when given."""
        concepts = concepts.masked_fill(~mask[..., None], 0.0)  # padding may hold NaN: 0 * NaN would leak through
        return self.transformer(self.embed(concepts, positions_of(mask)), mask, caches)

    def start(self, concepts: torch.Tensor, mask: torch.Tensor) -> ContextState:
        """Read left-aligned (B, N, d) concepts into fresh KV caches."""
        mask = check_concepts(concepts, mask, self.concept_dim)
        check_left_aligned(mask)
        caches = self.transformer.new_caches()
        hidden = self(concepts, mask, caches)  # (B, N, D)
        return ContextState(caches, mask, mask.long().sum(1), hidden)

    def extend(self, state: ContextState, concept: torch.Tensor) -> ContextState:
        """Append one concept (B, d) to every row: only the new position goes through the transformer."""
        check_extension(concept, len(state.next_position), self.concept_dim)
        x = self.embed(concept[:, None], state.next_position[:, None])  # (B, 1, D)
        caches, key_valid, h = self.transformer.extended(state.caches, state.key_valid, x)  # h (B, 1, D)
        return ContextState(caches, key_valid, state.next_position + 1, torch.cat([state.hidden, h], dim=1))


@dataclass
class ContextConfig:
    """The part of every core's config its Contextualizer reads: concepts through a causal transformer ``model_dim``
    wide with ``n_heads`` heads, over documents of up to ``max_positions`` concepts. The concepts' dimension is not
    a field: the model is built for the concept space it is given (``build_core(config, concept_dim)``)."""

    model_dim: int = 256  # configs/tiny.yaml's core
    n_heads: int = 4
    max_positions: int = 4096

    def contextualizer(self, concept_dim: int, n_layers: int) -> Contextualizer:
        return Contextualizer(concept_dim, self.model_dim, n_layers, self.n_heads, self.max_positions)


class ContextualizedModel(ConceptModel):
    """A core whose generation state is its contextualizer's: ``start`` and ``extend`` are the contextualizer's."""

    def __init__(self, config: ContextConfig, concept_dim: int, context_layers: int):
        super().__init__()
        self.config = config
        self.contextualizer = config.contextualizer(concept_dim, context_layers)

    @property
    def concept_dim(self) -> int:
        return self.contextualizer.concept_dim

    def start(self, concepts: torch.Tensor, mask: torch.Tensor) -> ContextState:
        return self.contextualizer.start(concepts, mask)

    def extend(self, state: ContextState, concept: torch.Tensor) -> ContextState:
        return self.contextualizer.extend(state, concept)
