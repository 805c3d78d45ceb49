"""One-Tower diffusion LCM: a single causal transformer both reads the context and denoises the next
concept (the One-Tower variant of Meta's "Large Concept Models").

Training interleaves clean concepts with noisy copies of the concepts they precede,

    [c_0, x̃_1, c_1, x̃_2, …, c_{N-2}, x̃_{N-1}],   x̃_i = embed(noisy c_i at timestep t_i) + embed(t_i)

and the output at x̃_i predicts c_i (as x0, ε or v, per ``prediction_type``). A clean position sees
the clean concepts up to itself; a noisy position sees the clean concepts before it and itself, never
another noisy position, so every pair trains in one pass and clean states do not depend on noise.
For classifier-free guidance a noisy position loses its context with probability ``cfg_dropout``.

The clean concepts are read by the shared contextualizer (concept_core.context: PreNet + sinusoidal
positions + causal transformer), whose PreNet and transformer also take the noisy queries. At
inference the clean concepts go through the transformer once, into a KV cache; each DDIM step runs
one noisy query over the cached keys plus its own, and that query never enters the cache.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

import torch
import torch.nn.functional as F
from einops import rearrange
from torch import nn

from concept_core.context import ContextConfig, ContextState, ContextualizedModel, positions_of
from concept_core.diffusion.config import DiffusionConfig
from concept_core.diffusion.ddim import classifier_free_guidance
from concept_core.interface import Sampling
from concept_core.layers import TimestepEmbedding
from concept_core.next_concept import next_concept_pairs
from primitives.transformer import KVCache


@dataclass
class OneTowerLCMConfig(ContextConfig, DiffusionConfig):
    n_layers: int = 2
    variant: Literal["one_tower"] = "one_tower"  # names the config in a YAML file or an export


def one_tower_mask(clean_valid: torch.Tensor, keep_context: torch.Tensor) -> torch.Tensor:
    """The attention mask of the interleaved sequence [c_0, x̃_1, c_1, …, c_{P-1}, x̃_P].

    clean_valid (B, P): which of c_0..c_{P-1} are real concepts; keep_context (B, P): False where x̃_{i+1}
    drops its context (CFG). Returns (B, 2P, 2P) bool, True = the query (row) may attend to the key.
    """
    pairs = clean_valid.shape[1]
    idx = torch.arange(2 * pairs, device=clean_valid.device)
    noisy, pair = idx % 2 == 1, idx // 2  # (L,) position 2i holds c_i, position 2i+1 holds x̃_{i+1}
    # any query sees the clean concepts of its own pair and earlier ones: for x̃_{i+1} those are c_0..c_i
    clean_before = ~noisy[None, :] & (pair[None, :] <= pair[:, None])  # (L, L)
    key_valid = clean_valid[:, pair] & ~noisy  # (B, L)
    query_has_context = ~noisy | keep_context[:, pair]  # (B, L): only noisy queries drop their context
    mask = clean_before[None] & key_valid[:, None, :] & query_has_context[:, :, None]  # (B, L, L)
    itself = torch.diag(noisy)  # (L, L): a noisy query also sees itself, and no other noisy position
    return mask | itself[None]


class OneTowerLCM(ContextualizedModel):
    def __init__(self, config: OneTowerLCMConfig, concept_dim: int):
        # clean and noisy concepts share the PreNet and the transformer; the timestep embedding tells them apart
        super().__init__(config, concept_dim, config.n_layers)
        self.scheduler = config.scheduler()
        self.time_emb = TimestepEmbedding(config.model_dim)
        self.out_proj = nn.Linear(config.model_dim, concept_dim)
        # a zero output layer starts every prediction at 0 (for x0, the mean of normalised concepts) instead of
        # a random vector, which makes the synthetic rule learnable in fewer steps
        nn.init.zeros_(self.out_proj.weight)
        nn.init.zeros_(self.out_proj.bias)

    def forward(self, concepts: torch.Tensor, mask: torch.Tensor, x_t: torch.Tensor, t: torch.Tensor,
                keep_context: torch.Tensor) -> torch.Tensor:
        """All pairs in one pass. concepts (B, N, d) and mask (B, N); x_t (B, N-1, d) noisy versions of
        concepts 1..N-1 at timesteps t (B, N-1); keep_context (B, N-1). Returns (B, N-1, d): the output
        at each noisy position."""
        embed = self.contextualizer.embed
        positions = positions_of(mask)[:, :-1]  # (B, P) of c_0..c_{P-1}
        clean = embed(concepts[:, :-1], positions)  # (B, P, D)
        # x̃_{i+1} sits at the position of the concept it denoises, as the query does at inference
        noisy = embed(x_t, positions + 1) + self.time_emb(t)  # (B, P, D)
        x = rearrange([clean, noisy], "two b p d -> b (p two) d")  # (B, 2P, D): c_0, x̃_1, c_1, x̃_2, …
        x = self.contextualizer.transformer.masked(x, one_tower_mask(mask[:, :-1], keep_context))  # (B, 2P, D)
        return self.out_proj(x[:, 1::2])  # (B, P, d)

    def loss(self, concepts: torch.Tensor, mask: torch.Tensor | None = None,
             targets: torch.Tensor | None = None) -> torch.Tensor:
        pairs = next_concept_pairs(concepts, mask, targets, self.concept_dim)
        target, shape = pairs.targets, pairs.valid.shape  # (B, P, d), (B, P): concept i predicts concept i+1
        t = torch.randint(0, self.config.num_train_timesteps, shape, device=target.device)  # (B, P)
        noise = torch.randn_like(target)
        x_t = self.scheduler.add_noise(target, noise, t)
        keep = torch.ones_like(pairs.valid)
        if self.training:  # classifier-free guidance: learn the context-free prediction too
            keep = torch.rand(shape, device=target.device) >= self.config.cfg_dropout
        out = self(pairs.concepts, pairs.mask, x_t, t, keep)  # (B, P, d)
        return pairs.mean((out - self.scheduler.training_target(target, noise, t)).pow(2).mean(-1))

    def denoise(self, state: ContextState, x_t: torch.Tensor, t: int, with_context: bool = True) -> torch.Tensor:
        """The model output for the next concept's noisy version x_t (B, d) at timestep t: one query over
        the cached context and itself (or itself only, without context); the query is not cached."""
        position = state.next_position[:, None]  # (B, 1)
        x = self.contextualizer.embed(x_t[:, None], position) + self.time_emb(torch.full_like(position, t))
        if with_context:  # throwaway cache objects: the query's key joins each layer's keys, not the state's cache
            attn = F.pad(state.key_valid, (0, 1), value=True)[:, None]  # (B, 1, T+1)
            caches = [KVCache(c.k, c.v) for c in state.caches]
            return self.out_proj(self.contextualizer.transformer.masked(x, attn, caches))[:, 0]
        return self.out_proj(self.contextualizer.transformer.masked(x, None))[:, 0]  # (B, d)

    @torch.no_grad()
    def sample(self, state: ContextState, sampling: Sampling,
               generator: torch.Generator | None = None) -> torch.Tensor:
        """DDIM from noise; with guidance_scale != 1, classifier-free guidance between the prediction
        with context (cond) and the one from the noisy query alone (uncond)."""
        self.scheduler.set_timesteps(sampling.steps)
        ref = self.out_proj.weight
        x = self.scheduler.init_noise((len(state.next_position), self.concept_dim), generator,
                                      scale=sampling.initial_noise_scale, device=ref.device, dtype=ref.dtype)
        for t in self.scheduler.timesteps.tolist():
            out = self.denoise(state, x, t)  # (B, d)
            if sampling.guidance_scale != 1:
                uncond = self.denoise(state, x, t, with_context=False)
                out = classifier_free_guidance(self.scheduler, out, uncond, t, x, sampling.guidance_scale,
                                               sampling.guidance_rescale)
            x = self.scheduler.step(out, t, x, epsilon_scaling=sampling.epsilon_scaling).prev_sample
        return x
