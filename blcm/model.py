"""ByteLCM: segmenter + byte concept codec + concept core, the whole model behind `blcm generate`.

    document bytes -> units (segmenter) -> concepts (the codec's encoder) -> next concepts (core, KV-cached)
    -> bytes of every new unit at once (the codec's decoder)

The end of a document is a unit of its own, the one-id unit [EOD], so it has a concept like any
sentence; generation stops when the predicted concept comes within ``eod_threshold`` cosine of it.
Generation plans, then decodes: the core appends its own samples to its context until EOD or the limit,
and the whole continuation is decoded in one batched pass. ``reencode=True`` instead decodes each
concept as it comes and re-encodes the unit into the context, so the context holds only concepts of
real byte strings, at a decode and an encode per unit.
"""

from __future__ import annotations

import dataclasses
import typing
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field, replace

import torch
import yaml
from torch import nn

from blcm import ConfigError
from blcm.batch import UnitBatch
from blcm.objective import LossConfig, Stage
from blt.pretrained import SHIPPED_NAME
from bridges.byte_codec import ByteConceptEncoderConfig
from bridges.byte_decoder import ByteConceptDecoderConfig
from bridges.chunk_codec import ChunkCodecConfig
from bridges.codec import CODECS, CodecConfig, build_codec, codec_config
from bridges.modality import sniff
from bridges.pretrained import load_codec
from bridges.segment import build_segmenter
from bridges.sonar_codec import SONAR_DIM
from concept_core.config import DEFAULT_VARIANT, VARIANTS, CoreConfig, build_model, core_config
from concept_core.generate import StopRule, iter_steps
from concept_core.interface import Sampling
from concept_core.quant import QuantizedLCM
from concept_core.two_tower import TwoTowerLCMConfig
from primitives.export import Exportable

EXPORT_KIND = "ByteLCM"
DEFAULT_SEGMENTER = {"kind": "sentence", "max_bytes": 256}
QUANTIZER_BATCHES = 4  # joint batches whose concepts fit a Quant core's codebooks


def yaml_scalars(fields: dict, classes: dict[str, type], key: str, default: str | None = None) -> dict:
    """A config dict with the string values a command-line flag leaves (``n_layers: "3"``) read as YAML, as
    jsonargparse reads a typed field, wherever the config class (named by ``key``, else ``default``) does not
    want a string."""
    cls = classes.get(fields.get(key, default))
    hints = typing.get_type_hints(cls) if cls is not None else {}
    return {k: yaml.safe_load(v) if isinstance(v, str) and hints.get(k, str) is not str else v
            for k, v in fields.items()}


def on_one_rank(tensor: torch.Tensor) -> torch.Tensor:
    """A broadcast from rank 0 on a single process: the tensor itself."""
    return tensor


def default_core(dim: int) -> TwoTowerLCMConfig:
    return TwoTowerLCMConfig(dim=dim, model_dim=256, context_layers=2, denoiser_layers=2, n_heads=4)


