"""LightningModules. Only blcm imports Lightning; the models themselves live in blt/ and concept_core/."""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass, field, is_dataclass, replace

import lightning as L
import torch
import torch.nn.functional as F
from lightning.pytorch.utilities import rank_zero_warn

from blcm.data.pairs import group_means, info_nce, read_pairs
from blcm.data.prepared import read_prepared
from blcm.errors import ConfigError, DataError
from blcm.model import ByteLCM, ByteLCMConfig
from blcm.plotting import log_entropy_figure
from blcm.unit_text import unit_text
from blt.entropy import EntropyModel, EntropyModelConfig
from blt.ids import EOD, OFFSET, decode, pad_batch
from blt.patching import ENTROPY_MODES
from blt.pretrained import SHIPPED_NAME, PretrainedError, load_entropy_model
from bridges.byte_codec import ByteConceptDecoderConfig, ByteConceptEncoderConfig
from bridges.frozen_codec import FrozenConceptCodec
from concept_core.interface import Sampling
from concept_core.metrics import TeacherForced, contrastive_accuracy, l2, teacher_forced_predictions
from concept_core.quant import QuantizedLCM


def warmup_cosine(step: int, warmup: int, decay_steps: int | None, min_ratio: float) -> float:
    """LR multiplier: linear warm-up, then cosine down to ``min_ratio`` over ``decay_steps`` (or constant)."""
    if step < warmup:
        return (step + 1) / warmup
    if not decay_steps or decay_steps <= warmup:
        return 1.0
    progress = min((step - warmup) / (decay_steps - warmup), 1.0)
    return min_ratio + (1 - min_ratio) * 0.5 * (1 + math.cos(math.pi * progress))


def adamw_warmup_cosine(module: L.LightningModule, model: torch.nn.Module, lr: float, weight_decay: float,
                        warmup_steps: int, decay_steps: int | None, min_lr_ratio: float) -> dict:
    """AdamW (no decay on norms and biases) with a per-step warm-up + cosine schedule; ``decay_steps``
    None: the trainer's max_steps when set, else constant after warm-up."""
    decay, no_decay = [], []
    for p in model.parameters():
        if p.requires_grad:  # a frozen part (freeze_codec) is not the optimiser's
            (decay if p.ndim >= 2 else no_decay).append(p)
    optimizer = torch.optim.AdamW([{"params": decay, "weight_decay": weight_decay},
                                   {"params": no_decay, "weight_decay": 0.0}], lr=lr, betas=(0.9, 0.95))
    max_steps = module.trainer.max_steps
    decay_steps = decay_steps or (max_steps if max_steps > 0 else None)
    schedule = torch.optim.lr_scheduler.LambdaLR(
        optimizer, lambda s: warmup_cosine(s, warmup_steps, decay_steps, min_lr_ratio))
    return {"optimizer": optimizer, "lr_scheduler": {"scheduler": schedule, "interval": "step"}}


def check_finite(loss: torch.Tensor, step: int, term: str) -> None:
    if not torch.isfinite(loss):
        raise FloatingPointError(f"step {step}: the {term} loss is {loss.item()}; stopping")


