"""The ConceptCodec protocol: how units of bytes become concepts and back.

Every concept space the core can be trained on (the jointly trained byte codec, a frozen
sentence encoder, SONAR) implements it, so the LCM on top never knows which one it is fed.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Protocol, runtime_checkable

import torch

from bridges.byte_codec import ByteCodecConfig, ByteConceptCodec, ByteConceptEncoderConfig
from bridges.byte_decoder import ByteConceptDecoderConfig, DecoderScores
from bridges.chunk_codec import ChunkCodecConfig, ChunkConceptCodec
from bridges.meaning_codec import MeaningCodec, MeaningCodecConfig
from bridges.sonar_codec import SonarCodec, SonarCodecConfig
from bridges.st_codec import SentenceTransformerCodec, SentenceTransformerCodecConfig


@runtime_checkable
class ConceptCodec(Protocol):
    concept_dim: int  # d, the size of one concept
    max_unit_bytes: int  # the cap on a decoded unit
    entropy_model: torch.nn.Module | None  # the byte LM that patches (byte codec only)
    decoder: torch.nn.Module | None  # a trainable ByteConceptDecoder, None where the space brings its own

    @property
    def ready(self) -> bool:
        """False while a fitted part (entropy threshold, normaliser) waits for sample units."""

    def encode(self, units: Sequence[bytes], modality: str | None = None) -> torch.Tensor:
        """n units of one document -> concepts (n, d); ``modality`` is the document's (bridges.modality)."""

    def decode(self, concepts: torch.Tensor, temperature: float = 0.0, top_k: int | None = None,
               generator: torch.Generator | None = None, before: Sequence[bytes] | None = None) -> list[bytes]:
        """Concepts (n, d) -> n units. ``before``: the text before each unit (None: none), read by a decoder that
        reads it (the meaning codec's, where its ``context`` > 0); the others write each unit from its concept."""

    def scores(self, ids: torch.Tensor, lengths: torch.Tensor, concepts: torch.Tensor) -> DecoderScores:
        """The decoder's teacher-forced scores of unit rows (U, L) given their concepts (U, d): what the training
        loss, validation and `blcm eval` read (only where ``decoder`` is not None)."""

    def eod_concept(self) -> torch.Tensor:
        """(d,) the concept that ends a document."""

    def concepts(self, ids: torch.Tensor, lengths: torch.Tensor,
                 modalities: torch.Tensor | None = None) -> torch.Tensor:
        """Training batches: unit id rows (U, L) with lengths (U,), EOD units among them, and each unit's
        document modality (U,) (an index into bridges.modality.MODALITIES) -> (U, d)."""

    def calibrate(self, ids: torch.Tensor, lengths: torch.Tensor,
                  modalities: torch.Tensor | None = None) -> list[torch.Tensor]:
        """Make the codec ready on a training batch (the entropy threshold, or a frozen space's normaliser);
        returns the buffers it set, for a distributed run to share rank 0's."""


CodecConfig = (ChunkCodecConfig | MeaningCodecConfig | ByteCodecConfig | SentenceTransformerCodecConfig
               | SonarCodecConfig)
CODECS = {config.kind: config for config in (ChunkCodecConfig, MeaningCodecConfig, ByteCodecConfig,
                                             SentenceTransformerCodecConfig, SonarCodecConfig)}
FIXED_WIDTH = (ChunkCodecConfig, MeaningCodecConfig)  # codecs with a longest unit they can encode


def unit_capacity(config: CodecConfig) -> int | None:
    """The longest unit (bytes) a codec of this config encodes, None when it takes any length: the one place the
    model and the data check a segmenter's cap against."""
    return config.max_bytes if isinstance(config, FIXED_WIDTH) else None


def codec_config(fields: dict) -> CodecConfig:
    """``{"kind": ..., **fields}`` -> that codec's config; an unknown kind or field is a clear error."""
    if not isinstance(fields, dict) or fields.get("kind") not in CODECS:
        raise ValueError(f"a codec config is a dict with 'kind' one of {tuple(CODECS)}, got {fields!r}")
    try:
        return CODECS[fields["kind"]](**fields)
    except TypeError as e:  # an unknown field
        raise ValueError(f"bad {fields['kind']!r} codec config {fields!r}: {e}") from None


def build_codec(config: CodecConfig | dict, encoder: ByteConceptEncoderConfig | None,
                decoder: ByteConceptDecoderConfig | None, concept_dim: int) -> torch.nn.Module:
    """The codec a ByteLCM config names: the chunk codec of ``concept_dim``-d concepts (the spelling); the meaning
    codec of ``concept_dim``-d meanings; the autoregressive byte codec, built from the ``encoder`` and ``decoder``
    configs; frozen sentence-transformers concepts with a trained byte ``decoder``; or SONAR's frozen encoder and
    decoder."""
    config = codec_config(config) if isinstance(config, dict) else config
    if isinstance(config, ChunkCodecConfig):
        return ChunkConceptCodec(config, concept_dim)
    if isinstance(config, MeaningCodecConfig):
        return MeaningCodec(config, concept_dim)
    if isinstance(config, ByteCodecConfig):
        return ByteConceptCodec(encoder, decoder, concept_dim)
    if isinstance(config, SentenceTransformerCodecConfig):
        return SentenceTransformerCodec(config, decoder=decoder)
    return SonarCodec(config)
