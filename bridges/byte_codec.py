"""The byte concept codec: one concept per unit of bytes, and back, built from blt/ pieces.

Encoder, per unit (a sentence, or a span of non-text bytes):
    ids (U, L) -> entropy patches (Patcher over the EntropyModel's next-byte entropies)
    -> LocalEncoder: byte + hash n-gram embeddings, a transformer inside the unit, cross-attention
       pooling of each patch's bytes -> patch vectors (U, P, D)
    -> concept pooler: a small transformer over the unit's patches, then K learned queries that
       attend to them, concatenated -> linear -> batch-normalised concept (U, d)
Decoder (bridges.byte_decoder):
    concept (U, d) -> K latent slots (U, K, D) -> LocalDecoder (causal bytes, cross-attention to the
    slots) -> next-byte logits; greedy or sampled generation with a KV cache until EOS.

Concepts are batch-normalised without affine parameters (running statistics at inference): every
coordinate has mean 0 and variance 1 over the units, the scale a diffusion core expects without a
separate normaliser. It is also what keeps the autoencoder from collapsing: with a per-vector
normalisation instead, the encoder soon put one shared direction into every concept (it helps the
decoder's byte statistics) and the unit-specific part shrank to nothing (all concepts within 0.001
of each other after 100 steps on en); a batch norm cannot represent a shared direction at all.
Units of very different lengths are processed in chunks of similar length (``length_chunks``), so
almost no compute goes to padding; the batch norm sees the whole batch, never a chunk.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Literal

import torch
import torch.nn.functional as F
from einops import rearrange
from torch import nn

from blt.encoder import LocalEncoder, LocalEncoderConfig
from blt.entropy import EntropyModel, EntropyModelConfig
from blt.ids import BOS, EOD, EOS, PAD, pad_batch
from blt.patching import Patcher, Patches
from blt.pretrained import ModalityThresholds
from bridges.byte_decoder import ByteConceptDecoder, ByteConceptDecoderConfig, DecoderScores
from bridges.length_chunks import by_length
from bridges.modality import MODALITIES, modality_index, unit_modalities
from primitives.attention import AttentionMask
from primitives.transformer import Attention, Block, init_weights

CALIBRATION_BYTES = 1024  # a modality's bytes in a calibration batch before it gets a threshold of its own


@dataclass
class ByteConceptEncoderConfig:
    """A unit's bytes -> its concept.

    Args:
        dim: the local byte transformer's width.
        n_layers: its layers.
        n_heads: its attention heads.
        queries_per_patch: cross-attention queries that pool each patch's bytes.
        max_positions: learned absolute byte positions in the local encoder (None: RoPE only).
        pooler_dim: the width of the transformer over the unit's patches.
        pooler_layers: its layers (0: the queries pool the patch vectors as they are).
        pool_queries: K learned queries pool the patches; their K * pooler_dim outputs make the concept.
        segment_bytes: query k pools only the patches that start in bytes [k S, (k+1) S), S = segment_bytes, so
            that the decoder (with the same segment_bytes) finds each stretch of the unit in a known slot. None:
            every query sees all.
        patching: a blt.patching mode: entropy | monotonic | both | space | static.
        target_patch_size: entropy modes: the threshold is calibrated to this mean patch size.
        patch_size: static mode: bytes per patch.
        max_patch_length: the longest patch.
        entropy_dim: the width of the EntropyModel entropy modes patch with (a pretrained one brings its own).
        entropy_layers: its layers.
        entropy_heads: its attention heads.
        entropy_context: the bytes of context it is trained on.
        ngram_sizes: the n of the hash n-gram embeddings added to each byte's ([]: none).
        hash_table_size: rows of each n-gram hash table.
        init_std: the initialisation of every layer but the entropy model's: None keeps torch's own (unit-scale
            embeddings, kaiming-uniform linears), 0.02 is GPT-2's (primitives.transformer.init_weights), which learned
            slower here.
        chunk_tokens: padded bytes per length chunk.
        backend: the attention backend (primitives.attention).
    """

    # bytes -> patch vectors (blt.encoder.LocalEncoder); the defaults are configs/codec-tiny.yaml's
    dim: int = 128
    n_layers: int = 2
    n_heads: int = 4
    queries_per_patch: int = 2
    max_positions: int | None = 128
    # patch vectors -> the concept
    pooler_dim: int = 128
    pooler_layers: int = 0
    pool_queries: int = 9
    segment_bytes: int | None = 16
    # where patches end
    patching: str = "static"
    target_patch_size: float = 4.5
    patch_size: int = 1
    max_patch_length: int = 16
    # the entropy model of the entropy modes
    entropy_dim: int = 64
    entropy_layers: int = 2
    entropy_heads: int = 4
    entropy_context: int = 256
    # hash n-gram embeddings
    ngram_sizes: tuple[int, ...] = ()
    hash_table_size: int = 2**14
    # how it is built and run
    init_std: float | None = None
    chunk_tokens: int = 16_384
    backend: str = "auto"


class ByteConceptEncoder(nn.Module):
    def __init__(self, config: ByteConceptEncoderConfig, concept_dim: int):
        super().__init__()
        self.config = c = config
        self.patcher = Patcher(c.patching, patch_size=c.patch_size, max_patch_length=c.max_patch_length)
        self.entropy_model = None
        if self.patcher.needs_entropies:
            self.entropy_model = EntropyModel(EntropyModelConfig(c.entropy_dim, c.entropy_layers, c.entropy_heads,
                                                                 c.entropy_context, backend=c.backend))
        # One per bridges.modality.MODALITIES, so that audio or image bytes get patches of their own size. NaN
        # until calibrated on real units (ByteLCM.prepare, when the entropy stage ends) or set from a
        # pretrained entropy model's thresholds (set_thresholds).
        self.register_buffer("entropy_thresholds", torch.full((len(MODALITIES),), float("nan")))
        self.local = LocalEncoder(LocalEncoderConfig(
            c.dim, c.n_layers, c.n_heads, out_dim=c.pooler_dim, queries_per_patch=c.queries_per_patch,
            ngram_sizes=tuple(c.ngram_sizes), hash_table_size=c.hash_table_size, max_positions=c.max_positions,
            init_std=c.init_std, backend=c.backend))
        self.patch_norm = nn.RMSNorm(c.pooler_dim)
        self.pooler = nn.ModuleList(Block(c.pooler_dim, c.n_heads, c.backend) for _ in range(c.pooler_layers))
        self.pool_norm = nn.RMSNorm(c.pooler_dim)
        self.pool = Attention(c.pooler_dim, c.n_heads, c.backend, context_dim=c.pooler_dim)
        self.pool_query = nn.Parameter(torch.zeros(c.pool_queries, c.pooler_dim))
        self.out_norm = nn.RMSNorm(c.pooler_dim)  # raw concepts well above the batch norm's eps
        self.out = nn.Linear(c.pool_queries * c.pooler_dim, concept_dim, bias=False)
        self.concept_norm = nn.BatchNorm1d(concept_dim, affine=False)
        for m in (self.pooler, self.pool, self.out):
            init_weights(m, c.init_std)
        nn.init.normal_(self.pool_query, std=0.02)

    @property
    def needs_calibration(self) -> bool:
        return self.entropy_model is not None and bool(self.entropy_thresholds.isnan().any())

    @torch.no_grad()
    def calibrate(self, ids: torch.Tensor, lengths: torch.Tensor, modalities: torch.Tensor | None = None) -> None:
        """Set the entropy thresholds that give ``target_patch_size`` bytes per patch on these units: each
        modality with at least CALIBRATION_BYTES bytes here gets its own, the others the whole sample's."""
        if self.entropy_model is None:
            raise ValueError(f"{self.config.patching!r} patching has no threshold to calibrate")
        modalities = unit_modalities(ids, lengths) if modalities is None else modalities
        entropies = self.entropy_model.entropies(ids, lengths)
        target = self.config.target_patch_size
        self.entropy_thresholds.fill_(self.patcher.calibrate(ids, lengths, entropies, target, clamp=True))
        for m in modalities.unique().tolist():
            rows = modalities == m
            if int(lengths[rows].sum()) >= CALIBRATION_BYTES:
                self.entropy_thresholds[m] = self.patcher.calibrate(ids[rows], lengths[rows], entropies[rows], target,
                                                                    clamp=True)

    @torch.no_grad()
    def set_thresholds(self, thresholds: ModalityThresholds) -> None:
        """Take a pretrained entropy model's per-modality unit thresholds (no calibration needed)."""
        self.entropy_thresholds.copy_(torch.tensor([thresholds.pick("unit", m) for m in MODALITIES]))

    def patches(self, ids: torch.Tensor, lengths: torch.Tensor, modalities: torch.Tensor | None = None) -> Patches:
        """Patches of units (U, L); ``modalities`` (U,) indexes MODALITIES (None: each unit sniffed)."""
        if self.entropy_model is None:
            return self.patcher(ids, lengths)
        if self.needs_calibration:
            raise RuntimeError("the entropy threshold is not calibrated yet: call calibrate() on sample units")
        modalities = unit_modalities(ids, lengths) if modalities is None else modalities
        entropies = self.entropy_model.entropies(ids, lengths)
        return self.patcher(ids, lengths, entropies, self.entropy_thresholds[modalities][:, None])

    def forward(self, ids: torch.Tensor, lengths: torch.Tensor, running_stats: bool = False,
                modalities: torch.Tensor | None = None) -> torch.Tensor:
        """Units as byte ids (U, L), right-padded, with lengths (U,) >= 1 -> concepts (U, d). ``modalities``
        (U,) indexes bridges.modality.MODALITIES and picks each unit's entropy threshold (None: each unit
        is sniffed on its own; a document's later WAV chunks then read as ``binary``).

        In training mode the concepts are normalised with the batch's statistics (updating the running
        ones) unless ``running_stats``; inference (``ByteConceptCodec.encode``) always uses the running ones.
        """
        if ids.shape[0] == 0:
            return ids.new_zeros(0, self.out.out_features, dtype=self.out.weight.dtype)
        if bool((lengths < 1).any()):
            raise ValueError("every unit needs at least one byte")
        if self.entropy_model is not None and modalities is None:
            modalities = unit_modalities(ids, lengths)
        if modalities is None:  # patches do not depend on it
            modalities = torch.zeros_like(lengths)
        raw = by_length(self._encode, ids, lengths, self.config.chunk_tokens, modalities)  # (U, d)
        norm = self.concept_norm
        # One unit has no batch statistics: it is normalised with the running ones, as at inference.
        if self.training and not running_stats and len(raw) > 1:
            return norm(raw)  # through the module, so that Lightning's sync_batchnorm can swap it for SyncBatchNorm
        return F.batch_norm(raw, norm.running_mean, norm.running_var, training=False, eps=norm.eps)

    def _encode(self, ids: torch.Tensor, modalities: torch.Tensor, lengths: torch.Tensor) -> torch.Tensor:
        patches = self.patches(ids, lengths, modalities)
        x, patch_mask = self.local(ids, patches.ids)  # (U, P, D), (U, P)
        x = self.patch_norm(x)  # O(1) patch vectors: the pooler's residual stream must not start near zero
        groups = torch.where(patch_mask, 0, -1)  # a unit's patches see each other, never padding
        positions = torch.arange(x.shape[1], device=ids.device).expand(len(x), -1)
        for block in self.pooler:
            x = block(x, AttentionMask(groups, groups), positions)
        pooled = self.pool_patches(x, patches, patch_mask)  # (U, K, D)
        return self.out(rearrange(self.out_norm(pooled), "u k d -> u (k d)"))  # (U, d) before normalisation

    def pool_patches(self, x: torch.Tensor, patches: Patches, patch_mask: torch.Tensor) -> torch.Tensor:
        """Patch vectors (U, P, D) -> the K pooling queries' outputs (U, K, D)."""
        # No residual from the queries: a learned constant there soon outweighs the content and every
        # unit gets nearly the same concept.
        query = self.pool_query.expand(len(x), -1, -1)  # (U, K, D)
        groups = torch.where(patch_mask, 0, -1)
        query_groups = torch.zeros_like(groups[:, :1]).expand(-1, query.shape[1])
        if self.config.segment_bytes:
            first_byte = patches.lengths.cumsum(1) - patches.lengths  # (U, P) where each patch starts
            segment = (first_byte // self.config.segment_bytes).clamp(max=query.shape[1] - 1)
            groups = torch.where(patch_mask, segment, -1)  # an empty segment's query sees nothing: zeros
            query_groups = torch.arange(query.shape[1], device=x.device).expand(len(x), -1)
        return self.pool(query, AttentionMask(query_groups, groups), context=self.pool_norm(x))

    def entropy_loss(self, ids: torch.Tensor, lengths: torch.Tensor) -> torch.Tensor:
        """Next-byte cross-entropy (nats) of the entropy model on [BOS] unit [EOS] rows."""
        if self.entropy_model is None:
            raise ValueError(f"{self.config.patching!r} patching has no entropy model to train")
        rows = F.pad(ids, (1, 1), value=PAD)
        rows[:, 0] = BOS
        rows.scatter_(1, (lengths + 1)[:, None], EOS)
        return self.entropy_model.loss(rows)


@dataclass(frozen=True)
class ByteCodecConfig:
    """The byte codec, trained with the rest of the model; its encoder and decoder configs are the ByteLCM's.

    Args:
        kind: names this codec in a config.
    """

    kind: Literal["byte"] = "byte"


class ByteConceptCodec(nn.Module):
    """The ConceptCodec over bytes: ``encode(units) -> (n, d)``, ``decode(concepts) -> units``."""

    def __init__(self, encoder: ByteConceptEncoderConfig, decoder: ByteConceptDecoderConfig, concept_dim: int,
                 max_unit_bytes: int = 256):
        super().__init__()
        if encoder.segment_bytes != decoder.segment_bytes or (
                encoder.segment_bytes and encoder.pool_queries != decoder.slots):
            raise ValueError("segment routing needs the same segment_bytes in encoder and decoder and as many "
                             f"encoder pool_queries as decoder slots, got segment_bytes {encoder.segment_bytes} / "
                             f"{decoder.segment_bytes}, pool_queries {encoder.pool_queries}, slots {decoder.slots}")
        self.encoder = ByteConceptEncoder(encoder, concept_dim)
        self.decoder = ByteConceptDecoder(decoder, concept_dim)
        self.concept_dim, self.max_unit_bytes = concept_dim, max_unit_bytes

    @property
    def device(self) -> torch.device:
        return self.encoder.out.weight.device

    @property
    def entropy_model(self) -> EntropyModel | None:
        return self.encoder.entropy_model

    @property
    def ready(self) -> bool:
        """False until the entropy threshold is calibrated (entropy patching only)."""
        return not self.encoder.needs_calibration

    def concepts(self, ids: torch.Tensor, lengths: torch.Tensor,
                 modalities: torch.Tensor | None = None) -> torch.Tensor:
        """Training batches: unit rows (U, L), lengths (U,) -> (U, d), with the encoder's gradient."""
        return self.encoder(ids, lengths, modalities=modalities)

    def scores(self, ids: torch.Tensor, lengths: torch.Tensor, concepts: torch.Tensor) -> DecoderScores:
        return self.decoder(ids, lengths, concepts)

    def calibrate(self, ids: torch.Tensor, lengths: torch.Tensor,
                  modalities: torch.Tensor | None = None) -> list[torch.Tensor]:
        """Set the entropy thresholds on a training batch's units (when the entropy stage ends); returns the
        buffers it set."""
        self.encoder.calibrate(ids, lengths, modalities)
        return [self.encoder.entropy_thresholds]

    @torch.no_grad()
    def encode(self, units: Sequence[bytes], modality: str | Sequence[str] | None = None) -> torch.Tensor:
        """Units -> concepts (n, d); ``modality`` is their document's, or one per unit (None: each unit sniffed
        on its own)."""
        if any(len(u) == 0 for u in units):
            raise ValueError("cannot encode an empty unit")
        ids, lengths = pad_batch(list(units))
        per_unit = [modality] * len(units) if isinstance(modality, str) else modality
        modalities = None if per_unit is None else torch.tensor([modality_index(m) for m in per_unit])
        return self.encoder(ids.to(self.device), lengths.to(self.device), running_stats=True,
                            modalities=None if modalities is None else modalities.to(self.device))

    @torch.no_grad()
    def eod_concept(self) -> torch.Tensor:
        """(d,) the concept of the end-of-document unit, the one-id unit [EOD]."""
        ids = torch.full((1, 1), EOD, dtype=torch.long, device=self.device)
        return self.encoder(ids, torch.ones(1, dtype=torch.long, device=self.device), running_stats=True)[0]

    def decode(self, concepts: torch.Tensor, temperature: float = 0.0, top_k: int | None = None,
               generator: torch.Generator | None = None, before: Sequence[bytes] | None = None) -> list[bytes]:
        return self.decoder.generate(concepts.to(self.device), self.max_unit_bytes, temperature, top_k, generator)