class EntropyLMModule(L.LightningModule):
    """Trains the EntropyModel (a causal byte LM) and logs bits per byte to TensorBoard.

    Args:
        dim, n_layers, n_heads, context, window, backend: the EntropyModelConfig.
        lr, weight_decay, warmup_steps, decay_steps, min_lr_ratio: AdamW with warm-up + cosine.
            ``decay_steps`` None: the trainer's max_steps when set, else a constant LR after warm-up.
        export_dir: where the trained model is exported (config.json + model.safetensors) at the end of fit.
        target_patch_size: the mean patch size the logged entropy/patch figure is calibrated to.
        init_from: an exported model directory to start from (its config must match), e.g. to
            `blcm validate` an export or to fine-tune one.
    """

    def __init__(self, dim: int = 128, n_layers: int = 4, n_heads: int = 4, context: int = 256,
                 window: int | None = None, backend: str = "auto", lr: float = 3e-3, weight_decay: float = 0.1,
                 warmup_steps: int = 200, decay_steps: int | None = None, min_lr_ratio: float = 0.1,
                 export_dir: str | None = None, target_patch_size: float = 4.5, init_from: str | None = None):
        super().__init__()
        self.save_hyperparameters()
        self.model = EntropyModel(EntropyModelConfig(dim, n_layers, n_heads, context, window, backend))
        if init_from is not None:
            self.model.load_state_dict(EntropyModel.from_pretrained(init_from).state_dict())
        self._val_nats = self._val_bytes = 0.0

    def training_step(self, batch: torch.Tensor, batch_idx: int) -> torch.Tensor:
        loss = self.model.loss(batch)  # batch (B, L+1)
        check_finite(loss, self.global_step, "entropy-model")
        self.log("train/loss", loss, prog_bar=True)
        self.log("train/bpb", loss / math.log(2))
        return loss

    def validation_step(self, batch: torch.Tensor, batch_idx: int) -> None:
        nats, num_bytes = self.model.nats_and_bytes(batch)
        self._val_nats += float(nats)
        self._val_bytes += float(num_bytes)
        if batch_idx == 0 and self.trainer.is_global_zero:
            self._log_patch_figure(batch[0])

    def on_validation_epoch_end(self) -> None:
        totals = self.all_gather(torch.tensor([self._val_nats, self._val_bytes], dtype=torch.float64))
        totals = totals.reshape(-1, 2).sum(0)
        if totals[1] > 0:
            self.log("val/bpb", (totals[0] / totals[1] / math.log(2)).float(), prog_bar=True, sync_dist=False)
        self._val_nats = self._val_bytes = 0.0

    def _log_patch_figure(self, window: torch.Tensor) -> None:
        ids = window[window >= OFFSET][:192][None]  # (1, L) bytes only
        log_entropy_figure(self.logger, "val/entropy_patches", self.model, ids, self.global_step,
                           target_patch_size=self.hparams.target_patch_size)

    def configure_optimizers(self):
        hp = self.hparams
        return adamw_warmup_cosine(self, self.model, hp.lr, hp.weight_decay, hp.warmup_steps, hp.decay_steps,
                                   hp.min_lr_ratio)

    def on_train_end(self) -> None:
        if self.hparams.export_dir and self.trainer.is_global_zero:
            path = self.model.save_pretrained(self.hparams.export_dir)
            print(f"exported the entropy model to {path}")


STAGES = ("entropy", "autoencoder", "joint")
QUANTIZER_BATCHES = 4  # joint batches whose concepts fit a Quant core's codebooks


