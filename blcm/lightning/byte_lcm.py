"""ByteLCMModule: trains a ByteLCM end to end (byte encoder, concept core and byte decoder together).

The model owns its objective (``ByteLCM.prepare`` and ``ByteLCM.losses``; its loss config is part of the model's
config, blcm.objective); this module keeps the stage schedule, the alignment pairs' draws, logging, the optimiser
and the broadcasts between ranks.
"""

from __future__ import annotations

from dataclasses import replace

import lightning as L
import torch
from lightning.pytorch.utilities import rank_zero_warn

from blcm import ConfigError, DataError
from blcm.batch import UnitBatch
from blcm.data.pairs import read_pairs
from blcm.data.shards import read_prepared
from blcm.eval.validation import ValidationTotals, sample_tables
from blcm.lightning.config import AlignmentConfig, ExportsItsModel, StageConfig, ValidationConfig, save_grouped_hparams
from blcm.lightning.optim import OptimConfig, adamw_warmup_cosine, check_finite
from blcm.model import ByteLCM, ByteLCMConfig, load_pretrained_codec
from blcm.objective import STAGES, Stage
from blcm.plotting import log_entropy_figure
from blt.patching import ENTROPY_MODES
from blt.pretrained import SHIPPED_NAME, PretrainedError, load_entropy_model
from bridges.codec import unit_capacity
from bridges.segment import build_segmenter
from concept_core.metrics import teacher_forced_predictions


