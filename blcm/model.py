"""ByteLCM: segmenter + byte concept codec + concept core, the whole model behind `blcm generate`.

    document bytes -> units (segmenter) -> concepts (ByteConceptEncoder) -> next concept (core)
    -> bytes of the next unit (ByteConceptDecoder) -> re-encoded and appended -> ... -> EOD

The end of a document is a unit of its own, the one-id unit [EOD], so it has a concept like any
sentence; generation stops when the predicted concept comes within ``eod_threshold`` cosine of it.
Each generated unit is decoded to bytes and then re-encoded, so the core's context always holds
concepts of real byte strings (not its own unprojected samples).
"""

from __future__ import annotations

import dataclasses
import os
from collections.abc import Iterator
from dataclasses import asdict, dataclass, field
from pathlib import Path

import torch
from torch import nn

from blt.export import load_export, save_export
from bridges.byte_codec import ByteConceptDecoderConfig, ByteConceptEncoderConfig
from bridges.codec import build_codec
from bridges.modality import sniff
from bridges.segment import build_segmenter
from concept_core.config import build_model
from concept_core.generate import StopRule, iter_steps
from concept_core.interface import Sampling

EXPORT_KIND = "ByteLCM"


def default_core() -> dict:
    return {"variant": "two_tower", "model_dim": 256, "context_layers": 2, "denoiser_layers": 2, "n_heads": 4}


@dataclass
class ByteLCMConfig:
    segmenter: dict = field(default_factory=lambda: {"kind": "sentence", "max_bytes": 256})
    # {"kind": "byte"} (the encoder below, trained jointly) | {"kind": "sentence_transformer", "model": ...}
    # (frozen; the decoder below learns its space) | {"kind": "sonar", ...}: see bridges.codec.build_codec
    codec: dict = field(default_factory=lambda: {"kind": "byte"})
    encoder: ByteConceptEncoderConfig = field(default_factory=ByteConceptEncoderConfig)
    decoder: ByteConceptDecoderConfig = field(default_factory=ByteConceptDecoderConfig)
    core: dict = field(default_factory=default_core)  # {"variant": ..., fields of that variant's config}; dim is set

    @classmethod
    def from_dict(cls, d: dict) -> ByteLCMConfig:
        known = {f.name for f in dataclasses.fields(cls)}
        if unknown := sorted(set(d) - known):
            raise ValueError(f"ByteLCMConfig has no field(s) {unknown}")
        return cls(segmenter=dict(d.get("segmenter", {"kind": "sentence", "max_bytes": 256})),
                   codec=dict(d.get("codec", {"kind": "byte"})),
                   encoder=ByteConceptEncoderConfig(**d.get("encoder", {})),
                   decoder=ByteConceptDecoderConfig(**d.get("decoder", {})),
                   core=dict(d.get("core", default_core())))


class ByteLCM(nn.Module):
    def __init__(self, config: ByteLCMConfig):
        super().__init__()
        self.config = config
        self.codec = build_codec(config.codec, config.encoder, config.decoder)
        self.core = build_model({**config.core, "dim": self.codec.dim})
        # An entropy segmenter cuts with the shipped entropy model, as `blcm prepare` cut the training data.
        self.segmenter = build_segmenter(config.segmenter)
        self.codec.max_unit_bytes = self.segmenter.max_bytes  # decoding never runs past the cap

    @property
    def device(self) -> torch.device:
        return self.codec.device

    def num_params(self) -> dict[str, int]:
        """Trained parameters per part (a frozen encoder's are not ours: 0)."""
        encoder = self.codec.encoder if self.config.codec["kind"] == "byte" else None
        parts = {"encoder": encoder, "decoder": self.codec.decoder, "core": self.core}
        return {name: sum(p.numel() for p in m.parameters()) if m is not None else 0 for name, m in parts.items()}

    def units(self, document: bytes) -> list[bytes]:
        return self.segmenter.split(document)

    @torch.no_grad()
    def encode(self, document: bytes) -> torch.Tensor:
        """A document -> its concepts (n, d), one per unit (no EOD)."""
        units = self.units(document)
        if not units:
            return torch.zeros(0, self.codec.dim, device=self.device)
        return self.codec.encode(units, sniff(document))

    def iter_generate(self, prompt: bytes, max_units: int = 16, sampling: Sampling | None = None,
                      seed: int | None = None, eod_threshold: float = 0.9, temperature: float = 0.0,
                      top_k: int | None = None) -> Iterator[bytes]:
        """The units that continue ``prompt``, one at a time, until EOD or ``max_units`` (an iterator; the
        arguments are checked here, before the first unit is asked for)."""
        if not prompt:
            raise ValueError("the prompt is empty: give at least one byte to continue")
        if max_units < 1:
            raise ValueError(f"max_units must be >= 1, got {max_units}")
        sampling = sampling or Sampling()
        self.check_sampling(sampling)
        return self._generate_units(prompt, max_units, sampling, seed, eod_threshold, temperature, top_k)

    def check_sampling(self, sampling: Sampling) -> None:
        steps = getattr(self.core.config, "num_train_timesteps", None)
        if sampling.steps < 1 or (steps is not None and sampling.steps > steps):
            raise ValueError(f"sampling steps must be between 1 and the model's {steps} diffusion timesteps, "
                             f"got {sampling.steps}")

    @torch.no_grad()
    def _generate_units(self, prompt, max_units, sampling, seed, eod_threshold, temperature, top_k) -> Iterator[bytes]:
        """concept_core's generation loop, with hooks: each concept is decoded to a unit (an empty one
        stops), and the unit's own concept, not the sample, extends the context."""
        generator = torch.Generator(self.device).manual_seed(seed) if seed is not None else None
        modality = sniff(prompt)  # generated units continue the prompt's document

        def decode(concepts: torch.Tensor) -> tuple[list[bytes], torch.Tensor]:
            units = self.codec.decode(concepts, temperature, top_k, generator)
            return units, torch.tensor([bool(u) for u in units], device=concepts.device)

        steps = iter_steps(self.core, self.encode(prompt)[None], max_new=max_units, sampling=sampling,
                           generator=generator, stop=StopRule(self.codec.eod_concept(), eod_threshold, None),
                           decode=decode, reencode=lambda units: self.codec.encode(units, modality))
        for step in steps:
            if not step.kept[0]:
                return
            yield step.decoded[0]

    def generate(self, prompt: bytes, **kwargs) -> bytes:
        """The continuation of ``prompt`` (its bytes only); see ``iter_generate`` for the knobs."""
        return b"".join(self.iter_generate(prompt, **kwargs))

    # -- export ---------------------------------------------------------------------------------

    def save_pretrained(self, directory: str | os.PathLike) -> Path:
        """``config.json`` + ``model.safetensors``, written atomically."""
        return save_export(directory, EXPORT_KIND, asdict(self.config), self.state_dict())

    @classmethod
    def from_pretrained(cls, directory: str | os.PathLike, map_location: str = "cpu") -> ByteLCM:
        config, state = load_export(directory, EXPORT_KIND, map_location)
        model = cls(ByteLCMConfig.from_dict(config))
        model.load_state_dict(state)
        return model.eval()