class ByteLCMModule(L.LightningModule):
    """Trains a ByteLCM end to end: byte encoder, concept core and byte decoder together.

    Loss = reconstruction_weight · CE(decoder(noise(c)), unit bytes)
         + core_weight · core loss on each document's concept sequence [c_1 .. c_n, c_EOD]
         + entropy_weight · entropy-model CE (after its own stage, only when > 0)
         + align_weight · InfoNCE(paired file concepts, transcript concepts) (only when > 0)

    Stages, by optimizer step: ``entropy_steps`` of entropy model alone (entropy patching only;
    skipped with ``init_entropy_from``), then ``autoencoder_steps`` of reconstruction alone, then
    joint. When the entropy stage ends, the patching threshold is calibrated on the next batch to
    the encoder's ``target_patch_size`` and kept fixed.

    Args:
        segmenter, codec, encoder, decoder, core: the ByteLCMConfig (see configs/tiny.yaml; codec
            {"kind": "sentence_transformer"} trains the core and decoder on frozen MiniLM concepts, see
            configs/minilm-tiny.yaml; the encoder config is then unused).
        reconstruction_weight, core_weight, entropy_weight: loss weights.
        concept_noise: std of the Gaussian noise added to concepts (unit RMS) before decoding, so
            that nearby concepts (as a generated one is) decode to the same bytes.
        concept_dropout: dropout on the concept before decoding.
        detach_core_inputs, detach_core_targets: stop the core loss's gradient into the encoder through
            the context concepts / the predicted ones. Targets are detached by default: with live
            targets the encoder learns to make concepts trivially predictable (on en, copy-last l2
            fell from 19 to 2.5 within 100 joint steps and the decoder's bits per byte rose).
        lr, weight_decay, warmup_steps, decay_steps, min_lr_ratio: AdamW with warm-up + cosine
            (``--optimizer`` / ``--lr_scheduler`` on the command line replace them).
        init_entropy_from: the EntropyModel entropy patching uses: "shipped" (default: the model inside the
            package, blt.pretrained, with its per-modality thresholds), an export directory (its thresholds.json
            if it has one, else thresholds calibrated per modality on the first batch), or null to train one
            from scratch in an ``entropy_steps`` stage. Ignored when the encoder's patching needs none.
        init_from: an exported ByteLCM to start from (same config), e.g. to validate or fine-tune it
            (its entropy model and threshold are kept: no entropy stage; set autoencoder_steps to 0 to go on
            jointly). With entropy_weight > 0 the entropy model keeps learning but the threshold stays fixed.
        freeze_codec: with init_from, keep its codec fixed (no gradient, running batch-norm statistics) and train
            the core alone, as on a frozen concept space (e.g. a codec-tiny export: configs/codec-tiny.yaml).
        export_dir: where the model is exported (config.json + model.safetensors) at the end of fit.
        val_core_batches: validation batches whose every next concept is sampled for l2 / CA.
        val_sampling: Sampling fields for those predictions and the text samples (e.g. {"steps": 40}).
        samples: reconstructions and continuations written to TensorBoard per validation.
        normalizer_units: training units a frozen codec's concept normaliser is fitted on (at fit start).
        align_pairs, align_weight, align_batch, align_units, align_temperature: the optional alignment loss
            (weight > 0): InfoNCE between the mean concept of the first ``align_units`` units of a
            paired file (a WAV) and its transcript's, over ``align_batch`` train pairs of the ``align_pairs``
            directory (blcm.pairs: files + transcripts.json) per step, after the entropy stage.
    """

    def __init__(self, segmenter: dict | None = None, encoder: ByteConceptEncoderConfig | None = None,
                 decoder: ByteConceptDecoderConfig | None = None, core: dict | None = None, codec: dict | None = None,
                 reconstruction_weight: float = 1.0, core_weight: float = 1.0, entropy_weight: float = 0.0,
                 concept_noise: float = 0.1, concept_dropout: float = 0.0,
                 detach_core_inputs: bool = False, detach_core_targets: bool = True,
                 entropy_steps: int = 200, autoencoder_steps: int = 300,
                 lr: float = 1e-3, weight_decay: float = 0.1, warmup_steps: int = 100, decay_steps: int | None = None,
                 min_lr_ratio: float = 0.1, init_entropy_from: str | None = SHIPPED_NAME, init_from: str | None = None,
                 freeze_codec: bool = False,
                 export_dir: str | None = None, val_core_batches: int = 2, val_sampling: dict | None = None,
                 samples: int = 4, normalizer_units: int = 2048, align_pairs: str | None = None,
                 align_weight: float = 0.0, align_batch: int = 8, align_units: int = 32,
                 align_temperature: float = 0.1):
        super().__init__()
        try:
            config = ByteLCMConfig.from_dict({k: asdict(v) if is_dataclass(v) else v for k, v in
                                              {"segmenter": segmenter, "codec": codec, "encoder": encoder,
                                               "decoder": decoder, "core": core}.items() if v is not None})
            uses_entropy = config.codec["kind"] == "byte" and config.encoder.patching in ENTROPY_MODES
            if init_entropy_from is not None and init_entropy_from != SHIPPED_NAME and not uses_entropy:
                raise ValueError(f"init_entropy_from is set, but {config.encoder.patching!r} patching uses no "
                                 "entropy model")
            # init_from brings its own entropy model and thresholds
            wanted = uses_entropy and init_entropy_from is not None and init_from is None
            pretrained = load_entropy_model(init_entropy_from) if wanted else None
            if pretrained is not None:  # the encoder's entropy model takes the pretrained one's shape
                shape = pretrained[0].config
                config.encoder = replace(config.encoder, entropy_dim=shape.dim, entropy_layers=shape.n_layers,
                                         entropy_heads=shape.n_heads, entropy_context=shape.context)
            self.model = ByteLCM(config)
            if init_from is not None:
                self.model.load_state_dict(ByteLCM.from_pretrained(init_from).state_dict())
            if freeze_codec:
                if init_from is None or config.codec["kind"] != "byte":
                    raise ValueError("freeze_codec keeps a trained byte codec fixed: it needs init_from, an export")
                if entropy_weight > 0 or align_weight > 0:
                    raise ValueError("freeze_codec leaves nothing for entropy_weight or align_weight to train: set "
                                     "them to 0")
                self.model.codec.requires_grad_(False)
            if pretrained is not None:
                entropy_model, thresholds = pretrained
                self.model.codec.entropy_model.load_state_dict(entropy_model.state_dict())
                if thresholds is not None:  # else calibrated on the first training batch
                    self.model.codec.encoder.set_thresholds(thresholds)
            self.val_sampling = Sampling(**(val_sampling or {}))
            if normalizer_units < 2:
                raise ValueError(f"normalizer_units must be >= 2, got {normalizer_units}")
            if align_weight > 0:
                if align_pairs is None:
                    raise ValueError("align_weight > 0 needs align_pairs, a directory with transcripts.json")
                if config.codec["kind"] != "byte":
                    raise ValueError("the alignment loss trains the encoder: a frozen codec has none to train")
                if align_batch < 2 or align_units < 1 or not align_temperature > 0:
                    raise ValueError(f"need align_batch >= 2 (in-batch negatives), align_units >= 1 and "
                                     f"align_temperature > 0, got {align_batch}, {align_units}, {align_temperature}")
        # CodecUnavailable is a RuntimeError
        except (ValueError, TypeError, FileNotFoundError, RuntimeError, PretrainedError) as e:
            raise ConfigError(f"cannot build the ByteLCM: {e}") from None
        self.save_hyperparameters()
        self.hparams.update(asdict(config))  # plain dicts, so a checkpoint's hparams load under weights_only=True
        self._val = ValidationTotals()
        self._quantizer_pool: list[torch.Tensor] = []
        self._pair_units: list[tuple[list[bytes], list[bytes]]] = []

    def setup(self, stage: str) -> None:
        if stage == "fit" and self.hparams.align_weight > 0:
            try:
                pairs = read_pairs(self.hparams.align_pairs, "train")
            except DataError as e:
                raise ConfigError(f"align_pairs: {e}") from None
            if len(pairs) < 2:
                raise ConfigError(f"align_pairs: {self.hparams.align_pairs} has {len(pairs)} training pair(s); "
                                  "the alignment loss needs at least 2")
            self._pair_units = [(self.model.units(p.data), self.model.units(p.text)) for p in pairs]

    # -- stages ---------------------------------------------------------------------------------

    @property
    def entropy_stage_steps(self) -> int:
        pretrained = self.hparams.init_entropy_from is not None or self.hparams.init_from is not None
        trains_entropy = self.model.codec.entropy_model is not None and not pretrained
        return self.hparams.entropy_steps if trains_entropy else 0

    def stage(self, step: int | None = None) -> str:
        step = self.global_step if step is None else step
        if self.hparams.freeze_codec:
            return "joint"
        if step < self.entropy_stage_steps:
            return "entropy"
        # A codec without a trainable decoder (SONAR) has nothing to learn before the core.
        autoencoder_steps = self.hparams.autoencoder_steps if self.model.codec.decoder is not None else 0
        if step < self.entropy_stage_steps + autoencoder_steps:
            return "autoencoder"
        return "joint"

    def on_fit_start(self) -> None:
        """Fit a frozen codec's normaliser on a sample of training units; warn when the data was segmented
        differently from how the model will segment at inference."""
        train_set = getattr(self.trainer.datamodule, "train_set", None)
        directory = getattr(train_set, "directory", None)
        if directory is None:
            return
        codec = self.model.codec
        if isinstance(codec, FrozenConceptCodec) and not codec.ready:  # the same seed, so every rank fits the same
            codec.fit_normalizer(train_set.sample_units(self.hparams.normalizer_units, seed=0))
        data_segmenter = read_prepared(directory)["settings"]["segmenter"]
        if data_segmenter != self.model.segmenter.to_config():
            rank_zero_warn(f"{directory} was prepared with segmenter {data_segmenter}, but the model segments "
                           f"with {self.model.segmenter.to_config()} at inference: set model.segmenter to match")

    # -- training -------------------------------------------------------------------------------

    def losses(self, batch: dict, stage: str) -> dict[str, torch.Tensor]:
        """The loss terms of ``stage`` on a batch of units (see blcm.units.collate_units)."""
        units, lengths = batch["units"], batch["unit_lengths"]  # (U, L), (U,)
        codec = self.model.codec
        if stage == "entropy":
            return {"entropy": codec.encoder.entropy_loss(units, lengths)}
        modalities = batch.get("unit_modalities")  # (U,)
        if not codec.ready:
            self._calibrate(units, lengths, modalities)
        terms = {}
        concepts = codec.concepts(units, lengths, modalities)  # (U, d)
        text = units[:, 0] != EOD  # the EOD unit exists for the core only
        if text.any() and codec.decoder is not None and not self.hparams.freeze_codec:
            noisy = F.dropout(concepts[text], self.hparams.concept_dropout, self.training)
            if self.training and self.hparams.concept_noise > 0:
                noisy = noisy + self.hparams.concept_noise * torch.randn_like(noisy)
            scores = codec.decoder(units[text], lengths[text], noisy)  # (T, 3): nats, exact, correct
            terms["reconstruction"] = scores[:, 0].sum() / (lengths[text] + 1).sum()
        if stage == "joint":
            sequences, mask = document_concepts(concepts, batch)  # (B, N, d), (B, N)
            core = self.model.core
            if not self.core_ready:
                self._fit_quantizer(concepts.detach()[text])
                if not self.core_ready:
                    return terms
            inputs = sequences.detach() if self.hparams.detach_core_inputs else sequences
            targets = sequences.detach() if self.hparams.detach_core_targets else None
            terms["core"] = core.loss(inputs, mask, targets=targets)
        if self.hparams.entropy_weight > 0 and codec.entropy_model is not None:
            terms["entropy"] = codec.encoder.entropy_loss(units, lengths)
        if self._pair_units:
            terms["alignment"] = self.alignment_loss()
        return terms

    def alignment_loss(self) -> torch.Tensor:
        """InfoNCE between the pooled concepts of ``align_batch`` paired files (their first ``align_units``
        units, as `blcm eval --pairs` pools them) and of their transcripts, the other pairs of the batch as
        negatives. The draw depends on the step and rank only, so a resumed run draws what it would have."""
        hp, n = self.hparams, self.hparams.align_units
        generator = torch.Generator().manual_seed(self.global_step * 1009 + self.global_rank)
        chosen = torch.randperm(len(self._pair_units), generator=generator)[: hp.align_batch].tolist()
        data_groups = [self._pair_units[i][0][:n] for i in chosen]
        text_groups = [self._pair_units[i][1][:n] for i in chosen]
        return info_nce(self._pooled(data_groups), self._pooled(text_groups), hp.align_temperature)

    def _pooled(self, groups: list[list[bytes]]) -> torch.Tensor:
        """Groups of units -> the mean concept of each group (G, d), with the encoder's gradient."""
        ids, lengths = pad_batch([u for g in groups for u in g])
        concepts = self.model.codec.concepts(ids.to(self.device), lengths.to(self.device))  # (U, d)
        return group_means(concepts, [len(g) for g in groups])

    def _calibrate(self, units: torch.Tensor, lengths: torch.Tensor, modalities: torch.Tensor | None) -> None:
        """Ready the codec on this batch: the byte codec's entropy threshold (when its entropy stage ends), or
        a frozen codec's normaliser (when on_fit_start had no training set to sample)."""
        fitted = self.model.codec.calibrate(units, lengths, modalities)
        if self._trainer is not None and self.trainer.world_size > 1:  # rank 0's fit on every rank
            for buffer in fitted:
                buffer.copy_(self.trainer.strategy.broadcast(buffer))

    def _fit_quantizer(self, concepts: torch.Tensor) -> None:
        """Pool the concepts of the first QUANTIZER_BATCHES joint batches, then fit the RVQ codebooks (every
        rank counts the same batches; rank 0's codebooks are broadcast). They stay fixed afterwards while
        the encoder keeps learning."""
        core = self.model.core
        self._quantizer_pool.append(concepts)
        if len(self._quantizer_pool) < QUANTIZER_BATCHES:
            return
        pool = torch.cat(self._quantizer_pool)
        core.fit_quantizer(pool, generator=torch.Generator(pool.device).manual_seed(0))
        if self._trainer is not None and self.trainer.world_size > 1:
            core.quantizer.codebooks.copy_(self.trainer.strategy.broadcast(core.quantizer.codebooks))
        self._quantizer_pool = []

    def training_step(self, batch: dict, batch_idx: int) -> torch.Tensor | None:
        stage = self.stage()
        terms = self.losses(batch, stage)
        if not terms:  # nothing to learn from (a batch of end-of-document units only): skip the step
            return None
        weights = {"reconstruction": self.hparams.reconstruction_weight, "core": self.hparams.core_weight,
                   "alignment": self.hparams.align_weight,
                   "entropy": 1.0 if stage == "entropy" else self.hparams.entropy_weight}
        for name, value in terms.items():
            check_finite(value, self.global_step, name)
            self.log(f"train/{name}", value, prog_bar=name != "entropy" or stage == "entropy")
        self.log("train/stage", float(STAGES.index(stage)))
        return sum(weights[name] * value for name, value in terms.items())

    def configure_optimizers(self):
        hp = self.hparams
        return adamw_warmup_cosine(self, self.model, hp.lr, hp.weight_decay, hp.warmup_steps, hp.decay_steps,
                                   hp.min_lr_ratio)

    def on_train_batch_start(self, batch: dict, batch_idx: int) -> None:
        if self.hparams.freeze_codec:  # a frozen codec normalises with its running statistics, always
            self.model.codec.eval()

    # -- validation -----------------------------------------------------------------------------

    def validation_step(self, batch: dict, batch_idx: int) -> None:
        units, lengths = batch["units"], batch["unit_lengths"]
        codec, totals = self.model.codec, self._val
        text = units[:, 0] != EOD
        if codec.entropy_model is not None and text.any():
            targets = (lengths[text] + 1).sum()  # bytes and the closing EOS; bits per *byte* below, as for the decoder
            totals.add(entropy_nats=codec.encoder.entropy_loss(units[text], lengths[text]) * targets,
                       entropy_bytes=lengths[text].sum())
        if not codec.ready:  # nothing to encode with yet
            return
        concepts = codec.concepts(units, lengths, batch.get("unit_modalities"))
        if codec.decoder is not None:
            scores = codec.decoder(units[text], lengths[text], concepts[text])  # clean concepts
            short = lengths[text] <= 128
            totals.add(nats=scores[:, 0].sum(), bytes=lengths[text].sum(), exact=scores[:, 1].sum(),
                       units=len(scores), exact_le128=scores[short, 1].sum(), units_le128=short.sum())
        sequences, mask = document_concepts(concepts, batch)
        if self.core_ready:
            totals.add(core_loss=self.model.core.loss(sequences, mask), core_batches=1)  # untrained before joint
            if batch_idx < self.hparams.val_core_batches:
                generator = torch.Generator(self.device).manual_seed(batch_idx)
                predictions = teacher_forced_predictions(self.model.core, sequences, mask, self.val_sampling, generator)
                totals.add_predictions(predictions, documents=len(mask))
        if batch_idx == 0 and self.trainer.is_global_zero:
            self._log_samples(batch, concepts, sequences, mask)

    def on_validation_epoch_end(self) -> None:
        sums = self._val.tensor(self.device)
        if self.trainer.world_size > 1:  # ratios of global sums: every rank logs the same keys and values
            sums = self.all_gather(sums).reshape(-1, len(sums)).sum(0)
        self._val = ValidationTotals()
        for name, value in ValidationTotals.metrics(sums).items():
            self.log(f"val/{name}", value, prog_bar=name in ("bpb", "exact_le128", "l2"))

    @property
    def core_ready(self) -> bool:
        """False only for a Quant core whose codebooks are not fitted yet (that happens when joint training starts)."""
        core = self.model.core
        return not isinstance(core, QuantizedLCM) or bool(core.quantizer.fitted)

    def _log_samples(self, batch: dict, concepts: torch.Tensor, sequences: torch.Tensor, mask: torch.Tensor) -> None:
        experiment = getattr(self.logger, "experiment", None)
        if not hasattr(experiment, "add_text"):
            return
        codec, n = self.model.codec, self.hparams.samples
        units, lengths = batch["units"], batch["unit_lengths"]
        text = (units[:, 0] != EOD).nonzero().flatten()[:n]
        rebuilt = codec.decode(concepts[text])
        lines = [f"| {unit_text(decode_ids(units[i, : lengths[i]]), 160, cell=True)} | {unit_text(r, 160, cell=True)} |"
                 for i, r in zip(text.tolist(), rebuilt, strict=True)]
        experiment.add_text("val/reconstruction", "| unit | reconstruction |\n|---|---|\n" + "\n".join(lines),
                            self.global_step)
        rows = []
        generator = torch.Generator(self.device).manual_seed(0)
        for b in range(min(n, len(mask)) if self.core_ready else 0):
            k = int(mask[b].sum()) // 2  # continue each document from its first half
            if k < 1:
                continue
            context = sequences[b : b + 1, :k]
            predicted = self.model.core.predict_next(context, None, self.val_sampling, generator)
            true_unit = batch["doc_units"][b, k]
            shown = [b"".join(codec.decode(context[0][-1:])), codec.decode(predicted)[0],
                     decode_ids(units[true_unit, : lengths[true_unit]])]
            rows.append("| " + " | ".join(unit_text(u, 160, cell=True) for u in shown) + " |")
        if rows:
            experiment.add_text("val/continuation", "| last context unit (decoded) | generated next | true next |\n"
                                "|---|---|---|\n" + "\n".join(rows), self.global_step)
        if codec.entropy_model is not None and codec.ready:
            encoder, longest = codec.encoder, int(lengths.argmax())
            modality = int(batch["unit_modalities"][longest]) if "unit_modalities" in batch else 0
            log_entropy_figure(self.logger, "val/entropy_patches", encoder.entropy_model,
                               units[longest : longest + 1, : lengths[longest]], self.global_step,
                               threshold=float(encoder.entropy_thresholds[modality]), mode=encoder.config.patching)

    def on_train_end(self) -> None:
        if self.hparams.export_dir and self.trainer.is_global_zero:
            path = self.model.save_pretrained(self.hparams.export_dir)
            print(f"exported the model to {path}")


