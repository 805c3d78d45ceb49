"""The byte concept decoder: a concept back to the bytes of its unit.

    concept (U, d) -> K latent slots (U, K, D) -> LocalDecoder (causal bytes, cross-attention to the
    slots) -> next-byte logits; greedy or sampled generation with a KV cache until EOS.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import NamedTuple

import torch
import torch.nn.functional as F
from einops import rearrange
from torch import nn

from blt.decoder import LocalDecoder, LocalDecoderConfig
from blt.ids import BOS, EOS, OFFSET, PAD, decode
from bridges.length_chunks import by_length
from primitives.transformer import init_weights


class DecoderScores(NamedTuple):
    """Teacher-forced scores of each unit given its concept, each (U,)."""

    nats: torch.Tensor  # summed cross-entropy over the unit's bytes and the closing EOS
    exact: torch.Tensor  # 1.0 where greedy decoding reproduces the unit (every argmax right, EOS included)
    correct: torch.Tensor  # how many of those L+1 teacher-forced argmaxes are right


@dataclass
class ByteConceptDecoderConfig:
    """A concept -> the bytes of its unit.

    Args:
        slots: K latent slots per concept, cross-attended in every layer.
        concept_to_inputs: also add a projection of the concept to every byte embedding (Optimus).
        segment_bytes: byte t also reads slot t // segment_bytes (set as the encoder's).
        dim: the local causal byte transformer's width.
        n_layers: its layers.
        n_heads: its attention heads.
        window: self-attention over the last ``window`` bytes only: the concept must carry the rest.
        max_positions: learned absolute byte positions (None: RoPE only).
        input_mask: training only: this share of teacher-forced input bytes is hidden (word dropout).
        init_std: as the encoder's.
        chunk_tokens: padded bytes per length chunk.
        backend: the attention backend (primitives.attention).
    """

    # how the decoder reads the concept; the defaults are configs/codec-tiny.yaml's
    slots: int = 9
    concept_to_inputs: bool = True
    segment_bytes: int | None = 16
    # the causal byte transformer (blt.decoder.LocalDecoder)
    dim: int = 128
    n_layers: int = 2
    n_heads: int = 4
    window: int | None = None
    max_positions: int | None = 129
    # training and running it
    input_mask: float = 0.0
    init_std: float | None = None
    chunk_tokens: int = 16_384
    backend: str = "auto"


class ByteConceptDecoder(nn.Module):
    def __init__(self, config: ByteConceptDecoderConfig, concept_dim: int):
        super().__init__()
        self.config = c = config
        if not 0.0 <= c.input_mask < 1.0:
            raise ValueError(f"input_mask must be in [0, 1), got {c.input_mask}")
        self.to_slots = nn.Linear(concept_dim, c.slots * c.dim, bias=False)
        self.slot_norm = nn.RMSNorm(c.dim)
        self.to_inputs = nn.Linear(concept_dim, c.dim, bias=False) if c.concept_to_inputs else None
        self.local = LocalDecoder(LocalDecoderConfig(c.dim, c.n_layers, c.n_heads, slot_dim=c.dim, window=c.window,
                                                     max_positions=c.max_positions, segment_bytes=c.segment_bytes,
                                                     init_std=c.init_std, backend=c.backend))
        for m in (self.to_slots, self.to_inputs):
            if m is not None:
                init_weights(m, c.init_std)

    def slots(self, concepts: torch.Tensor) -> torch.Tensor:
        """(U, d) -> (U, K, D)."""
        return self.slot_norm(rearrange(self.to_slots(concepts), "u (k d) -> u k d", k=self.config.slots))

    def input_bias(self, concepts: torch.Tensor) -> torch.Tensor | None:
        """(U, d) -> (U, D) added to every byte embedding, or None."""
        return None if self.to_inputs is None else self.to_inputs(concepts)

    def forward(self, ids: torch.Tensor, lengths: torch.Tensor, concepts: torch.Tensor) -> DecoderScores:
        """Teacher-forced scores of each unit given its concept.

        ids (U, L), lengths (U,), concepts (U, d) -> DecoderScores of (U,) tensors.
        """
        if len(ids) == 0:
            return DecoderScores(*concepts.new_zeros(3, 0))
        return DecoderScores(*by_length(self._score, ids, lengths, self.config.chunk_tokens, concepts).unbind(1))

    def _score(self, ids: torch.Tensor, concepts: torch.Tensor, lengths: torch.Tensor) -> torch.Tensor:
        """(U, 3): the columns of DecoderScores, stacked so that by_length can reorder the rows."""
        inputs = F.pad(ids, (1, 0), value=BOS)  # (U, L+1): [BOS, b_0 .. b_{L-1}]
        targets = F.pad(ids, (0, 1), value=PAD).scatter(1, lengths[:, None], EOS)  # (U, L+1): [b_0 .. EOS]
        if self.training and self.config.input_mask > 0:
            # Hidden bytes read as PAD, an id the decoder never otherwise gets as input; BOS stays.
            hidden = torch.rand(inputs.shape, device=inputs.device) < self.config.input_mask
            inputs = inputs.masked_fill(hidden & (inputs != BOS), PAD)
        logits = self.local(inputs, self.slots(concepts), input_bias=self.input_bias(concepts))  # (U, L+1, V)
        nats = F.cross_entropy(rearrange(logits, "u l v -> (u l) v").float(), targets.flatten(), ignore_index=PAD,
                               reduction="none")
        # Greedy decoding may emit bytes and EOS only (EOS wins ties, as argmax picks the lowest id).
        with torch.no_grad():
            best_byte = logits[..., OFFSET:].max(-1)
            greedy = torch.where(logits[..., EOS] >= best_byte.values, EOS, best_byte.indices + OFFSET)
            right = (greedy == targets) & (targets != PAD)
            exact = right.sum(1) == lengths + 1
        return torch.stack([rearrange(nats, "(u l) -> u l", u=len(ids)).sum(1), exact.float(), right.sum(1).float()],
                           dim=1)

    @torch.no_grad()
    def generate(self, concepts: torch.Tensor, max_bytes: int = 256, temperature: float = 0.0,
                 top_k: int | None = None, generator: torch.Generator | None = None,
                 batch_size: int = 64) -> list[bytes]:
        """Concepts (U, d) -> U units, decoded from BOS until EOS or ``max_bytes``."""
        units = []
        for start in range(0, len(concepts), batch_size):
            chunk = concepts[start : start + batch_size]
            ids = self.local.generate(self.slots(chunk), max_bytes=max_bytes, temperature=temperature, top_k=top_k,
                                      generator=generator, input_bias=self.input_bias(chunk))
            units += [decode(row) for row in ids]
        return units
