"""The ByteLCMModule's groups of settings besides the model's (which holds the loss), and how both
LightningModules save them and name their model in a checkpoint."""

from __future__ import annotations

from dataclasses import asdict, dataclass, field

import lightning as L

from blcm import ConfigError
from concept_core.interface import Sampling
from primitives.export import CHECKPOINT_KEY, FORMAT, ExportFormatError, check_format


@dataclass(frozen=True)
class StageConfig:
    """Stages, by optimizer step. When the entropy stage ends, the patching threshold is calibrated on the next
    batch to the encoder's ``target_patch_size`` and kept fixed.

    Args:
        entropy_steps: steps of the entropy model alone (entropy patching only; none when it is pretrained).
        autoencoder_steps: then steps of reconstruction alone (none for a codec without a trained decoder),
            then joint training.
    """

    entropy_steps: int = 200
    autoencoder_steps: int = 300

    def __post_init__(self):
        if self.entropy_steps < 0 or self.autoencoder_steps < 0:
            raise ConfigError(f"stage lengths must be >= 0, got {self.entropy_steps}, {self.autoencoder_steps}")


@dataclass(frozen=True)
class ValidationConfig:
    """What each validation computes besides the decoder's and the core's losses.

    Args:
        core_batches: validation batches whose every next concept is sampled for l2 / CA.
        sampling: how those predictions and the text samples are sampled.
        samples: reconstructions and continuations written to TensorBoard per validation.
    """

    core_batches: int = 2
    sampling: Sampling = field(default_factory=Sampling)
    samples: int = 4


@dataclass(frozen=True)
class AlignmentConfig:
    """The pairs the alignment term draws, each step after the entropy stage, when model.loss.alignment_weight > 0:
    InfoNCE between the mean concept of a paired file (a WAV) and its transcript's, the batch's other pairs as
    negatives (blcm.objective).

    Args:
        pairs: a directory of files and transcripts.json (blcm.data.pairs); its train pairs are drawn.
        batch: pairs per step.
        units: the first this many units of a file (and of its transcript) are pooled.
    """

    pairs: str | None = None
    batch: int = 8
    units: int = 32

    def __post_init__(self):
        if self.batch < 2 or self.units < 1:
            raise ConfigError(f"need alignment.batch >= 2 (in-batch negatives) and alignment.units >= 1, got "
                              f"{self.batch}, {self.units}")


def instantiate(cls: type[L.LightningModule], init_args: dict) -> L.LightningModule:
    """A module from a YAML's ``model: init_args:`` (each group a dict), parsed as LightningCLI parses them:
    for scripts and tests that build a module without the CLI."""
    from jsonargparse import ArgumentError, ArgumentParser

    parser = ArgumentParser(exit_on_error=False)
    parser.add_class_arguments(cls, "module")
    try:
        parsed = parser.parse_object({"module": init_args})
    except ArgumentError as e:
        raise ConfigError(f"bad {cls.__name__} init_args: {e}") from None
    return parser.instantiate(parsed).module


class ExportsItsModel:
    """For a LightningModule whose ``model`` is a primitives.export.Exportable: every checkpoint names the model (its
    export type, format and config, what `blcm export` reads), a checkpoint of another format is refused before
    it is resumed, and the end of fit exports the model to ``export_dir``."""

    def on_save_checkpoint(self, checkpoint: dict) -> None:
        checkpoint[CHECKPOINT_KEY] = {"type": self.model.export_kind, "format": FORMAT,
                                      "config": asdict(self.model.config)}

    def on_load_checkpoint(self, checkpoint: dict) -> None:
        entry = checkpoint.get(CHECKPOINT_KEY)
        try:
            where = getattr(getattr(self, "_trainer", None), "ckpt_path", None) or "the checkpoint"
            check_format(entry.get("format") if isinstance(entry, dict) else None, str(where))
        except ExportFormatError as e:
            raise ConfigError(str(e)) from None

    def on_train_end(self) -> None:
        if self.hparams.export_dir and self.trainer.is_global_zero:
            path = self.model.save_pretrained(self.hparams.export_dir)
            print(f"exported the {self.model.export_kind} to {path}")


def save_grouped_hparams(module: L.LightningModule, **groups) -> None:
    """The init arguments as hparams, each group a plain dict: a checkpoint's hparams load under
    weights_only=True, and LightningCLI parses them back into the same groups when a run resumes."""
    module.save_hyperparameters()
    module.hparams.update({name: asdict(group) for name, group in groups.items()})
