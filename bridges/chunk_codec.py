"""The chunk codec (CALM-style): a unit's bytes -> one concept of chunk latents, decoded in one parallel pass.

Encoder, per unit of at most ``max_bytes`` bytes (the segmenter's cap):
    ids (U, L) -> padded to (U, C·S) with PAD, C = max_bytes / S chunks of S = chunk_bytes bytes
    -> byte embeddings (+ hash n-grams, + a position-in-chunk embedding) (U, C, S, E)
    -> flattened per chunk (U, C, S·E) -> MLP shared by every chunk -> latent (U, C, k), layer-normed
    -> the concept: the C latents concatenated (U, C·k = concept_dim)
Decoder, the mirror: latent (U, C, k) -> MLP -> (U, C, S, E) (+ position) -> logits over every id at
every byte position (U, C·S, V); the unit is the argmax ids up to the first non-byte id (EOS ends it;
the end-of-document unit [EOD] decodes to no bytes).

Why this and not an autoregressive byte decoder: a parallel decoder cannot fall back on being a language
model, so every bit of the unit must pass through the concept; flattening keeps each byte's position where
attention pooling averages positions away (benchmarks/RESULTS.md has the ladder that chose it). Each latent
is layer-normed without affine parameters: every concept has the same scale (RMS 1 per coordinate), so
the training noise σ of ``LossConfig.concept_noise`` and a core's noise schedule mean the same thing for
every unit.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Literal

import torch
import torch.nn.functional as F
from einops import rearrange
from torch import nn

from blt.hashing import HashNgramEmbedding
from blt.ids import EOD, EOS, OFFSET, PAD, VOCAB_SIZE, decode, pad_batch
from bridges.byte_decoder import DecoderScores
from primitives.sampling import sample_next


@dataclass(frozen=True)
class ChunkCodecConfig:
    """The chunk codec: bytes cut into fixed chunks, an MLP per chunk, a parallel decoder. The defaults are the
    shipped codec's shape (tools/ship_codec.py: 16 chunks of 8 bytes, one hidden layer, 1024-d concepts).

    Args:
        kind: names this codec in a config.
        max_bytes: the longest unit it encodes (the ByteLCM's segmenter cap must not exceed it).
        chunk_bytes: S, bytes per chunk; max_bytes / S chunks, each ``concept_dim / chunks`` floats of the concept.
        byte_dim: E, the width of each byte's embedding (and of each byte's state in the decoder).
        hidden: the MLPs' hidden width.
        layers: hidden layers in each MLP (encoder and decoder alike).
        ngram_sizes: the n of BLT's hash n-gram embeddings added to each byte's ([]: none).
        hash_table_size: rows of each n-gram hash table.
        input_mask: training only: this share of input bytes reads as PAD (CALM's input masking).
        batch_size: units per call when encoding or decoding lists of units.
    """

    kind: Literal["chunk"] = "chunk"
    max_bytes: int = 128
    chunk_bytes: int = 8
    byte_dim: int = 32
    hidden: int = 512
    layers: int = 1
    ngram_sizes: tuple[int, ...] = field(default_factory=tuple)
    hash_table_size: int = 2**14
    input_mask: float = 0.0
    batch_size: int = 256

    def __post_init__(self):
        if self.max_bytes < 1 or self.chunk_bytes < 1 or self.max_bytes % self.chunk_bytes:
            raise ValueError(f"max_bytes ({self.max_bytes}) must be a positive multiple of chunk_bytes "
                             f"({self.chunk_bytes})")
        if self.layers < 1 or self.hidden < 1 or self.byte_dim < 1:
            raise ValueError(f"need layers, hidden, byte_dim >= 1, got {self.layers}, {self.hidden}, {self.byte_dim}")
        if not 0.0 <= self.input_mask < 1.0:
            raise ValueError(f"input_mask must be in [0, 1), got {self.input_mask}")
        object.__setattr__(self, "ngram_sizes", tuple(self.ngram_sizes))  # a YAML list

    @property
    def chunks(self) -> int:
        return self.max_bytes // self.chunk_bytes

    def latent_dim(self, concept_dim: int) -> int:
        if concept_dim % self.chunks:
            raise ValueError(f"concept_dim {concept_dim} is not a multiple of the {self.chunks} chunks "
                             f"(max_bytes {self.max_bytes} / chunk_bytes {self.chunk_bytes})")
        return concept_dim // self.chunks


def mlp(widths: Sequence[int]) -> nn.Sequential:
    """Linear layers of these widths with a GELU between each pair (none after the last)."""
    layers: list[nn.Module] = []
    for i, (a, b) in enumerate(zip(widths[:-1], widths[1:], strict=True)):
        layers += [nn.Linear(a, b)] + ([nn.GELU()] if i < len(widths) - 2 else [])
    return nn.Sequential(*layers)


def padded_ids(ids: torch.Tensor, width: int) -> torch.Tensor:
    """Unit rows (U, L <= width) right-padded with PAD to (U, width)."""
    if ids.shape[1] > width:
        raise ValueError(f"a unit of {ids.shape[1]} ids exceeds the chunk codec's {width} bytes")
    return F.pad(ids, (0, width - ids.shape[1]), value=PAD)


class ChunkEncoder(nn.Module):
    def __init__(self, config: ChunkCodecConfig, concept_dim: int):
        super().__init__()
        self.config = c = config
        self.latent_dim = c.latent_dim(concept_dim)
        self.embed = nn.Embedding(VOCAB_SIZE, c.byte_dim)
        self.ngrams = HashNgramEmbedding(c.byte_dim, c.ngram_sizes, c.hash_table_size) if c.ngram_sizes else None
        self.position = nn.Parameter(torch.randn(c.chunk_bytes, c.byte_dim))  # unit scale, as the byte embeddings
        self.mlp = mlp([c.chunk_bytes * c.byte_dim] + [c.hidden] * c.layers + [self.latent_dim])
        self.norm = nn.LayerNorm(self.latent_dim, elementwise_affine=False)

    def forward(self, ids: torch.Tensor) -> torch.Tensor:
        """Unit rows (U, L <= max_bytes), PAD after each unit -> concepts (U, d)."""
        ids = padded_ids(ids, self.config.max_bytes)  # (U, C·S)
        if self.training and self.config.input_mask > 0:
            ids = ids.masked_fill(torch.rand(ids.shape, device=ids.device) < self.config.input_mask, PAD)
        x = self.embed(ids)
        if self.ngrams is not None:
            x = x + self.ngrams(ids)
        x = rearrange(x, "u (c s) e -> u c s e", s=self.config.chunk_bytes) + self.position
        latents = self.norm(self.mlp(rearrange(x, "u c s e -> u c (s e)")))  # (U, C, k)
        return rearrange(latents, "u c k -> u (c k)")


class ChunkDecoder(nn.Module):
    def __init__(self, config: ChunkCodecConfig, concept_dim: int):
        super().__init__()
        self.config = c = config
        self.latent_dim = c.latent_dim(concept_dim)
        self.mlp = mlp([self.latent_dim] + [c.hidden] * c.layers + [c.chunk_bytes * c.byte_dim])
        self.position = nn.Parameter(torch.randn(c.chunk_bytes, c.byte_dim))
        self.head = nn.Sequential(nn.LayerNorm(c.byte_dim), nn.Linear(c.byte_dim, VOCAB_SIZE))

    def chunk_logits(self, latents: torch.Tensor) -> torch.Tensor:
        """Chunk latents (N, k) -> logits over ids at each of the chunk's byte positions (N, S, V)."""
        x = rearrange(self.mlp(latents), "n (s e) -> n s e", s=self.config.chunk_bytes) + self.position
        return self.head(x)

    def logits(self, concepts: torch.Tensor) -> torch.Tensor:
        """Concepts (U, d) -> logits over ids at every byte position (U, max_bytes, V)."""
        latents = rearrange(concepts, "u (c k) -> (u c) k", k=self.latent_dim)
        return rearrange(self.chunk_logits(latents), "(u c) s v -> u (c s) v", u=len(concepts))

    def forward(self, ids: torch.Tensor, lengths: torch.Tensor, concepts: torch.Tensor) -> DecoderScores:
        """Scores of each unit given its concept: ids (U, L), lengths (U,), concepts (U, d) -> DecoderScores.

        The targets are the unit's ids and then EOS; positions after that EOS are not scored (decoding
        stops at the first non-byte id, so they cannot change the unit)."""
        width = self.config.max_bytes
        positions = torch.arange(width, device=ids.device)
        targets = torch.where(positions == lengths[:, None], EOS, padded_ids(ids, width))  # (U, T); no EOS when L = T
        logits = self.logits(concepts)  # (U, T, V)
        scored = positions <= lengths[:, None]  # bytes and the end; all T when L = T
        nats = F.cross_entropy(rearrange(logits, "u t v -> u v t").float(), targets, reduction="none")
        with torch.no_grad():
            right = (logits.argmax(-1) == targets) & scored
            correct = right.sum(1)
        return DecoderScores((nats * scored).sum(1), (correct == scored.sum(1)).float(), correct.float())

    @torch.no_grad()
    def generate(self, concepts: torch.Tensor, temperature: float = 0.0, top_k: int | None = None,
                 generator: torch.Generator | None = None) -> list[bytes]:
        """Concepts (U, d) -> U units, cut at their first non-byte id. Chunks are drawn in order, each for the
        units that have not ended yet (every byte of a chunk at once): a unit costs the chunks it fills."""
        c = self.config
        latents = rearrange(concepts, "u (c k) -> u c k", k=self.latent_dim)
        ids = torch.full((len(concepts), c.chunks, c.chunk_bytes), PAD, dtype=torch.long, device=concepts.device)
        active = torch.arange(len(concepts), device=concepts.device)  # the units still open
        for chunk in range(c.chunks):
            logits = rearrange(self.chunk_logits(latents[active, chunk]), "a s v -> (a s) v")
            drawn = rearrange(sample_next(logits, temperature, top_k, generator), "(a s) -> a s", s=c.chunk_bytes)
            ids[active, chunk] = drawn
            active = active[(drawn >= OFFSET).all(1)]  # a unit ends in the chunk of its first non-byte id
            if len(active) == 0:
                break
        ids = rearrange(ids, "u c s -> u (c s)")
        ends = torch.where(ids < OFFSET, torch.arange(ids.shape[1], device=ids.device), ids.shape[1]).min(1).values
        return [decode(row[:end]) for row, end in zip(ids, ends.tolist(), strict=True)]


class ChunkConceptCodec(nn.Module):
    """The ConceptCodec of chunk latents: ``encode(units) -> (n, d)``, ``decode(concepts) -> units``."""

    entropy_model = None  # fixed chunks: no entropy patching

    def __init__(self, config: ChunkCodecConfig, concept_dim: int, max_unit_bytes: int | None = None):
        super().__init__()
        self.config = config
        self.encoder, self.decoder = ChunkEncoder(config, concept_dim), ChunkDecoder(config, concept_dim)
        self.concept_dim, self.max_unit_bytes = concept_dim, max_unit_bytes or config.max_bytes

    @property
    def device(self) -> torch.device:
        return self.encoder.embed.weight.device

    @property
    def ready(self) -> bool:
        return True  # nothing to calibrate

    def calibrate(self, ids: torch.Tensor, lengths: torch.Tensor,
                  modalities: torch.Tensor | None = None) -> list[torch.Tensor]:
        return []

    def concepts(self, ids: torch.Tensor, lengths: torch.Tensor,
                 modalities: torch.Tensor | None = None) -> torch.Tensor:
        """Training batches: unit rows (U, L), lengths (U,) -> (U, d), with the encoder's gradient. The rows are
        PAD past each length already (UnitBatch's collation), so ``lengths`` and ``modalities`` are not needed."""
        return self.encoder(ids)

    def scores(self, ids: torch.Tensor, lengths: torch.Tensor, concepts: torch.Tensor) -> DecoderScores:
        return self.decoder(ids, lengths, concepts)

    @torch.no_grad()
    def encode(self, units: Sequence[bytes], modality: str | Sequence[str] | None = None) -> torch.Tensor:
        """Units -> concepts (n, d); chunks read every modality the same way (``modality`` unused)."""
        if any(len(u) == 0 for u in units):
            raise ValueError("cannot encode an empty unit")
        if too_long := [len(u) for u in units if len(u) > self.config.max_bytes]:
            raise ValueError(f"a unit of {max(too_long)} bytes exceeds the chunk codec's {self.config.max_bytes}: "
                             "cut documents with a segmenter whose max_bytes is at most that")
        out = [self.encoder(pad_batch(list(units[i : i + self.config.batch_size]))[0].to(self.device))
               for i in range(0, len(units), self.config.batch_size)]
        return torch.cat(out) if out else torch.zeros(0, self.concept_dim, device=self.device)

    @torch.no_grad()
    def eod_concept(self) -> torch.Tensor:
        """(d,) the concept of the end-of-document unit, the one-id unit [EOD]."""
        return self.encoder(torch.full((1, 1), EOD, dtype=torch.long, device=self.device))[0]

    @torch.no_grad()
    def decode(self, concepts: torch.Tensor, temperature: float = 0.0, top_k: int | None = None,
               generator: torch.Generator | None = None, before: Sequence[bytes] | None = None) -> list[bytes]:
        """Concepts (n, d) -> n units, each at most ``max_unit_bytes`` bytes."""
        concepts, step = concepts.to(self.device), self.config.batch_size
        units = [u for i in range(0, len(concepts), step)
                 for u in self.decoder.generate(concepts[i : i + step], temperature, top_k, generator)]
        return [u[: self.max_unit_bytes] for u in units]
