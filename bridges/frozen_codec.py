"""Concepts from a frozen, pretrained sentence encoder (MiniLM, SONAR), scaled for the diffusion core.

    unit bytes -> text (UTF-8, undecodable bytes replaced) -> frozen encoder -> raw vector (n, d)
    -> ConceptNormalizer (robust: median / IQR per dimension, fitted once on a sample of units)
    -> concept (n, d)

The LCM trains on normalised SONAR vectors the same way; the normaliser's buffers are the only
encoder-side state a ByteLCM export carries (the encoder's weights come from its own package).
The end of a document has no text, so its concept is the encoder's vector of a fixed sentence
(``eod_text``, "End of text." as in the LCM paper).

Subclasses give ``embed`` (and ``decode`` when the space has its own decoder); a codec whose
``decoder`` is a :class:`~bridges.byte_codec.ByteConceptDecoder` learns to decode the frozen space.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import nn

from blt.ids import EOD, decode
from bridges.byte_decoder import ByteConceptDecoder, DecoderScores
from concept_core.normalize import ConceptNormalizer

EOD_TEXT = "End of text."


class CodecUnavailable(RuntimeError):
    """The frozen encoder's package or weights are missing (the message says how to install them)."""


class FrozenConceptCodec(nn.Module):
    """The shared part of every frozen codec: normalisation, the EOD concept, training-time concepts.

    Args:
        dim: the frozen encoder's vector size.
        normalizer: a ConceptNormalizer method (robust | standard | identity).
        eod_text: the sentence whose concept marks the end of a document.
        max_unit_bytes: the cap on one decoded unit.
    """

    entropy_model = None  # frozen codecs do not patch bytes

    def __init__(self, concept_dim: int, normalizer: str = "robust", eod_text: str = EOD_TEXT,
                 max_unit_bytes: int = 256):
        super().__init__()
        if not eod_text:
            raise ValueError("eod_text must be a non-empty sentence")
        self.concept_dim, self.eod_text, self.max_unit_bytes = concept_dim, eod_text, max_unit_bytes
        self.decoder: ByteConceptDecoder | None = None  # a subclass that learns to decode its space sets one
        self.normalizer = ConceptNormalizer(concept_dim, normalizer)
        self.register_buffer("fitted", torch.tensor(False))  # saved with the model: an export is ready to encode

    @property
    def device(self) -> torch.device:
        return self.fitted.device

    @property
    def ready(self) -> bool:
        return bool(self.fitted)

    def embed(self, units: Sequence[bytes]) -> torch.Tensor:
        """n units -> the frozen encoder's raw vectors (n, dim), float32 on ``self.device``."""
        raise NotImplementedError

    @torch.no_grad()
    def fit_normalizer(self, units: Sequence[bytes]) -> None:
        """Fit the normaliser on the raw vectors of a sample of units (at least two)."""
        self.normalizer.fit(self.embed(units))
        self.fitted.fill_(True)

    @torch.no_grad()
    def encode(self, units: Sequence[bytes], modality: str | None = None) -> torch.Tensor:
        """Units -> concepts (n, d); a frozen space reads every modality the same way (``modality`` unused)."""
        if not self.ready:
            raise RuntimeError("the concept normaliser is not fitted: call fit_normalizer() on sample units first")
        if any(len(u) == 0 for u in units):
            raise ValueError("cannot encode an empty unit")
        if not units:
            return torch.zeros(0, self.concept_dim, device=self.device)
        return self.normalizer.normalize(self.embed(units))

    @torch.no_grad()
    def eod_concept(self) -> torch.Tensor:
        """(d,) the concept that ends a document."""
        return self.encode([self.eod_text.encode()])[0]

    @torch.no_grad()
    def concepts(self, ids: torch.Tensor, lengths: torch.Tensor,
                 modalities: torch.Tensor | None = None) -> torch.Tensor:
        """Training batches: unit rows (U, L) with lengths (U,), the EOD unit ``[EOD]`` among them -> (U, d)."""
        eod = ids[:, 0] == EOD
        out = torch.empty(len(ids), self.concept_dim, device=self.device)
        if eod.any():
            out[eod] = self.eod_concept()
        if units := text_units(ids, lengths):
            out[~eod] = self.encode(units)
        return out

    def calibrate(self, ids: torch.Tensor, lengths: torch.Tensor,
                  modalities: torch.Tensor | None = None) -> list[torch.Tensor]:
        """Fit the normaliser on a training batch's units (when no larger sample was given to fit_normalizer);
        returns the buffers it set."""
        self.fit_normalizer(text_units(ids, lengths))
        return [self.normalizer.center, self.normalizer.scale, self.fitted]

    def scores(self, ids: torch.Tensor, lengths: torch.Tensor, concepts: torch.Tensor) -> DecoderScores:
        return self.decoder(ids, lengths, concepts)

    def decode(self, concepts: torch.Tensor, temperature: float = 0.0, top_k: int | None = None,
               generator: torch.Generator | None = None, before: Sequence[bytes] | None = None) -> list[bytes]:
        """Concepts (n, d) -> n units, with the ByteConceptDecoder trained on this space."""
        if self.decoder is None:
            raise NotImplementedError(f"{type(self).__name__} has no byte decoder")
        return self.decoder.generate(concepts.to(self.device), self.max_unit_bytes, temperature, top_k, generator)


def text_units(ids: torch.Tensor, lengths: torch.Tensor) -> list[bytes]:
    """The bytes of the unit rows (U, L) that are not the end-of-document unit, in row order."""
    return [decode(ids[r, : lengths[r]]) for r in (ids[:, 0] != EOD).nonzero().flatten().tolist()]


def as_text(units: Sequence[bytes]) -> list[str]:
    """What a text encoder reads of each unit: its UTF-8, undecodable bytes replaced by U+FFFD."""
    return [bytes(u).decode("utf-8", errors="replace") for u in units]