class ByteLCMModule(ExportsItsModel, L.LightningModule):
    """Trains a ByteLCM; see configs/tiny.yaml.

    Args:
        model: the ByteLCMConfig, its loss included (codec {kind: sentence_transformer} trains the core and decoder
            on frozen MiniLM concepts, see configs/minilm-tiny.yaml; the encoder config is then unused).
        stages: how many steps the entropy and autoencoder stages take before joint training.
        optim: AdamW with warm-up + cosine.
        validation: what each validation samples and logs.
        alignment: the pairs the alignment term (model.loss.alignment_weight > 0) draws from.
        init_entropy_from: the EntropyModel entropy patching uses: "shipped" (default: the model inside the
            package, blt.pretrained, with its per-modality thresholds), an export directory (its thresholds.json
            if it has one, else thresholds calibrated per modality on the first batch), or null to train one
            from scratch in an entropy stage. Ignored when the encoder's patching needs none.
        init_from: an exported ByteLCM to start from (same config), e.g. to validate or fine-tune it
            (its entropy model and threshold are kept: no entropy stage; set stages.autoencoder_steps to 0 to go
            on jointly). With loss.entropy_weight > 0 the entropy model keeps learning but the threshold stays.
        init_codec_from: a trained codec to start from, of the model's codec kind: "shipped" (the codec inside the
            package: bridges/pretrained's chunk codec for ``chunk``, its meaning codec for ``meaning``) or an export
            of tools/ship_codec.py or tools/ship_meaning.py; the model's codec config must match its shape.
            Not applied with init_from, whose export brings its own codec.
        freeze_codec: with init_from or init_codec_from, keep the codec fixed (no gradient, running batch-norm
            statistics) and train the core alone, as on a frozen concept space (the shipped configs do).
        export_dir: where the model is exported (config.json + model.safetensors) at the end of fit.
        normalizer_units: training units a frozen codec's concept normaliser is fitted on (at fit start).
    """

    def __init__(self, model: ByteLCMConfig = ByteLCMConfig(), stages: StageConfig = StageConfig(),
                 optim: OptimConfig = OptimConfig(), validation: ValidationConfig = ValidationConfig(),
                 alignment: AlignmentConfig = AlignmentConfig(),
                 init_entropy_from: str | None = SHIPPED_NAME, init_from: str | None = None,
                 init_codec_from: str | None = None, freeze_codec: bool = False, export_dir: str | None = None,
                 normalizer_units: int = 2048):
        super().__init__()
        try:
            self.model = model_to_train(model, init_entropy_from, init_from, init_codec_from)
            if freeze_codec:
                if (init_from is None and init_codec_from is None) or not model.own_encoder:
                    raise ValueError("freeze_codec keeps a trained byte or chunk codec fixed: it needs init_from (an "
                                     "export) or init_codec_from (a trained chunk or meaning codec)")
                if model.loss.entropy_weight > 0 or model.loss.alignment_weight > 0:
                    raise ValueError("freeze_codec leaves nothing for model.loss.entropy_weight or "
                                     "model.loss.alignment_weight to train: set them to 0")
                self.model.codec.requires_grad_(False)
            if normalizer_units < 2:
                raise ValueError(f"normalizer_units must be >= 2, got {normalizer_units}")
            if model.loss.alignment_weight > 0 and alignment.pairs is None:
                raise ValueError("model.loss.alignment_weight > 0 needs alignment.pairs, a directory with "
                                 "transcripts.json")
        # CodecUnavailable is a RuntimeError
        except (ValueError, TypeError, FileNotFoundError, RuntimeError, PretrainedError) as e:
            raise ConfigError(f"cannot build the ByteLCM: {e}") from None
        save_grouped_hparams(self, model=model, stages=stages, optim=optim, validation=validation,
                             alignment=alignment)
        self.stages, self.optim = stages, optim
        self.validation, self.alignment = validation, alignment
        self._val = ValidationTotals()
        self._pair_units: list[tuple[list[bytes], list[bytes]]] = []

    def setup(self, stage: str) -> None:
        if stage == "fit" and self.model.config.loss.alignment_weight > 0:
            try:
                pairs = read_pairs(self.alignment.pairs, "train")
            except DataError as e:
                raise ConfigError(f"alignment.pairs: {e}") from None
            if len(pairs) < 2:
                raise ConfigError(f"alignment.pairs: {self.alignment.pairs} has {len(pairs)} training pair(s); "
                                  "the alignment loss needs at least 2")
            self._pair_units = [(self.model.units(p.data), self.model.units(p.text)) for p in pairs]

    # -- stages ---------------------------------------------------------------------------------

    @property
    def entropy_stage_steps(self) -> int:
        pretrained = self.hparams.init_entropy_from is not None or self.hparams.init_from is not None
        trains_entropy = self.model.codec.entropy_model is not None and not pretrained
        return self.stages.entropy_steps if trains_entropy else 0

    def stage(self, step: int | None = None) -> Stage:
        step = self.global_step if step is None else step
        if self.hparams.freeze_codec:
            return "joint"
        if step < self.entropy_stage_steps:
            return "entropy"
        # A codec without a trainable decoder (SONAR) has nothing to learn before the core.
        autoencoder_steps = self.stages.autoencoder_steps if self.model.codec.decoder is not None else 0
        if step < self.entropy_stage_steps + autoencoder_steps:
            return "autoencoder"
        return "joint"

    def on_fit_start(self) -> None:
        """Let the model fit what a sample of training units fits better than a batch (``prepare_from_sample``);
        refuse data cut longer than a chunk codec holds, warn when it was segmented differently from how the model
        will segment at inference."""
        train_set = getattr(self.trainer.datamodule, "train_set", None)
        directory = getattr(train_set, "directory", None)
        if directory is None:
            return
        # the same seed, so every rank fits the same
        self.model.prepare_from_sample(lambda: train_set.sample_units(self.hparams.normalizer_units, seed=0))
        data_segmenter = read_prepared(directory)["settings"]["segmenter"]
        capacity = unit_capacity(self.model.config.codec)
        if capacity is not None and build_segmenter(data_segmenter).max_bytes > capacity:
            raise ConfigError(f"{directory} holds units of up to {build_segmenter(data_segmenter).max_bytes} bytes, "
                              f"more than the {self.model.config.codec_kind} codec's {capacity}: prepare it with "
                              f"--max-unit-bytes {capacity}")
        if data_segmenter != self.model.segmenter.to_config():
            rank_zero_warn(f"{directory} was prepared with segmenter {data_segmenter}, but the model segments "
                           f"with {self.model.segmenter.to_config()} at inference: set model.segmenter to match")

    # -- training -------------------------------------------------------------------------------

    def alignment_pairs(self) -> tuple[list[list[bytes]], list[list[bytes]]] | None:
        """``alignment.batch`` paired files' first ``alignment.units`` units (as `blcm eval --pairs` pools them) and
        their transcripts', for the alignment term; None when it is off. The draw depends on the step and rank
        only, so a resumed run draws what it would have."""
        if not self._pair_units:
            return None
        config, n = self.alignment, self.alignment.units
        generator = torch.Generator().manual_seed(self.global_step * 1009 + self.global_rank)
        chosen = torch.randperm(len(self._pair_units), generator=generator)[: config.batch].tolist()
        return [self._pair_units[i][0][:n] for i in chosen], [self._pair_units[i][1][:n] for i in chosen]

    def _from_rank_zero(self, tensor: torch.Tensor) -> torch.Tensor:
        if self._trainer is None or self.trainer.world_size == 1:
            return tensor
        return self.trainer.strategy.broadcast(tensor)

    def training_step(self, batch: UnitBatch, batch_idx: int) -> torch.Tensor | None:
        stage = self.stage()
        total, terms = self.model.losses(batch, stage, pairs=self.alignment_pairs())
        for name, value in terms.items():
            check_finite(value, self.global_step, name)
            self.log(f"train/{name}", value, prog_bar=name != "entropy" or stage == "entropy")
        self.log("train/stage", float(STAGES.index(stage)))
        return total  # None (skip the step): nothing to learn from, e.g. a batch of end-of-document units only

    def configure_optimizers(self):
        return adamw_warmup_cosine(self, self.model, self.optim)

    def on_train_batch_start(self, batch: UnitBatch, batch_idx: int) -> None:
        if self.hparams.freeze_codec:  # a frozen codec normalises with its running statistics, always
            self.model.codec.eval()
        self.model.prepare(batch, self.stage(), broadcast=self._from_rank_zero)

    # -- validation -----------------------------------------------------------------------------

    def validation_step(self, batch: UnitBatch, batch_idx: int) -> None:
        units, lengths, real = batch.units, batch.unit_lengths, batch.has_bytes
        codec, totals = self.model.codec, self._val
        if codec.entropy_model is not None and real.any():
            targets = (lengths[real] + 1).sum()  # bytes and the closing EOS; bits per *byte* below, as for the decoder
            totals.add(entropy_nats=codec.encoder.entropy_loss(units[real], lengths[real]) * targets,
                       entropy_bytes=lengths[real].sum())
        if not codec.ready:  # nothing to encode with yet
            return
        concepts = codec.concepts(units, lengths, batch.unit_modalities)
        if codec.decoder is not None:
            scores = codec.scores(units[real], lengths[real], concepts[real])  # clean concepts
            short = lengths[real] <= 128
            totals.add(nats=scores.nats.sum(), bytes=lengths[real].sum(), exact=scores.exact.sum(),
                       units=len(scores.exact), exact_le128=scores.exact[short].sum(), units_le128=short.sum())
        if self.model.core_ready:
            sequences = batch.sequences(concepts)
            totals.add(core_loss=self.model.core.loss(sequences, batch.doc_mask), core_batches=1)
            if batch_idx < self.validation.core_batches:
                generator = torch.Generator(self.device).manual_seed(batch_idx)
                predictions = teacher_forced_predictions(self.model.core, sequences, batch.doc_mask,
                                                         self.validation.sampling, generator)
                totals.add_predictions(predictions, documents=len(batch.doc_mask))
        if batch_idx == 0 and self.trainer.is_global_zero:
            self._log_samples(batch, concepts)

    def on_validation_epoch_end(self) -> None:
        sums = self._val.tensor(self.device)
        if self.trainer.world_size > 1:  # ratios of global sums: every rank logs the same keys and values
            sums = self.all_gather(sums).reshape(-1, len(sums)).sum(0)
        self._val = ValidationTotals()
        for name, value in ValidationTotals.metrics(sums).items():
            self.log(f"val/{name}", value, prog_bar=name in ("bpb", "exact_le128", "l2"))

    def _log_samples(self, batch: UnitBatch, concepts: torch.Tensor) -> None:
        experiment = getattr(self.logger, "experiment", None)
        if not hasattr(experiment, "add_text"):
            return
        tables = sample_tables(self.model, batch, concepts, self.validation.samples, self.validation.sampling)
        for tag, table in tables.items():
            experiment.add_text(tag, table, self.global_step)
        codec, units, lengths = self.model.codec, batch.units, batch.unit_lengths
        if codec.entropy_model is not None and codec.ready:
            encoder, longest = codec.encoder, int(lengths.argmax())
            modality = int(batch.unit_modalities[longest])
            log_entropy_figure(self.logger, "val/entropy_patches", encoder.entropy_model,
                               units[longest : longest + 1, : lengths[longest]], self.global_step,
                               threshold=float(encoder.entropy_thresholds[modality]), mode=encoder.config.patching)


