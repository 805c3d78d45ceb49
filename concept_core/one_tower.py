"""One-Tower diffusion LCM: a single causal transformer both reads the context and denoises the next
concept (the One-Tower variant of Meta's "Large Concept Models").

Training interleaves clean concepts with noisy copies of the concepts they precede,

    [c_0, x̃_1, c_1, x̃_2, …, c_{N-2}, x̃_{N-1}],   x̃_i = embed(noisy c_i at timestep t_i) + embed(t_i)

and the output at x̃_i predicts c_i (as x0, ε or v, per ``prediction_type``). A clean position sees
the clean concepts up to itself; a noisy position sees the clean concepts before it and itself, never
another noisy position, so every pair trains in one pass and clean states do not depend on noise.
For classifier-free guidance a noisy position loses its context with probability ``cfg_dropout``.

At inference the clean concepts go through the transformer once, into a KV cache; each DDIM step
runs one noisy query over the cached keys plus its own, and that query never enters the cache.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F
from einops import rearrange
from torch import nn

from concept_core.diffusion.ddim import DDIMScheduler, classifier_free_guidance
from concept_core.interface import (
    ConceptInputError,
    ConceptModel,
    Sampling,
    check_concepts,
    check_extension,
    check_left_aligned,
)
from concept_core.layers import CausalTransformer, KVCache, TimestepEmbedding


@dataclass
class OneTowerLCMConfig:
    dim: int
    model_dim: int = 128
    n_layers: int = 2
    n_heads: int = 4
    num_train_timesteps: int = 100
    schedule: str = "cosine"
    zero_terminal_snr: bool = True
    prediction_type: str = "sample"
    cfg_dropout: float = 0.15
    max_positions: int = 4096


@dataclass
class OneTowerState:
    caches: list[KVCache]  # per layer, the keys and values of every clean context concept
    key_valid: torch.Tensor  # (B, T) which cached positions are real concepts (left padding is not)
    length: torch.Tensor  # (B,) concepts read so far: the position of the next one


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


class OneTowerLCM(ConceptModel):
    def __init__(self, config: OneTowerLCMConfig):
        super().__init__()
        self.config, self.dim = config, config.dim
        D = config.model_dim
        # the noise schedule is a host-side constant, also when the model is built on the meta device
        with torch.device("cpu"):
            self.scheduler = DDIMScheduler(config.num_train_timesteps, config.schedule, config.zero_terminal_snr,
                                           config.prediction_type)
        self.in_proj = nn.Linear(config.dim, D)  # clean and noisy concepts share it; t tells them apart
        self.pos_emb = nn.Embedding(config.max_positions, D)
        self.time_emb = TimestepEmbedding(D)
        self.transformer = CausalTransformer(D, config.n_layers, config.n_heads)
        self.out_proj = nn.Linear(D, config.dim)
        # positions at N(0, 1) would drown the concepts, which enter through in_proj at ~0.1 per unit; a zero
        # output layer starts every prediction at 0 (for x0, the mean of normalised concepts) instead of a
        # random vector. Both make the synthetic rule learnable in a few times fewer steps.
        nn.init.normal_(self.pos_emb.weight, std=0.02)
        nn.init.zeros_(self.out_proj.weight)
        nn.init.zeros_(self.out_proj.bias)

    def _embed(self, concepts: torch.Tensor, positions: torch.Tensor) -> torch.Tensor:
        """(B, N, d) concepts at (B, N) positions -> (B, N, D)."""
        if bool((positions >= self.config.max_positions).any()):
            raise ConceptInputError(f"documents longer than max_positions={self.config.max_positions} concepts")
        return self.in_proj(concepts) + self.pos_emb(positions)

    def forward(self, concepts: torch.Tensor, mask: torch.Tensor, x_t: torch.Tensor, t: torch.Tensor,
                keep_context: torch.Tensor) -> torch.Tensor:
        """All pairs in one pass. concepts (B, N, d) and mask (B, N); x_t (B, N-1, d) noisy versions of
        concepts 1..N-1 at timesteps t (B, N-1); keep_context (B, N-1). Returns (B, N-1, d): the output
        at each noisy position."""
        positions = (mask.long().cumsum(1) - 1).clamp(min=0)[:, :-1]  # (B, P) of c_0..c_{P-1}
        clean = self._embed(concepts[:, :-1], positions)  # (B, P, D)
        # x̃_{i+1} sits at the position of the concept it denoises, as the query does at inference
        noisy = self._embed(x_t, positions + 1) + self.time_emb(t)  # (B, P, D)
        x = rearrange([clean, noisy], "two b p d -> b (p two) d")  # (B, 2P, D): c_0, x̃_1, c_1, x̃_2, …
        attn = one_tower_mask(mask[:, :-1], keep_context)  # (B, 2P, 2P)
        for block in self.transformer.blocks:
            x = block(x, attn)
        return self.out_proj(self.transformer.norm(x[:, 1::2]))  # (B, P, d)

    def loss(self, concepts: torch.Tensor, mask: torch.Tensor | None = None,
             targets: torch.Tensor | None = None) -> torch.Tensor:
        mask = check_concepts(concepts, mask, self.dim)
        pairs = mask[:, :-1] & mask[:, 1:]  # (B, P): concept i predicts concept i+1
        if not pairs.any():
            raise ConceptInputError("no (context, next concept) pair: every document has a single concept")
        target = (concepts if targets is None else targets)[:, 1:]  # (B, P, d)
        t = torch.randint(0, self.config.num_train_timesteps, pairs.shape, device=concepts.device)  # (B, P)
        noise = torch.randn_like(target)
        x_t = self.scheduler.add_noise(target, noise, t)
        keep = torch.ones_like(pairs)
        if self.training:  # classifier-free guidance: learn the context-free prediction too
            keep = torch.rand(pairs.shape, device=concepts.device) >= self.config.cfg_dropout
        out = self(concepts, mask, x_t, t, keep)  # (B, P, d)
        error = (out - self.scheduler.training_target(target, noise, t)).pow(2).mean(-1)  # (B, P)
        return error[pairs].mean()

    def start(self, concepts: torch.Tensor, mask: torch.Tensor) -> OneTowerState:
        mask = check_concepts(concepts, mask, self.dim)
        check_left_aligned(mask)
        caches = self.transformer.new_caches()
        positions = (mask.long().cumsum(1) - 1).clamp(min=0)
        # clean positions attend causally to clean ones only, exactly their rows of one_tower_mask
        self.transformer(self._embed(concepts, positions), mask, caches)
        return OneTowerState(caches, mask, mask.sum(1))

    def extend(self, state: OneTowerState, concept: torch.Tensor) -> OneTowerState:
        """A new state with ``concept`` (B, d) appended; ``state`` itself stays usable."""
        check_extension(concept, len(state.length), self.dim)
        x = self._embed(concept[:, None], state.length[:, None])  # (B, 1, D)
        caches, key_valid, _ = self.transformer.extended(state.caches, state.key_valid, x)
        return OneTowerState(caches, key_valid, state.length + 1)

    def denoise(self, state: OneTowerState, x_t: torch.Tensor, t: int, with_context: bool = True) -> torch.Tensor:
        """The model output for the next concept's noisy version x_t (B, d) at timestep t: one query over
        the cached context and itself (or itself only, without context); the query is not cached."""
        steps = torch.full_like(state.length, t)[:, None]  # (B, 1)
        x = self._embed(x_t[:, None], state.length[:, None]) + self.time_emb(steps)  # (B, 1, D)
        attn = F.pad(state.key_valid, (0, 1), value=True)[:, None] if with_context else None  # (B, 1, T+1)
        for block, cache in zip(self.transformer.blocks, state.caches, strict=True):
            # a throwaway cache object: the query's key joins this layer's keys but not the state's cache
            x = block(x, attn, KVCache(cache.k, cache.v) if with_context else None)
        return self.out_proj(self.transformer.norm(x))[:, 0]

    @torch.no_grad()
    def sample(self, state: OneTowerState, sampling: Sampling,
               generator: torch.Generator | None = None) -> torch.Tensor:
        """DDIM from noise; with guidance_scale != 1, classifier-free guidance between the prediction
        with context (cond) and the one from the noisy query alone (uncond)."""
        self.scheduler.set_timesteps(sampling.steps)
        ref = self.out_proj.weight
        x = self.scheduler.init_noise((state.length.shape[0], self.dim), generator,
                                      scale=sampling.initial_noise_scale, device=ref.device, dtype=ref.dtype)
        for t in self.scheduler.timesteps.tolist():
            out = self.denoise(state, x, t)  # (B, d)
            if sampling.guidance_scale != 1:
                uncond = self.denoise(state, x, t, with_context=False)
                out = classifier_free_guidance(self.scheduler, out, uncond, t, x, sampling.guidance_scale,
                                               sampling.guidance_rescale)
            x = self.scheduler.step(out, t, x, epsilon_scaling=sampling.epsilon_scaling).prev_sample
        return x
