"""Energy LCM: the Base-LCM's contextualizer with CALM's energy head, one forward pass per concept.

Contextualizer (concept_core.context) -> h_i; the head maps a noise vector z ~ N(0, I) and h_i to a sample
of concept i+1: z -> Linear -> residual SwiGLU blocks modulated by h_i (shift, scale, gate; zero-init, as
Two-Tower's denoiser) -> RMSNorm -> Linear. No diffusion loop: sampling is one head pass.

Training is likelihood-free (CALM, Shao et al. 2025): ``samples`` draws per position are scored against
the target with the energy score ES = E||x - y|| - 1/2 E||x - x'||, a strictly proper scoring rule, so the
head is pushed to the whole next-concept distribution rather than to its mean (what Base-LCM's MSE finds).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

import torch
from einops import rearrange
from torch import nn

from concept_core.context import ContextConfig, ContextState, ContextualizedModel
from concept_core.interface import Sampling
from concept_core.next_concept import next_concept_pairs
from primitives.transformer import SwiGLU

DISTANCE_EPS = 1e-8  # keeps the norm's gradient finite where two draws coincide


@dataclass
class EnergyLCMConfig(ContextConfig):
    context_layers: int = 2
    head_layers: int = 4
    noise_dim: int = 64
    samples: int = 8  # draws per position in training (CALM's N); >= 2, the spread term needs pairs
    variant: Literal["energy"] = "energy"  # names the config in a YAML file or an export

    def __post_init__(self):
        if self.samples < 2:
            raise ValueError(f"the energy score needs at least 2 samples per position, got samples={self.samples}")


def energy_score(samples: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
    """Draws (..., n, d) of a distribution and the observed (..., d) -> (...) the energy score (lower: better)."""
    n = samples.shape[-2]
    fit = ((samples - target[..., None, :]).pow(2).sum(-1) + DISTANCE_EPS).sqrt().mean(-1)  # E||x - y||
    i, j = torch.triu_indices(n, n, offset=1, device=samples.device)
    spread = ((samples[..., i, :] - samples[..., j, :]).pow(2).sum(-1) + DISTANCE_EPS).sqrt().mean(-1)  # E||x - x'||
    return fit - 0.5 * spread


class ModulatedMLPBlock(nn.Module):
    """x + gate * SwiGLU(norm(x) * (1 + scale) + shift), with (shift, scale, gate) from the condition."""

    def __init__(self, dim: int):
        super().__init__()
        self.norm = nn.RMSNorm(dim, elementwise_affine=False)
        self.ffn = SwiGLU(dim)
        self.modulation = nn.Sequential(nn.SiLU(), nn.Linear(dim, 3 * dim))
        nn.init.zeros_(self.modulation[1].weight)
        nn.init.zeros_(self.modulation[1].bias)

    def forward(self, x: torch.Tensor, cond: torch.Tensor) -> torch.Tensor:
        shift, scale, gate = self.modulation(cond).chunk(3, dim=-1)
        return x + gate * self.ffn(self.norm(x) * (1 + scale) + shift)


class EnergyHead(nn.Module):
    """Context states (..., D) -> ``samples`` concept draws each (..., samples, d), one pass."""

    def __init__(self, dim: int, model_dim: int, noise_dim: int, n_layers: int):
        super().__init__()
        self.noise_dim = noise_dim
        self.proj_in = nn.Linear(noise_dim, model_dim)
        self.blocks = nn.ModuleList(ModulatedMLPBlock(model_dim) for _ in range(n_layers))
        self.norm = nn.RMSNorm(model_dim)
        self.proj_out = nn.Linear(model_dim, dim)

    def forward(self, hidden: torch.Tensor, samples: int, generator: torch.Generator | None = None) -> torch.Tensor:
        noise = torch.randn(*hidden.shape[:-1], samples, self.noise_dim, generator=generator,
                            device=hidden.device, dtype=hidden.dtype)  # (..., n, z)
        x, cond = self.proj_in(noise), hidden[..., None, :]  # (..., n, D), (..., 1, D)
        for block in self.blocks:
            x = block(x, cond)
        return self.proj_out(self.norm(x))


class EnergyLCM(ContextualizedModel):
    """Contextualizer + energy head; ``loss`` scores ``samples`` draws per position, ``sample`` makes one."""

    def __init__(self, config: EnergyLCMConfig, concept_dim: int):
        super().__init__(config, concept_dim, config.context_layers)
        self.head = EnergyHead(concept_dim, config.model_dim, config.noise_dim, config.head_layers)

    def loss(self, concepts: torch.Tensor, mask: torch.Tensor | None = None,
             targets: torch.Tensor | None = None) -> torch.Tensor:
        pairs = next_concept_pairs(concepts, mask, targets, self.concept_dim)
        hidden = self.contextualizer(pairs.concepts, pairs.mask)[:, :-1]  # (B, N-1, D): h_i reads concepts 0..i
        draws = self.head(hidden, self.config.samples)  # (B, N-1, n, d) draws of concepts 1..N-1
        # Scored per concept dimension, so the loss reads the same at any concept_dim.
        return pairs.mean(energy_score(draws, pairs.targets)) / self.concept_dim**0.5

    @torch.no_grad()
    def sample(self, state: ContextState, sampling: Sampling, generator: torch.Generator | None = None) -> torch.Tensor:
        """One draw of the concept after each row's last one: (B, d); no sampling knob applies."""
        return rearrange(self.head(state.hidden[:, -1], 1, generator), "b 1 d -> b d")