def model_to_train(config: ByteLCMConfig, init_entropy_from: str | None, init_from: str | None,
                init_codec_from: str | None = None) -> ByteLCM:
    """The ByteLCM to train: from ``init_from``'s weights (its codec too: ``init_codec_from`` then does not
    apply, so a config that starts from the shipped codec also validates or fine-tunes its export), or with
    ``init_entropy_from``'s entropy model (the encoder's entropy model then takes that model's shape) and
    ``init_codec_from``'s chunk codec."""
    if init_from is not None:
        init_codec_from = None
    uses_entropy = config.codec_kind == "byte" and config.encoder.patching in ENTROPY_MODES
    if init_entropy_from is not None and init_entropy_from != SHIPPED_NAME and not uses_entropy:
        kind = config.codec_kind
        what = f"{config.encoder.patching!r} patching" if kind == "byte" else f"the {kind} codec"
        raise ValueError(f"init_entropy_from is set, but {what} uses no entropy model")
    # init_from brings its own entropy model and thresholds
    wanted = uses_entropy and init_entropy_from is not None and init_from is None
    pretrained = load_entropy_model(init_entropy_from) if wanted else None
    if pretrained is not None:
        shape = pretrained[0].config
        config = replace(config, encoder=replace(config.encoder, entropy_dim=shape.dim, entropy_layers=shape.n_layers,
                                                 entropy_heads=shape.n_heads, entropy_context=shape.context))
    model = ByteLCM(config)
    if init_from is not None:
        model.load_state_dict(ByteLCM.from_pretrained(init_from).state_dict())
    if init_codec_from is not None:
        model.load_codec(load_pretrained_codec(init_codec_from, "meaning" if config.codec_kind == "meaning" else
                                               "spelling"))
    if pretrained is not None:
        entropy_model, thresholds = pretrained
        model.codec.entropy_model.load_state_dict(entropy_model.state_dict())
        if thresholds is not None:  # else calibrated on the first training batch
            model.codec.encoder.set_thresholds(thresholds)
    return model
