"""Two-Tower LCM (Meta's default LCM): a causal contextualizer reads the document, a denoiser
turns noise into the next concept while cross-attending to it.

Contextualizer: the Base-LCM's PreNet + causal transformer, giving h_0 .. h_{N-1} (KV-cached at
inference). Denoiser: AdaLN blocks (timestep embedding -> shift/scale/gate, zero-init) over the
noisy concepts. The denoiser at position i denoises concept i and cross-attends to
[zero, h_0, .., h_{i-1}]: the zero slot lets a position attend to "nothing", which is all that
position 0, and every position whose context was dropped for classifier-free guidance, sees.
Its self-attention is diagonal: the positions are independent samples, batched.

Training: a timestep per position, x0 (or epsilon / v) prediction, MSE on positions 1.. N-1 of
each document (each predicted from the concepts before it); the context is dropped (all but
the zero slot) for ``cfg_dropout`` of the positions, which trains the unconditional model CFG
needs. Inference: DDIM over ``Sampling.steps`` with guidance, conditional and unconditional
halves batched in one denoiser call.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

import torch
from torch import nn

from concept_core.context import ContextConfig, ContextState, ContextualizedModel
from concept_core.diffusion.config import DiffusionConfig
from concept_core.diffusion.ddim import classifier_free_guidance
from concept_core.interface import Sampling
from concept_core.layers import AdaLNDenoiserBlock, TimestepEmbedding, causal_mask
from concept_core.next_concept import next_concept_pairs


@dataclass
class TwoTowerLCMConfig(ContextConfig, DiffusionConfig):
    context_layers: int = 2
    denoiser_layers: int = 2
    variant: Literal["two_tower"] = "two_tower"  # names the config in a YAML file or an export


class Denoiser(nn.Module):
    """Noisy concepts (B, N, d) at timesteps (B, N), reading a context (B, M, D) -> model output (B, N, d)."""

    def __init__(self, dim: int, model_dim: int, n_layers: int, n_heads: int):
        super().__init__()
        self.proj_in = nn.Linear(dim, model_dim)
        self.time_embed = TimestepEmbedding(model_dim)
        self.blocks = nn.ModuleList(AdaLNDenoiserBlock(model_dim, n_heads, model_dim) for _ in range(n_layers))
        self.norm = nn.RMSNorm(model_dim)
        self.proj_out = nn.Linear(model_dim, dim)

    def context_kv(self, context: torch.Tensor) -> list[tuple[torch.Tensor, torch.Tensor]]:
        """Each block's cross-attention keys and values (B, H, M, Dh) of a context (B, M, D): computed
        once per context, not once per sampling step."""
        return [block.cross_attn.project_kv(context) for block in self.blocks]

    def forward(self, noisy: torch.Tensor, t: torch.Tensor, context_kv: list[tuple[torch.Tensor, torch.Tensor]],
                cross_mask: torch.Tensor) -> torch.Tensor:
        """cross_mask (B, N, M): True where position n may read context slot m."""
        b, n, _ = noisy.shape
        x = self.proj_in(noisy)  # (B, N, D)
        cond = self.time_embed(t)  # (B, N, D)
        self_mask = torch.eye(n, dtype=torch.bool, device=noisy.device).expand(b, n, n)  # each sees only itself
        for block, kv in zip(self.blocks, context_kv, strict=True):
            x = block(x, cond, self_mask, None, cross_mask, context_kv=kv)
        return self.proj_out(self.norm(x))


class TwoTowerLCM(ContextualizedModel):
    """Contextualizer + denoiser + DDIM scheduler; ``forward`` is the training pass, ``sample`` the inference one."""

    def __init__(self, config: TwoTowerLCMConfig, concept_dim: int):
        super().__init__(config, concept_dim, config.context_layers)
        self.denoiser = Denoiser(concept_dim, config.model_dim, config.denoiser_layers, config.n_heads)
        self.scheduler = config.scheduler()

    def forward(self, concepts: torch.Tensor, mask: torch.Tensor, noisy: torch.Tensor, t: torch.Tensor,
                keep_context: torch.Tensor | None = None) -> torch.Tensor:
        """Denoise positions 1..N-1 of whole documents at once (training).

        concepts (B, N, d), mask (B, N); noisy (B, N-1, d) and t (B, N-1) are concepts 1..N-1 noised;
        keep_context (B, N-1) False drops that position's context (CFG). Returns (B, N-1, d).
        """
        h = self.contextualizer(concepts, mask)  # (B, N, D)
        # Slot 0 is the zero vector, slot j+1 is h_j; h_{N-1} has no later concept to condition.
        context = torch.cat([torch.zeros_like(h[:, :1]), h[:, :-1]], dim=1)  # (B, N, D)
        slot_valid = torch.cat([mask.new_ones(len(mask), 1), mask[:, :-1]], dim=1)  # (B, N)
        # Query k is position k+1 and reads slots 0..k+1, i.e. the zero slot and h_0..h_k.
        cross_mask = causal_mask(slot_valid, noisy.shape[1])  # (B, N-1, N)
        if keep_context is not None:
            cross_mask[..., 1:] &= keep_context[..., None]
        return self.denoiser(noisy, t, self.denoiser.context_kv(context), cross_mask)

    def loss(self, concepts: torch.Tensor, mask: torch.Tensor | None = None,
             targets: torch.Tensor | None = None) -> torch.Tensor:
        pairs = next_concept_pairs(concepts, mask, targets, self.concept_dim)
        x0 = pairs.targets  # (B, N-1, d) the concepts that have a context
        t = torch.randint(0, self.scheduler.num_train_timesteps, x0.shape[:2], device=x0.device)  # (B, N-1)
        noise = torch.randn_like(x0)
        noisy = self.scheduler.add_noise(x0, noise, t[..., None])
        keep = None
        if self.training and self.config.cfg_dropout > 0:
            keep = torch.rand(x0.shape[:2], device=x0.device) >= self.config.cfg_dropout  # (B, N-1)
        pred = self(pairs.concepts, pairs.mask, noisy, t, keep)
        return pairs.mean((pred - self.scheduler.training_target(x0, noise, t[..., None])).pow(2).mean(-1))

    @torch.no_grad()
    def sample(self, state: ContextState, sampling: Sampling, generator: torch.Generator | None = None) -> torch.Tensor:
        """DDIM from noise to the concept after each row's last one: (B, d)."""
        hidden = state.hidden  # (B, T, D)
        b = len(hidden)
        context = torch.cat([torch.zeros_like(hidden[:, :1]), hidden], dim=1)  # (B, T+1, D) the next position reads all
        cross_mask = torch.cat([state.key_valid.new_ones(b, 1), state.key_valid], dim=1)[:, None]  # (B, 1, T+1)
        context_kv = self.denoiser.context_kv(context)  # per block, (B, H, T+1, Dh) each
        guided = sampling.guidance_scale != 1.0
        if guided:  # second half: the same rows with only the zero slot visible (unconditional)
            uncond_mask = torch.zeros_like(cross_mask)
            uncond_mask[..., 0] = True
            cross_mask = torch.cat([cross_mask, uncond_mask])  # (2B, 1, T+1)
            context_kv = [(torch.cat([k, k]), torch.cat([v, v])) for k, v in context_kv]  # (2B, H, T+1, Dh)

        self.scheduler.set_timesteps(sampling.steps)
        x = self.scheduler.init_noise((b, 1, self.concept_dim), generator=generator, scale=sampling.initial_noise_scale,
                                      device=hidden.device, dtype=hidden.dtype)  # (B, 1, d)
        for t in self.scheduler.timesteps.tolist():
            x_in = torch.cat([x, x]) if guided else x
            t_in = torch.full((len(x_in), 1), t, dtype=torch.long, device=x.device)
            out = self.denoiser(x_in, t_in, context_kv, cross_mask)  # (B or 2B, 1, d)
            if guided:
                cond, uncond = out.chunk(2)
                out = classifier_free_guidance(self.scheduler, cond, uncond, t, x, sampling.guidance_scale,
                                               rescale=sampling.guidance_rescale)
            x = self.scheduler.step(out, t, x, epsilon_scaling=sampling.epsilon_scaling).prev_sample
        return x[:, 0]
