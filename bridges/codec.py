"""The ConceptCodec protocol: how units of bytes become concepts and back.

Every concept space the core can be trained on (the jointly trained byte codec, a frozen
sentence encoder, SONAR) implements it, so the LCM on top never knows which one it is fed.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Protocol, runtime_checkable

import torch


@runtime_checkable
class ConceptCodec(Protocol):
    dim: int  # d, the size of one concept
    max_unit_bytes: int  # the cap on a decoded unit
    entropy_model: torch.nn.Module | None  # the byte LM that patches (byte codec only)
    decoder: torch.nn.Module | None  # a trainable ByteConceptDecoder, None where the space brings its own

    @property
    def ready(self) -> bool:
        """False while a fitted part (entropy threshold, normaliser) waits for sample units."""

    def encode(self, units: Sequence[bytes], modality: str | None = None) -> torch.Tensor:
        """n units of one document -> concepts (n, d); ``modality`` is the document's (bridges.modality)."""

    def decode(self, concepts: torch.Tensor, temperature: float = 0.0, top_k: int | None = None,
               generator: torch.Generator | None = None) -> list[bytes]:
        """Concepts (n, d) -> n units."""

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


CODEC_KINDS = ("byte", "sentence_transformer", "sonar")


def build_codec(config: dict, encoder, decoder) -> torch.nn.Module:
    """The codec a ByteLCM config names: ``{"kind": "byte"}`` (the jointly trained byte codec, built from the
    ``encoder`` and ``decoder`` configs), ``{"kind": "sentence_transformer", "model": ...}`` (frozen, with a
    trained byte ``decoder``) or ``{"kind": "sonar", ...}`` (SONAR's frozen encoder and decoder); the other
    keys are the codec's own arguments."""
    if not isinstance(config, dict) or config.get("kind") not in CODEC_KINDS:
        raise ValueError(f"a codec config is a dict with 'kind' one of {CODEC_KINDS}, got {config!r}")
    fields = {k: v for k, v in config.items() if k != "kind"}
    try:
        if config["kind"] == "byte":
            from bridges.byte_codec import ByteConceptCodec

            return ByteConceptCodec(encoder, decoder, **fields)
        if config["kind"] == "sentence_transformer":
            from bridges.st_codec import SentenceTransformerCodec

            return SentenceTransformerCodec(decoder=decoder, **fields)
        from bridges.sonar_codec import SonarCodec

        return SonarCodec(**fields)
    except TypeError as e:  # an unknown field
        raise ValueError(f"bad {config['kind']!r} codec config {config!r}: {e}") from None
