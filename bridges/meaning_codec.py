"""The meaning codec: units -> meanings (the meaning encoder) and meanings -> units (the meaning decoder).

A concept has a meaning and a spelling (README, "The meaning space"): this codec is the meaning, the shipped chunk
codec (bridges/chunk_codec.py) the spelling. Both implement the one ConceptCodec protocol (bridges/codec.py). A
meaning is a unit vector; decoding one writes *a* sentence with that meaning, not the sentence it came from, so
exact round trips go through the spelling.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Literal

import torch
from torch import nn

from blt.ids import EOD, pad_batch
from blt.pretrained import load_shipped_entropy_model
from bridges.meaning_decoder import MeaningDecoder, MeaningDecoderConfig
from bridges.meaning_encoder import MeaningEncoder, MeaningEncoderConfig


@dataclass(frozen=True)
class MeaningCodecConfig:
    """Args:
        kind: names this codec in a config.
        encoder: the meaning encoder (bridges/meaning_encoder.py), or its dict.
        decoder: the meaning decoder (bridges/meaning_decoder.py), or its dict.
        batch_size: units per call when encoding or decoding lists of units.
        top_p: sampled decoding (temperature > 0) draws from this nucleus of each byte's distribution (None: all).
    """

    kind: Literal["meaning"] = "meaning"
    encoder: MeaningEncoderConfig | dict = field(default_factory=MeaningEncoderConfig)
    decoder: MeaningDecoderConfig | dict = field(default_factory=MeaningDecoderConfig)
    batch_size: int = 256
    top_p: float | None = 0.9

    def __post_init__(self):
        for name, cls in (("encoder", MeaningEncoderConfig), ("decoder", MeaningDecoderConfig)):
            value = getattr(self, name)
            if isinstance(value, dict):
                object.__setattr__(self, name, cls(**value))
        if self.encoder.max_bytes != self.decoder.max_bytes:
            raise ValueError(f"the encoder reads units of up to {self.encoder.max_bytes} bytes and the decoder writes "
                             f"{self.decoder.max_bytes}: make them equal")

    @property
    def max_bytes(self) -> int:
        return self.encoder.max_bytes


class MeaningCodec(nn.Module):
    """The ConceptCodec of meanings: ``encode(units) -> (n, meaning_dim)`` unit vectors, ``decode(meanings) ->
    units`` written by the conditional byte LM (greedy, or sampled with temperature / top-k / top-p)."""

    entropy_model = None  # the patcher's byte LM is the shipped one, frozen: nothing for ByteLCM to train

    def __init__(self, config: MeaningCodecConfig, concept_dim: int, max_unit_bytes: int | None = None):
        super().__init__()
        self.config = config
        byte_lm, thresholds = load_shipped_entropy_model()
        threshold = thresholds.pick("unit", "text") if config.encoder.patching == "entropy" else None
        self.encoder = MeaningEncoder(config.encoder, concept_dim, byte_lm, threshold)
        self.decoder = MeaningDecoder(config.decoder, concept_dim)
        self.concept_dim, self.max_unit_bytes = concept_dim, max_unit_bytes or config.max_bytes

    @property
    def device(self) -> torch.device:
        return self.encoder.embed.weight.device

    @property
    def ready(self) -> bool:
        return True  # nothing to calibrate: the patcher's threshold ships with the entropy model

    def calibrate(self, ids: torch.Tensor, lengths: torch.Tensor,
                  modalities: torch.Tensor | None = None) -> list[torch.Tensor]:
        return []

    def concepts(self, ids: torch.Tensor, lengths: torch.Tensor,
                 modalities: torch.Tensor | None = None) -> torch.Tensor:
        """Training batches: unit rows (U, L), lengths (U,) -> meanings (U, M), with the encoder's gradient."""
        return self.encoder(ids, lengths)

    def check_units(self, units: Sequence[bytes]) -> None:
        if any(len(u) == 0 for u in units):
            raise ValueError("cannot encode an empty unit")
        if too_long := [len(u) for u in units if len(u) > self.config.max_bytes]:
            raise ValueError(f"a unit of {max(too_long)} bytes exceeds the meaning codec's {self.config.max_bytes}: "
                             "cut documents with a segmenter whose max_bytes is at most that")

    @torch.no_grad()
    def encode(self, units: Sequence[bytes], modality: str | Sequence[str] | None = None) -> torch.Tensor:
        """Units -> meanings (n, M); every modality is read as bytes (``modality`` unused)."""
        self.check_units(units)
        step = self.config.batch_size
        out = [self.encoder(*(t.to(self.device) for t in pad_batch(list(units[i : i + step]))))
               for i in range(0, len(units), step)]
        return torch.cat(out) if out else torch.zeros(0, self.concept_dim, device=self.device)

    @torch.no_grad()
    def eod_concept(self) -> torch.Tensor:
        """(M,) the meaning of the end-of-document unit, the one-id unit [EOD]."""
        ids = torch.full((1, 1), EOD, dtype=torch.long, device=self.device)
        return self.encoder(ids, torch.ones(1, dtype=torch.long, device=self.device))[0]

    @torch.no_grad()
    def decode(self, concepts: torch.Tensor, temperature: float = 0.0, top_k: int | None = None,
               generator: torch.Generator | None = None) -> list[bytes]:
        """Meanings (n, M) -> n units, each at most ``max_unit_bytes`` bytes (sampled: from the config's top_p)."""
        concepts, step = concepts.to(self.device), self.config.batch_size
        return [u for i in range(0, len(concepts), step)
                for u in self.decoder.generate(concepts[i : i + step], temperature, top_k, self.config.top_p,
                                               generator, self.max_unit_bytes)]
