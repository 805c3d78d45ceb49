"""The meaning codec: units -> meanings (the meaning encoder) and meanings -> units (the meaning decoder).

A concept has a meaning and a spelling (README, "The meaning space"): this codec is the meaning, the shipped chunk
codec (bridges/chunk_codec.py) the spelling. Both implement the one ConceptCodec protocol (bridges/codec.py).
Decoding writes *a* sentence with the meaning, not the sentence it came from: exact round trips go through the
spelling.

A meaning is a unit vector (``embed``); the concept the core reads is that vector scaled per coordinate by a robust
normaliser fitted on training units (``fit_normalizer``, as the LCM scales SONAR's vectors): unit meanings cluster
around a common direction, with coordinates of about 1/sqrt(M), where a diffusion core wants unit variance per
coordinate. ``meanings(concepts)`` maps concepts (or a core's predictions) back onto the unit sphere.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Literal

import torch
import torch.nn.functional as F
from torch import nn

from blt.ids import EOD, pad_batch
from blt.pretrained import load_shipped_entropy_model
from bridges.byte_decoder import DecoderScores
from bridges.meaning_decoder import MeaningDecoder, MeaningDecoderConfig
from bridges.meaning_encoder import MeaningEncoder, MeaningEncoderConfig
from concept_core.normalize import ConceptNormalizer


@dataclass(frozen=True)
class MeaningCodecConfig:
    """Args:
        kind: names this codec in a config.
        encoder: the meaning encoder (bridges/meaning_encoder.py), or its dict.
        decoder: the meaning decoder (bridges/meaning_decoder.py), or its dict.
        batch_size: units per call when encoding or decoding lists of units.
        top_p: sampled decoding (temperature > 0) draws from this nucleus of each byte's distribution (None: all).
        ignore_meaning: ``decode`` writes every unit from the zero meaning, so a decoder that reads context writes
            what the text before alone gives: the yardstick of what the meaning adds, never a default.
    """

    kind: Literal["meaning"] = "meaning"
    encoder: MeaningEncoderConfig | dict = field(default_factory=MeaningEncoderConfig)
    decoder: MeaningDecoderConfig | dict = field(default_factory=MeaningDecoderConfig)
    batch_size: int = 256
    top_p: float | None = 0.9
    ignore_meaning: bool = False

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
        self.normalizer = ConceptNormalizer(concept_dim, "robust")
        self.register_buffer("fitted", torch.tensor(False))  # saved with the weights: a shipped codec is ready
        self.concept_dim, self.max_unit_bytes = concept_dim, max_unit_bytes or config.max_bytes

    @property
    def device(self) -> torch.device:
        return self.encoder.embed.weight.device

    @property
    def ready(self) -> bool:
        return bool(self.fitted)

    @torch.no_grad()
    def fit_normalizer(self, units: Sequence[bytes]) -> None:
        """Fit the concept scaling on the meanings of a sample of units (at least two)."""
        self.normalizer.fit(self.embed(units))
        self.fitted.fill_(True)

    @torch.no_grad()
    def calibrate(self, ids: torch.Tensor, lengths: torch.Tensor,
                  modalities: torch.Tensor | None = None) -> list[torch.Tensor]:
        """Fit the scaling on a training batch's units (when no sample was fitted before); the buffers it set."""
        self.normalizer.fit(self.encoder(ids, lengths))
        self.fitted.fill_(True)
        return [self.normalizer.center, self.normalizer.scale, self.fitted]

    def concepts(self, ids: torch.Tensor, lengths: torch.Tensor,
                 modalities: torch.Tensor | None = None) -> torch.Tensor:
        """Training batches: unit rows (U, L), lengths (U,) -> concepts (U, M), with the encoder's gradient."""
        return self.normalizer.normalize(self.encoder(ids, lengths))

    def meanings(self, concepts: torch.Tensor) -> torch.Tensor:
        """Concepts (or a core's predictions) (n, M) -> unit meanings (n, M): unscaled, then normalised."""
        return F.normalize(self.normalizer.denormalize(concepts), dim=-1)

    def scores(self, ids: torch.Tensor, lengths: torch.Tensor, concepts: torch.Tensor) -> DecoderScores:
        return self.decoder(ids, lengths, self.meanings(concepts))

    def check_units(self, units: Sequence[bytes]) -> None:
        if any(len(u) == 0 for u in units):
            raise ValueError("cannot encode an empty unit")
        if too_long := [len(u) for u in units if len(u) > self.config.max_bytes]:
            raise ValueError(f"a unit of {max(too_long)} bytes exceeds the meaning codec's {self.config.max_bytes}: "
                             "cut documents with a segmenter whose max_bytes is at most that")

    @torch.no_grad()
    def embed(self, units: Sequence[bytes]) -> torch.Tensor:
        """Units -> unit meanings (n, M)."""
        self.check_units(units)
        step = self.config.batch_size
        out = [self.encoder(*(t.to(self.device) for t in pad_batch(list(units[i : i + step]))))
               for i in range(0, len(units), step)]
        return torch.cat(out) if out else torch.zeros(0, self.concept_dim, device=self.device)

    @torch.no_grad()
    def encode(self, units: Sequence[bytes], modality: str | Sequence[str] | None = None) -> torch.Tensor:
        """Units -> concepts (n, M), the scaled meanings; every modality is read as bytes (``modality`` unused)."""
        return self.normalizer.normalize(self.embed(units))

    @torch.no_grad()
    def eod_concept(self) -> torch.Tensor:
        """(M,) the concept of the end-of-document unit, the one-id unit [EOD]."""
        ids = torch.full((1, 1), EOD, dtype=torch.long, device=self.device)
        return self.normalizer.normalize(self.encoder(ids, torch.ones(1, dtype=torch.long, device=self.device)))[0]

    @torch.no_grad()
    def decode(self, concepts: torch.Tensor, temperature: float = 0.0, top_k: int | None = None,
               generator: torch.Generator | None = None, before: Sequence[bytes] | None = None) -> list[bytes]:
        """Concepts (n, M) -> n units written from their meanings, each at most ``max_unit_bytes`` bytes (sampled:
        from the config's top_p), each after its text ``before`` where the decoder reads ``context`` bytes."""
        meanings, step = self.meanings(concepts.to(self.device)), self.config.batch_size
        if self.config.ignore_meaning:
            meanings = torch.zeros_like(meanings)
        if before is not None and len(before) != len(meanings):
            raise ValueError(f"{len(before)} texts before {len(meanings)} units")
        return [u for i in range(0, len(meanings), step)
                for u in self.decoder.generate(meanings[i : i + step], temperature, top_k, self.config.top_p,
                                               generator, self.max_unit_bytes,
                                               None if before is None else before[i : i + step])]
