"""Quant-LCM: residual vector quantisation of concepts, and an LCM that predicts the next concept's
codes codebook by codebook (the Quantized LCM of Meta's "Large Concept Models").

A ResidualVQ, fit by k-means on a sample of concepts, writes a concept as K codes; the concept comes
back as the sum of the chosen centroids. A causal transformer reads the context concepts (with a KV
cache at inference); a small head then picks the next concept's codes one codebook at a time, each
pick conditioned on the context state and on the sum of the centroids already chosen. Two heads:
  "d": a softmax over the codebook's entries (cross-entropy); temperature / top-k sampling, and
       classifier-free guidance on the logits;
  "c": regresses the residual still left to explain (MSE); the code is the centroid nearest the
       regressed residual (temperature 0) or one drawn with softmax(-dist² / temperature). Squared
       distances between centroids are small (≪ 1 for normalised concepts), so useful temperatures
       are too: at temperature 1 the draw is close to uniform.
Guidance mixes the prediction with context and the one from a learned context-free state: logits for
"d", the regressed residual for "c".
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

import torch
import torch.nn.functional as F
from einops import rearrange
from torch import nn

from concept_core.context import ContextConfig, ContextState, ContextualizedModel
from concept_core.interface import ConceptInputError, Sampling
from concept_core.layers import SwiGLU
from concept_core.next_concept import next_concept_pairs
from primitives.sampling import sample_next


class NotFittedError(RuntimeError):
    """A ResidualVQ used before ``fit`` gave it codebooks."""


def squared_distances(x: torch.Tensor, centroids: torch.Tensor) -> torch.Tensor:
    """(..., d) points and (C, d) centroids -> (..., C) squared euclidean distances."""
    cross = x @ centroids.T  # (..., C)
    return (x.pow(2).sum(-1, keepdim=True) - 2 * cross + centroids.pow(2).sum(-1)).clamp(min=0)


def kmeans(x: torch.Tensor, k: int, iters: int = 20, generator: torch.Generator | None = None) -> torch.Tensor:
    """(n, d) points -> (k, d) centroids: k-means++ seeding, then Lloyd iterations vectorised over points.

    Duplicate points can leave a cluster empty; it is re-seeded at the point worst served by its centroid,
    so no centroid is ever NaN (with fewer distinct points than k, some centroids coincide).
    """
    n = x.shape[0]
    if n < k:
        raise ValueError(f"k-means needs at least k={k} points, got {n}")
    centroids = x[torch.randint(n, (1,), generator=generator, device=x.device)]  # (1, d)
    closest = squared_distances(x, centroids)[:, 0]  # (n,) squared distance to the nearest seed
    for _ in range(k - 1):
        # k-means++: draw the next seed with probability ∝ squared distance to the nearest seed; once every
        # point coincides with a seed (fewer distinct points than k), any point will do
        weights = closest if bool(closest.sum() > 0) else torch.ones_like(closest)
        pick = torch.multinomial(weights, 1, generator=generator)
        centroids = torch.cat([centroids, x[pick]])
        closest = torch.minimum(closest, squared_distances(x, x[pick])[:, 0])
    for _ in range(iters):
        assign = squared_distances(x, centroids).argmin(-1)  # (n,)
        counts = torch.bincount(assign, minlength=k)  # (k,)
        sums = torch.zeros_like(centroids).index_add_(0, assign, x)  # (k, d)
        centroids = torch.where(counts[:, None] > 0, sums / counts.clamp(min=1)[:, None], centroids)
        empty = counts == 0
        if empty.any():
            error = (x - centroids[assign]).pow(2).sum(-1)  # (n,)
            centroids[empty] = x[error.topk(int(empty.sum())).indices]
    return centroids


class ResidualVQ(nn.Module):
    """K codebooks of C centroids; codebook k quantises what codebooks 0..k-1 left unexplained."""

    def __init__(self, dim: int, num_codebooks: int = 4, codebook_size: int = 64):
        super().__init__()
        self.dim, self.num_codebooks, self.codebook_size = dim, num_codebooks, codebook_size
        self.register_buffer("codebooks", torch.zeros(num_codebooks, codebook_size, dim))  # (K, C, d)
        # a buffer, so a saved and reloaded model remembers that its codebooks are real
        self.register_buffer("fitted", torch.tensor(False))

    @torch.no_grad()
    def fit(self, sample: torch.Tensor, iters: int = 20, generator: torch.Generator | None = None) -> ResidualVQ:
        """k-means on the sample (n, d), then on its residuals, codebook after codebook."""
        if sample.ndim != 2 or sample.shape[1] != self.dim:
            raise ConceptInputError(f"the quantiser's sample must be (n, {self.dim}), got {tuple(sample.shape)}")
        if not torch.isfinite(sample).all():
            raise ConceptInputError("the quantiser's sample contains NaN or inf")
        if sample.shape[0] < self.codebook_size:
            raise ConceptInputError(f"fitting {self.codebook_size} centroids needs at least as many concepts, "
                                    f"got {sample.shape[0]}")
        residual = sample.to(self.codebooks)  # (n, d)
        for k in range(self.num_codebooks):
            centroids = kmeans(residual, self.codebook_size, iters, generator)  # (C, d)
            self.codebooks[k] = centroids
            residual = residual - centroids[squared_distances(residual, centroids).argmin(-1)]
        self.fitted.fill_(True)
        return self

    def check_fitted(self) -> None:
        if not bool(self.fitted):
            raise NotFittedError("the ResidualVQ has no codebooks yet: fit it on a sample of concepts first "
                                 "(QuantizedLCM.fit_quantizer(sample) or ResidualVQ.fit(sample))")

    def encode(self, x: torch.Tensor) -> torch.Tensor:
        """(..., d) -> (..., K) codes, greedily: each codebook takes the centroid nearest the residual."""
        self.check_fitted()
        codes, residual = [], x
        for codebook in self.codebooks:  # (C, d)
            code = squared_distances(residual, codebook).argmin(-1)  # (...,)
            residual = residual - codebook[code]
            codes.append(code)
        return torch.stack(codes, dim=-1)

    def centroids(self, codes: torch.Tensor) -> torch.Tensor:
        """(..., K) codes -> (..., K, d) the centroid each code names in its codebook."""
        self.check_fitted()
        return self.codebooks[torch.arange(self.num_codebooks, device=codes.device), codes]

    def decode(self, codes: torch.Tensor) -> torch.Tensor:
        """(..., K) -> (..., d): the sum of the chosen centroids."""
        return self.centroids(codes).sum(-2)

    def partial_sums(self, codes: torch.Tensor) -> torch.Tensor:
        """(..., K) -> (..., K, d): entry k is the reconstruction from codebooks 0..k."""
        return self.centroids(codes).cumsum(-2)


@dataclass
class QuantizedLCMConfig(ContextConfig):
    n_layers: int = 2
    num_codebooks: int = 4
    codebook_size: int = 64
    head: str = "d"  # "d": softmax over each codebook's entries; "c": regress the residual
    cfg_dropout: float = 0.15
    variant: Literal["quant"] = "quant"  # names the config in a YAML file or an export

    def __post_init__(self):
        if self.head not in ("d", "c"):
            raise ValueError(f"head must be 'd' (discrete) or 'c' (continuous), got {self.head!r}")


class QuantizedLCM(ContextualizedModel):
    def __init__(self, config: QuantizedLCMConfig, concept_dim: int):
        super().__init__(config, concept_dim, config.n_layers)
        D, K = config.model_dim, config.num_codebooks
        self.quantizer = ResidualVQ(concept_dim, K, config.codebook_size)
        # the context state of a prediction without context: replaces the contextualizer's output when
        # training drops the context (CFG) and is the unconditional branch of guided sampling
        self.null_context = nn.Parameter(torch.zeros(D))
        self.codebook_emb = nn.Embedding(K, D)
        self.sum_proj = nn.Linear(concept_dim, D)
        self.head_norm, self.out_norm = nn.RMSNorm(D), nn.RMSNorm(D)
        self.head_ffn = SwiGLU(D)
        out = config.codebook_size if config.head == "d" else concept_dim
        # one output layer per codebook, zero at init: uniform logits, or a zero residual, to start from
        self.out_weight = nn.Parameter(torch.zeros(K, D, out))
        self.out_bias = nn.Parameter(torch.zeros(K, out))
        # codebook embeddings at N(0, 1) would drown the context signal: started small, the head learns to use
        # the context several times faster
        nn.init.normal_(self.codebook_emb.weight, std=0.02)

    def fit_quantizer(self, sample: torch.Tensor, iters: int = 20,
                      generator: torch.Generator | None = None) -> QuantizedLCM:
        """Fit the codebooks on a sample of concepts (n, d); required before training or sampling."""
        self.quantizer.fit(sample, iters, generator)
        return self

    def _head(self, context: torch.Tensor, prev_sum: torch.Tensor, ks: slice) -> torch.Tensor:
        """Context states (..., 1, D) and sums (..., k, d) of the centroids chosen before each codebook of
        ``ks`` -> (..., k, C) logits for head "d", or (..., k, d) the regressed residuals for head "c"."""
        h = context + self.codebook_emb.weight[ks] + self.sum_proj(prev_sum)  # (..., k, D)
        h = self.out_norm(h + self.head_ffn(self.head_norm(h)))
        return torch.einsum("...kd,kdo->...ko", h, self.out_weight[ks]) + self.out_bias[ks]

    def loss(self, concepts: torch.Tensor, mask: torch.Tensor | None = None,
             targets: torch.Tensor | None = None) -> torch.Tensor:
        pairs = next_concept_pairs(concepts, mask, targets, self.concept_dim)
        self.quantizer.check_fitted()
        hidden = self.contextualizer(pairs.concepts, pairs.mask)[:, :-1]  # (B, P, D): concept i predicts i+1
        if self.training:  # classifier-free guidance: learn the context-free prediction too
            dropped = torch.rand(pairs.valid.shape, device=hidden.device) < self.config.cfg_dropout
            hidden = torch.where(dropped[..., None], self.null_context, hidden)
        target = pairs.targets  # (B, P, d), zero on padding: its codes are scored, then masked out
        codes = self.quantizer.encode(target)  # (B, P, K)
        # teacher forcing: codebook k sees the sum of the true centroids of codebooks 0..k-1
        prev = F.pad(self.quantizer.partial_sums(codes)[..., :-1, :], (0, 0, 1, 0))  # (B, P, K, d)
        out = self._head(hidden[..., None, :], prev, slice(None))  # (B, P, K, C) or (B, P, K, d)
        if self.config.head == "d":
            error = F.cross_entropy(rearrange(out, "b p k c -> b c p k"), codes, reduction="none")  # (B, P, K)
        else:
            error = (out - (target[..., None, :] - prev)).pow(2).mean(-1)  # (B, P, K)
        return pairs.mean(error.mean(-1))

    @torch.no_grad()
    def sample(self, state: ContextState, sampling: Sampling,
               generator: torch.Generator | None = None) -> torch.Tensor:
        """Codes codebook by codebook (reads temperature, top_k, guidance_scale), returned as their sum (B, d)."""
        self.quantizer.check_fitted()
        if sampling.temperature < 0:
            raise ValueError(f"temperature must be >= 0, got {sampling.temperature}")
        scale = sampling.guidance_scale
        context = state.hidden[:, -1]  # (B, D) the state after each row's last concept
        batch = len(context)
        if scale != 1.0:  # conditional rows, then the same rows without context: one pass for both branches
            context = torch.cat([context, self.null_context.expand_as(context)])  # (2B, D)
        total = context.new_zeros(batch, self.concept_dim)  # (B, d) sum of the chosen centroids
        for k, codebook in enumerate(self.quantizer.codebooks):  # (C, d)
            prev = total.repeat(2, 1) if scale != 1.0 else total
            out = self._head(context[:, None], prev[:, None], slice(k, k + 1))[:, 0]  # (B or 2B, C or d)
            if scale != 1.0:
                out = guided(*out.chunk(2), scale)
            logits = out if self.config.head == "d" else -squared_distances(out, codebook)  # (B, C)
            total = total + codebook[sample_next(logits, sampling.temperature, sampling.top_k, generator)]
        return total


def guided(cond: torch.Tensor, uncond: torch.Tensor, scale: float) -> torch.Tensor:
    """Classifier-free guidance on the head's outputs: uncond + scale · (cond - uncond)."""
    return uncond + scale * (cond - uncond)