@dataclass(frozen=True)
class ByteLCMConfig:
    """The whole model. ``concept_dim`` is written once: the encoder's, decoder's and core's are set from it
    (a frozen codec's concepts must have this many dimensions).

    Args:
        concept_dim: the dimension of a concept.
        segmenter: the bridges.segment config that cuts documents into units, e.g. {kind: sentence, max_bytes: 256}.
        codec: the concept space, named by its ``kind``: chunk (bridges/chunk_codec.py, what the shipped configs
            use, started from the shipped codec by ``init_codec_from``), byte (the autoregressive codec of the
            encoder and decoder below; None means this, so older exports load unchanged), sentence_transformer
            (frozen; the decoder below learns its space) or sonar: a bridges.codec.CodecConfig, or its dict
            ({kind: sonar, batch_size: 16}).
        encoder: the byte concept encoder (bridges.byte_codec).
        decoder: the byte concept decoder (bridges.byte_decoder).
        core: one of the four concept cores' configs, named by its ``variant`` (two_tower, one_tower, base,
            quant): a concept_core.config.CoreConfig, or its dict ({variant: quant, n_layers: 3}); None: a
            256-wide Two-Tower.

    ``codec`` and ``core`` are read as dicts first (then made typed here), so a command-line flag such as
    ``--model.model.core.n_layers 3`` changes that field of the YAML's core and keeps its variant; parsed as a
    union of dataclasses, jsonargparse would pick the first variant that has the field.
    """

    concept_dim: int = 256
    segmenter: dict = field(default_factory=lambda: dict(DEFAULT_SEGMENTER))
    codec: dict | CodecConfig | None = None
    encoder: ByteConceptEncoderConfig = field(default_factory=ByteConceptEncoderConfig)
    decoder: ByteConceptDecoderConfig = field(default_factory=ByteConceptDecoderConfig)
    core: dict | CoreConfig | None = None

    def __post_init__(self):
        codec, core = self.codec, self.core
        try:
            codec = codec_config(yaml_scalars(codec, CODECS, "kind")) if isinstance(codec, dict) else codec
            if isinstance(core, dict):
                core = core_config(yaml_scalars(core, VARIANTS, "variant", DEFAULT_VARIANT))
        except ValueError as e:
            raise ConfigError(str(e)) from None
        derived = {"codec": codec, "encoder": replace(self.encoder, concept_dim=self.concept_dim),
                   "decoder": replace(self.decoder, concept_dim=self.concept_dim),
                   "core": None if core is None else replace(core, dim=self.concept_dim)}
        for name, value in derived.items():  # frozen: set once, here
            object.__setattr__(self, name, value)

    @property
    def codec_kind(self) -> str:
        return "byte" if self.codec is None else self.codec.kind

    @property
    def own_encoder(self) -> bool:
        """The codec's encoder is this model's own parameters (trainable, or frozen by ``freeze_codec``), not an
        external package's (MiniLM, SONAR)."""
        return self.codec_kind in ("byte", "chunk")

    @classmethod
    def from_dict(cls, d: dict) -> ByteLCMConfig:
        """The inverse of ``asdict``. An export from before ``concept_dim`` has it in its encoder's config, or
        for a frozen codec in its decoder's (SONAR's: 1024)."""
        known = {f.name for f in dataclasses.fields(cls)}
        if unknown := sorted(set(d) - known):
            raise ValueError(f"ByteLCMConfig has no field(s) {unknown}")
        encoder, decoder = d.get("encoder", {}), d.get("decoder", {})
        kind = (d.get("codec") or {}).get("kind", "byte")
        dims = {"byte": encoder.get("concept_dim", 256), "sonar": SONAR_DIM}
        before = dims.get(kind, decoder.get("concept_dim", 256))
        return cls(concept_dim=d.get("concept_dim", before), segmenter=dict(d.get("segmenter", DEFAULT_SEGMENTER)),
                   codec=d.get("codec"), encoder=ByteConceptEncoderConfig(**encoder),
                   decoder=ByteConceptDecoderConfig(**decoder), core=d.get("core"))