def document_concepts(concepts: torch.Tensor, batch: dict) -> tuple[torch.Tensor, torch.Tensor]:
    """Unit concepts (U, d) -> each document window's sequence (B, N, d) and its mask (B, N)."""
    index, mask = batch["doc_units"], batch["doc_mask"]
    return concepts[index.clamp(min=0)].masked_fill(~mask[..., None], 0.0), mask


SUMS = ("entropy_nats", "entropy_bytes", "nats", "bytes", "exact", "units", "exact_le128", "units_le128", "core_loss",
        "core_batches", "pairs", "l2", "copy_l2", "ca", "ca_items", "copy_ca", "copy_ca_items")


@dataclass
class ValidationTotals:
    """Sums over a validation epoch. Ranks add their sums up before any ratio is taken, so every rank
    logs the same metrics (a ratio of sums, not a mean of per-rank ratios). CA compares a prediction
    with the targets of its own rank's pool."""

    sums: dict[str, float] = field(default_factory=lambda: dict.fromkeys(SUMS, 0.0))
    documents: int = 0

    def add(self, **values) -> None:
        for name, value in values.items():
            self.sums[name] += float(value)

    def add_predictions(self, predictions: TeacherForced, documents: int) -> None:
        pred, target, copy = predictions.pred, predictions.target, predictions.previous
        if len(pred):
            doc = predictions.doc + self.documents  # document ids unique across batches, for CA's neighbour exclusion
            ca = contrastive_accuracy(pred, target, doc_ids=doc)
            copy_ca = contrastive_accuracy(copy, target, doc_ids=doc)
            self.add(pairs=len(pred), l2=l2(pred, target).sum(), copy_l2=l2(copy, target).sum(),
                     ca=ca.nansum(), ca_items=(~ca.isnan()).sum(), copy_ca=copy_ca.nansum(),
                     copy_ca_items=(~copy_ca.isnan()).sum())
        self.documents += documents

    def tensor(self, device) -> torch.Tensor:
        return torch.tensor([self.sums[name] for name in SUMS], dtype=torch.float64, device=device)

    @staticmethod
    def metrics(sums: torch.Tensor) -> dict[str, float]:
        s = dict(zip(SUMS, sums.tolist(), strict=True))
        ratios = {"entropy_bpb": ("entropy_nats", "entropy_bytes", 1 / math.log(2)),
                  "bpb": ("nats", "bytes", 1 / math.log(2)), "exact": ("exact", "units", 1.0),
                  "exact_le128": ("exact_le128", "units_le128", 1.0), "core_loss": ("core_loss", "core_batches", 1.0),
                  "l2": ("l2", "pairs", 1.0), "copy_last_l2": ("copy_l2", "pairs", 1.0),
                  "ca": ("ca", "ca_items", 1.0), "copy_last_ca": ("copy_ca", "copy_ca_items", 1.0)}
        return {name: s[num] / s[den] * scale for name, (num, den, scale) in ratios.items() if s[den] > 0}


def decode_ids(ids: torch.Tensor) -> bytes:
    return b"<EOD>" if ids.numel() and int(ids[0]) == EOD else decode(ids)
