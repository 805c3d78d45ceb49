"""The ByteLCMModule's groups of settings besides the model's and the loss's, how both modules save them, and
the error for a key from before they were grouped."""

from __future__ import annotations

import re
from dataclasses import asdict, dataclass, field
from pathlib import Path

import lightning as L
import yaml

from blcm.errors import ConfigError
from blt.export import CHECKPOINT_KEY
from concept_core.interface import Sampling


@dataclass(frozen=True)
class StageConfig:
    """Stages, by optimizer step: ``entropy_steps`` of the entropy model alone (entropy patching only; skipped
    when the entropy model is pretrained), then ``autoencoder_steps`` of reconstruction alone, then joint. When
    the entropy stage ends, the patching threshold is calibrated on the next batch to the encoder's
    ``target_patch_size`` and kept fixed."""

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
    """The optional alignment loss (``weight`` > 0): InfoNCE between the mean concept of the first ``units``
    units of a paired file (a WAV) and its transcript's, over ``batch`` train pairs of the ``pairs``
    directory (blcm.pairs: files + transcripts.json) per step, after the entropy stage."""

    pairs: str | None = None
    weight: float = 0.0
    batch: int = 8
    units: int = 32
    temperature: float = 0.1

    def __post_init__(self):
        if self.weight <= 0:
            return
        if self.pairs is None:
            raise ConfigError("alignment.weight > 0 needs alignment.pairs, a directory with transcripts.json")
        if self.batch < 2 or self.units < 1 or not self.temperature > 0:
            raise ConfigError(f"need alignment.batch >= 2 (in-batch negatives), alignment.units >= 1 and "
                             f"alignment.temperature > 0, got {self.batch}, {self.units}, {self.temperature}")


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
    """For a LightningModule whose ``model`` has a ``config`` and ``save_pretrained``: every checkpoint names the
    model (its export type and config, what `blcm export` reads), and the end of fit exports it to ``export_dir``."""

    export_kind: str

    def on_save_checkpoint(self, checkpoint: dict) -> None:
        checkpoint[CHECKPOINT_KEY] = {"type": self.export_kind, "config": asdict(self.model.config)}

    def on_train_end(self) -> None:
        if self.hparams.export_dir and self.trainer.is_global_zero:
            path = self.model.save_pretrained(self.hparams.export_dir)
            print(f"exported the {self.export_kind} to {path}")


def save_grouped_hparams(module: L.LightningModule, **groups) -> None:
    """The init arguments as hparams, each group a plain dict: a checkpoint's hparams load under
    weights_only=True, and LightningCLI parses them back into the same groups when a run resumes."""
    module.save_hyperparameters()
    module.hparams.update({name: asdict(group) for name, group in groups.items()})


# keys of the flat arguments from before the groups -> their place now (both modules' old keys)
RENAMED = {
    **{k: f"model.{k}" for k in ("segmenter", "codec", "encoder", "decoder", "core", "dim", "n_layers", "n_heads",
                                 "context", "window", "backend")},
    **{f"{prefix}{part}.concept_dim": "model.concept_dim" for prefix in ("", "model.")
       for part in ("encoder", "decoder")},
    **{k: f"loss.{k}" for k in ("reconstruction_weight", "core_weight", "entropy_weight", "concept_noise",
                                "concept_dropout", "detach_core_inputs", "detach_core_targets")},
    **{k: f"stages.{k}" for k in ("entropy_steps", "autoencoder_steps")},
    **{k: f"optim.{k}" for k in ("lr", "weight_decay", "warmup_steps", "decay_steps", "min_lr_ratio")},
    "val_core_batches": "validation.core_batches", "val_sampling": "validation.sampling",
    "samples": "validation.samples",
    **{f"align_{k}": f"alignment.{k}" for k in ("pairs", "weight", "batch", "units", "temperature")},
}


def check_renamed(argv: list[str]) -> None:
    """A clear error for a model key from before the groups, on the command line (``--model.lr``) or in a
    ``--config`` file (``model: init_args: lr:``)."""
    for key in old_keys(argv):
        if RENAMED[key] == "model.concept_dim":
            raise ConfigError(f"model.{key} is set from model.model.concept_dim, written once for the encoder, "
                              "decoder and core: set that instead")
        raise ConfigError(f"model.{key} is now model.{RENAMED[key]} (the module's settings are grouped: "
                          "model, loss, stages, optim, validation, alignment; see blcm fit --help)")


def old_keys(argv: list[str]) -> list[str]:
    found = []
    for i, arg in enumerate(argv):
        if match := re.fullmatch(r"--model\.([\w.]+?)(=.*)?", arg):
            found += [k for k in (match[1], match[1].removeprefix("init_args.")) if k in RENAMED]
        config = arg.split("=", 1)[1] if arg.startswith("--config=") else (
            argv[i + 1] if arg in ("--config", "-c") and i + 1 < len(argv) else None)
        if config is not None and Path(config).is_file():
            found += yaml_old_keys(yaml.safe_load(Path(config).read_text()))
    return list(dict.fromkeys(found))


def yaml_old_keys(config) -> list[str]:
    model = config.get("model") if isinstance(config, dict) else None
    args = model.get("init_args", model) if isinstance(model, dict) else None
    if not isinstance(args, dict):
        return []
    nested = [f"{name}.{k}" for name in ("encoder", "decoder") if isinstance(args.get(name), dict) for k in args[name]]
    model = args.get("model")
    if isinstance(model, dict):  # a saved config.yaml repeats the derived value: only a different one is an error
        nested += [f"model.{name}.concept_dim" for name in ("encoder", "decoder") if isinstance(model.get(name), dict)
                   and model[name].get("concept_dim", model.get("concept_dim", 256)) != model.get("concept_dim", 256)]
    return [k for k in [*args, *nested] if k in RENAMED]
