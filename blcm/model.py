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
from blcm.data.pairs import group_means
from blcm.objective import LossConfig, Losses, Stage, info_nce
from blt.ids import pad_batch
from blt.pretrained import SHIPPED_NAME
from bridges.byte_codec import ByteConceptEncoderConfig
from bridges.byte_decoder import ByteConceptDecoderConfig
from bridges.chunk_codec import ChunkCodecConfig
from bridges.codec import CODECS, FIXED_WIDTH, CodecConfig, build_codec, codec_config, unit_capacity
from bridges.frozen_codec import FrozenConceptCodec
from bridges.meaning_codec import MeaningCodec
from bridges.modality import sniff
from bridges.pretrained import load_codec
from bridges.pretrained.meaning import load_meaning_codec
from bridges.segment import build_segmenter
from concept_core.config import DEFAULT_VARIANT, VARIANTS, CoreConfig, build_core, core_config
from concept_core.generate import StopRule, iter_steps
from concept_core.interface import Sampling
from concept_core.quant import QuantizedLCM
from primitives.export import Exportable

EXPORT_KIND = "ByteLCM"
# The defaults are configs/tiny.yaml's model: the shipped meaning codec's shape, sentences up to its width, a small
# Two-Tower core.
DEFAULT_SEGMENTER = {"kind": "sentence", "max_bytes": 128}
DEFAULT_CODEC = {"kind": "meaning"}
DEFAULT_CORE = {"variant": "two_tower"}  # its code defaults are tiny's core
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


@dataclass(frozen=True)
class ByteLCMConfig:
    """The whole model and its objective. ``concept_dim`` is written here only: the codec and the core are built
    for it (a frozen codec's concepts must have this many dimensions).

    Args:
        concept_dim: the dimension of a concept (the shipped meaning codec's meaning_dim, 512; the chunk codec's 1024).
        segmenter: the bridges.segment config that cuts documents into units, e.g. {kind: sentence, max_bytes: 128}.
        codec: the concept space, named by its ``kind``: meaning (bridges/meaning_codec.py, the default, started
            from the shipped meaning codec by ``init_codec_from``), chunk (the spelling, bridges/chunk_codec.py),
            byte (the autoregressive codec of the encoder and decoder below), sentence_transformer (frozen; the
            decoder below learns its space) or sonar: a bridges.codec.CodecConfig, or its dict ({kind: sonar}).
        encoder: the byte concept encoder (bridges.byte_codec), for the byte codec.
        decoder: the byte concept decoder (bridges.byte_decoder), for the byte and sentence_transformer codecs.
        core: one of the five concept cores' configs, named by its ``variant`` (two_tower, one_tower, base,
            quant, energy): a concept_core.config.CoreConfig, or its dict ({variant: quant, n_layers: 3}).
        loss: the loss weights and what the terms see (blcm.objective.LossConfig).

    ``codec`` and ``core`` are read as dicts first (then made typed here), so a command-line flag such as
    ``--model.model.core.n_layers 3`` changes that field of the YAML's core and keeps its variant; parsed as a
    union of dataclasses, jsonargparse would pick the first variant that has the field.
    """

    concept_dim: int = 512
    segmenter: dict = field(default_factory=lambda: dict(DEFAULT_SEGMENTER))
    codec: dict | CodecConfig = field(default_factory=lambda: dict(DEFAULT_CODEC))
    encoder: ByteConceptEncoderConfig = field(default_factory=ByteConceptEncoderConfig)
    decoder: ByteConceptDecoderConfig = field(default_factory=ByteConceptDecoderConfig)
    core: dict | CoreConfig = field(default_factory=lambda: dict(DEFAULT_CORE))
    loss: LossConfig = field(default_factory=LossConfig)

    def __post_init__(self):
        codec, core = self.codec, self.core
        try:
            codec = codec_config(yaml_scalars(codec, CODECS, "kind")) if isinstance(codec, dict) else codec
            if isinstance(core, dict):
                core = core_config(yaml_scalars(core, VARIANTS, "variant", DEFAULT_VARIANT))
        except ValueError as e:
            raise ConfigError(str(e)) from None
        object.__setattr__(self, "codec", codec)  # frozen: the dicts are made typed once, here
        object.__setattr__(self, "core", core)
        if self.loss.alignment_weight > 0 and not self.own_encoder:
            raise ConfigError("the alignment loss trains the encoder: a frozen codec has none to train")

    @property
    def codec_kind(self) -> str:
        return self.codec.kind

    @property
    def own_encoder(self) -> bool:
        """The codec's encoder is this model's own parameters (trainable, or frozen by ``freeze_codec``), not an
        external package's (MiniLM, SONAR)."""
        return self.codec_kind in ("byte", "chunk", "meaning")

    @classmethod
    def from_dict(cls, d: dict) -> ByteLCMConfig:
        """The inverse of ``asdict``."""
        fields = {f.name for f in dataclasses.fields(cls)}
        if set(d) != fields:
            raise ValueError(f"a ByteLCMConfig has the fields {sorted(fields)}, got {sorted(d)}")
        return cls(concept_dim=d["concept_dim"], segmenter=dict(d["segmenter"]), codec=d["codec"],
                   encoder=ByteConceptEncoderConfig(**d["encoder"]), decoder=ByteConceptDecoderConfig(**d["decoder"]),
                   core=d["core"], loss=LossConfig(**d["loss"]))


