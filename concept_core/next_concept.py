"""The next-concept pairs every core trains on, and the one way they are averaged.

Position i of a document predicts concept i+1, for the pairs whose both ends are real concepts. A batch
with no pair (every document a single concept) has loss 0, still attached to the graph, so a training
step on it runs (with zero gradients) instead of failing or turning the weights NaN; padding, which may
hold NaN, is zeroed before any model sees it.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

from concept_core.interface import check_concepts


@dataclass
class NextConceptPairs:
    concepts: torch.Tensor  # (B, N, d) the inputs, padding zeroed
    mask: torch.Tensor  # (B, N) True on real concepts
    targets: torch.Tensor  # (B, N-1, d) what position i is scored against: concept i+1 of the targets
    valid: torch.Tensor  # (B, N-1) both ends of the pair are real concepts

    def mean(self, error: torch.Tensor) -> torch.Tensor:
        """(B, N-1) per-pair losses -> their mean over the valid pairs (0 when there are none)."""
        return torch.where(self.valid, error, 0.0).sum() / self.valid.sum().clamp(min=1)


def next_concept_pairs(concepts: torch.Tensor, mask: torch.Tensor | None, targets: torch.Tensor | None,
                       concept_dim: int) -> NextConceptPairs:
    """Validate (B, N, d) concepts and their mask and pair them up; ``targets`` default to the concepts."""
    mask = check_concepts(concepts, mask, concept_dim)
    padding = ~mask[..., None]
    concepts = concepts.masked_fill(padding, 0.0)
    targets = concepts if targets is None else targets.masked_fill(padding, 0.0)
    return NextConceptPairs(concepts, mask, targets[:, 1:], mask[:, :-1] & mask[:, 1:])
