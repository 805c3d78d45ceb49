"""Base-LCM: a causal transformer regresses the next concept with MSE (Meta's Base-LCM).

PreNet (Linear d -> model_dim, + sinusoidal positions) -> causal transformer -> PostNet (Linear
model_dim -> d). The contextualizer part (PreNet + transformer, with its KV-cached generation
state) is shared with the Two-Tower LCM, whose denoiser cross-attends to its outputs.

Positions are per row: a row's first valid concept has position 0 whether its padding comes
first (left-aligned generation prompts) or last (training batches).
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import nn

from concept_core.interface import ConceptInputError, ConceptModel, Sampling, check_concepts
from concept_core.layers import CausalTransformer, KVCache, sinusoidal


@dataclass
class ContextState:
    """What the contextualizer has read so far, to append concepts without re-reading the document.
    ``extend`` returns a new state and leaves the one it was given usable."""

    caches: list[KVCache]  # one per layer, keys/values (B, H, T, Dh)
    key_valid: torch.Tensor  # (B, T) False on each row's (left) padding
    next_position: torch.Tensor  # (B,) the position the next concept of each row will have
    hidden: torch.Tensor  # (B, T, D) contextualizer outputs; row b's newest at [b, -1]


class Contextualizer(nn.Module):
    """Concepts (B, N, d) -> causal hidden states (B, N, model_dim): h_i reads concepts 0..i."""

    def __init__(self, dim: int, model_dim: int, n_layers: int, n_heads: int, max_positions: int):
        super().__init__()
        self.model_dim, self.max_positions = model_dim, max_positions
        self.prenet = nn.Linear(dim, model_dim)
        self.transformer = CausalTransformer(model_dim, n_layers, n_heads)

    def embed(self, concepts: torch.Tensor, positions: torch.Tensor) -> torch.Tensor:
        """(B, N, d) concepts at (B, N) positions -> (B, N, model_dim) transformer inputs."""
        if int(positions.max()) >= self.max_positions:
            raise ConceptInputError(f"documents are limited to max_positions={self.max_positions} concepts; "
                                    f"got one of {int(positions.max()) + 1}")
        x = self.prenet(concepts)  # (B, N, D)
        return x + sinusoidal(positions, self.model_dim).to(x.dtype)

    def forward(self, concepts: torch.Tensor, mask: torch.Tensor, caches: list[KVCache] | None = None) -> torch.Tensor:
        """Full-sequence pass: (B, N, d), (B, N) -> (B, N, model_dim); fills ``caches`` when given."""
        concepts = concepts.masked_fill(~mask[..., None], 0.0)  # padding may hold NaN: 0 * NaN would leak through
        positions = (mask.long().cumsum(1) - 1).clamp(min=0)  # (B, N) 0 at each row's first valid concept
        return self.transformer(self.embed(concepts, positions), mask, caches)

    def start(self, concepts: torch.Tensor, mask: torch.Tensor) -> ContextState:
        """Read left-aligned (B, N, d) concepts into fresh KV caches."""
        caches = self.transformer.new_caches()
        hidden = self(concepts, mask, caches)  # (B, N, D)
        return ContextState(caches, mask, mask.long().sum(1), hidden)

    def extend(self, state: ContextState, concept: torch.Tensor) -> ContextState:
        """Append one concept (B, d) to every row: only the new position goes through the transformer."""
        x = self.embed(concept[:, None], state.next_position[:, None])  # (B, 1, D)
        caches, key_valid, h = self.transformer.extended(state.caches, state.key_valid, x)  # h (B, 1, D)
        return ContextState(caches, key_valid, state.next_position + 1, torch.cat([state.hidden, h], dim=1))


@dataclass
class BaseLCMConfig:
    dim: int  # concept dimension
    model_dim: int = 128
    n_layers: int = 2
    n_heads: int = 4
    max_positions: int = 4096  # longest document, in concepts


class BaseLCM(ConceptModel):
    """Deterministic next-concept regression: the prediction at position i is compared with concept i+1."""

    def __init__(self, config: BaseLCMConfig):
        super().__init__()
        self.config, self.dim = config, config.dim
        self.contextualizer = Contextualizer(config.dim, config.model_dim, config.n_layers, config.n_heads,
                                             config.max_positions)
        self.postnet = nn.Linear(config.model_dim, config.dim)

    def forward(self, concepts: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
        """(B, N, d) -> (B, N, d): at each position, the predicted next concept."""
        return self.postnet(self.contextualizer(concepts, mask))

    def loss(self, concepts: torch.Tensor, mask: torch.Tensor | None = None,
             targets: torch.Tensor | None = None) -> torch.Tensor:
        mask = check_concepts(concepts, mask, self.dim)
        concepts = concepts.masked_fill(~mask[..., None], 0.0)  # padded targets may hold NaN
        targets = concepts if targets is None else targets.masked_fill(~mask[..., None], 0.0)
        pred = self(concepts, mask)[:, :-1]  # (B, N-1, d) predictions of concepts 1..N-1
        pairs = mask[:, :-1] & mask[:, 1:]  # (B, N-1) both ends of the pair are real concepts
        err = (pred - targets[:, 1:]).pow(2).mean(-1)  # (B, N-1)
        # A batch of one-concept documents has no pairs: its loss is 0, not NaN.
        return (err * pairs).sum() / pairs.sum().clamp(min=1)

    def start(self, concepts: torch.Tensor, mask: torch.Tensor) -> ContextState:
        return self.contextualizer.start(concepts, mask)

    def extend(self, state: ContextState, concept: torch.Tensor) -> ContextState:
        return self.contextualizer.extend(state, concept)

    @torch.no_grad()
    def sample(self, state: ContextState, sampling: Sampling, generator: torch.Generator | None = None) -> torch.Tensor:
        return self.postnet(state.hidden[:, -1])  # (B, d); regression has nothing to sample