class ByteLCM(Exportable, nn.Module):
    export_kind = EXPORT_KIND

    def __init__(self, config: ByteLCMConfig):
        super().__init__()
        self.config = config
        self.codec = build_codec(config.codec, config.encoder, config.decoder, config.concept_dim)
        if (dim := self.codec.concept_dim) != config.concept_dim:
            raise ValueError(f"the {config.codec_kind!r} codec's concepts have {dim} dimensions: set concept_dim to "
                             f"{dim}, not {config.concept_dim}")
        self.core = build_core(config.core, config.concept_dim)
        # An entropy segmenter cuts with the shipped entropy model, as `blcm prepare` cut the training data.
        self.segmenter = build_segmenter(config.segmenter)
        capacity = unit_capacity(config.codec)
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

    def prepare(self, batch: UnitBatch, stage: Stage,
                broadcast: Callable[[torch.Tensor], torch.Tensor] = on_one_rank) -> None:
        """Fit, once, what ``stage``'s loss needs and training does not learn, on rank 0's batch where
        ``broadcast`` hands the values to every rank: after the entropy stage, the codec's calibration (entropy
        thresholds, or a frozen codec's normaliser); in the joint stage, a Quant core's codebooks, on the concepts
        of its first QUANTIZER_BATCHES batches (they stay fixed while the encoder goes on learning)."""
        if stage == "entropy":
            return
        codec = self.codec
        if not codec.ready:
            for buffer in codec.calibrate(batch.units, batch.unit_lengths, batch.unit_modalities):
                buffer.copy_(broadcast(buffer))
        if stage == "joint" and not self.core_ready:
            with torch.no_grad():
                concepts = codec.concepts(batch.units, batch.unit_lengths, batch.unit_modalities)
            self._quantizer_pool.append(concepts[batch.has_bytes])
            if len(self._quantizer_pool) == QUANTIZER_BATCHES:
                pool = torch.cat(self._quantizer_pool)
                self.core.fit_quantizer(pool, generator=torch.Generator(pool.device).manual_seed(0))
                self.core.quantizer.codebooks.copy_(broadcast(self.core.quantizer.codebooks))
                self._quantizer_pool = []

    def prepare_from_sample(self, sample: Callable[[], list[bytes]]) -> None:
        """Fit, before training, what a sample of training units fits better than one batch: a frozen codec's
        normaliser (``prepare`` fits it on the first batch when no sample came first). ``sample`` draws the units,
        called only when something needs them."""
        if isinstance(self.codec, FrozenConceptCodec | MeaningCodec) and not self.codec.ready:
            self.codec.fit_normalizer(sample())

    def losses(self, batch: UnitBatch, stage: Stage,
               pairs: tuple[list[list[bytes]], list[list[bytes]]] | None = None) -> Losses:
        """The weighted loss of ``stage`` on a batch and its terms (blcm.objective); the total is None when there
        is nothing to learn from. ``pairs``: groups of units of paired files and of their transcripts, for the
        alignment term. Call ``prepare`` on the batch first."""
        units, lengths, codec, loss = batch.units, batch.unit_lengths, self.codec, self.config.loss  # (U, L), (U,)
        terms = {}
        if stage == "entropy":
            terms["entropy"] = codec.encoder.entropy_loss(units, lengths)
            return Losses.weighted(terms, stage, loss)
        concepts = codec.concepts(units, lengths, batch.unit_modalities)  # (U, d)
        real = batch.has_bytes
        if real.any() and self.decoder_learns:
            scores = codec.scores(units[real], lengths[real], loss.decoder_inputs(concepts[real], self.training))
            terms["reconstruction"] = scores.nats.sum() / (lengths[real] + 1).sum()
        if stage == "joint" and self.core_ready:
            sequences = batch.sequences(concepts)  # (B, N, d)
            inputs = sequences.detach() if loss.detach_core_inputs else sequences
            targets = sequences.detach() if loss.detach_core_targets else None
            terms["core"] = self.core.loss(inputs, batch.doc_mask, targets=targets)
        if loss.entropy_weight > 0 and codec.entropy_model is not None:
            terms["entropy"] = codec.encoder.entropy_loss(units, lengths)
        if pairs is not None and loss.alignment_weight > 0:
            files, transcripts = pairs
            terms["alignment"] = info_nce(self.pooled_concepts(files), self.pooled_concepts(transcripts),
                                          loss.alignment_temperature)
        return Losses.weighted(terms, stage, loss)

    @property
    def decoder_learns(self) -> bool:
        """The codec has a byte decoder with parameters to train (not frozen by ``freeze_codec``, not SONAR's)."""
        return self.codec.decoder is not None and any(p.requires_grad for p in self.codec.decoder.parameters())

    @property
    def core_ready(self) -> bool:
        """False only for a Quant core whose codebooks are not fitted yet (``prepare`` fits them)."""
        return not isinstance(self.core, QuantizedLCM) or bool(self.core.quantizer.fitted)

    def pooled_concepts(self, groups: list[list[bytes]]) -> torch.Tensor:
        """Groups of units -> the mean concept of each group (G, d), with the encoder's gradient."""
        ids, lengths = pad_batch([u for g in groups for u in g])
        concepts = self.codec.concepts(ids.to(self.device), lengths.to(self.device))  # (U, d)
        return group_means(concepts, [len(g) for g in groups])

    @torch.no_grad()
    def encode(self, document: bytes) -> torch.Tensor:
        """A document -> its concepts (n, d), one per unit (no EOD)."""
        units = self.units(document)
        if not units:
            return torch.zeros(0, self.codec.concept_dim, device=self.device)
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
        # written in one batch, so each planned unit reads the prompt's end, not the planned units before it
        for unit in self.codec.decode(torch.cat(plan), temperature, top_k, generator, before=[prompt] * len(plan)):
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
        text = [prompt]  # what a decoder that reads the text before a unit reads

        def decode(concepts: torch.Tensor) -> tuple[list[bytes], torch.Tensor]:
            units = self.codec.decode(concepts, temperature, top_k, generator, before=[b"".join(text)])
            text.extend(units)
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
    def with_codec(cls, source: str = SHIPPED_NAME, part: str = "spelling") -> ByteLCM:
        """A ByteLCM around a trained codec, ``part`` "spelling" (the chunk codec: ``"shipped"`` or a
        tools/ship_codec.py export) or "meaning" (the meaning codec: ``"shipped"`` or a tools/ship_meaning.py
        export), whose segmenter cuts sentences of at most the codec's width; its core is untrained (encode, decode
        and reconstruct need none)."""
        codec = load_pretrained_codec(source, part)
        segmenter = {**DEFAULT_SEGMENTER, "max_bytes": codec.config.max_bytes}
        model = cls(ByteLCMConfig(concept_dim=codec.concept_dim, segmenter=segmenter, codec=codec.config))
        model.load_codec(codec)
        return model.eval()

    def load_codec(self, codec: nn.Module) -> None:
        """Take a trained chunk or meaning codec's weights (``load_pretrained_codec``): its config must be this
        model's codec config but for the knobs that do not change the weights."""
        mine, theirs = self.config.codec, getattr(codec, "config", None)
        if not isinstance(mine, FIXED_WIDTH) or type(mine) is not type(theirs):
            raise ValueError(f"a trained {getattr(theirs, 'kind', type(codec).__name__)!r} codec cannot be loaded into "
                             f"a model whose codec is {self.config.codec_kind!r}")
        loose = {"batch_size": 0, **({"input_mask": 0.0} if isinstance(mine, ChunkCodecConfig)
                                     else {"top_p": None, "ignore_meaning": False})}
        dim = codec.concept_dim
        if replace(mine, **loose) != replace(theirs, **loose) or dim != self.config.concept_dim:
            raise ValueError(f"the trained codec is {theirs} with concept_dim {dim}; this model's is {mine} with "
                             f"concept_dim {self.config.concept_dim}: make the model's codec config match")
        self.codec.load_state_dict(codec.state_dict())

    def use_meaning_decoder(self, codec: MeaningCodec) -> None:
        """Write with another meaning codec's decoder (a ship_meaning.py decoder stage on this model's encoder): the
        core predicts meanings of its own encoder, so that encoder must be the model's, weight for weight."""
        mine = self.codec
        if not isinstance(mine, MeaningCodec) or not isinstance(codec, MeaningCodec):
            raise ValueError("a meaning decoder replaces a meaning codec's: this model's codec is "
                             f"{self.config.codec_kind!r}")
        ours, theirs = mine.encoder.state_dict(), codec.encoder.state_dict()
        if ours.keys() != theirs.keys() or not all(torch.equal(ours[k], theirs[k].to(ours[k])) for k in ours):
            raise ValueError("that meaning codec's encoder is not this model's: its decoder writes from another space")
        mine.decoder = codec.decoder.to(mine.device)
        self.set_meaning_decoding(decoder=codec.config.decoder)

    def set_meaning_decoding(self, **fields) -> None:
        """Change decoding-only fields of the meaning codec's config (``decoder``, ``top_p``, ``ignore_meaning``)."""
        self.codec.config = replace(self.codec.config, **fields)
        self.config = replace(self.config, codec=self.codec.config)

    @classmethod
    def from_config(cls, config: dict) -> ByteLCM:
        """An untrained model of an export's (or a checkpoint's ``export``) config."""
        return cls(ByteLCMConfig.from_dict(config))


CODEC_PARTS = {"spelling": load_codec, "meaning": load_meaning_codec}


def load_pretrained_codec(source: str, part: str) -> nn.Module:
    """A trained codec: ``part`` "spelling" (a chunk codec) or "meaning"; ``source`` "shipped" or an export."""
    if part not in CODEC_PARTS:
        raise ValueError(f"part must be one of {tuple(CODEC_PARTS)}, got {part!r}")
    return CODEC_PARTS[part](source)
