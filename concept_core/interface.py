"""The interface every LCM variant implements, and the input checks they share.

Training: ``loss(concepts, mask)`` predicts concept i+1 from concepts 0..i for every valid pair.
Inference: ``predict_next(concepts, mask, **sampling)`` gives the concept after each row's last
valid one. Generation goes through ``start`` / ``extend`` / ``sample`` so a model can keep a
cache of the context (Two-Tower keeps the contextualizer's KV cache) instead of re-reading the
whole document for every new concept.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from dataclasses import dataclass
from typing import Any

import torch
from torch import nn


class ConceptInputError(ValueError):
    """Concepts that no model can use: wrong shape or dimension, NaN/inf, empty documents."""


def check_concepts(concepts: torch.Tensor, mask: torch.Tensor | None, concept_dim: int,
                   min_length: int = 1) -> torch.Tensor:
    """Validate (B, N, d) concepts and their (B, N) mask; returns the mask (all True when None)."""
    if concepts.ndim != 3:
        raise ConceptInputError(f"concepts must be (batch, length, dim), got shape {tuple(concepts.shape)}")
    if concepts.shape[-1] != concept_dim:
        raise ConceptInputError(f"concepts have dimension {concepts.shape[-1]}, the model expects {concept_dim}")
    if mask is None:
        mask = torch.ones(concepts.shape[:2], dtype=torch.bool, device=concepts.device)
    if mask.shape != concepts.shape[:2] or mask.dtype != torch.bool:
        raise ConceptInputError(f"mask must be a bool tensor of shape {tuple(concepts.shape[:2])}, "
                                f"got {mask.dtype} {tuple(mask.shape)}")
    if not torch.isfinite(concepts[mask]).all():
        raise ConceptInputError("concepts contain NaN or inf")
    lengths = mask.sum(1)
    if concepts.shape[0] == 0 or bool((lengths < min_length).any()):
        raise ConceptInputError(f"every document needs at least {min_length} concept(s); "
                                f"got lengths {lengths.tolist()}")
    return mask


def check_extension(concept: torch.Tensor, batch: int, concept_dim: int) -> None:
    """Validate the one concept per row (B, d) that ``extend`` appends."""
    if concept.ndim != 2 or concept.shape[0] != batch:
        raise ConceptInputError(f"extend expects one concept per row, ({batch}, {concept_dim}), got "
                                f"{tuple(concept.shape)}")
    check_concepts(concept[:, None], None, concept_dim)


def check_left_aligned(mask: torch.Tensor) -> None:
    if not mask[:, -1].all():
        raise ConceptInputError("start expects left-aligned concepts (see interface.left_align)")


def left_align(concepts: torch.Tensor, mask: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Move each row's valid concepts to the end (left padding), so every row's last concept is at -1
    and new concepts can be appended to all rows at once."""
    order = torch.argsort(mask.long(), dim=1, stable=True)  # padding first, then the valid ones in order
    idx = order[..., None].expand_as(concepts)
    return concepts.gather(1, idx), mask.gather(1, order)


@dataclass
class Sampling:
    """Inference knobs; each model reads the ones that apply to it.

    Args:
        steps: diffusion sampling steps (DDIM).
        guidance_scale: classifier-free guidance scale (1: no guidance); also Quant-LCM's.
        guidance_rescale: how much of the guided prediction's std is rescaled to the conditional one's.
        initial_noise_scale: the std of the noise sampling starts from.
        epsilon_scaling: the predicted noise is divided by this at each step (None: not scaled).
        temperature: Quant-LCM's sampling temperature.
        top_k: Quant-LCM's top-k (None: all codes).
    """

    steps: int = 40
    guidance_scale: float = 3.0
    guidance_rescale: float = 0.7
    initial_noise_scale: float = 0.6
    epsilon_scaling: float | None = 1.00045
    temperature: float = 1.0
    top_k: int | None = None


class ConceptModel(nn.Module, ABC):
    concept_dim: int  # the dimension of the concepts it reads and predicts

    @abstractmethod
    def loss(self, concepts: torch.Tensor, mask: torch.Tensor | None = None,
             targets: torch.Tensor | None = None) -> torch.Tensor:
        """Scalar training loss over (B, N, d) concepts.

        ``targets`` (B, N, d), default ``concepts``: what positions 1..N-1 are scored against. A caller
        that trains the concept space jointly passes the same values with a different gradient path
        (e.g. detached targets, live inputs).
        """

    @abstractmethod
    def start(self, concepts: torch.Tensor, mask: torch.Tensor) -> Any:
        """Read left-aligned context concepts (B, N, d) into a generation state."""

    @abstractmethod
    def extend(self, state: Any, concept: torch.Tensor) -> Any:
        """Append one concept (B, d) to every row of the state."""

    @abstractmethod
    def sample(self, state: Any, sampling: Sampling, generator: torch.Generator | None = None) -> torch.Tensor:
        """The next concept (B, d) given the state."""

    @torch.no_grad()
    def predict_next(self, concepts: torch.Tensor, mask: torch.Tensor | None = None,
                     sampling: Sampling | None = None, generator: torch.Generator | None = None) -> torch.Tensor:
        mask = check_concepts(concepts, mask, self.concept_dim)
        return self.sample(self.start(*left_align(concepts, mask)), sampling or Sampling(), generator)