class ByteLCM(Exportable, nn.Module):
    export_kind = EXPORT_KIND

    def __init__(self, config: ByteLCMConfig):
        super().__init__()
        self.config = config
        self.codec = build_codec(config.codec, config.encoder, config.decoder, config.concept_dim)
        if self.codec.dim != config.concept_dim:
            raise ValueError(f"the {config.codec_kind!r} codec's concepts have {self.codec.dim} dimensions: set "
                             f"concept_dim to {self.codec.dim}, not {config.concept_dim}")
        self.core = build_model(config.core or default_core(config.concept_dim))
        # An entropy segmenter cuts with the shipped entropy model, as `blcm prepare` cut the training data.
        self.segmenter = build_segmenter(config.segmenter)
        capacity = config.codec.max_bytes if isinstance(config.codec, ChunkCodecConfig) else None  # fixed width
        if capacity is not None and self.segmenter.max_bytes > capacity:
            raise ValueError(f"the segmenter cuts units of up to {self.segmenter.max_bytes} bytes, but the "
                             f"{config.codec_kind!r} codec holds {capacity}: set segmenter.max_bytes <= {capacity}")
        self.codec.max_unit_bytes = self.segmenter.max_bytes  # decoding never runs past the cap
        self._quantizer_pool: list[torch.Tensor] = []

    @property
    def device(self) -> torch.device:
        return self.codec.device

    def num_params(self) -> dict[str, int]:
        """Trained parameters per part (a frozen encoder's are not ours: 0)."""
        encoder = self.codec.encoder if self.config.own_encoder else None
        parts = {"encoder": encoder, "decoder": self.codec.decoder, "core": self.core}
        return {name: sum(p.numel() for p in m.parameters()) if m is not None else 0 for name, m in parts.items()}

    def units(self, document: bytes) -> list[bytes]:
        return self.segmenter.split(document)

    # -- training -------------------------------------------------------------------------------

    def losses(self, batch: UnitBatch, stage: Stage, loss: LossConfig, *, train_codec: bool = True,
               broadcast: Callable[[torch.Tensor], torch.Tensor] = on_one_rank) -> dict[str, torch.Tensor]:
        """The loss terms of ``stage`` on a batch (blcm.objective); none when there is nothing to learn from.

        The first batches after a stage change also ready what that stage needs, each fitted on rank 0's
        values where ``broadcast`` hands them to every rank: the entropy threshold (when the entropy stage
        ends) or a frozen codec's normaliser, and a Quant core's codebooks (when joint training starts).
        ``train_codec`` False: a frozen codec, no reconstruction term.
        """
        units, lengths, codec = batch.units, batch.unit_lengths, self.codec  # (U, L), (U,)
        if stage == "entropy":
            return {"entropy": codec.encoder.entropy_loss(units, lengths)}
        if not codec.ready:
            for buffer in codec.calibrate(units, lengths, batch.unit_modalities):
                buffer.copy_(broadcast(buffer))
        terms = {}
        concepts = codec.concepts(units, lengths, batch.unit_modalities)  # (U, d)
        text = batch.text
        if text.any() and codec.decoder is not None and train_codec:
            scores = codec.decoder(units[text], lengths[text], loss.decoder_inputs(concepts[text], self.training))
            terms["reconstruction"] = scores.nats.sum() / (lengths[text] + 1).sum()
        if stage == "joint" and (self.core_ready or self._fit_quantizer(concepts.detach()[text], broadcast)):
            sequences = batch.sequences(concepts)  # (B, N, d)
            inputs = sequences.detach() if loss.detach_core_inputs else sequences
            targets = sequences.detach() if loss.detach_core_targets else None
            terms["core"] = self.core.loss(inputs, batch.doc_mask, targets=targets)
        if loss.entropy_weight > 0 and codec.entropy_model is not None:
            terms["entropy"] = codec.encoder.entropy_loss(units, lengths)
        return terms

    @property
    def core_ready(self) -> bool:
        """False only for a Quant core whose codebooks are not fitted yet (that happens when joint training starts)."""
        return not isinstance(self.core, QuantizedLCM) or bool(self.core.quantizer.fitted)

    def _fit_quantizer(self, concepts: torch.Tensor, broadcast: Callable[[torch.Tensor], torch.Tensor]) -> bool:
        """Pool the concepts of the first QUANTIZER_BATCHES joint batches, then fit a Quant core's RVQ codebooks
        (every rank counts the same batches); True once fitted. They stay fixed afterwards while the encoder keeps
        learning. The pooling batches train everything but the core."""
        self._quantizer_pool.append(concepts)
        if len(self._quantizer_pool) < QUANTIZER_BATCHES:
            return False
        pool = torch.cat(self._quantizer_pool)
        self.core.fit_quantizer(pool, generator=torch.Generator(pool.device).manual_seed(0))
        self.core.quantizer.codebooks.copy_(broadcast(self.core.quantizer.codebooks))
        self._quantizer_pool = []
        return True

    @torch.no_grad()
    def encode(self, document: bytes) -> torch.Tensor:
        """A document -> its concepts (n, d), one per unit (no EOD)."""
        units = self.units(document)
        if not units:
            return torch.zeros(0, self.codec.dim, device=self.device)
        return self.codec.encode(units, sniff(document))

    def iter_generate(self, prompt: bytes, max_units: int = 16, sampling: Sampling | None = None,
                      seed: int | None = None, eod_threshold: float = 0.9, temperature: float = 0.0,
                      top_k: int | None = None, reencode: bool = False) -> Iterator[bytes]:
        """The units that continue ``prompt``, one at a time, until EOD, an empty unit or ``max_units`` (an
        iterator; the arguments are checked here, before the first unit is asked for). ``reencode``: decode and
        re-encode each unit before the next concept (see the module docstring); default: plan, then decode."""
        if not prompt:
            raise ValueError("the prompt is empty: give at least one byte to continue")
        if max_units < 1:
            raise ValueError(f"max_units must be >= 1, got {max_units}")
        sampling = sampling or Sampling()
        self.check_sampling(sampling)
        generate = self._reencoded_units if reencode else self._planned_units
        return generate(prompt, max_units, sampling, seed, eod_threshold, temperature, top_k)

    def check_sampling(self, sampling: Sampling) -> None:
        steps = getattr(self.core.config, "num_train_timesteps", None)
        if sampling.steps < 1 or (steps is not None and sampling.steps > steps):
            raise ValueError(f"sampling steps must be between 1 and the model's {steps} diffusion timesteps, "
                             f"got {sampling.steps}")

    @torch.no_grad()
    def _planned_units(self, prompt, max_units, sampling, seed, eod_threshold, temperature, top_k) -> Iterator[bytes]:
        """concept_core's generation loop on the core's own samples (one KV-cache extension per concept), then
        one decode of the whole plan; the units are handed out up to the first empty one."""
        generator = torch.Generator(self.device).manual_seed(seed) if seed is not None else None
        steps = iter_steps(self.core, self.encode(prompt)[None], max_new=max_units, sampling=sampling,
                           generator=generator, stop=StopRule(self.codec.eod_concept(), eod_threshold, None))
        plan = [step.concepts for step in steps if step.kept[0]]  # each (1, d)
        if not plan:
            return
        for unit in self.codec.decode(torch.cat(plan), temperature, top_k, generator):
            if not unit:
                return
            yield unit

    @torch.no_grad()
    def _reencoded_units(self, prompt, max_units, sampling, seed, eod_threshold, temperature,
                         top_k) -> Iterator[bytes]:
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

    @classmethod
    def with_codec(cls, source: str = SHIPPED_NAME) -> ByteLCM:
        """A ByteLCM around a trained chunk codec (``"shipped"`` or a tools/ship_codec.py export) whose
        segmenter cuts sentences of at most the codec's width; its core is untrained (encode, decode and
        reconstruct need none)."""
        codec = load_codec(source)
        segmenter = {**DEFAULT_SEGMENTER, "max_bytes": codec.config.max_bytes}
        model = cls(ByteLCMConfig(concept_dim=codec.dim, segmenter=segmenter, codec=codec.config))
        model.load_codec(codec)
        return model.eval()

    def load_codec(self, codec: nn.Module) -> None:
        """Take a trained chunk codec's weights (``bridges.pretrained.load_codec``): its config must be this
        model's codec config but for the training-only knobs."""
        mine, theirs = self.config.codec, getattr(codec, "config", None)
        if not isinstance(mine, ChunkCodecConfig) or not isinstance(theirs, ChunkCodecConfig):
            raise ValueError(f"only a chunk codec loads a trained chunk codec, not {self.config.codec_kind!r}")
        loose = {"input_mask": 0.0, "batch_size": 0}
        if replace(mine, **loose) != replace(theirs, **loose) or codec.dim != self.config.concept_dim:
            raise ValueError(f"the trained codec is {theirs} with concept_dim {codec.dim}; this model's is {mine} "
                             f"with concept_dim {self.config.concept_dim}: make the model's codec config match")
        self.codec.load_state_dict(codec.state_dict())

    @classmethod
    def from_config(cls, config: dict) -> ByteLCM:
        """An untrained model of an export's (or a checkpoint's ``export``) config."""
        return cls(ByteLCMConfig.from_dict(config))
